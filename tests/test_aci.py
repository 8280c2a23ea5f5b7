"""Reading and checking ACIs (podrun.appc.aci): compression, hashing, manifest, layout.

Compressed ACIs are made with the real ``tar``, ``gzip``, ``bzip2`` and ``xz``; bad
layouts are crafted with tarfile and, where actool has an opinion, cross-checked
against Debian's ``actool validate``.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from podrun.appc import aci
from podrun.errors import ImageError
from tests.images import actool_validate, image_dir, manifest

COMPRESSORS = {"none": None, "gzip": ["gzip", "-c"], "bzip2": ["bzip2", "-c"],
               "xz": ["xz", "-c"]}


@pytest.fixture(scope="module")
def plain_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aci")
    src = image_dir(root / "img", "example.com/reader", "2.0.0")
    tar = root / "plain.tar"
    subprocess.run(["tar", "-C", str(src), "-cf", str(tar), "manifest", "rootfs"], check=True)
    return tar


def compressed(plain: Path, kind: str) -> Path:
    if kind == "none":
        return plain
    out = plain.with_name(f"image-{kind}.aci")
    if not out.exists():
        with open(out, "wb") as f:
            subprocess.run([*COMPRESSORS[kind], str(plain)], stdout=f, check=True)
    return out


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_detect_compression(plain_tar: Path, kind: str) -> None:
    assert aci.detect_compression(compressed(plain_tar, kind).read_bytes()[:6]) == kind


def test_detect_compression_short_and_empty() -> None:
    assert aci.detect_compression(b"") == "none"
    assert aci.detect_compression(b"\x1f") == "none"
    assert aci.detect_compression(b"\x1f\x8b") == "gzip"


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_open_decompressed_gives_the_tar(plain_tar: Path, kind: str) -> None:
    path = compressed(plain_tar, kind)
    with aci.open_decompressed(path) as f:
        assert f.read() == plain_tar.read_bytes()


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_open_decompressed_from_a_pipe(plain_tar: Path, kind: str) -> None:
    # A non-seekable stream: the magic bytes must be put back, not lost.
    path = compressed(plain_tar, kind)
    proc = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with aci.open_decompressed(proc.stdout) as f:
            data = f.read()
    finally:
        proc.stdout.close()
        proc.wait()
    assert data == plain_tar.read_bytes()


def test_open_decompressed_leaves_caller_stream_open(plain_tar: Path) -> None:
    raw = open(compressed(plain_tar, "gzip"), "rb")  # noqa: SIM115
    with raw:
        with aci.open_decompressed(raw) as f:
            f.read(10)
        assert not raw.closed
    with open(plain_tar, "rb") as raw:
        with aci.open_decompressed(raw) as f:
            f.read(10)
        assert not raw.closed


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_hashing_reader_id_is_sha512_of_uncompressed_tar(plain_tar: Path, kind: str) -> None:
    expected = "sha512-" + hashlib.sha512(plain_tar.read_bytes()).hexdigest()
    with aci.open_decompressed(compressed(plain_tar, kind)) as f:
        hr = aci.HashingReader(f)
        with tarfile.open(fileobj=hr, mode="r|") as tf:
            names = [m.name for m in tf]
        assert "manifest" in names
        hr.drain()
    assert hr.image_id == expected
    assert hr.hexdigest() == expected.removeprefix("sha512-")
    assert hr.bytes_read == plain_tar.stat().st_size
    assert aci.image_id_of(compressed(plain_tar, kind)) == expected


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_read_manifest(plain_tar: Path, kind: str) -> None:
    m, raw = aci.read_manifest(compressed(plain_tar, kind))
    assert m.name == "example.com/reader"
    assert json.loads(raw) == manifest("example.com/reader", "2.0.0")


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_check_layout_accepts_a_good_image(plain_tar: Path, kind: str) -> None:
    path = compressed(plain_tar, kind)
    assert aci.check_layout(path).name == "example.com/reader"
    info = aci.inspect_aci(path)
    assert info.image_id == "sha512-" + hashlib.sha512(plain_tar.read_bytes()).hexdigest()
    assert json.loads(info.manifest_bytes)["name"] == "example.com/reader"
    assert actool_validate(path).returncode == 0


# ------------------------------------------------------------------------- bad layouts

GOOD_MANIFEST = json.dumps(manifest("example.com/bad")).encode()


def _tar(path: Path, entries: list[tuple]) -> Path:
    with tarfile.open(path, "w") as tf:
        for kind, name, *rest in entries:
            ti = tarfile.TarInfo(name)
            ti.mode = 0o644
            if kind == "file":
                data = rest[0]
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, rest[0]
                tf.addfile(ti)
    return path


BAD_LAYOUTS = {
    "missing-manifest": ([("dir", "rootfs"), ("file", "rootfs/a", b"a")],
                         "no image manifest", True),
    "missing-rootfs": ([("file", "manifest", GOOD_MANIFEST)], "no rootfs", True),
    "extra-top-level": ([("file", "manifest", GOOD_MANIFEST), ("dir", "rootfs"),
                         ("file", "README", b"hi")], "'README'", True),
    "rootfs-prefix-only": ([("file", "manifest", GOOD_MANIFEST), ("dir", "rootfs"),
                            ("file", "rootfsx", b"hi")], "'rootfsx'", False),
    "rootfs-not-dir": ([("file", "manifest", GOOD_MANIFEST), ("file", "rootfs", b"x")],
                       "rootfs is not a directory", True),
    "manifest-symlink": ([("sym", "manifest", "rootfs/m"), ("dir", "rootfs"),
                          ("file", "rootfs/m", GOOD_MANIFEST)],
                         "manifest is not a regular file", None),
    "not-json": ([("file", "manifest", b"{not json"), ("dir", "rootfs")], "manifest", True),
    "wrong-kind": ([("file", "manifest", json.dumps({**manifest("example.com/bad"),
                                                     "acKind": "PodManifest"}).encode()),
                    ("dir", "rootfs")], "acKind", True),
    "duplicate": ([("file", "manifest", GOOD_MANIFEST), ("dir", "rootfs"),
                   ("file", "rootfs/a", b"1"), ("file", "rootfs/a", b"2")],
                  "duplicate entry in archive: rootfs/a", True),
    "absolute": ([("file", "manifest", GOOD_MANIFEST), ("dir", "rootfs"),
                  ("file", "/rootfs/a", b"1")], "absolute", None),
    "dotdot": ([("file", "manifest", GOOD_MANIFEST), ("dir", "rootfs"),
                ("file", "rootfs/../../a", b"1")], "escapes", None),
}


@pytest.mark.parametrize("case", list(BAD_LAYOUTS))
def test_check_layout_rejects(tmp_path: Path, case: str) -> None:
    entries, message, actool_rejects = BAD_LAYOUTS[case]
    path = _tar(tmp_path / f"{case}.aci", entries)
    with pytest.raises(ImageError) as exc:
        aci.check_layout(path)
    assert message in str(exc.value)
    assert str(path) in str(exc.value)
    assert "\n" not in str(exc.value)
    if actool_rejects is not None:
        # Cross-check: our verdict agrees with the reference validator where it has one.
        assert (actool_validate(path).returncode != 0) == actool_rejects


def test_check_layout_invalid_manifest_carries_json_path(tmp_path: Path) -> None:
    path = _tar(tmp_path / "noname.aci", [
        ("file", "manifest", json.dumps({"acKind": "ImageManifest",
                                         "acVersion": "0.8.11"}).encode()),
        ("dir", "rootfs")])
    with pytest.raises(ImageError, match="name"):
        aci.check_layout(path)


def test_dot_slash_names_are_fine(tmp_path: Path) -> None:
    path = _tar(tmp_path / "dot.aci", [("dir", "./"), ("file", "./manifest", GOOD_MANIFEST),
                                       ("dir", "./rootfs/"), ("file", "./rootfs/a", b"a")])
    assert aci.check_layout(path).name == "example.com/bad"
    assert actool_validate(path).returncode == 0


def test_read_manifest_missing(tmp_path: Path) -> None:
    path = _tar(tmp_path / "m.aci", [("dir", "rootfs")])
    with pytest.raises(ImageError, match="no image manifest"):
        aci.read_manifest(path)


@pytest.mark.parametrize("data, what", [(b"", "empty"), (b"\x1f\x8b\x08garbage" * 10, "gzip"),
                                        (b"BZh9garbage" * 10, "bzip2"),
                                        (b"\xfd7zXZ\x00garbage" * 10, "xz"),
                                        (b"plain garbage, not a tar" * 40, "text")])
def test_corrupt_archives_are_image_errors(tmp_path: Path, data: bytes, what: str) -> None:
    path = tmp_path / f"{what}.aci"
    path.write_bytes(data)
    with pytest.raises(ImageError) as exc:
        aci.check_layout(path)
    assert str(path) in str(exc.value)


def test_missing_file_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="nope.aci"):
        aci.read_manifest(tmp_path / "nope.aci")

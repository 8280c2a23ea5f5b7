"""Building ACIs (podrun.appc.aci.build_aci and ``podrun image build``).

Every ACI written here is checked with Debian's ``actool validate``; reproducibility
is checked across fresh copies of the build directory with different mtimes (and,
as root, owners).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from podrun.appc.aci import build_aci, image_id_of, inspect_aci
from podrun.errors import ImageError, ManifestError
from tests.images import actool_validate, image_dir

CAP_NET_RAW = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return image_dir(tmp_path / "img", "example.com/built", "1.2.3", exec_=["/bin/sh"])


def _uncompressed(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


@pytest.mark.parametrize("compress", [True, False])
def test_build_validates_with_actool(src: Path, tmp_path: Path, compress: bool) -> None:
    out = tmp_path / "out.aci"
    image_id = build_aci(src, out, compress=compress)
    res = actool_validate(out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out.read_bytes()[:2] == b"\x1f\x8b") == compress
    assert image_id == "sha512-" + hashlib.sha512(_uncompressed(out)).hexdigest()
    assert image_id == image_id_of(out) == inspect_aci(out).image_id
    assert inspect_aci(out).manifest.name == "example.com/built"


def test_gzip_and_plain_builds_have_the_same_id(src: Path, tmp_path: Path) -> None:
    assert build_aci(src, tmp_path / "a.aci") == build_aci(src, tmp_path / "b.aci",
                                                           compress=False)


def test_gzip_header_is_normalised(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.aci"
    build_aci(src, out)
    head = out.read_bytes()[:10]
    assert head[3] & 0x08 == 0, "gzip header carries a file name"
    assert head[4:8] == b"\0\0\0\0", "gzip header mtime is not 0"


def test_entry_order_and_normalised_fields(src: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    out = tmp_path / "out.aci"
    build_aci(src, out, compress=False)
    with tarfile.open(out) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["manifest", "rootfs"]
    assert names.index("rootfs/bin") < names.index("rootfs/bin/busybox") < names.index(
        "rootfs/etc")
    bins = [n for n in names if n.startswith("rootfs/bin/")]
    assert bins == sorted(bins, key=os.fsencode)
    assert {m.mtime for m in members} == {1700000000}
    assert {m.uname for m in members} == {""} and {m.gname for m in members} == {""}
    tmp = next(m for m in members if m.name == "rootfs/tmp")
    assert tmp.mode == 0o1777
    sh = next(m for m in members if m.name == "rootfs/bin/sh")
    assert sh.issym() and sh.linkname == "busybox"


def test_reproducible_across_copies_with_different_mtimes(src: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(src, copy, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(copy):
        for name in [*dirnames, *filenames]:
            os.utime(Path(dirpath, name), (123456789, 123456789), follow_symlinks=False)
    a = build_aci(src, tmp_path / "a.aci")
    b = build_aci(copy, tmp_path / "b.aci")
    assert a == b
    assert (tmp_path / "a.aci").read_bytes() == (tmp_path / "b.aci").read_bytes()


@pytest.mark.root
def test_owner_root_makes_owners_irrelevant(src: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(src, copy, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(copy):
        for name in [*dirnames, *filenames]:
            os.chown(Path(dirpath, name), 4242, 4343, follow_symlinks=False)
    assert build_aci(src, tmp_path / "a.aci", owner_root=True) == build_aci(
        copy, tmp_path / "b.aci", owner_root=True)
    assert build_aci(src, tmp_path / "c.aci", overwrite=True) != build_aci(
        copy, tmp_path / "d.aci")
    with tarfile.open(tmp_path / "d.aci") as tf:
        assert {(m.uid, m.gid) for m in tf} == {(4242, 4343)}
    with tarfile.open(tmp_path / "b.aci") as tf:
        assert {(m.uid, m.gid) for m in tf} == {(0, 0)}


@pytest.mark.root
def test_special_files_are_kept(src: Path, tmp_path: Path) -> None:
    rootfs = src / "rootfs"
    os.chmod(rootfs / "bin" / "busybox", 0o4755)
    os.link(rootfs / "bin" / "busybox", rootfs / "bin" / "busybox2")
    (rootfs / "sgid").write_text("x")
    os.chmod(rootfs / "sgid", 0o2750)
    os.mknod(rootfs / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(rootfs / "dev" / "loop9", 0o660 | stat.S_IFBLK, os.makedev(7, 9))
    os.mkfifo(rootfs / "fifo")
    os.setxattr(rootfs / "bin" / "busybox", "security.capability", CAP_NET_RAW)
    os.setxattr(rootfs / "etc" / "passwd", "user.note", b"\xff\x00binary")
    out = tmp_path / "out.aci"
    build_aci(src, out, compress=False)
    assert actool_validate(out).returncode == 0
    with tarfile.open(out) as tf:
        m = {x.name: x for x in tf}
    assert m["rootfs/bin/busybox"].isreg() and m["rootfs/bin/busybox"].mode == 0o4755
    assert m["rootfs/bin/busybox2"].islnk()
    assert m["rootfs/bin/busybox2"].linkname == "rootfs/bin/busybox"
    assert m["rootfs/sgid"].mode == 0o2750
    assert m["rootfs/dev/null"].ischr() and (m["rootfs/dev/null"].devmajor,
                                             m["rootfs/dev/null"].devminor) == (1, 3)
    assert m["rootfs/dev/loop9"].isblk() and m["rootfs/dev/loop9"].devminor == 9
    assert m["rootfs/fifo"].isfifo()
    cap = m["rootfs/bin/busybox"].pax_headers["SCHILY.xattr.security.capability"]
    assert cap.encode("utf-8", "surrogateescape") == CAP_NET_RAW
    note = m["rootfs/etc/passwd"].pax_headers["SCHILY.xattr.user.note"]
    assert note.encode("utf-8", "surrogateescape") == b"\xff\x00binary"


def test_invalid_manifest_writes_nothing(src: Path, tmp_path: Path) -> None:
    (src / "manifest").write_text(json.dumps({"acKind": "ImageManifest",
                                              "acVersion": "0.8.11"}))
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    with pytest.raises(ManifestError) as exc:
        build_aci(src, outdir / "out.aci")
    assert exc.value.exit_code == 254
    assert list(outdir.iterdir()) == []


def test_not_json_manifest_writes_nothing(src: Path, tmp_path: Path) -> None:
    (src / "manifest").write_text("{")
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    with pytest.raises(ManifestError):
        build_aci(src, outdir / "out.aci")
    assert list(outdir.iterdir()) == []


def test_missing_parts_of_dir(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(ImageError, match="no manifest"):
        build_aci(d, tmp_path / "x.aci")
    (d / "manifest").write_text(json.dumps({"acKind": "ImageManifest", "acVersion": "0.8.11",
                                            "name": "example.com/x"}))
    with pytest.raises(ImageError, match="no rootfs"):
        build_aci(d, tmp_path / "x.aci")
    with pytest.raises(ImageError, match="not found"):
        build_aci(tmp_path / "nope", tmp_path / "x.aci")
    assert not (tmp_path / "x.aci").exists()


def test_existing_out_refused_without_overwrite(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.aci"
    out.write_bytes(b"precious")
    with pytest.raises(ImageError) as exc:
        build_aci(src, out)
    assert str(out) in str(exc.value) and "overwrite" in str(exc.value)
    assert out.read_bytes() == b"precious"
    image_id = build_aci(src, out, overwrite=True)
    assert image_id_of(out) == image_id
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_output_mode_follows_umask(src: Path, tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        build_aci(src, tmp_path / "out.aci")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out.aci").st_mode) == 0o640


@pytest.mark.root
def test_failure_mid_build_leaves_no_output(src: Path, tmp_path: Path) -> None:
    # A real ENOSPC half way through: a 64 KiB tmpfs cannot hold busybox.
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(ImageError, match="cannot build .*out.aci"):
            build_aci(src, small / "out.aci", compress=False)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_cli_build_prints_the_image_id(podrun, src: Path, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "cli.aci"
    res = podrun.run("image", "build", src, out)
    assert res.returncode == 0, res.stderr
    assert res.stdout == image_id_of(out) + "\n"
    assert actool_validate(out).returncode == 0
    res = podrun.run("image", "build", "--no-compression", "--owner-root", src, out)
    assert res.returncode == 254
    assert res.stderr.count("\n") == 1 and "already exists" in res.stderr
    res = podrun.run("image", "build", "--no-compression", "--overwrite", src, out)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:2] != b"\x1f\x8b"
    assert actool_validate(out).returncode == 0


def test_cli_build_invalid_manifest(podrun, src: Path, tmp_path: Path) -> None:  # noqa: ANN001
    (src / "manifest").write_text("[]")
    out = tmp_path / "bad.aci"
    res = podrun.run("image", "build", src, out)
    assert res.returncode == 254
    assert res.stderr.startswith("podrun: ") and res.stderr.count("\n") == 1
    assert res.stdout == ""
    assert not out.exists()


def test_output_inside_rootfs_is_not_archived(src: Path) -> None:
    out = src / "rootfs" / "self.aci"
    first = build_aci(src, out)
    assert build_aci(src, out, overwrite=True) == first
    with tarfile.open(out) as tf:
        assert not [m.name for m in tf if "self.aci" in m.name]

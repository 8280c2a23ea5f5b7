"""Unit tests of the conversion pieces that need no registry: references and names,
the layer model (whiteout order, opaque dirs, replacements, hardlinks), the layer
cache (verification, interrupted downloads), the store's contained whiteouts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from podrun.appc.manifest import ImageManifest
from podrun.convert import layers as lay
from podrun.convert.appmap import appc_arch, user_group
from podrun.convert.cache import LayerCache
from podrun.convert.reference import appc_name, parse
from podrun.convert.sources import Platform, select_platform
from podrun.errors import ImageError, NotFoundError, UnsafeArchiveError, UsageError
from podrun.store.store import apply_whiteouts
from tests.registry import TarEntry, layer_tar


@pytest.mark.parametrize(("text", "want"), [
    ("docker://busybox", ("docker.io", "library/busybox", "latest", None)),
    ("busybox:1.36", ("docker.io", "library/busybox", "1.36", None)),
    ("docker://quay.io/coreos/etcd", ("quay.io", "coreos/etcd", "latest", None)),
    ("docker://127.0.0.1:5000/a/b:v1", ("127.0.0.1:5000", "a/b", "v1", None)),
    ("docker://localhost/x", ("localhost", "x", "latest", None)),
    ("docker://index.docker.io/user/app", ("docker.io", "user/app", "latest", None)),
    ("docker://r.io/a@sha256:" + "a" * 64, ("r.io", "a", None, "sha256:" + "a" * 64)),
    ("docker://r.io/a:t@sha256:" + "b" * 64, ("r.io", "a", "t", "sha256:" + "b" * 64)),
])
def test_parse_reference(text: str, want: tuple) -> None:
    r = parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == want


def test_reference_mapping() -> None:
    assert parse("docker://busybox").appc_name() == "docker.io/library/busybox"
    assert parse("docker://busybox").api_host == "registry-1.docker.io"
    assert parse("docker://127.0.0.1:5000/my__app/x").appc_name() == "127.0.0.1-5000/my_app/x"
    assert appc_name("Weird Name!") == "weird-name"
    for bad in ("docker://UPPER/x", "docker://a/b:bad tag", "docker://a@sha256:12", ""):
        with pytest.raises(UsageError):
            parse(bad)


def test_user_group_and_arch() -> None:
    passwd = b"root:x:0:0::/:/bin/sh\nweb:x:33:44::/:/bin/sh\n"
    assert user_group("", passwd) == ("0", "0")
    assert user_group("web", passwd) == ("web", "44")
    assert user_group("33", passwd) == ("33", "44")
    assert user_group("web:staff", passwd) == ("web", "staff")
    assert user_group("nobody", passwd) == ("nobody", "0")
    assert appc_arch("arm64") == "aarch64" and appc_arch("arm", "v6") == "armv6l"
    assert appc_arch("riscv64") is None


def test_platform_selection() -> None:
    index = {"manifests": [
        {"digest": "a", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "b", "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    assert select_platform(index, Platform("linux", "amd64"), "x")["digest"] == "b"
    assert select_platform(index, Platform("linux", "arm", "v7"), "x")["digest"] == "a"
    assert select_platform(index, Platform("linux", "arm"), "x")["digest"] == "a"
    with pytest.raises(NotFoundError, match="linux/arm/v7, linux/amd64"):
        select_platform(index, Platform("linux", "s390x"), "x")


# --- the layer model --------------------------------------------------------------------

def _tars(tmp_path: Path, *layers: list[TarEntry]) -> list[tarfile.TarFile]:
    out = []
    for i, entries in enumerate(layers):
        p = tmp_path / f"l{i}.tar"
        p.write_bytes(layer_tar(entries))
        out.append(lay.open_layer(p, f"layer {i}"))
    return out


def _apply(tmp_path: Path, *layers: list[TarEntry]) -> tuple[lay.Rootfs, list, list]:
    tars = _tars(tmp_path, *layers)
    root = lay.Rootfs()
    diffs = [root.apply(i, tf, f"layer {i}") for i, tf in enumerate(tars)]
    return root, diffs, tars


def test_whiteouts_apply_to_lower_layers_only(tmp_path: Path) -> None:
    root, diffs, _ = _apply(tmp_path, [
        TarEntry("d", tarfile.DIRTYPE, mode=0o755), TarEntry("d/old", data=b"o"),
        TarEntry("f", data=b"f"),
    ], [
        # the whiteout comes after a same-layer file in the dir: that file must stay
        TarEntry("d/new", data=b"n"), TarEntry("d/.wh..wh..opq"),
        TarEntry("g", data=b"g"), TarEntry(".wh.f"),
    ])
    assert sorted(root.nodes) == ["", "d", "d/new", "g"]
    assert diffs[1].whiteouts == ["f"] and diffs[1].opaque == ["d"]
    assert ".wh.f" not in {e.path for e in diffs[1].entries}


def test_replacements_and_hardlinks(tmp_path: Path) -> None:
    root, diffs, tars = _apply(tmp_path, [
        TarEntry("dir", tarfile.DIRTYPE), TarEntry("dir/child", data=b"c"),
        TarEntry("a", data=b"first"),
    ], [
        TarEntry("link", tarfile.LNKTYPE, linkname="a"),
        TarEntry("a", data=b"second"),            # replaces a; link keeps the old inode
        TarEntry("dir", data=b"now a file"),      # a file over a directory drops its subtree
    ])
    entries = {e.path: e for e in root.squashed()}
    assert "dir/child" not in entries and entries["dir"].ti.isreg()
    assert entries["link"].data is not None and entries["link"].data[0] == 0
    assert entries["a"].data is not None and entries["a"].data[0] == 1
    # layered: the cross-layer link becomes data, since no lower path holds the inode now
    layer1 = {e.path: e for e in diffs[1].entries}
    assert layer1["link"].link_to is None and layer1["link"].data is not None


def test_root_entry_and_implicit_parents(tmp_path: Path) -> None:
    root, _, _ = _apply(tmp_path, [TarEntry(".", tarfile.DIRTYPE, mode=0o700, uid=3),
                                   TarEntry("x/y/z", data=b"z")])
    entries = root.squashed()
    assert [e.path for e in entries] == ["", "x", "x/y", "x/y/z"]
    assert entries[0].ti.mode == 0o700 and entries[0].ti.uid == 3
    assert entries[1].ti.mode == 0o755 and entries[1].ti.uid == 0


def test_bad_layers(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        _apply(tmp_path, [TarEntry("a/../../etc/passwd", data=b"x")])
    with pytest.raises(ImageError, match="not a directory"):
        _apply(tmp_path, [TarEntry("f", data=b"x"), TarEntry("f/g", data=b"y")])
    with pytest.raises(ImageError, match="target is missing"):
        _apply(tmp_path, [TarEntry("l", tarfile.LNKTYPE, linkname="none")])


def test_unpadded_layer_is_read(tmp_path: Path) -> None:
    """umoci insert writes layers without padding or end blocks; they still read."""
    data = layer_tar([TarEntry("f", data=b"abc")])
    p = tmp_path / "l.tar"
    p.write_bytes(data[: 512 + 3])
    tf = lay.open_layer(p, "l")
    root = lay.Rootfs()
    root.apply(0, tf, "l")
    assert root.read_file("f", [tf]) == b"abc"


# --- the cache ---------------------------------------------------------------------------

def test_cache_verifies_and_never_keeps_bad_blobs(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path)
    tar = layer_tar([TarEntry("f", data=b"hello" * 1000)])
    blob = gzip.compress(tar[:3000]) + gzip.compress(tar[3000:])  # two gzip members
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    diff = "sha256:" + hashlib.sha256(tar).hexdigest()
    with pytest.raises(ImageError, match="digest mismatch"):
        cache.ingest_layer([blob[:-1] + b"x"], digest=digest, diff_id=diff, label="l")
    with pytest.raises(ImageError, match="config says"):
        cache.ingest_layer([blob], digest=digest, diff_id="sha256:" + "0" * 64, label="l")

    def interrupted():  # type: ignore[no-untyped-def]
        yield blob[:100]
        raise ConnectionError("network gone")

    with pytest.raises(ConnectionError):
        cache.ingest_layer(interrupted(), digest=digest, diff_id=diff, label="l")
    assert cache.lookup(digest, None) is None and not any(cache.tmp.iterdir())
    assert not any(cache.layers.iterdir())
    got, path = cache.ingest_layer(iter([blob[:10], blob[10:]]), digest=digest, diff_id=diff,
                                   label="l")
    assert got == diff and path.read_bytes() == tar
    assert cache.lookup(digest, None) == path
    path.write_bytes(b"corrupted on disk")
    assert cache.lookup(digest, None) is None  # re-verified, dropped, fetched again


# --- the store's whiteouts (layered mode) -------------------------------------------------

@pytest.mark.root
def test_store_whiteouts_stay_inside_rootfs(tmp_path: Path) -> None:
    rootfs, outside = tmp_path / "rootfs", tmp_path / "outside"
    (rootfs / "d/sub").mkdir(parents=True)
    (rootfs / "d/sub/f").write_text("x")
    (rootfs / "keep").write_text("k")
    (outside / "victim").mkdir(parents=True)
    (outside / "victim/file").write_text("must survive")
    os.symlink(str(outside), rootfs / "link")
    os.symlink("../outside", rootfs / "rel")
    m = ImageManifest.from_json({
        "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "docker-layer/x",
        "annotations": [
            {"name": "podrun.io/whiteouts", "value": json.dumps(
                ["link/victim", "rel/victim/file", "../outside/victim", "d/sub/f"])},
            {"name": "podrun.io/opaque-dirs", "value": json.dumps(["link", "d"])},
        ]})
    apply_whiteouts(rootfs, m)
    assert (outside / "victim/file").read_text() == "must survive"
    assert not (rootfs / "d/sub").exists() and (rootfs / "d").is_dir()
    assert (rootfs / "keep").exists() and (rootfs / "link").is_symlink()


def test_layer_tar_bytes_roundtrip() -> None:
    # the test helper itself: PAX xattrs survive
    data = layer_tar([TarEntry("f", data=b"x", xattrs={"user.a": "b"})])
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert tf.getmember("f").pax_headers["SCHILY.xattr.user.a"] == "b"


def test_cache_sweeps_downloads_of_dead_processes(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path)
    dead = cache.tmp / "layer-999999999-abc"
    mine = cache.tmp / f"layer-{os.getpid()}-abc"
    dead.write_bytes(b"half a layer")
    mine.write_bytes(b"in progress")
    LayerCache(tmp_path)
    assert not dead.exists() and mine.exists()

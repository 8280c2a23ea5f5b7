"""The image store through its API and the real CLI: import, lookup, render, rm, gc."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from podrun.errors import AmbiguousError, ImageError, NotFoundError, StoreError
from podrun.store.store import Store, parse_image_string
from tests.images import actool_validate, tiny_aci

INSECURE = "--insecure-options=image"


def uncompressed_sha512(aci: Path) -> str:
    return "sha512-" + hashlib.sha512(gzip.decompress(aci.read_bytes())).hexdigest()


def test_import_id_is_sha512_of_uncompressed_tar(tmp_path: Path) -> None:
    aci = tiny_aci(tmp_path, "example.com/hello", files={"hello": b"hi\n"})
    store = Store(tmp_path / "data")
    image_id = store.import_aci(aci)
    assert image_id == uncompressed_sha512(aci)
    blob = store.blob_path(image_id)
    assert blob.is_file()
    assert "sha512-" + hashlib.sha512(blob.read_bytes()).hexdigest() == image_id
    rec = store.get(image_id)
    assert rec.name == "example.com/hello"
    assert rec.labels == {"version": "1.0.0", "os": "linux", "arch": "amd64"}
    assert rec.size == blob.stat().st_size
    # Importing again is idempotent: one blob, one row.
    assert store.import_aci(aci) == image_id
    assert [r.id for r in store.images()] == [image_id]


def test_resolve_prefix_name_and_ambiguity(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    ids = [store.import_aci(tiny_aci(tmp_path, f"example.com/img{i}", files={"f": str(i).encode()}))
           for i in range(17)]
    full = ids[0]
    assert store.resolve(full) == full
    assert store.resolve(full[:20]) == full
    assert store.resolve("example.com/img3") == ids[3]
    assert store.resolve("example.com/img3:1.0.0") == ids[3]
    with pytest.raises(NotFoundError):
        store.resolve("example.com/img3:2.0")
    # 17 IDs over 16 possible first hex digits: some one-digit prefix matches two.
    firsts = [i[len("sha512-")] for i in ids]
    dup = next(c for c in firsts if firsts.count(c) > 1)
    with pytest.raises(AmbiguousError, match="ambiguous"):
        store.resolve("sha512-" + dup)
    with pytest.raises(ImageError):
        store.resolve("sha512-XYZ")
    with pytest.raises(NotFoundError):
        store.resolve("sha512-" + ("0" * 128 if firsts.count("0") == 0 else "f" * 128))


def test_parse_image_string() -> None:
    assert parse_image_string("example.com/app") == ("example.com/app", {})
    assert parse_image_string("example.com/app:1.2,os=linux") == (
        "example.com/app", {"version": "1.2", "os": "linux"})
    with pytest.raises(ImageError):
        parse_image_string("example.com/app,os")


def test_render_dependencies_in_order_and_whitelist(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    base = store.import_aci(tiny_aci(tmp_path, "example.com/base", files={
        "etc/os": b"base\n", "etc/keep": b"base-keep\n", "usr/lib/a": b"a\n", "drop": b"x\n"}))
    mid = store.import_aci(tiny_aci(tmp_path, "example.com/mid", files={"etc/os": b"mid\n"},
                                    dependencies=[{"imageName": "example.com/base",
                                                   "imageID": base}]))
    top_aci = tiny_aci(
        tmp_path, "example.com/top", files={"app": b"top\n"},
        dependencies=[{"imageName": "example.com/mid",
                       "labels": [{"name": "version", "value": "1.0.0"}]}],
        pathWhitelist=["/etc/os", "/etc/keep", "/usr/lib/a", "/app"])
    top = store.import_aci(top_aci)
    assert store.flatten(top) == [base, mid, top]
    tree = store.render(top)
    root = tree.rootfs
    assert (root / "etc/os").read_text() == "mid\n"  # later layer wins
    assert (root / "etc/keep").read_text() == "base-keep\n"
    assert (root / "usr/lib/a").read_text() == "a\n"
    assert (root / "app").read_text() == "top\n"
    assert not (root / "drop").exists()  # not whitelisted
    assert json.loads((tree.path / "manifest").read_text())["name"] == "example.com/top"
    # One tree per flattened dependency list: rendering again reuses it.
    assert store.render(top).path == tree.path
    assert len(store.index.trees()) == 1
    store.verify_tree(top)
    (root / "app").write_text("tampered\n")
    with pytest.raises(StoreError, match="modified"):
        store.verify_tree(top)


def test_missing_dependency_is_an_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    top = store.import_aci(tiny_aci(tmp_path, "example.com/lonely", files={"x": b"x"},
                                    dependencies=[{"imageName": "example.com/nowhere"}]))
    with pytest.raises(NotFoundError, match="example.com/nowhere"):
        store.render(top)


def test_corrupt_blob_is_detected_on_render(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    image_id = store.import_aci(tiny_aci(tmp_path, "example.com/c", files={"x": b"x" * 1000}))
    blob = store.blob_path(image_id)
    data = bytearray(blob.read_bytes())
    data[600] ^= 0xFF
    blob.write_bytes(bytes(data))
    # A later process (not the one that wrote and hashed the blob) re-hashes it.
    with pytest.raises(StoreError, match="corrupt"):
        Store(tmp_path / "data").render(image_id)


def test_rm_and_gc(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    a = store.import_aci(tiny_aci(tmp_path, "example.com/a", files={"x": b"a"}))
    b = store.import_aci(tiny_aci(tmp_path, "example.com/b", files={"x": b"b"}))
    tree_b = store.render(b)
    store.remove_image(a)
    assert not store.blob_path(a).exists()
    with pytest.raises(NotFoundError):
        store.get(a)
    # A tree held by a pod (shared lock) survives gc; once released it goes.
    lock = store.tree_lock(tree_b.key)
    assert lock.acquire(shared=True)
    # Leftovers of a dead process and an unindexed blob are swept.
    (store.tmp / "blob-999999999-dead").write_bytes(b"junk")
    stray = store.blobs / "ab" / ("ab" + "0" * 126)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"junk")
    assert store.gc(0) == []  # b is in use by the tree lock holder
    assert tree_b.path.is_dir() and store.blob_path(b).exists()
    assert not (store.tmp / "blob-999999999-dead").exists()
    assert not stray.exists()
    lock.release()
    assert store.gc(3600) == []  # used recently: kept
    assert store.gc(0) == [b]
    assert not tree_b.path.exists()
    assert store.images() == []


def test_cli_image_commands(podrun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    aci = tiny_aci(tmp_path, "example.com/cli", files={"etc/msg": b"hello\n"}, busybox=True,
                   exec_=["/bin/sh"])
    r = podrun.run(INSECURE, "fetch", aci, check=True)
    image_id = r.stdout.strip()
    assert image_id == uncompressed_sha512(aci)
    assert "signature verification" in r.stderr  # the insecure warning

    listing = json.loads(podrun.run("image", "list", "--format", "json", check=True).stdout)
    assert [(i["id"], i["name"]) for i in listing] == [(image_id, "example.com/cli")]
    table = podrun.run("image", "list", check=True).stdout.splitlines()
    assert table[0].split()[:2] == ["ID", "NAME"]
    assert "example.com/cli:1.0.0" in table[1] and image_id[:39] in table[1]
    assert image_id not in table[1]  # short IDs unless --full
    assert image_id in podrun.run("image", "list", "--full", "--no-legend", check=True).stdout
    assert len(podrun.run("image", "list", "--no-legend", check=True).stdout.splitlines()) == 1

    m = json.loads(podrun.run("image", "cat-manifest", image_id[:24], check=True).stdout)
    assert m["name"] == "example.com/cli"

    out = tmp_path / "out.aci"
    podrun.run("image", "export", "example.com/cli", out, check=True)
    assert uncompressed_sha512(out) == image_id
    assert actool_validate(out).returncode == 0
    assert podrun.run("image", "export", image_id, out).returncode == 254  # exists
    podrun.run("image", "export", image_id, out, "--overwrite", check=True)

    ext = tmp_path / "new" / "extracted"
    podrun.run("image", "extract", image_id, ext, check=True)
    assert (ext / "manifest").is_file() and (ext / "rootfs/etc/msg").read_text() == "hello\n"
    r = podrun.run("image", "extract", image_id, ext)
    assert r.returncode == 254 and "not empty" in r.stderr
    ro = tmp_path / "ro"
    podrun.run("image", "render", image_id, ro, "--rootfs-only", check=True)
    assert (ro / "etc/msg").is_file() and not (ro / "manifest").exists()
    assert os.path.islink(ro / "bin/sh")

    r = podrun.run("image", "verify", image_id, check=True)
    assert "ok" in r.stdout
    r = podrun.run("image", "rm", image_id, "sha512-0000", check=False)
    assert r.returncode == 254 and "sha512-0000" in r.stderr
    assert f"removed image {image_id}" in r.stdout
    assert json.loads(podrun.run("image", "list", "--format=json", check=True).stdout) == []


def test_cli_errors_are_one_line(podrun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for args in (["image", "cat-manifest", "sha512-abc"], ["image", "rm", "example.com/none"],
                 ["fetch", str(tmp_path / "missing.aci")], ["image", "gc", "--grace-period=x"],
                 ["image", "list", "--bogus"]):
        r = podrun.run(*args)
        assert r.returncode == 254, (args, r)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("podrun: "), r.stderr


def test_image_list_does_not_import_heavy_modules(podrun) -> None:  # type: ignore[no-untyped-def]
    code = ("import sys; from podrun.stage0.cli import main; rc = main(['image', 'list']); "
            "heavy = [m for m in ('requests', 'jsonschema', 'gnupg', 'pyroute2') "
            "if m in sys.modules]; print('HEAVY', heavy); sys.exit(rc)")
    proc = subprocess.run([os.sys.executable, "-c", code], env=podrun.env, capture_output=True,
                          text=True, check=True)
    assert "HEAVY []" in proc.stdout


def test_gc_keeps_dependencies_of_kept_images(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    base = store.import_aci(tiny_aci(tmp_path, "example.com/base", files={"b": b"b"}))
    top = store.import_aci(tiny_aci(tmp_path, "example.com/top", files={"t": b"t"},
                                    dependencies=[{"imageName": "example.com/base",
                                                   "imageID": base}]))
    old = time.time() - 7200
    store.index.touch_image(base, when=old)  # not used directly for two hours
    assert store.gc(3600) == []  # top is recent and needs base
    assert {r.id for r in store.images()} == {base, top}
    store.render(top)  # rendering uses (and so refreshes) every layer of the tree
    assert store.get(base).last_used > old
    store.index.touch_image(base, top, when=old)
    assert sorted(store.gc(3600)) == sorted([base, top])

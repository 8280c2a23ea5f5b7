"""Contained extraction (podrun.store.extract): a hostile tar corpus and what must survive.

Every hostile case runs against a sandbox: ``sandbox/`` holds sentinel files and
``sandbox/dest`` is the extraction target. The whole sandbox outside ``dest``, the
host's ``/etc/passwd`` and a sentinel path in ``/tmp`` are snapshotted before and
compared after; each case also asserts the specific error or where the write landed.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podrun.errors import ImageError, UnsafeArchiveError
from podrun.store.extract import extract_tar

pytestmark = pytest.mark.root

# A valid VFS v2 file capability blob: cap_net_raw (bit 13) permitted + effective.
CAP_NET_RAW = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")


# ----------------------------------------------------------------------------- helpers

def _info(name: str, type_: bytes, **kw: Any) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = kw.pop("mode", 0o755 if type_ == tarfile.DIRTYPE else 0o644)
    ti.mtime = kw.pop("mtime", 1_600_000_000)
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def make_tar(path: Path, entries: list[tuple]) -> Path:
    """Write a tar of ``entries``: ("file", name, data[, kw]), ("dir", name[, kw]),
    ("sym", name, target), ("link", name, target), ("chr"/"blk", name, major, minor),
    ("fifo", name)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, *rest in entries:
            kw = rest[-1] if rest and isinstance(rest[-1], dict) else {}
            if kind == "file":
                data = rest[0]
                tf.addfile(_info(name, tarfile.REGTYPE, size=len(data), **kw), io.BytesIO(data))
            elif kind == "dir":
                tf.addfile(_info(name, tarfile.DIRTYPE, **kw))
            elif kind == "sym":
                tf.addfile(_info(name, tarfile.SYMTYPE, linkname=rest[0], mode=0o777, **kw))
            elif kind == "link":
                tf.addfile(_info(name, tarfile.LNKTYPE, linkname=rest[0], **kw))
            elif kind in ("chr", "blk"):
                type_ = tarfile.CHRTYPE if kind == "chr" else tarfile.BLKTYPE
                tf.addfile(_info(name, type_, devmajor=rest[0], devminor=rest[1], **kw))
            elif kind == "fifo":
                tf.addfile(_info(name, tarfile.FIFOTYPE, **kw))
            else:
                raise ValueError(kind)
    return path


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """lstat + content hash of every path under ``root`` except the ``skip`` subtree."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None:
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in [*dirnames, *filenames, "."]:
            p = Path(dirpath, name)
            st = os.lstat(p)
            digest = (hashlib.sha256(p.read_bytes()).hexdigest()
                      if stat.S_ISREG(st.st_mode) else
                      os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)
            out[str(p)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink,
                           st.st_mtime_ns, digest)
    return out


def host_file(path: str) -> tuple | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    data = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) else b""
    return st.st_mode, st.st_nlink, st.st_mtime_ns, hashlib.sha256(data).hexdigest()


class Sandbox:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dest = root / "dest"
        self.dest.mkdir(parents=True)
        (root / "sentinel").write_text("do not touch\n")
        (root / "outside").mkdir()
        (root / "outside" / "file").write_text("outside\n")
        self.tmp_sentinel = f"/tmp/podrun-extract-{secrets.token_hex(6)}"
        self.tars = root / "tars"
        self.tars.mkdir()
        self._before: dict[str, tuple] = {}
        self._host: dict[str, tuple | None] = {}

    def tar(self, name: str, entries: list[tuple]) -> Path:
        return make_tar(self.tars / name, entries)

    def __enter__(self) -> Sandbox:
        self._before = snapshot(self.root, skip=self.dest)
        self._host = {p: host_file(p) for p in ("/etc/passwd", "/etc/shadow", "/evil",
                                                  "/tmp/evil", self.tmp_sentinel)}
        return self

    def __exit__(self, *exc: object) -> None:
        after = snapshot(self.root, skip=self.dest)
        assert after == self._before, "something outside dest changed"
        for p, before in self._host.items():
            assert host_file(p) == before, f"host path {p} changed"

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp_sentinel, ignore_errors=True)
        if os.path.lexists(self.tmp_sentinel):
            os.unlink(self.tmp_sentinel)


@pytest.fixture
def sb(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path / "sandbox")
    yield box
    box.cleanup()


def _try_extract(tar: Path, dest: Path, **kw: Any) -> ImageError | None:
    try:
        extract_tar(tar, dest, **kw)
    except ImageError as err:
        return err
    return None


# ------------------------------------------------------------------- hostile names: rejected

@pytest.mark.parametrize("name", ["../evil", "rootfs/../../evil", "rootfs/a/../../../evil",
                                  "/abs/evil", "/tmp/evil", "/rootfs/evil"])
@pytest.mark.parametrize("strip", ["rootfs", None])
def test_escaping_names_are_rejected(sb: Sandbox, name: str, strip: str | None) -> None:
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("file", name, b"evil\n")])
    with sb, pytest.raises(UnsafeArchiveError) as exc:
        extract_tar(tar, sb.dest, strip=strip)
    assert repr(name) in str(exc.value)
    assert "\n" not in str(exc.value)
    assert not (sb.root / "evil").exists() and not (sb.root.parent / "evil").exists()


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "rootfs/../../outside/file",
                                    "manifest"])
def test_hardlink_out_of_tree_is_rejected(sb: Sandbox, target: str) -> None:
    tar = sb.tar("t.tar", [("file", "manifest", b"{}"), ("dir", "rootfs"),
                           ("link", "rootfs/h", target)])
    with sb, pytest.raises(UnsafeArchiveError, match="hardlink|escapes|absolute"):
        extract_tar(tar, sb.dest)
    assert not os.path.lexists(sb.dest / "h")


# ---------------------------------------------------------- symlink tricks: contained in dest

def test_write_through_symlink_to_root_stays_in_dest(sb: Sandbox) -> None:
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("sym", "rootfs/x", "/"),
                           ("file", "rootfs/x/evil", b"evil\n"),
                           ("sym", "rootfs/t", "/tmp"),
                           ("file", f"rootfs/t/{Path(sb.tmp_sentinel).name}", b"evil\n")])
    with sb:
        err = _try_extract(tar, sb.dest)
    assert err is None or "\n" not in str(err)
    if err is None:
        assert (sb.dest / "evil").read_bytes() == b"evil\n"
    assert os.readlink(sb.dest / "x") == "/"


def test_write_through_dotdot_symlink_stays_in_dest(sb: Sandbox) -> None:
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("dir", "rootfs/a"),
                           ("sym", "rootfs/a/up", "../../../../../.."),
                           ("file", "rootfs/a/up/evil", b"evil\n"),
                           ("file", "rootfs/a/up/sentinel", b"overwritten\n")])
    with sb:
        extract_tar(tar, sb.dest)
    assert (sb.dest / "evil").read_bytes() == b"evil\n"
    assert (sb.dest / "sentinel").read_bytes() == b"overwritten\n"


def test_write_through_symlink_to_host_path_stays_in_dest(sb: Sandbox) -> None:
    outside = sb.root / "outside"
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("sym", "rootfs/o", str(outside)),
                           ("file", "rootfs/o/file", b"evil\n"),
                           ("file", "rootfs/o/new", b"evil\n")])
    with sb:
        err = _try_extract(tar, sb.dest)
    assert err is None or "\n" not in str(err)
    if err is None:  # the host path was recreated inside dest
        assert (sb.dest / str(outside).lstrip("/") / "file").read_bytes() == b"evil\n"


def test_duplicate_entry_dir_then_symlink_then_write(sb: Sandbox) -> None:
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("dir", "rootfs/d"),
                           ("file", "rootfs/d/f", b"first\n"),
                           ("sym", "rootfs/d", "../../../.."),
                           ("file", "rootfs/d/evil", b"evil\n"),
                           ("sym", "rootfs/d", str(sb.root)),
                           ("file", "rootfs/d/sentinel", b"evil\n")])
    with sb:
        err = _try_extract(tar, sb.dest)
    assert err is None or "\n" not in str(err)
    assert (sb.dest / "evil").read_bytes() == b"evil\n"
    assert os.path.islink(sb.dest / "d")


def test_layer2_writes_through_symlink_laid_by_layer1(sb: Sandbox) -> None:
    layer1 = sb.tar("l1.tar", [("dir", "rootfs"), ("dir", "rootfs/etc"),
                               ("sym", "rootfs/l", str(sb.root)),
                               ("sym", "rootfs/u", "../../.."), ("sym", "rootfs/e", "/etc")])
    layer2 = sb.tar("l2.tar", [("dir", "rootfs"), ("file", "rootfs/u/evil", b"evil\n"),
                               ("file", "rootfs/e/passwd", b"root::0:0::/:/bin/sh\n"),
                               ("file", "rootfs/l/sentinel", b"evil\n")])
    with sb:
        extract_tar(layer1, sb.dest)
        err = _try_extract(layer2, sb.dest)
    # The last entry's parent is a dangling symlink inside the chroot: a clean error.
    assert isinstance(err, ImageError) and "rootfs/l/sentinel" in str(err)
    assert "\n" not in str(err)
    assert (sb.dest / "evil").read_bytes() == b"evil\n"
    assert (sb.dest / "etc" / "passwd").read_bytes() == b"root::0:0::/:/bin/sh\n"


def test_file_replaces_symlink_instead_of_writing_through(sb: Sandbox) -> None:
    host_target = sb.root / "sentinel"
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("sym", "rootfs/s", str(host_target)),
                           ("sym", "rootfs/p", "/etc/passwd"),
                           ("file", "rootfs/s", b"replaced\n"),
                           ("file", "rootfs/p", b"replaced\n")])
    with sb:
        extract_tar(tar, sb.dest)
    for name in ("s", "p"):
        assert not os.path.islink(sb.dest / name)
        assert (sb.dest / name).read_bytes() == b"replaced\n"


def test_absolute_symlink_targets_are_kept_verbatim(sb: Sandbox) -> None:
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("sym", "rootfs/passwd", "/etc/passwd"),
                           ("sym", "rootfs/root", "/"), ("sym", "rootfs/dangling", "/nope")])
    with sb:
        extract_tar(tar, sb.dest)
    assert os.readlink(sb.dest / "passwd") == "/etc/passwd"
    assert os.readlink(sb.dest / "root") == "/"
    assert os.readlink(sb.dest / "dangling") == "/nope"


def test_hardlink_through_symlinked_dir_stays_in_dest(sb: Sandbox) -> None:
    passwd_before = os.stat("/etc/passwd").st_nlink
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("sym", "rootfs/e", "/etc"),
                           ("link", "rootfs/h", "rootfs/e/passwd")])
    with sb:
        err = _try_extract(tar, sb.dest)
    assert isinstance(err, ImageError) and "not found" in str(err)
    assert os.stat("/etc/passwd").st_nlink == passwd_before


def test_hardlinked_file_is_replaced_not_written_through(sb: Sandbox) -> None:
    l1 = sb.tar("l1.tar", [("dir", "rootfs"), ("file", "rootfs/a", b"original\n"),
                           ("link", "rootfs/b", "rootfs/a")])
    l2 = sb.tar("l2.tar", [("dir", "rootfs"), ("file", "rootfs/b", b"new\n")])
    with sb:
        extract_tar(l1, sb.dest)
        assert os.stat(sb.dest / "a").st_ino == os.stat(sb.dest / "b").st_ino
        extract_tar(l2, sb.dest)
    assert (sb.dest / "a").read_bytes() == b"original\n"
    assert (sb.dest / "b").read_bytes() == b"new\n"


def test_device_nodes_are_created_inside_dest(sb: Sandbox) -> None:
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("dir", "rootfs/dev"),
                           ("chr", "rootfs/dev/null", 1, 3, {"mode": 0o666}),
                           ("blk", "rootfs/dev/sda", 8, 0, {"mode": 0o660}),
                           ("fifo", "rootfs/dev/fifo")])
    with sb:
        extract_tar(tar, sb.dest)
    st = os.lstat(sb.dest / "dev" / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(sb.dest / "dev" / "sda")
    assert stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == 8
    assert stat.S_ISFIFO(os.lstat(sb.dest / "dev" / "fifo").st_mode)


def test_absolute_device_name_is_rejected(sb: Sandbox) -> None:
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("chr", "/tmp/evil", 1, 3)])
    with sb, pytest.raises(UnsafeArchiveError):
        extract_tar(tar, sb.dest, strip=None)


def test_file_under_a_regular_file_fails_cleanly(sb: Sandbox) -> None:
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("file", "rootfs/f", b"x"),
                           ("file", "rootfs/f/g", b"y")])
    with sb, pytest.raises(ImageError) as exc:
        extract_tar(tar, sb.dest)
    assert "f/g" in str(exc.value) and "\n" not in str(exc.value)


def test_truncated_archive_fails_cleanly(sb: Sandbox) -> None:
    tar = sb.tar("t.tar", [("dir", "rootfs"), ("file", "rootfs/big", b"x" * 100_000)])
    with open(tar, "r+b") as f:
        f.truncate(2048)
    with sb, pytest.raises(ImageError, match="truncated|unexpected|rootfs/big"):
        extract_tar(tar, sb.dest)


def test_missing_tar_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="nope.tar"):
        extract_tar(tmp_path / "nope.tar", tmp_path / "dest")


# ---------------------------------------------------------------- what must survive (root)

def test_owners_modes_setuid_sticky_mtimes(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "t.tar", [
        ("file", "manifest", b"{}"),
        ("dir", "rootfs", {"mode": 0o755}),
        ("dir", "rootfs/tmp", {"mode": 0o1777}),
        ("dir", "rootfs/ro", {"mode": 0o555, "uid": 7, "gid": 8, "mtime": 1234567}),
        ("file", "rootfs/ro/suid", b"#!/bin/sh\n", {"mode": 0o4755, "uid": 0, "gid": 0}),
        ("file", "rootfs/ro/sgid", b"x", {"mode": 0o2711, "uid": 1234, "gid": 5678}),
        ("file", "rootfs/ro/owned", b"x", {"mode": 0o4750, "uid": 1234, "gid": 5678,
                                           "mtime": 1_000_000}),
        ("sym", "rootfs/ro/link", "owned", {"uid": 42, "gid": 43, "mtime": 2_000_000}),
    ])
    dest = tmp_path / "dest"
    extract_tar(tar, dest)
    assert not (dest / "manifest").exists()
    assert stat.S_IMODE(os.stat(dest / "tmp").st_mode) == 0o1777
    st = os.stat(dest / "ro")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (0o555, 7, 8,
                                                                                  1234567)
    assert stat.S_IMODE(os.stat(dest / "ro" / "suid").st_mode) == 0o4755
    st = os.stat(dest / "ro" / "sgid")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o2711, 1234, 5678)
    st = os.stat(dest / "ro" / "owned")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4750, 1234, 5678)
    assert int(st.st_mtime) == 1_000_000
    st = os.lstat(dest / "ro" / "link")
    assert (st.st_uid, st.st_gid, int(st.st_mtime)) == (42, 43, 2_000_000)
    assert os.readlink(dest / "ro" / "link") == "owned"


def test_xattrs_and_security_capability(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "rootfs" / "bin").mkdir(parents=True)
    (src / "manifest").write_text("{}")
    binary = src / "rootfs" / "bin" / "ping"
    binary.write_bytes(b"\x7fELF-not-really")
    os.chmod(binary, 0o755)
    subprocess.run(["setcap", "cap_net_raw+ep", str(binary)], check=True)  # the real tool
    cap = os.getxattr(binary, "security.capability")
    os.setxattr(binary, "user.podrun", b"\x00\xffbinary value")
    tar = tmp_path / "t.tar"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--format=pax", "-C", str(src),
                    "-cf", str(tar), "manifest", "rootfs"], check=True)
    dest = tmp_path / "dest"
    extract_tar(tar, dest)
    out = dest / "bin" / "ping"
    assert os.getxattr(out, "security.capability") == cap
    assert os.getxattr(out, "user.podrun") == b"\x00\xffbinary value"
    assert "cap_net_raw" in subprocess.run(["getcap", str(out)], capture_output=True,
                                           text=True).stdout


def test_capability_survives_chown(tmp_path: Path) -> None:
    # chown(2) clears security.capability: it must be set after the owner.
    tar = tmp_path / "t.tar"
    ti = _info("rootfs/bin/ping", tarfile.REGTYPE, size=3, uid=1000, gid=1000)
    ti.pax_headers = {"SCHILY.xattr.security.capability":
                      CAP_NET_RAW.decode("utf-8", "surrogateescape")}
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(_info("rootfs", tarfile.DIRTYPE))
        tf.addfile(ti, io.BytesIO(b"abc"))
    extract_tar(tar, tmp_path / "dest")
    out = tmp_path / "dest" / "bin" / "ping"
    assert os.stat(out).st_uid == 1000
    assert os.getxattr(out, "security.capability") == CAP_NET_RAW


def test_hardlinks_survive(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "t.tar", [
        ("dir", "rootfs"), ("dir", "rootfs/bin"),
        ("file", "rootfs/bin/busybox", b"bb", {"mode": 0o755}),
        ("link", "rootfs/bin/sh", "rootfs/bin/busybox"),
        ("link", "./rootfs/bin/ash", "./rootfs/bin/busybox"),
    ])
    dest = tmp_path / "dest"
    extract_tar(tar, dest)
    ino = os.stat(dest / "bin" / "busybox").st_ino
    assert os.stat(dest / "bin" / "sh").st_ino == ino == os.stat(dest / "bin" / "ash").st_ino
    assert os.stat(dest / "bin" / "busybox").st_nlink == 3


def test_strip_none_keeps_manifest_and_rootfs(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "t.tar", [("file", "manifest", b'{"a":1}'), ("dir", "rootfs"),
                                        ("file", "rootfs/f", b"f"),
                                        ("link", "rootfs/g", "rootfs/f")])
    extract_tar(tar, tmp_path / "dest", strip=None)
    assert (tmp_path / "dest" / "manifest").read_bytes() == b'{"a":1}'
    assert (tmp_path / "dest" / "rootfs" / "g").read_bytes() == b"f"


def test_keep_filters_entries(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "t.tar", [("dir", "rootfs"), ("dir", "rootfs/bin"),
                                        ("file", "rootfs/bin/sh", b"sh"),
                                        ("file", "rootfs/bin/ls", b"ls"),
                                        ("dir", "rootfs/etc"),
                                        ("file", "rootfs/etc/passwd", b"p")])
    extract_tar(tar, tmp_path / "dest",
                keep=lambda p: p in ("bin", "bin/sh", "etc/passwd"))
    dest = tmp_path / "dest"
    assert (dest / "bin" / "sh").exists() and (dest / "etc" / "passwd").exists()
    assert not (dest / "bin" / "ls").exists()


def test_keep_materialises_hardlinks_to_filtered_files(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "t.tar", [
        ("dir", "rootfs"), ("dir", "rootfs/bin"),
        ("file", "rootfs/bin/busybox", b"bb", {"mode": 0o4755, "uid": 3}),
        ("link", "rootfs/bin/sh", "rootfs/bin/busybox"),
        ("link", "rootfs/bin/ash", "rootfs/bin/busybox"),
    ])
    dest = tmp_path / "dest"
    extract_tar(tar, dest, keep=lambda p: p != "bin/busybox")
    assert not (dest / "bin" / "busybox").exists()
    st = os.stat(dest / "bin" / "sh")
    assert (dest / "bin" / "sh").read_bytes() == b"bb"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_nlink) == (0o4755, 3, 2)
    assert os.stat(dest / "bin" / "ash").st_ino == st.st_ino


def test_layers_merge_dirs_and_replace_entries(tmp_path: Path) -> None:
    l1 = make_tar(tmp_path / "l1.tar", [
        ("dir", "rootfs"), ("dir", "rootfs/etc", {"mode": 0o755}),
        ("file", "rootfs/etc/a", b"a1"), ("file", "rootfs/etc/b", b"b1"),
        ("dir", "rootfs/was-dir"), ("file", "rootfs/was-dir/x", b"x"),
        ("file", "rootfs/was-file", b"f"), ("sym", "rootfs/was-link", "etc"),
    ])
    l2 = make_tar(tmp_path / "l2.tar", [
        ("dir", "rootfs"), ("dir", "rootfs/etc", {"mode": 0o700, "uid": 5}),
        ("file", "rootfs/etc/b", b"b2"), ("file", "rootfs/etc/c", b"c2"),
        ("file", "rootfs/was-dir", b"now a file"),
        ("dir", "rootfs/was-file"), ("dir", "rootfs/was-link"),
    ])
    dest = tmp_path / "dest"
    extract_tar(l1, dest)
    extract_tar(l2, dest)
    assert (dest / "etc" / "a").read_bytes() == b"a1"
    assert (dest / "etc" / "b").read_bytes() == b"b2"
    assert (dest / "etc" / "c").read_bytes() == b"c2"
    st = os.stat(dest / "etc")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 5)
    assert (dest / "was-dir").read_bytes() == b"now a file"
    assert (dest / "was-file").is_dir()
    assert (dest / "was-link").is_dir() and not (dest / "was-link").is_symlink()


def test_round_trip_of_a_built_image(tmp_path: Path) -> None:
    from podrun.appc.aci import build_aci
    from tests.images import image_dir

    src = image_dir(tmp_path / "img", "example.com/rt")
    os.link(src / "rootfs" / "bin" / "busybox", src / "rootfs" / "bin" / "bb")
    os.mknod(src / "rootfs" / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chown(src / "rootfs" / "home" / "user", 1000, 1000)
    aci = tmp_path / "rt.aci"
    build_aci(src, aci, compress=False)
    dest = tmp_path / "dest"
    extract_tar(aci, dest)
    assert snapshot_tree(dest) == snapshot_tree(src / "rootfs")


def snapshot_tree(root: Path) -> dict[str, tuple]:
    """Mode/owner/content/link target of each path, relative (mtimes are normalised)."""
    out = {}
    for key, (mode, uid, gid, size, nlink, _mtime, digest) in snapshot(root).items():
        out[os.path.relpath(key, root)] = (mode, uid, gid,
                                           size if not stat.S_ISDIR(mode) else 0, nlink, digest)
    return out


def test_extraction_speed_is_close_to_tar(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(40):
        d = src / "rootfs" / f"d{i}"
        d.mkdir(parents=True)
        for j in range(50):
            (d / f"f{j}").write_bytes(os.urandom(2048))
        os.symlink("f0", d / "link")
    (src / "manifest").write_text("{}")
    tar = tmp_path / "t.tar"
    subprocess.run(["tar", "-C", str(src), "-cf", str(tar), "manifest", "rootfs"], check=True)
    t0 = time.perf_counter()
    (tmp_path / "gnu").mkdir()
    subprocess.run(["tar", "-C", str(tmp_path / "gnu"), "-xpf", str(tar)], check=True)
    gnu = time.perf_counter() - t0
    t0 = time.perf_counter()
    extract_tar(tar, tmp_path / "ours")
    ours = time.perf_counter() - t0
    assert len(list((tmp_path / "ours").rglob("*"))) == 40 * 52
    print(f"extract_tar {ours:.3f}s vs tar -x {gnu:.3f}s")
    assert ours < 8 * gnu + 0.5, f"extract_tar {ours:.3f}s vs tar -x {gnu:.3f}s"


def test_sandbox_snapshot_detects_an_outside_change(sb: Sandbox) -> None:
    # The harness itself must be able to fail, or the containment tests prove nothing.
    with pytest.raises(AssertionError, match="outside dest"), sb:
        (sb.root / "outside" / "file").write_text("changed\n")
    with pytest.raises(AssertionError, match="host path"), sb:
        Path(sb.tmp_sentinel).write_text("x")


def test_not_a_tar_is_an_image_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"\x1f\x8b compressed blobs are not accepted here" * 30)
    with pytest.raises(ImageError, match="bogus.tar: not a tar archive"):
        extract_tar(bogus, tmp_path / "dest")


def test_dir_replaced_by_a_later_entry_does_not_fail(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "t.tar", [
        ("dir", "rootfs"), ("dir", "rootfs/a"), ("dir", "rootfs/a/b"),
        ("file", "rootfs/a", b"now a file"),
        ("dir", "rootfs/c", {"mtime": 1000}), ("dir", "rootfs/c", {"mtime": 2000}),
    ])
    dest = tmp_path / "dest"
    extract_tar(tar, dest)
    assert (dest / "a").read_bytes() == b"now a file"
    assert int(os.stat(dest / "c").st_mtime) == 2000


def test_overlay_xattrs_from_an_image_are_dropped(tmp_path: Path) -> None:
    tar = tmp_path / "t.tar"
    d = _info("rootfs/opaque", tarfile.DIRTYPE)
    d.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y",
                     "SCHILY.xattr.trusted.podrun": "kept"}
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(_info("rootfs", tarfile.DIRTYPE))
        tf.addfile(d)
    extract_tar(tar, tmp_path / "dest")
    out = tmp_path / "dest" / "opaque"
    assert "trusted.overlay.opaque" not in os.listxattr(out)
    assert os.getxattr(out, "trusted.podrun") == b"kept"

"""users.py (names from the image's own /etc files, appc rules) and the in-rootfs path
resolution it reads through (rootfs.resolve_in_root). No root needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podrun.stage2.rootfs import read_in_root, resolve_in_root
from podrun.stage2.users import groups_of, resolve_group, resolve_user, user_name


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "# comment\n"
        "broken line\n"
        "appuser:x:4242:4343:app:/home/app:/bin/sh\n"
        "1000:x:2000:2000:numeric name:/n:/bin/sh\n"
        "nohome:x:77:77::\n"
    )
    (root / "etc" / "group").write_text(
        "root:x:0:\nappgrp:x:4343:\nextra:x:4444:appuser,other\nmore:x:4545:other,appuser\n"
        "3000:x:3001:\n"
    )
    (root / "usr" / "bin").mkdir(parents=True)
    ping = root / "usr" / "bin" / "ping"
    ping.write_text("")
    if os.geteuid() == 0:
        os.chown(ping, 55, 66)
    return root


def test_names_from_image(image: Path) -> None:
    assert resolve_user(str(image), "appuser", "") == (4242, 4343, "/home/app")
    assert resolve_user(str(image), "appuser", "extra") == (4242, 4444, "/home/app")
    assert resolve_user(str(image), "root", "root") == (0, 0, "/root")


def test_numeric_ids(image: Path) -> None:
    assert resolve_user(str(image), "4242", "4343") == (4242, 4343, "/home/app")
    assert resolve_user(str(image), "9999", "9998") == (9999, 9998, "/")
    assert resolve_user(str(image), "9999", "") == (9999, 0, "/")
    assert resolve_user(str(image), "77", "") == (77, 77, "/")       # empty home → "/"


def test_all_numeric_names_resolve_as_names_first(image: Path) -> None:
    # appc: names are looked up first, numbers only when no entry matches
    assert resolve_user(str(image), "1000", "3000") == (2000, 3001, "/n")


def test_unknown_names_are_errors_naming_the_file(image: Path) -> None:
    with pytest.raises(ValueError, match=r"user 'nosuch' not found in the image's /etc/passwd"):
        resolve_user(str(image), "nosuch", "")
    with pytest.raises(ValueError, match=r"group 'nogroup' not found in the image's /etc/group"):
        resolve_user(str(image), "appuser", "nogroup")


def test_path_user_and_group(image: Path) -> None:
    st = (image / "usr" / "bin" / "ping").stat()
    assert resolve_user(str(image), "/usr/bin/ping", "/usr/bin/ping")[:2] == (st.st_uid,
                                                                              st.st_gid)
    with pytest.raises(ValueError, match="/nope"):
        resolve_group(str(image), "/nope")


def test_groups_of(image: Path) -> None:
    assert groups_of(str(image), "appuser") == [4444, 4545]
    assert groups_of(str(image), "root") == []
    assert user_name(str(image), 4242) == "appuser"
    assert user_name(str(image), 5) is None


def test_missing_etc_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert resolve_user(str(tmp_path / "empty"), "0", "0") == (0, 0, "/")
    with pytest.raises(ValueError, match="root"):
        resolve_user(str(tmp_path / "empty"), "root", "")


def test_passwd_symlink_cannot_reach_host_file(tmp_path: Path) -> None:
    host = tmp_path / "host-passwd"
    host.write_text("hostonly:x:4711:4711::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(host), root / "etc" / "passwd")          # absolute: means inside root
    with pytest.raises(ValueError, match="hostonly"):
        resolve_user(str(root), "hostonly", "")
    os.unlink(root / "etc" / "passwd")
    os.symlink("../../host-passwd", root / "etc" / "passwd")  # relative, climbing out
    with pytest.raises(ValueError, match="hostonly"):
        resolve_user(str(root), "hostonly", "")


# --- resolve_in_root (the securejoin users.py and mounts.py rely on) ---------------

def _resolved(root: Path, path: str, **kw: object) -> str:
    fd, resolved = resolve_in_root(str(root), path, **kw)  # type: ignore[arg-type]
    os.close(fd)
    return resolved


def test_resolve_symlinks_stay_in_root(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "a" / "b").mkdir(parents=True)
    os.symlink("/a", root / "abs")
    os.symlink("../../../../a/b", root / "a" / "up")
    os.symlink(str(tmp_path), root / "host")
    assert _resolved(root, "/abs/b") == "/a/b"
    assert _resolved(root, "a/up") == "/a/b"
    assert _resolved(root, "/../../a/../a/./b") == "/a/b"
    assert _resolved(root, "/") == "/"
    with pytest.raises(FileNotFoundError):
        _resolved(root, "/host/r")                   # the host path is not in the root
    assert _resolved(root, "/host/new/x", create="dir") == str(tmp_path) + "/new/x"
    assert (root / str(tmp_path).lstrip("/") / "new" / "x").is_dir()
    assert not (tmp_path / "new").exists()


def test_resolve_loops_and_files(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    (root / "f").write_text("x")
    with pytest.raises(OSError, match="too many symlinks"):
        _resolved(root, "/loop1")
    with pytest.raises(NotADirectoryError):
        _resolved(root, "/f/x")
    assert _resolved(root, "/d/newfile", create="file") == "/d/newfile"
    assert (root / "d" / "newfile").is_file()
    os.symlink("/f", root / "link-to-f")
    assert read_in_root(str(root), "/link-to-f") == b"x"
    assert read_in_root(str(root), "/missing") is None
    assert read_in_root(str(root), "/d") is None

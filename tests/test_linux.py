"""podrun.linux: the cffi bindings against the real kernel (forked children for
anything that changes process state)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import tempfile
from typing import Any

import pytest

import podrun.linux as L
from tests.forkutil import in_child


def status_field(name: str) -> str:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    raise KeyError(name)


def test_import_is_lazy() -> None:
    code = "import sys, podrun.linux; print('cffi' in sys.modules, '_cffi_backend' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_error_is_oserror_with_errno_and_path() -> None:
    with pytest.raises(OSError) as ei:
        L.umount2("/nonexistent-podrun-path")
    assert ei.value.errno in (errno.ENOENT, errno.EPERM)
    assert "/nonexistent-podrun-path" in str(ei.value)


def test_syscall_number_unknown() -> None:
    with pytest.raises(OSError) as ei:
        L.syscall_number("no_such_call")
    assert ei.value.errno == errno.ENOSYS
    assert L.syscall_number("pivot_root") in (155, 41)


def test_capget_matches_proc_status() -> None:
    s = L.capget()
    assert s.effective == int(status_field("CapEff"), 16)
    assert s.permitted == int(status_field("CapPrm"), 16)
    assert s.inheritable == int(status_field("CapInh"), 16)


def test_personality_query() -> None:
    assert L.personality() & 0xFF == L.PER_LINUX


def test_no_new_privs_in_child() -> None:
    def child() -> list[Any]:
        before = status_field("NoNewPrivs")
        L.set_no_new_privs()
        return [before, status_field("NoNewPrivs"), L.get_no_new_privs()]

    assert in_child(child) == ["0", "1", True]
    assert status_field("NoNewPrivs") == "0"


def test_prctl_helpers_in_child() -> None:
    def child() -> list[int]:
        L.set_dumpable(False)
        L.set_child_subreaper(True)
        L.set_pdeathsig(15)
        import ctypes

        sig, reaper = ctypes.c_int(0), ctypes.c_int(0)
        L.prctl(L.PR_GET_PDEATHSIG, ctypes.addressof(sig))
        L.prctl(L.PR_GET_CHILD_SUBREAPER, ctypes.addressof(reaper))
        return [L.prctl(L.PR_GET_DUMPABLE), reaper.value, sig.value]

    assert in_child(child) == [0, 1, 15]


def test_close_range_in_child() -> None:
    def child() -> list[bool]:
        null = os.open("/dev/null", os.O_RDONLY)
        fds = [os.dup2(null, fd) for fd in range(200, 204)]
        L.close_range(200, 202)
        alive = []
        for fd in fds:
            try:
                os.fstat(fd)
                alive.append(True)
            except OSError:
                alive.append(False)
        return alive

    assert in_child(child) == [False, False, False, True]


@pytest.mark.root
def test_unshare_uts_sethostname_and_setns_back() -> None:
    host = socket.gethostname()

    def child() -> list[str]:
        fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
        L.unshare(L.CLONE_NEWUTS)
        L.sethostname("podrun-test-uts")
        inside = socket.gethostname()
        L.setns(fd, L.CLONE_NEWUTS)
        return [inside, socket.gethostname()]

    assert in_child(child) == ["podrun-test-uts", host]
    assert socket.gethostname() == host


@pytest.mark.root
def test_setns_wrong_type_fails() -> None:
    fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as ei:
            L.setns(fd, L.CLONE_NEWNET)
        assert ei.value.errno == errno.EINVAL
    finally:
        os.close(fd)


@pytest.mark.root
def test_mount_tmpfs_and_pivot_root_in_private_mount_ns(tmp_path: Any) -> None:
    new_root = str(tmp_path / "root")
    os.mkdir(new_root)

    def child() -> list[Any]:
        L.unshare(L.CLONE_NEWNS)
        L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)
        L.mount("podrun-tmpfs", new_root, "tmpfs", L.MS_NOSUID | L.MS_NODEV, "size=1m,mode=755")
        with open(os.path.join(new_root, "marker"), "w") as f:
            f.write("x")
        os.mkdir(os.path.join(new_root, "old"))
        L.pivot_root(new_root, os.path.join(new_root, "old"))
        os.chdir("/")
        listing = sorted(os.listdir("/"))
        L.umount2("/old", L.MNT_DETACH)
        return [listing, sorted(os.listdir("/old"))]

    listing, old_after = in_child(child)
    assert listing == ["marker", "old"]
    assert old_after == []
    with open("/proc/self/mounts") as f:
        assert "podrun-tmpfs" not in f.read()
    assert os.listdir(new_root) == []


@pytest.mark.root
def test_mount_bad_fstype_names_target() -> None:
    def child() -> list[Any]:
        L.unshare(L.CLONE_NEWNS)
        L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)
        with tempfile.TemporaryDirectory() as d:
            try:
                L.mount("none", d, "no-such-fs")
            except OSError as e:
                return [e.errno, d in str(e)]
        return []

    assert in_child(child) == [errno.ENODEV, True]


def test_pidfd_send_signal() -> None:
    p = subprocess.Popen(["sleep", "60"])
    try:
        fd = os.pidfd_open(p.pid)
        try:
            L.pidfd_send_signal(fd, 15)
        finally:
            os.close(fd)
        assert p.wait(timeout=5) == -15
    finally:
        p.kill()
        p.wait()


def test_generated_cffi_modules_match_declarations() -> None:
    """The committed out-of-line modules are what _build.py makes from _ffi.py today."""
    from pathlib import Path

    from podrun.linux import _build

    for name in _build.MODULES:
        committed = (Path(_build.HERE) / f"{name}.py").read_text()
        assert committed == _build.generate(name), f"regenerate {name}: python -m podrun.linux._build"


def test_libc_loads_without_pycparser() -> None:
    code = ("import sys; from podrun.linux import _ffi; _ffi.libc(); _ffi.libseccomp(); "
            "print('pycparser' in sys.modules, 'cffi.cparser' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]

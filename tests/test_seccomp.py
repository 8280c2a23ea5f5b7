"""podrun.stage2.seccomp: filters built with the system libseccomp and loaded into
forked children; blocked calls are checked with harmless arguments."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from podrun.linux import seccomp as scmp
from podrun.stage2 import seccomp
from tests import forkutil

LIBC = ctypes.CDLL(None, use_errno=True)


def _nnp_unless_root() -> None:
    """Unprivileged, a child must set no_new_privs before it may load a filter."""
    if os.geteuid() != 0:
        from podrun.linux import set_no_new_privs

        set_no_new_privs()


def fork_run(fn: Callable[[], Any]) -> tuple[int, Any]:
    return forkutil.fork_run(fn, _nnp_unless_root)


def in_child(fn: Callable[[], Any]) -> Any:
    return forkutil.in_child(fn, _nnp_unless_root)


def errno_of(fn: Callable[[], Any]) -> int | str:
    try:
        fn()
        return "ok"
    except OSError as e:
        return e.errno


def raw(name: str, *args: int) -> int:
    """Call syscall *name* directly with integer args; return 0 or the errno."""
    nr = scmp.resolve_name(name)
    ret = LIBC.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    return ctypes.get_errno() if ret == -1 else 0


def test_unknown_syscall_is_named() -> None:
    with pytest.raises(ValueError, match="no_such_syscall"):
        seccomp.build_filter("remove", ["mkdir", "no_such_syscall"], "EPERM")


def test_unknown_group_and_errno() -> None:
    with pytest.raises(ValueError, match="@nope/x"):
        seccomp.build_filter("remove", ["@nope/x"])
    with pytest.raises(ValueError, match="EWHATEVER"):
        seccomp.build_filter("remove", ["mkdir"], "EWHATEVER")
    with pytest.raises(ValueError, match="empty"):
        seccomp.build_filter("retain", [])
    with pytest.raises(ValueError, match="mode"):
        seccomp.build_filter("deny", ["mkdir"])  # type: ignore[arg-type]


def test_errno_by_name_and_number() -> None:
    assert seccomp.build_filter("remove", ["mkdir"], "ENOSYS").errno == errno.ENOSYS
    assert seccomp.build_filter("remove", ["mkdir"], 13).errno == 13
    assert seccomp.build_filter("remove", ["mkdir"], "").errno is None


def test_groups_expand_and_other_arch_names_accepted() -> None:
    f = seccomp.build_filter("remove", ["@rkt/default-blacklist"], "EPERM")
    assert {"reboot", "kexec_load", "mount", "ptrace"} <= set(f.syscalls)
    assert seccomp.build_filter("remove", ["@docker/default-blacklist"]).syscalls == f.syscalls
    f = seccomp.build_filter("retain", ["@docker/default-whitelist"])
    assert "chown32" in f.syscalls and "execve" in f.syscalls
    assert "ERRNO" not in f.export() and "KILL" in f.export()


def test_appc_wildcards() -> None:
    assert seccomp.build_filter("retain", ["@appc.io/all", "read"]).is_noop()
    assert seccomp.build_filter("remove", ["@appc.io/empty", "mkdir"]).is_noop()
    with pytest.raises(ValueError, match="every syscall"):
        seccomp.build_filter("remove", ["@appc.io/all"])
    f = seccomp.build_filter("retain", ["@appc.io/empty"])
    assert set(f.syscalls) == set(seccomp.LIFECYCLE)


def test_remove_set_with_errno(tmp_path: Any) -> None:
    f = seccomp.build_filter("remove", ["mkdir", "mkdirat", "getcwd"], "EROFS")

    def child() -> list[Any]:
        f.load()
        return [errno_of(lambda: os.mkdir(tmp_path / "d")), errno_of(os.getcwd),
                errno_of(lambda: os.stat(tmp_path))]

    assert in_child(child) == [errno.EROFS, errno.EROFS, "ok"]
    assert not (tmp_path / "d").exists()
    os.mkdir(tmp_path / "d")  # the parent is unaffected


def test_remove_set_without_errno_kills_with_sigsys() -> None:
    f = seccomp.build_filter("remove", ["getcwd"])
    status, _ = fork_run(lambda: (f.load(), os.getcwd()))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_retain_set_denies_everything_else() -> None:
    basics = ["read", "write", "close", "exit_group", "rt_sigaction", "rt_sigprocmask",
              "brk", "mmap", "munmap", "futex", "fstat", "newfstatat", "lseek", "getpid"]
    f = seccomp.build_filter("retain", basics, "ENOSYS")

    def child() -> list[Any]:
        f.load()
        return [os.getpid() > 0, errno_of(os.getcwd), raw("getppid"), raw("uname", 0)]

    assert in_child(child) == [True, errno.ENOSYS, errno.ENOSYS, errno.ENOSYS]


def test_retain_set_kills_by_default() -> None:
    f = seccomp.build_filter("retain", ["write", "exit_group"])
    status, _ = fork_run(lambda: (f.load(), raw("getppid")))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_default_profile_blocks_dangerous_calls_with_eperm() -> None:
    f = seccomp.default_profile()
    assert {"reboot", "kexec_load", "init_module", "bpf", "open_by_handle_at",
            "mount", "unshare", "ptrace", "keyctl"} <= set(f.syscalls)
    assert "getcwd" not in f.syscalls and "clone" not in f.syscalls

    def child() -> list[Any]:
        f.load()
        # harmless arguments: each would fail with EINVAL/EFAULT if it got through
        return [raw("reboot", 0, 0, 0, 0), raw("kexec_load", 0, 0, 0, 0),
                raw("init_module", 0, 0, 0), raw("finit_module", -1, 0, 0),
                raw("bpf", -1, 0, 0), raw("unshare", 0), raw("keyctl", -1, 0, 0, 0),
                raw("swapon", 0, 0), errno_of(os.getcwd)]

    got = in_child(child)
    assert got[:-1] == [errno.EPERM] * 8
    assert got[-1] == "ok"


def test_default_profile_cap_gated() -> None:
    f = seccomp.default_profile({"CAP_SYS_ADMIN"})
    assert "mount" not in f.syscalls and "unshare" not in f.syscalls
    assert "reboot" in f.syscalls

    def child() -> list[Any]:
        f.load()
        return [raw("unshare", 0), raw("reboot", 0, 0, 0, 0)]

    assert in_child(child) == [0, errno.EPERM]


def test_no_new_privs_not_set_by_loading() -> None:
    f = seccomp.build_filter("remove", ["reboot"], "EPERM")

    def child() -> dict[str, str]:
        from podrun.linux import set_no_new_privs

        if os.geteuid() != 0:
            set_no_new_privs()  # unprivileged loading needs no_new_privs
        f.load()
        with open("/proc/self/status") as st:
            return dict(ln.split(":\t", 1) for ln in st.read().splitlines() if ":\t" in ln)

    got = in_child(child)
    assert got["Seccomp"].strip() == "2"
    if os.geteuid() == 0:
        assert got["NoNewPrivs"].strip() == "0"


def test_default_profile_blocks_namespace_clone_but_not_fork() -> None:
    f = seccomp.default_profile()
    sigchld = int(signal.SIGCHLD)

    def child() -> list[Any]:
        import subprocess

        f.load()
        blocked = [raw("clone", flag | sigchld, 0, 0, 0, 0)
                   for flag in seccomp.NAMESPACE_CLONE_FLAGS]
        clone3 = raw("clone3", 0, 0)
        # ordinary process creation still works (fork → clone, posix_spawn → clone3
        # falls back to clone on ENOSYS)
        out = subprocess.run(["/bin/busybox", "echo", "spawned"], capture_output=True,
                             text=True, check=True).stdout.strip()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, st = os.waitpid(pid, 0)
        return [blocked, clone3, out, os.waitstatus_to_exitcode(st)]

    blocked, clone3, out, code = in_child(child)
    assert blocked == [errno.EPERM] * len(seccomp.NAMESPACE_CLONE_FLAGS)
    assert clone3 == errno.ENOSYS
    assert (out, code) == ("spawned", 7)


def test_default_profile_with_sys_admin_has_no_clone_rules() -> None:
    assert seccomp.default_profile({"CAP_SYS_ADMIN"}).arg_rules == []


@pytest.mark.root
def test_load_without_privilege_or_nnp_explains() -> None:
    from podrun.linux import set_no_new_privs
    from podrun.stage2 import caps

    f = seccomp.build_filter("remove", ["reboot"], "EPERM")

    def child() -> list[Any]:
        caps.apply(caps.resolve(None, None), keep_for_uid_change=False)  # no SYS_ADMIN
        try:
            f.load()
            first: Any = "loaded"
        except OSError as e:
            first = [e.errno, str(e)]
        set_no_new_privs()
        f.load()
        return [first, raw("reboot", 0, 0, 0, 0)]

    first, rebooted = in_child(child)
    assert first[0] == errno.EACCES and "no_new_privs" in first[1]
    assert rebooted == errno.EPERM

"""stage2's entry point: turn the calling process (a child of the pod init, already in
the pod's pid/uts/ipc/net namespaces) into the app, in one ordered sequence that ends
in ``execve``. The order follows runc's ``prepareRootfs`` + ``finalizeNamespace``:

 1. own mount namespace, ``/`` made rslave: every mount below dies with the app;
 2. rootfs: overlay (or copy) at ``<app dir>/rootfs`` (:mod:`.rootfs`);
 3. ``/proc`` (new instance), ``/sys`` ro, ``/dev`` tmpfs, runc's masked and
    read-only paths, the volumes, the etc files (:mod:`.mounts`); the working
    directory is created if the image lacks it (as runc and Docker do);
 4. read-only rootfs (bind remount), ``pivot_root``, old root detached;
 5. join cgroups (write ``0`` to each ``cgroup.procs`` fd), oom_score_adj, rlimits;
 6. user/group from the app's own ``/etc`` (:mod:`.users`), capabilities and the
    id switch in :mod:`.caps`'s order, ``chdir`` as the app user;
 7. no_new_privs; exec[0] looked up in the app's PATH;
 8. fds: ``keep_fds`` become 3, 4, …; everything else above 2 is closed
    (``close_range``; runc CVE-2024-21626); signal mask and ignored signals reset;
 9. seccomp, then ``execve``.

Seccomp timing (runc's rule): with no_new_privs, or when the app keeps
CAP_SYS_ADMIN, the filter is loaded last, right before execve. Otherwise the kernel
demands CAP_SYS_ADMIN to load it, so a *remove*-set filter (the default profile) is
loaded before the capability drop and the id switch — unless it blocks one of the
calls that setup still makes (:data:`SETUP_SYSCALLS`, e.g. a set removing
``setresuid``). A *retain*-set cannot be loaded early in a Python process (the
interpreter needs syscalls no app list names). In those two cases no_new_privs is
implied, as systemd (and so rkt) did for seccomp filters of unprivileged units.

Exit codes when the app cannot be started (one line ``podrun: app NAME: …`` on
stderr): 125 podrun could not set the app up, 126 exec[0] found but not executable
(or the exec was refused), 127 exec[0] not found — runc/podman's convention, so an
app's own exit code stays distinguishable.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from podrun.linux import (
    CLONE_NEWNS,
    MS_BIND,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
    close_range,
    mount,
    set_no_new_privs,
    unshare,
)
from podrun.stage2 import caps as capmod
from podrun.stage2 import mounts, users
from podrun.stage2.app import AppSpec
from podrun.stage2.rootfs import opened_in_root, pivot_into, prepare_rootfs

__all__ = ["EXIT_CANNOT_EXEC", "EXIT_NOT_FOUND", "EXIT_SETUP", "LaunchError", "launch",
           "prepare_rootfs"]

EXIT_SETUP = 125
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CAP_SYS_ADMIN = 21
#: what stage2 itself calls between an early seccomp load and execve
SETUP_SYSCALLS = frozenset({
    "capget", "capset", "prctl", "setgroups", "setresgid", "setresuid", "setgid",
    "setuid", "chdir", "umask", "access", "faccessat", "faccessat2", "stat", "lstat",
    "newfstatat", "statx", "fstat", "fcntl", "dup", "dup2", "dup3", "close", "close_range",
    "rt_sigprocmask", "rt_sigaction", "write", "read", "openat", "open", "mmap", "munmap",
    "brk", "futex", "getdents64", "execve", "exit_group",
})


class LaunchError(Exception):
    """The app cannot be started; ``code`` is the exit status to report."""

    def __init__(self, message: str, code: int = EXIT_SETUP) -> None:
        super().__init__(message)
        self.code = code


def describe(e: BaseException) -> str:
    """One line for *e* (OSError without the ``[Errno N]`` prefix)."""
    if isinstance(e, OSError) and e.strerror:
        msg = e.strerror
        if e.filename is not None:
            msg += f": {e.filename}"
        return msg
    return " ".join(str(e).split()) or type(e).__name__


@contextmanager
def step(what: str) -> Iterator[None]:
    """Run a setup step; any failure becomes a LaunchError saying which step."""
    try:
        yield
    except LaunchError:
        raise
    except Exception as e:
        raise LaunchError(f"{what}: {describe(e)}") from e


def launch(spec: AppSpec) -> NoReturn:
    """Set up *spec*'s app in the calling process and exec it. Never returns: on any
    failure prints one line on stderr and exits 125/126/127 (see module doc)."""
    try:
        _launch(spec)
    except LaunchError as e:
        _die(spec.name, str(e), e.code)
    except BaseException as e:  # noqa: BLE001 — nothing may escape a forked child
        _die(spec.name, describe(e), EXIT_SETUP)
    _die(spec.name, "execve returned", EXIT_SETUP)


def _die(name: str, message: str, code: int) -> NoReturn:
    line = f"podrun: app {name}: {message}\n".encode(errors="replace")
    try:
        os.write(2, line)
    finally:
        os._exit(code)


def _launch(spec: AppSpec) -> None:
    if not spec.exec or not spec.exec[0]:
        raise LaunchError("no command to execute", EXIT_NOT_FOUND)
    with step("new mount namespace"):
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_SLAVE)
    with step("rootfs"):
        rootfs = prepare_rootfs(spec)
    setup_mounts(spec, rootfs)
    preload(spec)
    with step("pivot_root"):
        pivot_into(rootfs)
    enter_resources(spec)
    exec_app(spec)


def preload(spec: AppSpec) -> None:
    """Load now what the steps after the pivot need from the old root: the host's
    libseccomp and the kernel's capability count."""
    with step("preload"):
        capmod.last_cap()
        if spec.seccomp is not None:
            from podrun.linux._ffi import libseccomp

            libseccomp()


def setup_mounts(spec: AppSpec, rootfs: str) -> None:
    """Everything mounted inside *rootfs* before the pivot."""
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with step("mount /proc"):
            mounts.mount_proc(root)
        with step("mount /sys"):
            mounts.mount_sys(root)
        with step("mount /dev"):
            mounts.mount_dev(root)
        with step("mask /proc paths"):
            mounts.mask_paths(root)
            mounts.readonly_paths(root)
        with step("volumes"):
            mounts.mount_volumes(root, rootfs, spec.mounts)
        with step("etc files"):
            mounts.bind_etc_files(root, spec.etc_files)
        with step(f"working directory {spec.working_dir}"):
            with opened_in_root(root, spec.working_dir, create="dir"):
                pass
        if spec.read_only_rootfs:
            with step("read-only rootfs"):
                flags = mounts.mount_flags(rootfs)
                mount(None, rootfs, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)
    finally:
        os.close(root)


def enter_resources(spec: AppSpec) -> None:
    """cgroups, oom score, rlimits (after the pivot: /proc is the app's)."""
    with step("join cgroups"):
        for fd in spec.cgroup_procs_fds:
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
    if spec.oom_score_adj is not None:
        with step("oom_score_adj"):
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(spec.oom_score_adj))
    for res, (soft, hard) in spec.rlimits.items():
        with step(f"rlimit {res}"):
            resource.setrlimit(res, (soft, hard))


def exec_app(spec: AppSpec) -> None:
    """User, capabilities, no_new_privs, fds, seccomp, execve. Runs in the new root,
    so everything it calls must be imported (and dlopen'ed) before the pivot."""
    with step("user"):
        uid, gid, home = users.resolve_user("/", spec.user, spec.group)
        name = users.user_name("/", uid)
        groups = list(spec.supplementary_gids)
        for g in users.groups_of("/", name) if name else []:
            if g not in groups:
                groups.append(g)
    env = dict(spec.env)
    env.setdefault("PATH", DEFAULT_PATH)          # appc ace.md "Execution Environment"
    env.setdefault("AC_APP_NAME", spec.name)
    env.setdefault("container", "podrun")
    env.setdefault("HOME", home)
    caps = set(spec.caps) if spec.caps is not None else capmod.resolve(None, None)
    filt = spec.seccomp
    nnp = spec.no_new_privs
    late_seccomp = True
    if filt is not None and not filt.is_noop():
        with step("seccomp"):
            if not nnp and CAP_SYS_ADMIN not in caps:
                if filt.mode == "retain" or SETUP_SYSCALLS & set(filt.syscalls):
                    nnp = True
                else:
                    filt.load()
                    late_seccomp = False
    with step("capabilities"):
        capmod.apply(caps, keep_for_uid_change=True)
        capmod.switch_user(uid, gid, groups)
        capmod.finish_uid_change(caps)
    with step(f"working directory {spec.working_dir}"):
        os.chdir(spec.working_dir)
    os.umask(0o022)
    if nnp:
        with step("no_new_privs"):
            set_no_new_privs()
    path = find_executable(spec.exec[0], env["PATH"])
    with step("file descriptors"):
        arrange_fds(spec.keep_fds)
    reset_signals()
    if filt is not None and late_seccomp:
        with step("seccomp"):
            filt.load()
    try:
        os.execve(path, spec.exec, env)
    except OSError as e:
        code = EXIT_NOT_FOUND if e.errno == errno.ENOENT else EXIT_CANNOT_EXEC
        raise LaunchError(f"exec {spec.exec[0]}: {describe(e)}", code) from e


def find_executable(name: str, path_env: str) -> str:
    """*name* if it contains a slash, else the first executable ``dir/name`` on
    *path_env*. Not found → LaunchError 127; found but not executable → 126."""
    if not name:
        raise LaunchError("exec: empty command", EXIT_NOT_FOUND)
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name) for d in path_env.split(":")]
    denied = None
    for p in candidates:
        if not os.path.exists(p):
            continue
        if os.path.isdir(p) or not os.access(p, os.X_OK):
            denied = denied or p
            continue
        return p
    if denied is not None:
        raise LaunchError(f"exec {name}: {denied} is not executable", EXIT_CANNOT_EXEC)
    where = "" if "/" in name else f" in PATH {path_env}"
    raise LaunchError(f"exec {name}: not found{where}", EXIT_NOT_FOUND)


def arrange_fds(keep: list[int]) -> None:
    """Make *keep* the app's fds 3, 4, … (inheritable) and close every other fd
    above 2, whatever its close-on-exec flag."""
    n = len(keep)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + n) for fd in keep]
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i, inheritable=True)
    close_range(3 + n)
    for fd in (0, 1, 2):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass  # not open: the app gets it closed, as the init left it


def reset_signals() -> None:
    """Signals the app must not inherit from Python or the init: an empty mask and
    default dispositions (Python ignores SIGPIPE and SIGXFSZ; ignored stays ignored
    across execve)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass

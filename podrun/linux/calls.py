"""Thin wrappers over the libc calls Python 3.11 lacks. No policy: each function does
exactly one syscall (or the documented fallback) and raises ``OSError(errno, msg)``
on failure, with the call and its main argument in the message.
"""

from __future__ import annotations

import os
from typing import Any

from podrun.linux._ffi import libc
from podrun.linux.constants import (
    PERSONALITY_QUERY,
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_IS_SET,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_CAPBSET_READ,
    PR_GET_NO_NEW_PRIVS,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    PR_SET_KEEPCAPS,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    syscall_number,
)


def _check(ret: int, what: str) -> int:
    if ret == -1:
        ffi, _ = libc()
        err = ffi.errno
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _bytes(s: str | bytes | os.PathLike[str] | None) -> Any:
    if s is None:
        return libc()[0].NULL
    return os.fsencode(s)


def unshare(flags: int) -> None:
    """unshare(2) the namespaces/attributes in *flags* (``CLONE_*``)."""
    _check(libc()[1].unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace open at *fd* (a /proc/PID/ns/* fd or a pidfd)."""
    _check(libc()[1].setns(fd, nstype), f"setns(fd {fd}, {nstype:#x})")


def mount(source: str | bytes | None, target: str | bytes | os.PathLike[str],
          fstype: str | bytes | None = None, flags: int = 0,
          data: str | bytes | None = None) -> None:
    """mount(2). *source*, *fstype* and *data* may be None (NULL)."""
    _, lib = libc()
    ret = lib.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data))
    _check(ret, f"mount {source!s} on {os.fsdecode(target)} (type {fstype}, flags {flags:#x})")


def umount2(target: str | bytes | os.PathLike[str], flags: int = 0) -> None:
    """umount2(2) *target* with ``MNT_*`` *flags*."""
    _check(libc()[1].umount2(_bytes(target), flags), f"umount {os.fsdecode(target)}")


def syscall(name: str, *args: Any) -> int:
    """Call syscall *name* by number through ``syscall(2)``; args must be cffi-typed
    or plain ints (passed as ``long``)."""
    ffi, lib = libc()
    cargs = [ffi.cast("long", a) if isinstance(a, int) else a for a in args]
    return _check(lib.syscall(ffi.cast("long", syscall_number(name)), *cargs), name)


def pivot_root(new_root: str | bytes | os.PathLike[str],
               put_old: str | bytes | os.PathLike[str]) -> None:
    """pivot_root(2) (glibc has no wrapper)."""
    ffi, lib = libc()
    new_b, old_b = ffi.new("char[]", _bytes(new_root)), ffi.new("char[]", _bytes(put_old))
    ret = lib.syscall(ffi.cast("long", syscall_number("pivot_root")),
                      ffi.cast("char *", new_b), ffi.cast("char *", old_b))
    _check(ret, f"pivot_root({os.fsdecode(new_root)}, {os.fsdecode(put_old)})")


def sethostname(name: str) -> None:
    """sethostname(2) in the current UTS namespace."""
    b = name.encode()
    _check(libc()[1].sethostname(b, len(b)), f"sethostname({name!r})")


def setdomainname(name: str) -> None:
    """setdomainname(2) in the current UTS namespace."""
    b = name.encode()
    _check(libc()[1].setdomainname(b, len(b)), f"setdomainname({name!r})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2) with integer arguments; returns the call's (non-negative) result."""
    return _check(libc()[1].prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def set_no_new_privs() -> None:
    """Set ``no_new_privs`` on the calling thread (inherited, irreversible)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def get_no_new_privs() -> bool:
    return prctl(PR_GET_NO_NEW_PRIVS) == 1


def set_dumpable(dumpable: bool) -> None:
    prctl(PR_SET_DUMPABLE, int(dumpable))


def set_pdeathsig(sig: int) -> None:
    """Have the kernel send *sig* to this process when its parent thread dies."""
    prctl(PR_SET_PDEATHSIG, sig)


def set_child_subreaper(on: bool = True) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, int(on))


def set_keepcaps(on: bool) -> None:
    prctl(PR_SET_KEEPCAPS, int(on))


def capbset_read(cap: int) -> bool:
    return prctl(PR_CAPBSET_READ, cap) == 1


def capbset_drop(cap: int) -> None:
    prctl(PR_CAPBSET_DROP, cap)


def cap_ambient_raise(cap: int) -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def cap_ambient_is_set(cap: int) -> bool:
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap) == 1


def cap_ambient_clear_all() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def personality(persona: int = PERSONALITY_QUERY) -> int:
    """personality(2); with no argument returns the current persona unchanged."""
    return _check(libc()[1].personality(persona), f"personality({persona:#x})")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """close_range(2) [first, last]; falls back to ``os.closerange`` (flags 0 only)
    when the kernel lacks it."""
    try:
        syscall("close_range", first, last, flags)
    except OSError as e:
        import errno

        if e.errno != errno.ENOSYS or flags:
            raise
        os.closerange(first, min(last + 1, os.sysconf("SC_OPEN_MAX")))


def pidfd_send_signal(pidfd: int, sig: int, flags: int = 0) -> None:
    """pidfd_send_signal(2) (Python 3.11 has ``os.pidfd_open`` but not this);
    signals exactly the process *pidfd* refers to, immune to PID reuse."""
    syscall("pidfd_send_signal", pidfd, sig, 0, flags)

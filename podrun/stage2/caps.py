"""Capabilities for an app: names ↔ numbers, the appc default set, resolving the
``os/linux/capabilities-{retain,remove}-set`` isolators, and applying a set to the
calling process just before it execs the app.

Ordering in :func:`apply` follows runc (``finalizeNamespace``: ApplyBoundingSet,
SetKeepCaps, setupUser, ClearKeepCaps, ApplyCaps):

1. drop everything outside *caps* from the bounding set (``PR_CAPBSET_DROP``); this
   needs CAP_SETPCAP, so it happens first while we still hold everything;
2. for an app running as a non-root uid: set ``PR_SET_KEEPCAPS`` so setresuid() keeps
   the permitted set, and hold CAP_SETUID/CAP_SETGID until the switch
   (:func:`switch_user`); the kernel clears effective and ambient on that switch;
3. capset(): effective = permitted = inheritable = *caps*;
4. raise every cap of *caps* into the ambient set, so execve() of an ordinary
   (non-setuid, no file caps) program by a non-root uid keeps them. For uid 0 the
   bounding set decides what the exec'd program gets.

:func:`apply_as_user` runs the whole sequence for a non-root app.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

from podrun.linux import (
    cap_ambient_clear_all,
    cap_ambient_raise,
    capbset_drop,
    capget,
    capset,
    set_keepcaps,
)

#: Capability names in kernel order (linux/capability.h); index = number.
CAP_NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
CAP_NUMBERS: dict[str, int] = {name: i for i, name in enumerate(CAP_NAMES)}

#: appc ace.md "Linux Isolators": the 14 capabilities an app gets when it has no
#: capability isolator (also rkt's default).
DEFAULT_CAPS: frozenset[str] = frozenset({
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
    "CAP_KILL", "CAP_MKNOD", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SETUID",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETFCAP", "CAP_SYS_CHROOT",
})

_SETID = frozenset({CAP_NUMBERS["CAP_SETUID"], CAP_NUMBERS["CAP_SETGID"]})


@functools.cache
def last_cap() -> int:
    """Highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAP_NAMES) - 1


def cap_number(name: str) -> int:
    """``"CAP_CHOWN"`` (or ``"chown"``, any case) → 0. Unknown name → ValueError."""
    key = name.strip().upper()
    if not key.startswith("CAP_"):
        key = "CAP_" + key
    try:
        return CAP_NUMBERS[key]
    except KeyError:
        raise ValueError(f"unknown capability {name!r}") from None


def cap_name(number: int) -> str:
    """0 → ``"CAP_CHOWN"``; numbers past our table → ``"CAP_<n>"``."""
    return CAP_NAMES[number] if 0 <= number < len(CAP_NAMES) else f"CAP_{number}"


def numbers(names: Iterable[str]) -> set[int]:
    return {cap_number(n) for n in names}


def mask(caps: Iterable[int]) -> int:
    """A set of capability numbers as a bit mask."""
    m = 0
    for c in caps:
        m |= 1 << c
    return m


def from_mask(m: int) -> set[int]:
    return {i for i in range(m.bit_length()) if m >> i & 1}


def resolve(retain: list[str] | None, remove: list[str] | None) -> set[int]:
    """The capability numbers an app gets, per appc.

    *retain* (``capabilities-retain-set``): exactly those; *remove*
    (``capabilities-remove-set``): the default set minus those (removing one not in
    the default set has no effect); neither: the default set. Both → ValueError
    (appc forbids using them together). Capabilities this kernel does not know
    (above cap_last_cap) are dropped from the result.
    """
    if retain is not None and remove is not None:
        raise ValueError("capabilities-retain-set and capabilities-remove-set are exclusive")
    if retain is not None:
        result = numbers(retain)
    else:
        result = numbers(DEFAULT_CAPS) - numbers(remove or [])
    return {c for c in result if c <= last_cap()}


def apply(caps: set[int], *, keep_for_uid_change: bool) -> None:
    """Reduce the calling process to *caps* (see the module docstring for the order).

    Call with full capabilities in the process that will exec the app, after all
    privileged setup. Without *keep_for_uid_change* this is complete: bounding,
    effective/permitted/inheritable and ambient all equal *caps*. With it, the
    process keeps CAP_SETUID/CAP_SETGID and keepcaps; the caller then switches ids
    (:func:`switch_user`, or its own setgroups/setresgid/setresuid) and must call
    :func:`finish_uid_change` — the kernel clears the ambient set on that switch, so
    ambient is raised only there.
    """
    for c in range(last_cap() + 1):
        if c not in caps:
            capbset_drop(c)
    if keep_for_uid_change:
        set_keepcaps(True)
        held = mask(caps | _SETID)
        capset(held, held, mask(caps))
        return
    _set_final(caps)


def finish_uid_change(caps: set[int]) -> None:
    """After the id switch: drop the helper caps, clear keepcaps, raise ambient."""
    set_keepcaps(False)
    _set_final(caps)


def switch_user(uid: int, gid: int, groups: list[int]) -> None:
    """setgroups + setresgid + setresuid, in that order (groups need CAP_SETGID)."""
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def apply_as_user(caps: set[int], uid: int, gid: int, groups: list[int]) -> None:
    """The whole sequence for an app that runs as *uid*:*gid* with *caps*."""
    apply(caps, keep_for_uid_change=True)
    switch_user(uid, gid, groups)
    finish_uid_change(caps)


def _set_final(caps: set[int]) -> None:
    m = mask(caps)
    capset(m, m, m)
    cap_ambient_clear_all()
    for c in sorted(caps):
        cap_ambient_raise(c)


def current() -> dict[str, set[int]]:
    """The calling thread's capability sets as sets of numbers (for checks/tests)."""
    s = capget()
    return {"effective": from_mask(s.effective), "permitted": from_mask(s.permitted),
            "inheritable": from_mask(s.inheritable)}

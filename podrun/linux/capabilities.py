"""capget(2)/capset(2) on 64-bit capability sets (``_LINUX_CAPABILITY_VERSION_3``).

Sets are plain ints: bit *n* set means capability *n*. No policy here.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from podrun.linux._ffi import libc
from podrun.linux.calls import _check
from podrun.linux.constants import LINUX_CAPABILITY_VERSION_3


class CapSets(NamedTuple):
    effective: int
    permitted: int
    inheritable: int


def capget(pid: int = 0) -> CapSets:
    """Return the effective/permitted/inheritable sets of *pid* (0 = calling thread)."""
    ffi, lib = libc()
    hdr = ffi.new("cap_user_header_t *", {"version": LINUX_CAPABILITY_VERSION_3, "pid": pid})
    data = ffi.new("cap_user_data_t[2]")
    _check(lib.capget(hdr, data), f"capget(pid {pid})")
    return CapSets(*(getattr(data[0], f) | (getattr(data[1], f) << 32)
                     for f in ("effective", "permitted", "inheritable")))


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's capability sets (masks of capability bits)."""
    ffi, lib = libc()
    hdr = ffi.new("cap_user_header_t *", {"version": LINUX_CAPABILITY_VERSION_3, "pid": 0})
    data = ffi.new("cap_user_data_t[2]")
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(lib.capset(hdr, data), f"capset(pid {os.getpid()})")

"""linux: thin cffi bindings for the syscalls Python lacks. No policy lives here.

Everything is importable cheaply: cffi and the shared libraries are loaded on the
first call (see :mod:`podrun.linux._ffi`). Failures raise ``OSError(errno, msg)``.
Where Python 3.11's :mod:`os` already has a call (``os.setresuid``, ``os.setgroups``,
``os.pidfd_open``, ``os.closerange``…) use that; these cover the rest.

- :mod:`podrun.linux.constants` — ``CLONE_NEW*``, ``MS_*``, ``MNT_*``, ``PR_*``, syscall numbers
- :mod:`podrun.linux.calls` — unshare, setns, mount, umount2, pivot_root, sethostname,
  prctl (+ named helpers), personality, close_range, pidfd_send_signal, raw ``syscall``
- :mod:`podrun.linux.capabilities` — capget/capset on 64-bit sets
- :mod:`podrun.linux._ffi` — the lazily built ``FFI`` objects (libc, libseccomp)
"""

from podrun.linux.calls import (
    cap_ambient_clear_all,
    cap_ambient_is_set,
    cap_ambient_raise,
    capbset_drop,
    capbset_read,
    close_range,
    get_no_new_privs,
    mount,
    personality,
    pidfd_send_signal,
    pivot_root,
    prctl,
    set_child_subreaper,
    set_dumpable,
    set_keepcaps,
    set_no_new_privs,
    set_pdeathsig,
    setdomainname,
    sethostname,
    setns,
    syscall,
    umount2,
    unshare,
)
from podrun.linux.capabilities import CapSets, capget, capset
from podrun.linux.constants import *  # noqa: F403

__all__ = [
    "CapSets", "cap_ambient_clear_all", "cap_ambient_is_set", "cap_ambient_raise",
    "capbset_drop", "capbset_read", "capget", "capset", "close_range", "get_no_new_privs",
    "mount", "personality", "pidfd_send_signal", "pivot_root", "prctl", "set_child_subreaper",
    "set_dumpable", "set_keepcaps", "set_no_new_privs", "set_pdeathsig", "setdomainname",
    "sethostname", "setns", "syscall", "umount2", "unshare",
]

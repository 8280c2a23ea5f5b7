"""Thin bindings to the system libseccomp (``libseccomp.so.2``) via cffi ABI mode.

Just the calls podrun needs to build and load a filter; the policy (which syscalls,
groups, default profile) lives in :mod:`podrun.stage2.seccomp`. libseccomp reports
failure as a negative errno; :func:`check` turns that into ``OSError``.
"""

from __future__ import annotations

import os
from typing import Any

from podrun.linux._ffi import libseccomp

# actions (seccomp.h)
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_ALLOW = 0x7FFF0000


def SCMP_ACT_ERRNO(err: int) -> int:  # noqa: N802 — mirrors the C macro
    return 0x00050000 | (err & 0xFFFF)


# filter attributes (enum scmp_filter_attr)
SCMP_FLTATR_ACT_DEFAULT = 1
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_FLTATR_CTL_NNP = 3
SCMP_FLTATR_CTL_TSYNC = 4
SCMP_FLTATR_API_SYSRAWRC = 9  # ≥ 2.5.0: return the kernel's errno, not ECANCELED

# argument comparison operators (enum scmp_compare)
SCMP_CMP_NE = 1
SCMP_CMP_LT = 2
SCMP_CMP_LE = 3
SCMP_CMP_EQ = 4
SCMP_CMP_GE = 5
SCMP_CMP_GT = 6
SCMP_CMP_MASKED_EQ = 7

# architecture tokens (AUDIT_ARCH_* values)
SCMP_ARCH_X86 = 0x40000003
SCMP_ARCH_X86_64 = 0xC000003E
SCMP_ARCH_X32 = 0x4000003E
SCMP_ARCH_ARM = 0x40000028
SCMP_ARCH_AARCH64 = 0xC00000B7

#: returned by seccomp_syscall_resolve_name() for a name no architecture knows
NR_SCMP_ERROR = -1


def check(ret: int, what: str) -> int:
    """libseccomp convention: negative return = -errno."""
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
    return ret


def version() -> tuple[int, int, int]:
    _, lib = libseccomp()
    v = lib.seccomp_version()
    return (v.major, v.minor, v.micro)


def resolve_name(name: str) -> int:
    """Syscall number of *name* for the native architecture; a negative pseudo number
    if it exists only on other architectures; :data:`NR_SCMP_ERROR` if unknown."""
    _, lib = libseccomp()
    return lib.seccomp_syscall_resolve_name(name.encode())


def arch_native() -> int:
    return libseccomp()[1].seccomp_arch_native()


class Context:
    """An owned ``scmp_filter_ctx``; released when garbage-collected or on :meth:`release`."""

    def __init__(self, default_action: int) -> None:
        ffi, lib = libseccomp()
        ctx = lib.seccomp_init(default_action)
        if ctx == ffi.NULL:
            raise OSError(22, f"seccomp_init({default_action:#x}) failed")
        self._ctx: Any = ffi.gc(ctx, lib.seccomp_release)

    def attr_set(self, attr: int, value: int) -> None:
        check(libseccomp()[1].seccomp_attr_set(self._ctx, attr, value), f"seccomp_attr_set({attr})")

    def arch_add(self, arch: int) -> None:
        check(libseccomp()[1].seccomp_arch_add(self._ctx, arch), f"seccomp_arch_add({arch:#x})")

    def rule_add(self, action: int, syscall: int,
                 args: list[tuple[int, int, int, int]] | None = None) -> None:
        """Add a rule; *args* are ``(arg_index, op, datum_a, datum_b)`` comparisons."""
        ffi, lib = libseccomp()
        args = args or []
        arr = ffi.new("struct scmp_arg_cmp[]", max(len(args), 1))
        for i, (idx, op, a, b) in enumerate(args):
            arr[i].arg, arr[i].op, arr[i].datum_a, arr[i].datum_b = idx, op, a, b
        check(lib.seccomp_rule_add_array(self._ctx, action, syscall, len(args), arr),
              f"seccomp_rule_add(syscall {syscall})")

    def load(self) -> None:
        check(libseccomp()[1].seccomp_load(self._ctx), "seccomp_load")

    def export_pfc(self, fd: int) -> None:
        """Write the human-readable filter (PFC) to *fd* (debugging)."""
        check(libseccomp()[1].seccomp_export_pfc(self._ctx, fd), "seccomp_export_pfc")

    def release(self) -> None:
        ffi, lib = libseccomp()
        if self._ctx is not None:
            ffi.release(self._ctx)  # runs seccomp_release via the gc destructor
            self._ctx = None

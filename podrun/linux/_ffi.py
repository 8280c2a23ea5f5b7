"""Lazily built cffi handles for libc and libseccomp (ABI mode, no compiler needed).

The ``FFI`` objects are created on first use and cached, so importing
:mod:`podrun.linux` costs one small module and no ``dlopen``. They come from the
out-of-line modules ``_libc_ffi``/``_seccomp_ffi`` generated from the declarations
below by ``_build.py`` (no pycparser at run time); if those cannot be loaded (a cffi
too different from the one that generated them), the declarations are parsed here.
"""

from __future__ import annotations

import functools
from typing import Any

_LIBC_CDEF = """
int unshare(int flags);
int setns(int fd, int nstype);
int mount(const char *source, const char *target, const char *filesystemtype,
          unsigned long mountflags, const void *data);
int umount2(const char *target, int flags);
int sethostname(const char *name, size_t len);
int setdomainname(const char *name, size_t len);
int prctl(int option, unsigned long arg2, unsigned long arg3,
          unsigned long arg4, unsigned long arg5);
int personality(unsigned long persona);
long syscall(long number, ...);

typedef struct {
    uint32_t version;
    int pid;
} cap_user_header_t;
typedef struct {
    uint32_t effective;
    uint32_t permitted;
    uint32_t inheritable;
} cap_user_data_t;
int capget(cap_user_header_t *hdrp, cap_user_data_t *datap);
int capset(cap_user_header_t *hdrp, const cap_user_data_t *datap);
"""

_SECCOMP_CDEF = """
typedef void *scmp_filter_ctx;
struct scmp_version { unsigned int major; unsigned int minor; unsigned int micro; };
const struct scmp_version *seccomp_version(void);
scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);
int seccomp_load(const scmp_filter_ctx ctx);
int seccomp_syscall_resolve_name(const char *name);
char *seccomp_syscall_resolve_num_arch(uint32_t arch_token, int num);
uint32_t seccomp_arch_native(void);
int seccomp_attr_set(scmp_filter_ctx ctx, int attr, uint32_t value);
int seccomp_arch_add(scmp_filter_ctx ctx, uint32_t arch_token);
struct scmp_arg_cmp { unsigned int arg; int op; uint64_t datum_a; uint64_t datum_b; };
int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall,
                           unsigned int arg_cnt, const struct scmp_arg_cmp *arg_array);
int seccomp_export_pfc(const scmp_filter_ctx ctx, int fd);
void free(void *ptr);
"""


def _ffi(module: str, cdef: str) -> Any:
    try:
        mod = __import__(f"podrun.linux.{module}", fromlist=["ffi"])
        return mod.ffi
    except Exception:  # noqa: BLE001 - any mismatch: parse the declarations instead
        import cffi

        ffi = cffi.FFI()
        ffi.cdef(cdef)
        return ffi


@functools.cache
def libc() -> tuple[Any, Any]:
    """Return ``(ffi, lib)`` for the C library of this process."""
    ffi = _ffi("_libc_ffi", _LIBC_CDEF)
    return ffi, ffi.dlopen(None)


@functools.cache
def libseccomp() -> tuple[Any, Any]:
    """Return ``(ffi, lib)`` for the system libseccomp (``libseccomp.so.2``)."""
    ffi = _ffi("_seccomp_ffi", _SECCOMP_CDEF)
    try:
        lib = ffi.dlopen("libseccomp.so.2")
    except OSError as e:
        raise OSError(f"libseccomp.so.2 not loadable (install libseccomp2): {e}") from e
    return ffi, lib

"""Seccomp filters for apps: appc ``os/linux/seccomp-{retain,remove}-set`` isolators
built on the system libseccomp (bindings in :mod:`podrun.linux.seccomp`).

Names: plain syscall names (``"mkdir"``), or ``@``-groups as rkt provides them:

- ``@appc.io/all`` / ``@appc.io/empty`` (appc): every syscall / none. In a retain-set
  ``@appc.io/all`` masks everything else (no filtering); in a remove-set
  ``@appc.io/empty`` masks everything else (nothing removed by the set itself).
- ``@rkt/default-blacklist`` = ``@docker/default-blacklist``, ``@rkt/default-whitelist``
  = ``@docker/default-whitelist``: rkt's copies of Docker 1.12's default profile
  (rkt stage1/init/common/seccomp_wildcards.go).
- ``@podrun/default-blacklist``: :data:`DEFAULT_REMOVE_SET`, see :func:`default_profile`
  (the filter an app gets when it has no seccomp isolator; each entry says why).

Unknown syscall or group names raise ``ValueError`` naming them. Names that exist on
other architectures only (``chown32`` on x86_64) are accepted: libseccomp applies
them to the compat architecture the filter also covers (x86/x32 on x86_64, arm on
aarch64).

Blocked syscalls either kill the process with SIGSYS (``errno=None``, appc's default)
or fail with the given errno. A retain-set always also allows :data:`LIFECYCLE`
(execve and exit), appc's "minimum set required for app life-cycle": the filter is
loaded by stage2 as the very last step before ``os.execve`` of the app, so nothing
else of podrun's has to pass it.

Loading: libseccomp is told not to set no_new_privs itself (``CTL_NNP=0``), because
no_new_privs is its own appc isolator. Without no_new_privs the kernel requires
CAP_SYS_ADMIN to load a filter, so stage2 must load it *before* dropping
capabilities — or set no_new_privs first (runc's rule: with NoNewPrivileges load as
late as possible, right before execve; otherwise load while still privileged).
"""

from __future__ import annotations

import errno as errno_mod
from dataclasses import dataclass, field
from typing import Literal

from podrun.linux import seccomp as scmp

Mode = Literal["retain", "remove"]

ALL = "@appc.io/all"
EMPTY = "@appc.io/empty"

#: Always allowed by a retain-set, so the app can be started and can exit.
LIFECYCLE: tuple[str, ...] = ("execve", "exit", "exit_group", "rt_sigreturn")

DOCKER_DEFAULT_BLACKLIST: tuple[str, ...] = (
    "acct", "add_key", "adjtimex", "bpf", "clock_adjtime", "clock_settime",
    "create_module", "delete_module", "finit_module", "get_kernel_syms", "get_mempolicy",
    "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl",
    "lookup_dcookie", "mbind", "mount", "move_pages", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "perf_event_open", "pivot_root", "process_vm_readv",
    "process_vm_writev", "ptrace", "query_module", "quotactl", "reboot", "request_key",
    "set_mempolicy", "setns", "settimeofday", "stime", "swapon", "swapoff", "sysfs",
    "_sysctl", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vm86",
    "vm86old",
)

DOCKER_DEFAULT_WHITELIST: tuple[str, ...] = (
    "accept", "accept4", "access", "alarm", "bind", "brk", "capget", "capset", "chdir",
    "chmod", "chown", "chown32", "clock_getres", "clock_gettime", "clock_nanosleep",
    "close", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create",
    "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_wait",
    "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group",
    "faccessat", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir",
    "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
    "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr",
    "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futimesat", "getcpu", "getcwd", "getdents", "getdents64",
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid",
    "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32",
    "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt",
    "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel",
    "ioctl", "io_destroy", "io_getevents", "ioprio_get", "ioprio_set", "io_setup",
    "io_submit", "ipc", "kill", "lchown", "lchown32", "lgetxattr", "link", "linkat",
    "listen", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr",
    "lstat", "lstat64", "madvise", "memfd_create", "mincore", "mkdir", "mkdirat", "mknod",
    "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr",
    "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink", "mremap",
    "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "nanosleep", "newfstatat", "_newselect", "open", "openat", "pause", "personality",
    "pipe", "pipe2", "poll", "ppoll", "prctl", "pread64", "preadv", "prlimit64", "pselect6",
    "pwrite64", "pwritev", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
    "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages", "removexattr", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity", "sched_setattr",
    "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
    "semget", "semop", "semtimedop", "send", "sendfile", "sendfile64", "sendmmsg",
    "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid",
    "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority",
    "setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32",
    "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt",
    "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat",
    "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4",
    "sigreturn", "socket", "socketcall", "socketpair", "splice", "stat", "stat64",
    "statfs", "statfs64", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
    "sysinfo", "syslog", "tee", "tgkill", "time", "timer_create", "timer_delete",
    "timerfd_create", "timerfd_gettime", "timerfd_settime", "timer_getoverrun",
    "timer_gettime", "timer_settime", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat", "utimes",
    "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev", "arch_prctl",
    "modify_ldt", "chroot", "clone",
    # needed by current glibc/musl; Docker allows them today
    "rseq", "clone3", "statx", "faccessat2", "openat2", "close_range", "pidfd_open",
    "pidfd_send_signal", "epoll_pwait2", "preadv2", "pwritev2", "membarrier",
)

#: podrun's default remove-set, applied when an app has no seccomp isolator.
#: Each entry and why (all are blocked with EPERM, like a missing capability):
DEFAULT_REMOVE_SET: dict[str, str] = {
    # kernel / host state no container should touch
    "reboot": "reboots the host (or kills a pid namespace's init)",
    "kexec_load": "loads a new kernel", "kexec_file_load": "loads a new kernel",
    "init_module": "loads kernel code", "finit_module": "loads kernel code",
    "delete_module": "unloads kernel code", "create_module": "obsolete module loading",
    "swapon": "host swap configuration", "swapoff": "host swap configuration",
    "acct": "host process accounting", "settimeofday": "sets the host clock",
    "clock_settime": "sets the host clock", "clock_adjtime": "adjusts the host clock",
    "adjtimex": "adjusts the host clock", "stime": "sets the host clock",
    "quotactl": "host filesystem quotas", "nfsservctl": "obsolete NFS daemon control",
    "iopl": "raw I/O port access", "ioperm": "raw I/O port access",
    "syslog": "reads/clears the host kernel log",
    "lookup_dcookie": "profiling, host-wide", "uselib": "obsolete, a.out loading",
    "vm86": "obsolete", "vm86old": "obsolete", "sysfs": "obsolete", "_sysctl": "obsolete",
    "ustat": "obsolete", "get_kernel_syms": "obsolete", "query_module": "obsolete",
    # classic container-escape and kernel attack surface
    "open_by_handle_at": "opens any file by handle, bypassing the mount namespace"
                         " (the 'shocker' escape)",
    "name_to_handle_at": "pairs with open_by_handle_at",
    "bpf": "large kernel attack surface; host-wide programs",
    "perf_event_open": "kernel attack surface; leaks host information",
    "userfaultfd": "widely used to win kernel races in exploits",
    "keyctl": "the kernel keyring is not namespaced",
    "add_key": "the kernel keyring is not namespaced",
    "request_key": "the kernel keyring is not namespaced",
    "kcmp": "inspects other processes' kernel objects",
    "process_vm_readv": "reads another process's memory (like ptrace)",
    "process_vm_writev": "writes another process's memory (like ptrace)",
    "ptrace": "the pod init shares the pid namespace; CAP_SYS_PTRACE is not granted",
    "mbind": "NUMA policy of host memory", "set_mempolicy": "NUMA policy",
    "get_mempolicy": "NUMA policy", "move_pages": "moves other processes' pages",
}

#: Allowed again when the app holds the capability that already gates them
#: (Docker's rule: mount & co. belong to an app granted CAP_SYS_ADMIN).
CAP_GATED: dict[str, tuple[str, ...]] = {
    "CAP_SYS_ADMIN": ("mount", "umount", "umount2", "pivot_root", "setns", "unshare"),
    "CAP_SYS_PTRACE": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp"),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module"),
    "CAP_SYS_TIME": ("settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime"),
    "CAP_SYSLOG": ("syslog",),
}

GROUPS: dict[str, tuple[str, ...]] = {
    "@docker/default-blacklist": DOCKER_DEFAULT_BLACKLIST,
    "@docker/default-whitelist": DOCKER_DEFAULT_WHITELIST,
    "@rkt/default-blacklist": DOCKER_DEFAULT_BLACKLIST,
    "@rkt/default-whitelist": DOCKER_DEFAULT_WHITELIST,
    "@podrun/default-blacklist": tuple(DEFAULT_REMOVE_SET),
}


def parse_errno(value: int | str | None) -> int | None:
    """``"EPERM"`` / ``1`` / ``None`` or ``""`` (kill) → errno number or None."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int):
        if not 0 < value < 4096:
            raise ValueError(f"errno {value} out of range")
        return value
    num = getattr(errno_mod, value.strip().upper(), None) if value.isidentifier() else None
    if not isinstance(num, int) or not value.strip().upper().startswith("E"):
        raise ValueError(f"unknown errno name {value!r}")
    return num


def expand(names: list[str]) -> list[str]:
    """Expand ``@`` groups (keeping ``@appc.io/*`` as is); unknown group → ValueError."""
    out: list[str] = []
    for name in names:
        if name in (ALL, EMPTY):
            out.append(name)
        elif name.startswith("@"):
            try:
                out.extend(GROUPS[name])
            except KeyError:
                raise ValueError(f"unknown seccomp group {name!r}") from None
        else:
            out.append(name)
    return out


def resolve(names: list[str]) -> dict[str, int]:
    """Syscall name → native number (negative if the name exists only on other
    architectures). Any name libseccomp does not know → ValueError naming it."""
    result: dict[str, int] = {}
    unknown: list[str] = []
    for name in names:
        nr = scmp.resolve_name(name)
        if nr == scmp.NR_SCMP_ERROR:
            unknown.append(name)
        else:
            result[name] = nr
    if unknown:
        raise ValueError(f"unknown syscall{'s' if len(unknown) > 1 else ''}: "
                         f"{', '.join(sorted(unknown))}")
    return result


@dataclass(frozen=True)
class ArgRule:
    """A rule for one syscall that applies only when its arguments match
    (libseccomp ``(arg_index, op, datum_a, datum_b)`` comparisons, all ANDed).
    ``errno`` None = the filter's blocked action."""

    syscall: str
    args: tuple[tuple[int, int, int, int], ...] = ()
    errno: int | None = None


@dataclass
class Filter:
    """A seccomp filter ready to load: the default action plus per-syscall actions.

    ``syscalls`` are names (groups expanded); an empty retain filter that is
    ``unrestricted`` (``@appc.io/all``) or a remove filter with no names loads nothing.
    """

    mode: Mode
    syscalls: list[str]
    errno: int | None = None
    unrestricted: bool = False
    numbers: dict[str, int] = field(default_factory=dict, repr=False)
    arg_rules: list[ArgRule] = field(default_factory=list)

    @property
    def blocked_action(self) -> int:
        return scmp.SCMP_ACT_KILL_PROCESS if self.errno is None else scmp.SCMP_ACT_ERRNO(self.errno)

    def is_noop(self) -> bool:
        return self.unrestricted or (self.mode == "remove" and not self.syscalls
                                     and not self.arg_rules)

    def context(self) -> scmp.Context:
        """Build the libseccomp context (native arch plus its compat arches)."""
        if self.mode == "retain":
            ctx = scmp.Context(self.blocked_action)
            rule_action = scmp.SCMP_ACT_ALLOW
        else:
            ctx = scmp.Context(scmp.SCMP_ACT_ALLOW)
            rule_action = self.blocked_action
        ctx.attr_set(scmp.SCMP_FLTATR_CTL_NNP, 0)
        try:
            ctx.attr_set(scmp.SCMP_FLTATR_API_SYSRAWRC, 1)
        except OSError:
            pass  # libseccomp < 2.5: kernel errors come back as they are anyway
        for arch in _compat_arches():
            try:
                ctx.arch_add(arch)
            except OSError:
                pass  # libseccomp or kernel without that compat arch: native only
        for name in self.syscalls:
            ctx.rule_add(rule_action, self.numbers[name])
        for rule in self.arg_rules:
            action = self.blocked_action if rule.errno is None else scmp.SCMP_ACT_ERRNO(rule.errno)
            ctx.rule_add(action, scmp.resolve_name(rule.syscall), list(rule.args))
        return ctx

    def load(self) -> None:
        """Install the filter on the calling process (irreversible; inherited).

        Needs no_new_privs set or CAP_SYS_ADMIN in the effective set (kernel rule).
        """
        if self.is_noop():
            return
        ctx = self.context()
        try:
            ctx.load()
        except OSError as e:
            if e.errno == errno_mod.EACCES:
                raise OSError(e.errno, "seccomp_load: permission denied (set no_new_privs "
                              "first, or load while holding CAP_SYS_ADMIN)") from e
            raise
        finally:
            ctx.release()

    def export(self) -> str:
        """The filter in libseccomp's readable PFC form (for --debug and tests)."""
        import tempfile

        ctx = self.context()
        try:
            with tempfile.TemporaryFile() as f:
                ctx.export_pfc(f.fileno())
                f.seek(0)
                return f.read().decode()
        finally:
            ctx.release()


def _compat_arches() -> list[int]:
    native = scmp.arch_native()
    if native == scmp.SCMP_ARCH_X86_64:
        return [scmp.SCMP_ARCH_X86, scmp.SCMP_ARCH_X32]
    if native == scmp.SCMP_ARCH_AARCH64:
        return [scmp.SCMP_ARCH_ARM]
    return []


def build_filter(mode: Mode, syscalls: list[str], errno: int | str | None = None) -> Filter:
    """Build the filter for an appc seccomp isolator.

    *mode* ``"retain"`` allows only *syscalls* (plus :data:`LIFECYCLE`); ``"remove"``
    blocks exactly *syscalls*. *errno* (name or number) makes blocked calls fail with
    it; None kills the process with SIGSYS. Empty *syscalls* → ValueError (appc:
    the set MUST NOT be empty).
    """
    if mode not in ("retain", "remove"):
        raise ValueError(f"seccomp mode must be 'retain' or 'remove', not {mode!r}")
    if not syscalls:
        raise ValueError(f"seccomp {mode}-set is empty")
    err = parse_errno(errno)
    names = expand(list(syscalls))
    if mode == "remove" and ALL in names:
        raise ValueError(f"{ALL} in a remove-set would block every syscall")
    if mode == "retain" and ALL in names:
        return Filter(mode, [], err, unrestricted=True)
    if mode == "remove" and EMPTY in names:
        return Filter(mode, [], err)
    names = [n for n in names if n != EMPTY]
    if mode == "retain":
        names += LIFECYCLE
    # negative (pseudo) numbers name syscalls of other arches: libseccomp maps them
    # onto the compat arches of the filter
    numbers = resolve(names)
    return Filter(mode, sorted(numbers), err, numbers=numbers)


#: clone(2) flags that create namespaces (Docker's 0x7E020000 mask, bit by bit)
NAMESPACE_CLONE_FLAGS: tuple[int, ...] = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)


def namespace_clone_rules(err: int | None) -> list[ArgRule]:
    """Block clone(2) with any namespace flag, and clone3(2) outright with ENOSYS
    (its flags sit behind a pointer seccomp cannot read; libc falls back to clone)."""
    rules = [ArgRule("clone", ((0, scmp.SCMP_CMP_MASKED_EQ, bit, bit),), err)
             for bit in NAMESPACE_CLONE_FLAGS]
    return rules + [ArgRule("clone3", (), errno_mod.ENOSYS)]


def default_profile(caps: set[str] | None = None, errno: int | str = "EPERM") -> Filter:
    """podrun's filter for an app with no seccomp isolator, in the spirit of Docker's
    and rkt's defaults: a remove-set of :data:`DEFAULT_REMOVE_SET` plus ``mount``,
    ``umount``/``umount2``, ``pivot_root``, ``setns``, ``unshare`` and namespace-creating
    ``clone`` (:func:`namespace_clone_rules`), all failing with EPERM — except the
    syscalls a capability in *caps* (names: the app's resolved capability set)
    legitimately grants (:data:`CAP_GATED`). mount & co. fail with EPERM anyway
    without CAP_SYS_ADMIN; the filter also closes the unprivileged user-namespace path
    to them (and the large kernel surface behind it).
    """
    caps = caps or set()
    blocked = set(DEFAULT_REMOVE_SET) | set(CAP_GATED["CAP_SYS_ADMIN"])
    for cap, calls in CAP_GATED.items():
        if cap in caps:
            blocked -= set(calls)
    f = build_filter("remove", sorted(blocked), errno)
    if "CAP_SYS_ADMIN" not in caps:
        f.arg_rules = namespace_clone_rules(f.errno)
    return f

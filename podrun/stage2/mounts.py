"""The mounts inside an app's rootfs, made before ``pivot_root``: ``/proc`` (a new
instance for the pod's pid namespace) with runc's masked and read-only paths, ``/sys``
read-only, a fresh ``/dev`` tmpfs, the app's volumes and the pod's etc files.

Every target is resolved inside the rootfs with
:func:`podrun.stage2.rootfs.resolve_in_root` and mounted through its
``/proc/self/fd/N`` path, so an image's symlinks can neither send a mount out of the
rootfs nor race us into it (runc CVE-2021-30465). ``/proc``, ``/sys`` and ``/dev``
themselves must be real directories in the image (runc's rule; a symlink there
would let the image choose where procfs lands).

Masked paths follow runc's default spec: a directory is covered by a read-only
tmpfs, anything else by ``/dev/null``. ``/proc/asound`` is masked as Docker and
runc's default spec do today (stricter than read-only).

All mounts live in the app's own mount namespace and die with it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable

from podrun.linux import (
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_STRICTATIME,
    mount,
)
from podrun.stage2.app import MountSpec
from podrun.stage2.rootfs import (
    copy_tree,
    fd_path,
    mount_points,
    opened_in_root,
    resolve_in_root,
)

MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

#: (name, major, minor) of the character devices every app gets (all mode 0666)
DEVICES: tuple[tuple[str, int, int], ...] = (
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
    ("urandom", 1, 9), ("tty", 5, 0),
)
DEV_SYMLINKS: tuple[tuple[str, str], ...] = (
    ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"),
)
_NOSUID_NODEV_NOEXEC = MS_NOSUID | MS_NODEV | MS_NOEXEC


class MountError(Exception):
    """A mount the app needs could not be made (message names the target)."""


# --- helpers ----------------------------------------------------------------------

def _system_dir(root: int, name: str) -> int:
    """O_PATH fd of the top-level directory *name* (created if missing; a symlink or
    non-directory there is refused)."""
    try:
        st = os.lstat(name, dir_fd=root)
    except FileNotFoundError:
        os.mkdir(name, 0o755, dir_fd=root)
        st = os.lstat(name, dir_fd=root)
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"/{name} in the image is not a directory (symlinks are refused)")
    return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC,
                   dir_fd=root)


def _mount_on_fd(source: str | None, fd: int, fstype: str | None, flags: int,
                 data: str | None, what: str) -> None:
    try:
        mount(source, fd_path(fd), fstype, flags, data)
    except OSError as e:
        raise MountError(f"mount {what}: {os.strerror(e.errno or 0)}") from e


def mount_flags(path: str) -> int:
    """The per-mount flags of the mount at *path* that a bind remount must keep."""
    f = os.statvfs(path).f_flag
    keep = f & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    if f & os.ST_RELATIME:
        keep |= MS_RELATIME
    return keep


def remount_ro(root: int, target: str, *, recursive: bool = False,
               rootfs: str | None = None) -> None:
    """Make the mount at *target* (in-root path) read-only, keeping its other flags;
    with *recursive*, also every mount below it (*rootfs* = the root's path in the
    current view, needed to find them in mountinfo)."""
    with opened_in_root(root, target) as (fd, resolved):
        p = fd_path(fd)
        try:
            mount(None, p, None, MS_BIND | MS_REMOUNT | MS_RDONLY | mount_flags(p), None)
        except OSError as e:
            raise MountError(f"remount {target} read-only: {os.strerror(e.errno or 0)}") from e
    if recursive and rootfs is not None:
        top = os.path.join(rootfs, resolved.lstrip("/")).rstrip("/")
        for mp in mount_points():
            if mp.startswith(top + "/"):
                mount(None, mp, None, MS_BIND | MS_REMOUNT | MS_RDONLY | mount_flags(mp), None)


# --- /proc, /sys ------------------------------------------------------------------

def mount_proc(root: int) -> None:
    """A new procfs at /proc: it shows the pod's pid namespace (ours)."""
    fd = _system_dir(root, "proc")
    try:
        _mount_on_fd("proc", fd, "proc", _NOSUID_NODEV_NOEXEC, None, "/proc")
    finally:
        os.close(fd)


def mount_sys(root: int) -> None:
    """sysfs read-only at /sys; where a new sysfs is refused, a read-only rbind of
    the current /sys instead."""
    fd = _system_dir(root, "sys")
    try:
        try:
            mount("sysfs", fd_path(fd), "sysfs", _NOSUID_NODEV_NOEXEC | MS_RDONLY, None)
            return
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EBUSY, errno.EINVAL):
                raise MountError(f"mount /sys: {os.strerror(e.errno or 0)}") from e
        _mount_on_fd("/sys", fd, None, MS_BIND | MS_REC, None, "/sys (rbind)")
    finally:
        os.close(fd)
    # a bind keeps the submounts' own flags: make each read-only
    rootfs = os.readlink(fd_path(root))
    remount_ro(root, "/sys", recursive=True, rootfs=rootfs)


def mask_paths(root: int, paths: Iterable[str] = MASKED_PATHS) -> None:
    """Hide *paths*: read-only tmpfs over directories, /dev/null over the rest.
    Needs the app's /dev (for its null device) mounted first."""
    with opened_in_root(root, "/dev/null") as (null, _):
        null_path = fd_path(null)
        for path in paths:
            try:
                fd, _ = resolve_in_root(root, path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    _mount_on_fd("tmpfs", fd, "tmpfs", MS_RDONLY, None, f"mask {path}")
                else:
                    _mount_on_fd(null_path, fd, None, MS_BIND, None, f"mask {path}")
            finally:
                os.close(fd)


def readonly_paths(root: int, paths: Iterable[str] = READONLY_PATHS) -> None:
    """Bind each existing path onto itself and remount it read-only."""
    for path in paths:
        try:
            fd, _ = resolve_in_root(root, path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            _mount_on_fd(fd_path(fd), fd, None, MS_BIND | MS_REC, None, path)
        finally:
            os.close(fd)
        remount_ro(root, path)


# --- /dev -------------------------------------------------------------------------

def mount_dev(root: int) -> None:
    """A tmpfs /dev with the standard nodes, devpts (new instance), shm, mqueue and
    the usual symlinks; /dev/console is the pod's terminal when stdout is one."""
    fd = _system_dir(root, "dev")
    try:
        _mount_on_fd("tmpfs", fd, "tmpfs", MS_NOSUID | MS_STRICTATIME,
                     "mode=755,size=65536k", "/dev")
    finally:
        os.close(fd)
    dev = os.open("dev", os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC,
                  dir_fd=root)
    old_umask = os.umask(0)
    try:
        _dev_nodes(dev)
        _dev_mounts(dev)
        for name, target in DEV_SYMLINKS:
            os.symlink(target, name, dir_fd=dev)
        _dev_console(dev)
        # The tmpfs itself becomes nodev: nodes the app makes in /dev are inert. The
        # standard nodes stay usable because each is a bind mount of its own.
        mount(None, fd_path(dev), None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV
              | MS_STRICTATIME, None)
    finally:
        os.umask(old_umask)
        os.close(dev)


def _dev_nodes(dev: int) -> None:
    for name, major, minor in DEVICES:
        try:
            os.mknod(name, stat.S_IFCHR | 0o666, os.makedev(major, minor), dir_fd=dev)
            with _at(dev, name) as fd:  # its own mount, unaffected by /dev's nodev
                _mount_on_fd(fd_path(fd), fd, None, MS_BIND, None, f"/dev/{name}")
        except PermissionError:
            # no CAP_MKNOD here (user namespace): bind the current view's node
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                             0o666, dir_fd=dev))
            with _at(dev, name) as fd:
                _mount_on_fd(f"/dev/{name}", fd, None, MS_BIND, None, f"/dev/{name}")


def _dev_mounts(dev: int) -> None:
    for name, fstype, flags, data in (
        ("pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ("shm", "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k"),
        ("mqueue", "mqueue", _NOSUID_NODEV_NOEXEC, None),
    ):
        os.mkdir(name, 0o755, dir_fd=dev)
        with _at(dev, name) as fd:
            _mount_on_fd(fstype, fd, fstype, flags, data, f"/dev/{name}")


def _dev_console(dev: int) -> None:
    if not os.isatty(1):
        return
    try:
        tty = os.ttyname(1)
    except OSError:
        return
    os.close(os.open("console", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600,
                     dir_fd=dev))
    with _at(dev, "console") as fd:
        _mount_on_fd(tty, fd, None, MS_BIND, None, "/dev/console")


class _at:
    """``with _at(dirfd, name) as fd``: an O_PATH fd of *name* under *dirfd*."""

    def __init__(self, dirfd: int, name: str) -> None:
        self.fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


# --- volumes and etc files --------------------------------------------------------

def _depth(m: MountSpec) -> int:
    return len([p for p in m.target.split("/") if p])


def mount_volumes(root: int, rootfs: str, mounts: Iterable[MountSpec]) -> None:
    """The app's extra mounts, parents before children (stable for equal depth)."""
    for m in sorted(mounts, key=_depth):
        mount_volume(root, rootfs, m)


def mount_volume(root: int, rootfs: str, m: MountSpec) -> None:
    if m.kind == "tmpfs":
        _mount_tmpfs(root, m)
    else:
        assert m.source is not None
        if not os.path.exists(m.source):
            raise MountError(f"mount {m.target}: source {m.source} does not exist")
        is_dir = os.path.isdir(m.source)
        if m.kind == "file" and is_dir:
            raise MountError(f"mount {m.target}: source {m.source} is a directory")
        if is_dir:
            if m.seed_from_image:
                seed_from_image(root, m.target, m.source)
            _set_owner_mode(m.source, m)
        flags = MS_BIND | (MS_REC if m.recursive else 0)
        fd = _volume_target(root, m, "dir" if is_dir else "file")
        try:
            _mount_on_fd(m.source, fd, None, flags, None, f"{m.source} on {m.target}")
        finally:
            os.close(fd)
    if m.read_only:
        remount_ro(root, m.target, recursive=m.recursive and m.kind != "tmpfs",
                   rootfs=rootfs)


def _volume_target(root: int, m: MountSpec, create: str) -> int:
    """O_PATH fd of a volume's mount point (created if missing). The rootfs itself
    and anything in /proc are refused (runc's rule: no mounts over procfs)."""
    try:
        fd, resolved = resolve_in_root(root, m.target, create=create)
    except OSError as e:
        raise MountError(f"mount {m.target}: {e.strerror or e}") from e
    _refuse_target(fd, resolved, f"mount {m.target}")
    return fd


def _refuse_target(fd: int, resolved: str, what: str) -> None:
    """Close *fd* and fail if *resolved* is the rootfs itself or inside /proc."""
    if resolved == "/" or resolved == "/proc" or resolved.startswith("/proc/"):
        os.close(fd)
        where = "the rootfs itself" if resolved == "/" else f"{resolved}, inside /proc"
        raise MountError(f"{what}: refusing to mount over {where}")


def _mount_tmpfs(root: int, m: MountSpec) -> None:
    opts = [f"mode={m.mode:o}" if m.mode is not None else "mode=755"]
    if m.uid is not None:
        opts.append(f"uid={m.uid}")
    if m.gid is not None:
        opts.append(f"gid={m.gid}")
    fd = _volume_target(root, m, "dir")
    try:
        _mount_on_fd("tmpfs", fd, "tmpfs", MS_NOSUID | MS_NODEV, ",".join(opts),
                     f"tmpfs on {m.target}")
    finally:
        os.close(fd)


def _set_owner_mode(path: str, m: MountSpec) -> None:
    if m.uid is not None or m.gid is not None:
        os.chown(path, -1 if m.uid is None else m.uid, -1 if m.gid is None else m.gid)
    if m.mode is not None:
        os.chmod(path, m.mode)


def seed_from_image(root: int, target: str, source: str) -> bool:
    """If the volume dir *source* is empty and the image has a directory at *target*,
    copy that content (owners, modes, links kept) into *source*. Returns whether it
    copied. "Empty" is the first-use test (Docker's rule): a volume the app emptied
    is seeded again on its next start."""
    if any(os.scandir(source)):
        return False
    try:
        fd, _ = resolve_in_root(root, target)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            return False
        copy_tree(fd_path(fd), source)
    finally:
        os.close(fd)
    return True


def bind_etc_files(root: int, files: dict[str, str]) -> None:
    """Bind each pod file (value) over the app's file (key, an in-root path). The
    target is created when missing, but only if its directory exists in the image."""
    for target, source in files.items():
        parent = os.path.dirname(target.rstrip("/")) or "/"
        try:
            os.close(resolve_in_root(root, parent)[0])
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            fd, resolved = resolve_in_root(root, target, create="file")
        except OSError as e:
            raise MountError(f"bind {target}: {e.strerror or e}") from e
        _refuse_target(fd, resolved, f"bind {target}")
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise MountError(f"bind {target}: it is a directory in the image")
            _mount_on_fd(source, fd, None, MS_BIND, None, f"{source} on {target}")
        finally:
            os.close(fd)

"""An app's root filesystem: the overlay (or copy) at ``<app dir>/rootfs``, safe path
resolution inside it, and the final ``pivot_root`` into it.

- :func:`prepare_rootfs` mounts ``overlay`` (lowerdir = the rendered tree, upperdir =
  ``upper/``, workdir = ``work/``) at ``rootfs/``; if the kernel refuses overlay here
  (EINVAL/ENODEV) or ``overlay=False``, the tree is copied into ``rootfs/`` once (the
  marker ``rootfs.copied`` next to it makes a restart reuse the copy) and bind-mounted
  onto itself so it is a mount point. Either way the rootfs is mounted ``nodev``:
  device nodes shipped in an image are inert; the app's ``/dev`` is a separate tmpfs.
- :func:`resolve_in_root` is our securejoin: it walks a path one component at a
  time with ``openat(O_PATH|O_NOFOLLOW)``, reads each symlink itself and resolves it
  relative to the rootfs (``..`` stops at the root), so no symlink in the image can
  point a mount out of the rootfs. The result is an ``O_PATH`` fd; callers mount on
  ``/proc/self/fd/N`` so nothing can swap a path component between the check and the
  mount (runc CVE-2021-30465).
- :func:`pivot_into` does runc's ``pivot_root(".", ".")`` + lazy unmount of the old
  root, which needs no ``put_old`` directory (so a read-only rootfs works).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from podrun.linux import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_REC,
    MS_REMOUNT,
    mount,
    mountinfo,
    pivot_root,
    umount2,
)
from podrun.stage2.app import AppSpec

MAX_SYMLINKS = 40
COPY_MARKER = "rootfs.copied"
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def fd_path(fd: int) -> str:
    """The magic-link path of *fd*, usable as a mount(2) source or target."""
    return f"/proc/self/fd/{fd}"


# --- safe resolution inside a root ------------------------------------------------

def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def resolve_in_root(root: str | int, path: str, *, create: str | None = None,
                    mode: int = 0o755) -> tuple[int, str]:
    """Open *path* inside *root* (a directory path or an open directory fd) as an
    ``O_PATH`` fd, never leaving *root*.

    Symlinks are resolved relative to *root*; ``..`` at *root* stays at *root*.
    *create* ``"dir"`` or ``"file"`` creates missing components (parents as
    directories with *mode*, the last one as given). Returns ``(fd, resolved)`` where
    *resolved* is the in-root path actually reached ("/" for the root itself). The
    caller closes the fd. Missing paths raise FileNotFoundError naming *path*.
    """
    own_root = isinstance(root, str)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if own_root else root
    stack: list[tuple[int, str]] = []          # (fd, name) of each resolved component
    todo = _split(path)
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            if name == "..":
                if stack:
                    os.close(stack.pop()[0])
                continue
            parent = stack[-1][0] if stack else root_fd
            try:
                fd = os.open(name, _PATH_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if create is None:
                    raise FileNotFoundError(errno.ENOENT, f"{path}: no such file or directory "
                                            "inside the rootfs") from None
                fd = _create(parent, name, "dir" if todo else create, mode)
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                target = os.readlink("", dir_fd=fd)
                os.close(fd)
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, f"{path}: too many symlinks inside the rootfs")
                if target.startswith("/"):
                    while stack:
                        os.close(stack.pop()[0])
                todo = _split(target) + todo
                continue
            if todo and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise NotADirectoryError(errno.ENOTDIR, f"{path}: {name} is not a directory")
            stack.append((fd, name))
        resolved = "/" + "/".join(n for _, n in stack)
        result = os.dup(stack[-1][0]) if stack else os.open(
            ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
        return result, resolved
    finally:
        for fd, _ in stack:
            os.close(fd)
        if own_root:
            os.close(root_fd)


def _create(parent: int, name: str, kind: str, mode: int) -> int:
    try:
        if kind == "dir":
            os.mkdir(name, mode, dir_fd=parent)
        else:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=parent))
    except FileExistsError:
        pass  # raced with someone else creating it: open what is there
    return os.open(name, _PATH_FLAGS, dir_fd=parent)


@contextmanager
def opened_in_root(root: str | int, path: str, *, create: str | None = None,
                   mode: int = 0o755) -> Iterator[tuple[int, str]]:
    """:func:`resolve_in_root` as a context manager that closes the fd."""
    fd, resolved = resolve_in_root(root, path, create=create, mode=mode)
    try:
        yield fd, resolved
    finally:
        os.close(fd)


def read_in_root(root: str, path: str) -> bytes | None:
    """Content of the regular file at *path* inside *root*, or None if it is missing."""
    try:
        fd, _ = resolve_in_root(root, path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        rfd = os.open(fd_path(fd), os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(fd)
    with os.fdopen(rfd, "rb") as f:
        return f.read()


# --- mount points -----------------------------------------------------------------

def mount_points() -> list[str]:
    """Mount points of the calling process's mount namespace, in mount order."""
    return [m.mount_point for m in mountinfo.read()]


def is_mount_point(path: str) -> bool:
    return os.path.realpath(path) in mount_points()


# --- the rootfs -------------------------------------------------------------------

def _escape_opt(path: str) -> str:
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def prepare_rootfs(spec: AppSpec) -> str:
    """Mount the app's rootfs at ``<app_dir>/rootfs`` and return that path.

    Idempotent: an already mounted rootfs is returned as is. Called by ``launch``
    inside the app's own mount namespace; the pod init may call it in its own
    namespace (post-stop handlers), and then unmounts it itself.
    """
    app_dir = spec.app_dir
    rootfs = os.path.join(app_dir, "rootfs")
    os.makedirs(rootfs, mode=0o755, exist_ok=True)
    if is_mount_point(rootfs):
        return rootfs
    if spec.overlay:
        try:
            mount_overlay(spec.lower, app_dir, rootfs)
            return rootfs
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENODEV):
                raise
    copy_rootfs(spec.lower, app_dir, rootfs)
    mount(rootfs, rootfs, None, MS_BIND | MS_REC)
    mount(None, rootfs, None, MS_BIND | MS_REMOUNT | MS_NODEV)
    return rootfs


def mount_overlay(lower: str, app_dir: str, rootfs: str) -> None:
    upper, work = os.path.join(app_dir, "upper"), os.path.join(app_dir, "work")
    for d in (upper, work):
        os.makedirs(d, mode=0o755, exist_ok=True)
    # the upper dir's root takes the lower root's mode/owner (overlay copies it up
    # only on first change; "/" of an image is 0755 root:root in practice)
    data = (f"lowerdir={_escape_opt(lower)},upperdir={_escape_opt(upper)},"
            f"workdir={_escape_opt(work)}")
    mount("overlay", rootfs, "overlay", MS_NODEV, data)


def copy_rootfs(lower: str, app_dir: str, rootfs: str) -> None:
    """Copy *lower* into *rootfs* unless a finished copy is there already."""
    marker = os.path.join(app_dir, COPY_MARKER)
    if os.path.exists(marker):
        return
    from podrun.fsutil import rmtree

    rmtree(Path(rootfs))
    os.mkdir(rootfs)
    copy_tree(lower, rootfs)
    with open(marker, "w") as f:
        f.write("complete\n")


def copy_tree(src: str, dst: str) -> None:
    """Copy the directory *src* into the existing directory *dst*, keeping file
    types, owners, modes (setuid included), times, xattrs and hard links; symlinks are
    copied, never followed."""
    links: dict[tuple[int, int], str] = {}
    _copy_dir(src, dst, links)
    _copy_meta(src, dst, os.stat(src), follow=True)   # src may be a /proc/self/fd link


def _copy_dir(src: str, dst: str, links: dict[tuple[int, int], str]) -> None:
    with os.scandir(src) as it:
        entries = list(it)
    for e in entries:
        s, d = os.path.join(src, e.name), os.path.join(dst, e.name)
        st = os.lstat(s)
        m = st.st_mode
        if stat.S_ISDIR(m):
            os.mkdir(d, 0o700)
            _copy_dir(s, d, links)
        elif stat.S_ISLNK(m):
            os.symlink(os.readlink(s), d)
        elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
            os.link(links[(st.st_dev, st.st_ino)], d)
            continue
        elif stat.S_ISREG(m):
            _copy_file(s, d)
        elif stat.S_ISFIFO(m) or stat.S_ISCHR(m) or stat.S_ISBLK(m):
            os.mknod(d, m, st.st_rdev)
        else:
            continue  # sockets: nothing to copy
        if st.st_nlink > 1 and not stat.S_ISDIR(m):
            links[(st.st_dev, st.st_ino)] = d
        _copy_meta(s, d, st)


def _copy_file(src: str, dst: str) -> None:
    with open(src, "rb") as fi, open(dst, "xb") as fo:
        size = os.fstat(fi.fileno()).st_size
        copied = 0
        try:
            while copied < size:
                n = os.copy_file_range(fi.fileno(), fo.fileno(), size - copied)
                if n == 0:
                    break
                copied += n
        except OSError:
            fi.seek(copied)
            fo.seek(copied)
            while chunk := fi.read(1 << 20):
                fo.write(chunk)


def _copy_meta(src: str, dst: str, st: os.stat_result, follow: bool = False) -> None:
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    try:
        for name in os.listxattr(src, follow_symlinks=follow):
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=follow),
                        follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EPERM):
            raise
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def pivot_into(rootfs: str) -> None:
    """Make *rootfs* (a mount point) the root and drop the old root from view."""
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchdir(fd)
        pivot_root(".", ".")
        umount2(".", MNT_DETACH)   # the old root, stacked on top of "."
        os.chdir("/")
    finally:
        os.close(fd)

"""Contained extraction of an (uncompressed) image tar into a directory.

The store renders image trees with :func:`extract_tar`, called once per layer on
the same destination (dependencies first), and ``podrun image extract/render``
use it directly. Image content is untrusted, so containment does not rest on
path checks alone:

* **Containment is the kernel's.** A forked child opens the tar, ``chroot(2)``s
  into ``dest`` (we run as root, as containerd's chrootarchive and umoci do),
  ``chdir("/")``, closes every other fd, and extracts there. Whatever a hostile
  archive does (absolute symlinks, ``..`` symlinks, a symlink laid by this or an
  earlier layer and then written through, duplicate entries turning a directory
  into a symlink, hardlinks to ``/etc/passwd``), every path resolves inside
  ``dest``. The parent waits and turns a child failure into one-line
  :class:`UnsafeArchiveError` (hostile names) or :class:`ImageError`.
* **Hostile names are rejected, not normalised.** A member name (or hardlink
  target) that is absolute or has a ``..`` component after cleaning aborts the
  extraction with UnsafeArchiveError naming it (as GNU tar refuses ``..``
  members); so does a hardlink whose target lies outside the stripped root.
  Entries already written stay (the store discards a failed render).
* Without root there is no chroot: :func:`extract_tar` refuses with ImageError
  (a rootless path would chroot inside a user namespace; not built yet).
* The child is a plain ``fork()`` that runs only ``os`` calls and an already
  opened tarfile, then ``os._exit``; it is safe from a single-threaded caller (the
  CLI). A multi-threaded front end should call it from a helper process.

Semantics: with ``strip="rootfs"`` only ``rootfs`` and the entries below it are
extracted, with the prefix removed (the ``rootfs`` entry itself sets ``dest``'s
owner/mode); with ``strip=None`` the whole archive is. ``keep(path)`` sees the
path relative to the stripped root (``"bin/sh"``) and filters every entry; it
runs in the chrooted child, so it must not need imports or host files. A kept
hardlink whose target file was filtered out gets the target's data and metadata
(later links to the same target link to it), as rkt's pathWhitelist needs.

Layering: a later entry replaces an existing non-directory (unlinked first, so a
hardlinked file of a lower layer is never written through) and an existing
directory when it is not one itself; a directory over a directory merges and
updates owner/mode/xattrs. Symlinks are created, never followed at the final
component; earlier path components resolve inside the chroot.

Preserved (as root): uid/gid (numeric; names ignored), mode incl.
setuid/setgid/sticky (chmod after chown, which clears them), xattrs from PAX
``SCHILY.xattr.*`` incl. ``security.capability`` (set after chown, which clears
it; ENOTSUP from the filesystem is ignored; ``trusted.overlay.*`` and
``user.overlay.*`` are dropped, since rendered trees become overlayfs lower
layers and those would steer overlayfs), char/block devices, fifos,
hardlinks inside the archive, symlinks, mtimes (directories' at the end).

Speed: the tar is read with random access (headers only) and file bodies are
copied kernel-side with ``copy_file_range``/``sendfile`` from the tar fd.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import signal
import stat
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from podrun.errors import ImageError, PodrunError, UnsafeArchiveError

_UNSAFE = 3
_FAILED = 4
_MSG_MAX = 4096
_COPY_CHUNK = 1 << 30

# Overlayfs reads these on lower layers (opaque dirs, redirects, metacopy): an image
# must not be able to steer the overlay its rendered tree becomes a lower layer of.
_SKIP_XATTRS = ("trusted.overlay.", "user.overlay.")

_NOFOLLOW_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Unsafe(Exception):
    """Raised in the child for a hostile entry."""


def extract_tar(tar_path: Path, dest: Path, *, strip: str | None = "rootfs",
                keep: Callable[[str], bool] | None = None) -> None:
    """Extract the uncompressed tar ``tar_path`` into ``dest``, contained by a chroot."""
    if os.geteuid() != 0:
        raise ImageError(f"extracting {tar_path} needs root (contained by chroot(2))")
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ImageError(f"cannot create {dest}: {err.strerror}") from err
    try:
        tar_fd = os.open(tar_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise ImageError(f"cannot open {tar_path}: {err.strerror}") from err
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(rfd)
            _child(tar_fd, wfd, str(dest), strip, keep)
        os.close(wfd)
        wfd = -1
        try:
            message = _read_all(rfd)
            _, status = os.waitpid(pid, 0)
        except BaseException:  # interrupted: do not leave the child writing on its own
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
    finally:
        os.close(tar_fd)
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    _raise_for(status, message, tar_path)


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, _MSG_MAX):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace").strip()


def _raise_for(status: int, message: str, tar_path: Path) -> None:
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if code == 0:
            return
        text = message or f"extraction failed (exit {code})"
        if code == _UNSAFE:
            raise UnsafeArchiveError(f"{tar_path}: {text}")
        raise ImageError(f"{tar_path}: {text}")
    raise ImageError(f"{tar_path}: extraction killed by signal {os.WTERMSIG(status)}")


def _child(tar_fd: int, wfd: int, dest: str, strip: str | None,  # pragma: no cover
           keep: Callable[[str], bool] | None) -> None:
    code = _FAILED
    try:
        try:
            _close_other_fds({0, 1, 2, tar_fd, wfd})
            with os.fdopen(tar_fd, "rb", closefd=False) as raw:
                # Open before chroot: tarfile and its codecs are all imported by then.
                try:
                    tf = tarfile.open(fileobj=raw, mode="r:", encoding="utf-8",
                                      errors="surrogateescape")
                except tarfile.ReadError as err:
                    raise ImageError(f"not a tar archive: {err}") from err
                os.chroot(dest)
                os.chdir("/")
                os.umask(0)
                _Extractor(tf, tar_fd, strip, keep).run()
            code = 0
        except _Unsafe as err:
            code = _UNSAFE
            os.write(wfd, str(err).encode("utf-8", "replace")[:_MSG_MAX])
        except BaseException as err:  # noqa: BLE001 - everything becomes a message
            os.write(wfd, _describe(err).encode("utf-8", "replace")[:_MSG_MAX])
    finally:
        os._exit(code)


def _describe(err: BaseException) -> str:
    if isinstance(err, PodrunError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return f"{type(err).__name__}: {err}"


def _close_other_fds(keep_fds: set[int]) -> None:  # pragma: no cover - child only
    low = 3
    for fd in sorted(keep_fds):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)


def _clean(name: str) -> str:
    cleaned = posixpath.normpath(name) if name else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return "" if cleaned == "." else cleaned


def _check(name: str, what: str, raw: str) -> None:
    if name.startswith("/"):
        raise _Unsafe(f"{what} {raw!r} is an absolute path")
    if name == ".." or name.startswith("../"):
        raise _Unsafe(f"{what} {raw!r} escapes the archive root")


class _Extractor:  # pragma: no cover - runs in the chrooted child
    """Applies tar members to the chroot's ``/``; paths are relative to it."""

    def __init__(self, tf: tarfile.TarFile, tar_fd: int, strip: str | None,
                 keep: Callable[[str], bool] | None) -> None:
        self.tf = tf
        self.tar_fd = tar_fd
        self.prefix = _clean(strip or "")
        self.keep = keep
        self.dir_times: dict[str, float] = {}
        self.copy_range = True
        # Regular files left out by ``keep``, so that a kept hardlink to one can still
        # be materialised; and where such a file was materialised first.
        self.filtered: dict[str, tarfile.TarInfo] = {}
        self.moved: dict[str, str] = {}

    def relpath(self, raw: str, what: str) -> str | None:
        """Cleaned, checked and stripped path of a name; None when outside the strip root."""
        name = _clean(raw)
        _check(name, what, raw)
        if not self.prefix:
            return name
        if name == self.prefix:
            return ""
        if name.startswith(self.prefix + "/"):
            return name[len(self.prefix) + 1:]
        return None

    def run(self) -> None:
        for member in self.tf:
            rel = self.relpath(member.name, "entry")
            if rel is None:
                continue
            if rel and self.keep is not None and not self.keep(rel):
                if member.isreg():
                    self.filtered[rel] = member
                continue
            try:
                self.apply(member, "/" + rel if rel else "/")
            except _Unsafe:
                raise
            except (OSError, ImageError) as err:
                raise ImageError(f"{member.name}: {_describe(err)}") from err
        for path, mtime in reversed(self.dir_times.items()):  # children before parents
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):  # not replaced by a later entry
                    os.utime(path, (mtime, mtime), follow_symlinks=False)
            except OSError:
                pass  # a parent was replaced: the directory is gone

    def apply(self, m: tarfile.TarInfo, path: str) -> None:
        if m.isdir():
            self.make_dir(m, path)
            return
        if path == "/":
            raise ImageError("the root of the extraction is not a directory")
        self.make_parent(path)
        self.remove(path)
        if m.islnk():
            self.make_link(m, path)
            return
        if m.isreg():
            self.make_file(m, path)
        elif m.issym():
            os.symlink(m.linkname, path)
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            os.mkfifo(path, 0o600)
        else:
            raise ImageError(f"unsupported tar entry type {m.type!r}")
        self.set_meta(m, path)

    def make_parent(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if parent != "/" and not os.path.isdir(parent):
            try:
                os.makedirs(parent, 0o755, exist_ok=True)
            except FileExistsError as err:
                raise ImageError("a parent path is not a directory") from err

    @staticmethod
    def remove(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def make_dir(self, m: tarfile.TarInfo, path: str) -> None:
        if path != "/":
            self.make_parent(path)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o700)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(path)
                    os.mkdir(path, 0o700)
        self.set_meta(m, path, set_time=False)
        self.dir_times[path] = m.mtime

    def make_link(self, m: tarfile.TarInfo, path: str) -> None:
        rel = self.relpath(m.linkname, "hardlink target")
        if rel is None or not rel:
            raise _Unsafe(f"hardlink {m.name!r} points outside the extracted tree: {m.linkname!r}")
        target = self.moved.get(rel, "/" + rel)
        if rel in self.filtered:  # the target was left out by keep: this path gets the data
            self.make_file(self.filtered.pop(rel), path)
            self.moved[rel] = path
            return
        try:
            os.link(target, path, follow_symlinks=False)
        except FileNotFoundError as err:
            raise ImageError(f"hardlink target {m.linkname!r} not found") from err
        except PermissionError as err:
            raise ImageError(f"cannot hardlink to {m.linkname!r}") from err

    def make_file(self, m: tarfile.TarInfo, path: str) -> None:
        fd = os.open(path, _NOFOLLOW_CREATE, 0o600)
        try:
            if m.issparse():
                src = self.tf.extractfile(m)
                assert src is not None
                with os.fdopen(fd, "wb", closefd=False) as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                self.copy(fd, m.offset_data, m.size)
            self.set_meta(m, path, fd=fd)
        finally:
            os.close(fd)

    def copy(self, out_fd: int, offset: int, size: int) -> None:
        while size > 0:
            n = 0
            if self.copy_range:
                try:
                    n = os.copy_file_range(self.tar_fd, out_fd, min(size, _COPY_CHUNK), offset)
                except OSError as err:
                    if err.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS,
                                         errno.EOPNOTSUPP):
                        raise
                    self.copy_range = False
                    continue
            else:
                n = os.sendfile(out_fd, self.tar_fd, offset, min(size, _COPY_CHUNK))
            if n == 0:
                raise ImageError("archive truncated")
            offset += n
            size -= n

    def set_meta(self, m: tarfile.TarInfo, path: str, *, fd: int | None = None,
                 set_time: bool = True) -> None:
        if fd is not None:
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, stat.S_IMODE(m.mode))
        else:
            os.chown(path, m.uid, m.gid, follow_symlinks=False)
            if not m.issym():
                os.chmod(path, stat.S_IMODE(m.mode))  # just created: not a symlink
        target: int | str = fd if fd is not None else path
        for key, value in m.pax_headers.items():
            if key.startswith("SCHILY.xattr.") and not key.startswith(_SKIP_XATTRS, 13):
                self.set_xattr(target, key[len("SCHILY.xattr."):],
                               value.encode("utf-8", "surrogateescape"))
        if set_time:
            if fd is not None:
                os.utime(fd, (m.mtime, m.mtime))
            else:
                os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    @staticmethod
    def set_xattr(target: int | str, name: str, value: bytes) -> None:
        try:
            os.setxattr(target, name, value, follow_symlinks=isinstance(target, int))
        except OSError as err:
            if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return
            if err.errno == errno.EPERM and name.startswith("user."):
                return  # user.* xattrs are not allowed on symlinks and devices
            raise ImageError(f"cannot set xattr {name}: {err.strerror}") from err

"""The ACI file format: reading, checking and writing App Container Images.

An ACI is a tar archive (optionally gzip/bzip2/xz compressed) holding exactly two
top-level entries: ``manifest`` (a regular file, the JSON image manifest) and
``rootfs`` (a directory, the app's root filesystem). Its image ID is
``sha512-<hex>`` of the *uncompressed* tar stream, trailing padding included.

This module owns the stream side only: detecting compression, decompressing,
hashing, finding the manifest, checking the layout, and building an ACI from a
directory. Extraction to disk lives in :mod:`podrun.store.extract`.

Layout rules (:func:`check_layout`), after appc's ``aci/layout.go``
(``ValidateArchive``) and the ACI spec, slightly stricter where the spec is:

* entry names are cleaned like Go's ``filepath.Clean`` (``./rootfs/`` is ``rootfs``);
  ``.`` is ignored; an absolute name or one with a ``..`` component is rejected;
* ``manifest`` must be present and a regular file; ``rootfs`` must be present as an
  explicit directory entry;
* every other entry must be below ``rootfs/`` (actool only checks the ``rootfs``
  prefix, so it would accept ``rootfsx``; we do not);
* no duplicate entries (the spec's "no duplicate entries"; actool tolerates repeated
  ``manifest``/``rootfs`` entries, we do not);
* the manifest must parse as a valid ImageManifest; a ManifestError is reported as
  an ImageError whose message carries the manifest's JSON path.

Build normalisation (:func:`build_aci`), so that the same DIR always gives the same
image ID, even after ``cp -r`` changed every timestamp:

* entries in a fixed order: ``manifest``, ``rootfs``, then the rootfs depth-first
  with the names of each directory sorted bytewise;
* every mtime set to ``SOURCE_DATE_EPOCH`` when set in the environment, else 0
  (the spec asks to keep timestamps; reproducible IDs win, as for Debian packages);
* uname/gname empty (numeric ids only); uid/gid as on disk, or 0 with ``owner_root``;
* POSIX.1-2001 (PAX) format; a PAX header is written only when needed (long names,
  large ids/sizes, xattrs); xattrs as ``SCHILY.xattr.<name>`` records, names sorted;
  ``security.selinux`` is not archived (it is the build host's label, not the image's);
* modes with setuid/setgid/sticky kept; symlinks stored, never followed; a second
  path of an already archived inode (``st_nlink > 1``) becomes a hardlink entry to
  the first path; char/block devices and fifos stored; sockets skipped (tar cannot);
* the tar is padded to tarfile's 10240-byte record; gzip (level 6) with header
  mtime 0 and no file name. The image ID never depends on the compression.

Only ``manifest`` and ``rootfs/`` of DIR are archived; other files in DIR are
ignored. OUT is written to a temporary file next to it, fsynced and renamed, so a
half-written OUT never exists.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from podrun.errors import ImageError, ManifestError

if TYPE_CHECKING:
    from podrun.appc.manifest import ImageManifest

MANIFEST = "manifest"
ROOTFS = "rootfs"
READ_CHUNK = 1 << 20
GZIP_LEVEL = 6

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_SKIP_XATTRS = frozenset({"security.selinux"})

Source = Path | str | BinaryIO


# --------------------------------------------------------------------------- reading

def detect_compression(head: bytes) -> str:
    """Name the compression of a stream from its first bytes (6 are enough)."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "none"


class _Prefixed(io.RawIOBase):
    """A caller's stream with its already-read first bytes put back in front.

    Closing it does not close the caller's stream.
    """

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)


def _open_path(src: str | Path) -> IO[bytes]:
    try:
        return open(src, "rb")  # noqa: SIM115 - caller closes
    except OSError as err:
        raise ImageError(f"cannot open image {src}: {err.strerror}") from err


def _read_exact(f: IO[bytes], n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def open_decompressed(src: Source) -> BinaryIO:
    """A streaming reader of the uncompressed tar in ``src`` (gzip/bzip2/xz/none by magic).

    A path is opened here and closed with the result. A stream passed in is read from
    its current position and stays open when the result is closed.
    """
    if isinstance(src, str | Path):
        f = _open_path(src)
        head = _read_exact(f, 6)
        kind = detect_compression(head)
        if kind == "none":
            f.seek(0)
            return f  # type: ignore[return-value]
        f.close()
        # The decompressor opens (and so owns and closes) the file itself.
        return _decompressor(kind, src)
    head = _read_exact(src, 6)
    # Put the magic back in front without seeking (pipes, HTTP bodies); closing the
    # view leaves the caller's stream open.
    view = io.BufferedReader(_Prefixed(head, src), READ_CHUNK)
    kind = detect_compression(head)
    return view if kind == "none" else _decompressor(kind, view)  # type: ignore[return-value]


def _decompressor(kind: str, src: str | Path | IO[bytes]) -> BinaryIO:
    if kind == "gzip":
        if isinstance(src, str | Path):
            return gzip.GzipFile(filename=src, mode="rb")  # type: ignore[return-value]
        return gzip.GzipFile(fileobj=src, mode="rb")  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(src, "rb")  # type: ignore[return-value]
    return lzma.LZMAFile(src, "rb")  # type: ignore[return-value]


class HashingReader(io.RawIOBase):
    """Wraps a stream and hashes (sha512) every byte read through it.

    ``image_id`` is only the image's ID once the whole uncompressed tar has been read:
    call :meth:`drain` after tarfile stops (it stops at the end-of-archive marker and
    leaves the record padding unread).
    """

    def __init__(self, stream: IO[bytes], copy_to: IO[bytes] | None = None) -> None:
        self._stream = stream
        self._hash = hashlib.sha512()
        self._copy = copy_to
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read() if size is None or size < 0 else self._stream.read(size)
        self._hash.update(data)
        if self._copy is not None:
            self._copy.write(data)
        self.bytes_read += len(data)
        return data

    def drain(self) -> None:
        """Read (and hash) the rest of the stream."""
        while self.read(READ_CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    @property
    def image_id(self) -> str:
        return "sha512-" + self.hexdigest()


def parse_manifest(data: bytes) -> ImageManifest:
    """Parse and validate image manifest bytes (ManifestError on a bad one)."""
    from podrun.appc.manifest import ImageManifest

    return ImageManifest.from_json(data)


def clean_name(name: str) -> str:
    """A tar member name cleaned like Go's filepath.Clean ("" for the archive root)."""
    cleaned = posixpath.normpath(name) if name else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return "" if cleaned == "." else cleaned


def unsafe_name_reason(name: str) -> str | None:
    """Why a cleaned member name is unsafe, or None."""
    if name.startswith("/"):
        return "absolute path"
    if name == ".." or name.startswith("../"):
        return "path escapes the archive root"
    return None


@contextlib.contextmanager
def _tar_stream(src: Source, copy_to: IO[bytes] | None = None
                ) -> Iterator[tuple[tarfile.TarFile, HashingReader]]:
    label = _label(src)
    try:
        with open_decompressed(src) as raw:
            hasher = HashingReader(raw, copy_to)
            try:
                tf = tarfile.open(fileobj=hasher, mode="r|", bufsize=READ_CHUNK)  # type: ignore[call-overload]
            except tarfile.ReadError as err:
                raise ImageError(f"{label}: not a tar archive: {err}") from err
            yield tf, hasher
    except (tarfile.TarError, EOFError, lzma.LZMAError, gzip.BadGzipFile) as err:
        raise ImageError(f"{label}: corrupt archive: {err}") from err
    except OSError as err:
        if "Invalid data stream" in str(err):  # bz2
            raise ImageError(f"{label}: corrupt archive: {err}") from err
        raise


def _label(src: Source) -> str:
    return str(src) if isinstance(src, str | Path) else "image"


def read_manifest(src: Source) -> tuple[ImageManifest, bytes]:
    """The image manifest of an ACI and its raw bytes (stops reading once found)."""
    with _tar_stream(src) as (tf, _hasher):
        for member in tf:
            if clean_name(member.name) == MANIFEST:
                if not member.isreg():
                    raise ImageError(f"{_label(src)}: manifest is not a regular file")
                fobj = tf.extractfile(member)
                assert fobj is not None
                raw = fobj.read()
                return parse_manifest(raw), raw
    raise ImageError(f"{_label(src)}: no image manifest found in archive")


@dataclass(frozen=True)
class AciInfo:
    """What one full pass over an ACI tells: its manifest, raw manifest and image ID."""

    manifest: ImageManifest
    manifest_bytes: bytes
    image_id: str


def inspect_aci(src: Source, copy_to: IO[bytes] | None = None) -> AciInfo:
    """Check the layout of an ACI (see module doc) in one streaming pass and hash it.

    ``copy_to`` receives the uncompressed tar as it is read (the store writes its
    blob this way: one pass for decompressing, hashing, checking and copying).
    """
    label = _label(src)
    seen: set[str] = set()
    raw: bytes | None = None
    has_rootfs = False
    with _tar_stream(src, copy_to) as (tf, hasher):
        for member in tf:
            name = clean_name(member.name)
            if not name:
                continue
            reason = unsafe_name_reason(name)
            if reason:
                raise ImageError(f"{label}: bad entry {member.name!r}: {reason}")
            if name in seen:
                raise ImageError(f"{label}: duplicate entry in archive: {name}")
            seen.add(name)
            if name == MANIFEST:
                if not member.isreg():
                    raise ImageError(f"{label}: manifest is not a regular file")
                fobj = tf.extractfile(member)
                assert fobj is not None
                raw = fobj.read()
            elif name == ROOTFS:
                if not member.isdir():
                    raise ImageError(f"{label}: rootfs is not a directory")
                has_rootfs = True
            elif not name.startswith(ROOTFS + "/"):
                raise ImageError(f"{label}: unrecognized file path in layout: {name!r} "
                                 "(only manifest and rootfs/ allowed)")
        hasher.drain()
    if raw is None:
        raise ImageError(f"{label}: no image manifest found in archive")
    if not has_rootfs:
        raise ImageError(f"{label}: no rootfs directory found in archive")
    try:
        manifest = parse_manifest(raw)
    except ManifestError as err:
        raise ImageError(f"{label}: {err}") from err
    return AciInfo(manifest, raw, hasher.image_id)


def check_layout(src: Source) -> ImageManifest:
    """Check an ACI's layout and manifest; ImageError naming the first problem."""
    return inspect_aci(src).manifest


def image_id_of(src: Source) -> str:
    """``sha512-<hex>`` of the uncompressed tar in ``src``."""
    with open_decompressed(src) as raw:
        hasher = HashingReader(raw)
        hasher.drain()
        return hasher.image_id


# --------------------------------------------------------------------------- writing

class HashingWriter(io.RawIOBase):
    """Hashes (sha512) everything written, then passes it on."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._hash = hashlib.sha512()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._hash.update(b)
        self._out.write(b)
        return len(b)

    @property
    def image_id(self) -> str:
        return "sha512-" + self._hash.hexdigest()


def build_mtime() -> int:
    """The mtime every entry of a built ACI gets: SOURCE_DATE_EPOCH or 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return 0
    try:
        return max(0, int(value))
    except ValueError as err:
        raise ImageError(f"SOURCE_DATE_EPOCH is not an integer: {value!r}") from err


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, str] = {}
    for name in sorted(names):
        if name in _SKIP_XATTRS:
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return out


class _TarBuilder:
    """Adds normalised entries for a directory tree to a tarfile."""

    def __init__(self, tf: tarfile.TarFile, *, mtime: int, owner_root: bool) -> None:
        self.tf = tf
        self.mtime = mtime
        self.owner_root = owner_root
        self.inodes: dict[tuple[int, int], str] = {}
        self.exclude: set[tuple[int, int]] = set()  # the output itself, if inside DIR

    def add(self, path: str, arcname: str, st: os.stat_result) -> None:
        if (st.st_dev, st.st_ino) in self.exclude:
            return
        ti = tarfile.TarInfo(arcname)
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = (0, 0) if self.owner_root else (st.st_uid, st.st_gid)
        ti.uname = ti.gname = ""
        ti.mtime = self.mtime
        ti.pax_headers = _xattrs(path)
        fmt = stat.S_IFMT(st.st_mode)
        if fmt != stat.S_IFDIR and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.inodes.get(key)
            if first is not None:
                ti.type, ti.linkname = tarfile.LNKTYPE, first
                self.tf.addfile(ti)
                return
            self.inodes[key] = arcname
        if fmt == stat.S_IFREG:
            ti.size = st.st_size
            with open(path, "rb") as f:
                self.tf.addfile(ti, f)
            return
        if fmt == stat.S_IFDIR:
            ti.type = tarfile.DIRTYPE
        elif fmt == stat.S_IFLNK:
            ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(path)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            ti.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif fmt == stat.S_IFIFO:
            ti.type = tarfile.FIFOTYPE
        else:  # sockets: tar has no representation
            return
        self.tf.addfile(ti)

    def add_tree(self, root: str, arcroot: str) -> None:
        """``root`` itself, then its contents depth-first, names sorted bytewise."""
        self.add(root, arcroot, os.lstat(root))
        stack = [_children(root, arcroot)]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            path, arc, st = item
            self.add(path, arc, st)
            if stat.S_ISDIR(st.st_mode):
                stack.append(_children(path, arc))


def _children(dirpath: str, arcdir: str) -> Iterator[tuple[str, str, os.stat_result]]:
    with os.scandir(dirpath) as it:
        entries = sorted(it, key=lambda e: os.fsencode(e.name))
    for entry in entries:
        yield entry.path, f"{arcdir}/{entry.name}", entry.stat(follow_symlinks=False)


def _write_tar(src_dir: Path, out: IO[bytes], *, owner_root: bool,
               exclude: set[tuple[int, int]] | None = None) -> str:
    """Write the normalised tar of ``src_dir`` to ``out``; return its image ID."""
    hasher = HashingWriter(out)
    with tarfile.open(fileobj=hasher, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      bufsize=READ_CHUNK, copybufsize=READ_CHUNK, encoding="utf-8",
                      errors="surrogateescape") as tf:
        builder = _TarBuilder(tf, mtime=build_mtime(), owner_root=owner_root)
        builder.exclude |= exclude or set()
        manifest = str(src_dir / MANIFEST)
        builder.add(manifest, MANIFEST, os.lstat(manifest))
        builder.add_tree(str(src_dir / ROOTFS), ROOTFS)
    return hasher.image_id


def _read_build_manifest(src_dir: Path) -> None:
    mpath = src_dir / MANIFEST
    try:
        st = os.lstat(mpath)
    except FileNotFoundError as err:
        raise ImageError(f"{src_dir}: no manifest file in build directory") from err
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{mpath}: manifest is not a regular file")
    try:
        parse_manifest(mpath.read_bytes())
    except ManifestError as err:  # same error, naming the file
        raise ManifestError(err.path, err.detail, kind=f"image manifest ({mpath})") from err
    rootfs = src_dir / ROOTFS
    if not rootfs.is_dir() or rootfs.is_symlink():
        raise ImageError(f"{src_dir}: no rootfs directory in build directory")


def build_aci(src_dir: Path, out: Path, *, compress: bool = True, owner_root: bool = False,
              overwrite: bool = False) -> str:
    """Build the ACI ``out`` from ``src_dir`` (``manifest`` + ``rootfs/``); return its image ID.

    The manifest is validated first (ManifestError, nothing written). An existing
    ``out`` is refused unless ``overwrite``. See the module doc for normalisation.
    """
    src_dir, out = Path(src_dir), Path(out)
    if not src_dir.is_dir():
        raise ImageError(f"{src_dir}: build directory not found")
    _read_build_manifest(src_dir)
    if not overwrite and (out.exists() or out.is_symlink()):
        raise ImageError(f"{out}: already exists (use --overwrite to replace it)")
    if out.is_dir():
        raise ImageError(f"{out}: is a directory")
    from podrun.fsutil import atomic_file

    try:
        with atomic_file(out) as f:
            me = {_inode(os.fstat(f.fileno()))}  # never archive our own output
            with contextlib.suppress(OSError):
                me.add(_inode(os.stat(out)))
            if compress:
                with gzip.GzipFile(filename="", mode="wb", fileobj=f,
                                   compresslevel=GZIP_LEVEL, mtime=0) as gz:
                    image_id = _write_tar(src_dir, gz, owner_root=owner_root, exclude=me)
            else:
                image_id = _write_tar(src_dir, f, owner_root=owner_root, exclude=me)
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise ImageError(f"cannot build {out}: {err.strerror or err}{where}") from err
    return image_id


def _inode(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino



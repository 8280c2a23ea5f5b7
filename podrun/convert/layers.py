"""Docker/OCI layers → ACI rootfs entries: whiteouts, hardlinks, the root entry.

A :class:`Rootfs` replays the layer tars (uncompressed, random access: only the
headers are read here) into an in-memory model of the final tree — no file is
written to disk — and yields the entries an ACI needs, in a fixed order, with
each file body still read from its layer tar.

Layer semantics, after the OCI image-spec ("Applying changesets") and what umoci
and Docker do:

* a layer's whiteouts apply to the layers below it only, whatever their position
  in the tar: each layer is read in two passes, whiteouts first, then entries.
  ``D/.wh.NAME`` removes ``D/NAME`` (and everything below it); ``D/.wh..wh..opq``
  empties ``D`` of what lower layers put there; other ``.wh..wh.*`` names (aufs
  bookkeeping) are ignored; whiteout files never reach the ACI;
* a directory over a directory merges and takes the new owner, mode and xattrs;
  anything else replaces what was there (a non-directory over a directory
  removes the directory's whole subtree);
* a missing parent directory is created 0755 root:root (as umoci and tar do);
* the entry named ``.`` (umoci writes one) sets the owner and mode of the rootfs
  itself, which in the ACI is the ``rootfs`` entry;
* a hardlink names a path of this or any lower layer and shares that file's
  inode (data and metadata) from then on, even if the target path is later
  replaced or removed; in the output, the first path of each inode (in output
  order) carries the data and the others are hardlinks to it;
* kept: regular files (incl. sparse), symlinks, directories, char/block devices,
  fifos; numeric owners (names are dropped); modes incl. setuid/setgid/sticky;
  mtimes (as integers); xattrs (``SCHILY.xattr.*``);
* names are cleaned (``./a//b`` → ``a/b``, a leading ``/`` dropped); a name with a
  ``..`` component, an entry below a non-directory, or a hardlink to a missing
  path is an error naming the layer and the entry.

Output order: ``rootfs``, then the tree depth-first with names sorted bytewise —
the same order :func:`podrun.appc.aci.build_aci` uses — so the same layers always
give the same tar and image ID.

Layered mode (:meth:`Rootfs.apply` returns a :class:`LayerDiff` per layer): a
layer's own entries, plus its parents with their current metadata, plus for each
hardlink into a lower layer a hardlink entry to a path that still holds that
inode below (or the data itself when none does). Its whiteouts are returned as
lists of paths for the store to apply before extracting the layer
(:mod:`podrun.store.store`, annotations ``podrun.io/whiteouts`` and
``podrun.io/opaque-dirs``).
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from podrun.errors import ImageError, UnsafeArchiveError

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
_KEEP_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE,
               tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.CHRTYPE,
               tarfile.BLKTYPE, tarfile.FIFOTYPE)


class Inode:
    """What hardlinked paths share: header (type, metadata) and where the data is."""

    __slots__ = ("ti", "layer", "member")

    def __init__(self, ti: tarfile.TarInfo, layer: int, member: tarfile.TarInfo | None) -> None:
        self.ti = ti
        self.layer = layer
        self.member = member


@dataclass
class Node:
    ti: tarfile.TarInfo          # for directories; non-directories use inode.ti
    layer: int
    inode: Inode | None = None   # None for directories
    children: set[str] = field(default_factory=set)

    @property
    def is_dir(self) -> bool:
        return self.inode is None

    def header(self) -> tarfile.TarInfo:
        return self.ti if self.inode is None else self.inode.ti


@dataclass
class Entry:
    """One output entry: a path in the rootfs ("" is the rootfs itself)."""

    path: str
    ti: tarfile.TarInfo
    link_to: str | None = None         # a hardlink to this rootfs path
    data: tuple[int, tarfile.TarInfo] | None = None  # (layer index, member) for file bodies


@dataclass
class LayerDiff:
    entries: list[Entry]
    whiteouts: list[str]
    opaque: list[str]


def clean(name: str, layer: str) -> str:
    """A member name cleaned to a rootfs-relative path ("" for the root)."""
    cleaned = posixpath.normpath("/" + name).lstrip("/") if name else ""
    if cleaned == ".":
        cleaned = ""
    if ".." in name.split("/"):
        raise UnsafeArchiveError(f"{layer}: entry {name!r} has a '..' component")
    return cleaned


def _dir_info(name: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = tarfile.DIRTYPE, 0o755, 0, 0, 0
    return ti


def _sort_key(path: str) -> tuple[bytes, ...]:
    return tuple(os.fsencode(c) for c in path.split("/")) if path else ()


class _Padded(io.RawIOBase):
    """A layer file read as if it ended with tar's zero padding and end-of-archive blocks.

    Some writers (umoci insert, Go's archive/tar without Close) leave the last
    file body unpadded and no end marker; Docker and umoci read such layers, so
    do we: past the real end the file reads as zeros up to a block boundary plus
    two blocks.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._size = os.fstat(f.fileno()).st_size
        self._virtual = -(-self._size // 512) * 512 + 1024
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._virtual}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(b), max(0, self._virtual - self._pos))
        if want == 0:
            return 0
        data = b""
        if self._pos < self._size:
            self._f.seek(self._pos)
            data = self._f.read(min(want, self._size - self._pos))
        n = len(data)
        b[:n] = data
        if n < want and self._pos + n >= self._size:
            b[n:want] = bytes(want - n)
            n = want
        self._pos += n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def open_layer(path: Path, label: str) -> tarfile.TarFile:
    try:
        raw = _Padded(open(path, "rb"))  # noqa: SIM115 - closed with the TarFile
        fobj = io.BufferedReader(raw, 1 << 16)
        tf = tarfile.open(fileobj=fobj, mode="r:", encoding="utf-8", errors="surrogateescape")
        tf._extfileobj = False  # the TarFile closes (and so owns) the file
        tf.podrun_fd = raw._f.fileno()  # type: ignore[attr-defined] # for pread of bodies
        return tf
    except (tarfile.TarError, OSError) as err:
        raise ImageError(f"{label}: not a tar archive: {err}") from None


class Rootfs:
    """The merged tree of the layers applied so far (see module doc)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {"": Node(_dir_info(), -1)}
        self.inode_paths: dict[int, set[str]] = {}

    # state changes ------------------------------------------------------------
    def _remove(self, path: str) -> None:
        node = self.nodes.pop(path, None)
        if node is None:
            return
        if path:
            parent = self.nodes.get(posixpath.dirname(path))
            if parent is not None:
                parent.children.discard(path)
        if node.inode is not None:
            paths = self.inode_paths.get(id(node.inode))
            if paths is not None:
                paths.discard(path)
                if not paths:
                    del self.inode_paths[id(node.inode)]
        for child in list(node.children):
            self._remove(child)

    def _insert(self, path: str, node: Node) -> None:
        self.nodes[path] = node
        if path:
            self.nodes[posixpath.dirname(path)].children.add(path)
        if node.inode is not None:
            self.inode_paths.setdefault(id(node.inode), set()).add(path)

    def _parents(self, path: str, label: str, made: list[str]) -> None:
        parent = posixpath.dirname(path)
        if not path:
            return
        node = self.nodes.get(parent)
        if node is None:
            self._parents(parent, label, made)
            self._insert(parent, Node(_dir_info(parent), -1))
            made.append(parent)
        elif not node.is_dir:
            raise ImageError(f"{label}: entry {path!r} lies below {parent!r}, which is not "
                             "a directory")

    def apply(self, index: int, tf: tarfile.TarFile, label: str) -> LayerDiff:
        """Apply layer ``index`` (an open tar) and return what it changed."""
        members = tf.getmembers()
        whiteouts, opaque = [], []
        for m in members:
            name = clean(m.name, label)
            base = posixpath.basename(name)
            if not base.startswith(WH_PREFIX):
                continue
            parent = posixpath.dirname(name)
            if base == WH_OPAQUE:
                opaque.append(parent)
                node = self.nodes.get(parent)
                if node is not None and node.is_dir:
                    for child in list(node.children):
                        self._remove(child)
            elif not base.startswith(WH_PREFIX + WH_PREFIX):
                target = posixpath.join(parent, base[len(WH_PREFIX):])
                whiteouts.append(target)
                self._remove(target)
        touched: dict[str, None] = {}
        for m in members:
            name = clean(m.name, label)
            if posixpath.basename(name).startswith(WH_PREFIX):
                continue
            if m.type not in _KEEP_TYPES:
                raise ImageError(f"{label}: entry {m.name!r} has unsupported type {m.type!r}")
            made: list[str] = []
            self._parents(name, label, made)
            touched.update(dict.fromkeys(made))
            self._apply_member(index, m, name, label)
            touched[name] = None
        return LayerDiff(self._layer_entries(touched), sorted(set(whiteouts)),
                         sorted(set(opaque)))

    def _apply_member(self, index: int, m: tarfile.TarInfo, name: str, label: str) -> None:
        old = self.nodes.get(name)
        if m.isdir():
            if old is not None and old.is_dir:
                old.ti, old.layer = m, index
                return
            if name == "":
                raise ImageError(f"{label}: the root entry is not a directory")
            self._remove(name)
            self._insert(name, Node(m, index))
            return
        if name == "":
            raise ImageError(f"{label}: the root entry {m.name!r} is not a directory")
        if m.islnk():
            target = clean(m.linkname, label)
            tnode = self.nodes.get(target)
            if tnode is None or tnode.inode is None:
                what = "is missing" if tnode is None else "is a directory"
                raise ImageError(f"{label}: hardlink {m.name!r} → {m.linkname!r}: the target "
                                 f"{what}")
            inode = tnode.inode
            if target == name:
                return
        else:
            inode = Inode(m, index, m if m.isreg() else None)
        self._remove(name)
        self._insert(name, Node(m, index, inode))

    # output ----------------------------------------------------------------------
    def squashed(self) -> list[Entry]:
        """Every entry of the final tree, in output order, hardlinks resolved."""
        return self._resolve(sorted(self.nodes, key=_sort_key), lower=set())

    def _layer_entries(self, touched: dict[str, None]) -> list[Entry]:
        paths = set(touched)
        for p in list(paths):  # every ancestor, so the layer ACI is complete on its own
            while p:
                p = posixpath.dirname(p)
                paths.add(p)
        paths.add("")
        paths = {p for p in paths if p in self.nodes}
        return self._resolve(sorted(paths, key=_sort_key), lower=set(self.nodes) - set(touched))

    def _resolve(self, order: list[str], lower: set[str]) -> list[Entry]:
        """Entries for ``order``; hardlinks point at the first path of their inode,
        preferring a path in ``lower`` (already present below, for layered mode)."""
        out: list[Entry] = []
        first: dict[int, str] = {}
        for path in order:
            node = self.nodes[path]
            if node.inode is None:
                out.append(Entry(path, node.ti))
                continue
            key = id(node.inode)
            if key not in first:
                below = sorted((p for p in self.inode_paths.get(key, ()) if p in lower),
                               key=_sort_key)
                if below:
                    first[key] = below[0]
                else:
                    first[key] = path
                    data = (node.inode.layer, node.inode.member) if node.inode.member else None
                    out.append(Entry(path, node.inode.ti, data=data))
                    continue
            out.append(Entry(path, node.inode.ti, link_to=first[key]))
        return out

    def read_file(self, path: str, layers: list[tarfile.TarFile]) -> bytes | None:
        """The content of a regular file of the current tree (e.g. etc/passwd), or None."""
        node = self.nodes.get(path)
        for _ in range(10):
            if node is None or node.inode is None:
                return None
            ti = node.inode.ti
            if ti.issym():
                target = posixpath.normpath(posixpath.join(posixpath.dirname(path), ti.linkname))
                path = target.lstrip("/")
                node = self.nodes.get(path)
                continue
            if node.inode.member is None:
                return None
            f: IO[bytes] | None = layers[node.inode.layer].extractfile(node.inode.member)
            return f.read() if f is not None else None
        return None


def tar_info(arcname: str, src: tarfile.TarInfo, *, link_to: str | None = None) -> tarfile.TarInfo:
    """A clean output header: numeric owners, integer mtime, only xattr PAX records."""
    ti = tarfile.TarInfo(arcname)
    ti.mode = src.mode & 0o7777
    ti.uid, ti.gid = src.uid, src.gid
    ti.uname = ti.gname = ""
    ti.mtime = max(0, int(src.mtime))
    ti.pax_headers = {k: v for k, v in sorted(src.pax_headers.items())
                      if k.startswith("SCHILY.xattr.")}
    if link_to is not None:
        ti.type, ti.linkname = tarfile.LNKTYPE, link_to
        return ti
    if src.isreg():
        ti.type, ti.size = tarfile.REGTYPE, src.size
    elif src.isdir():
        ti.type = tarfile.DIRTYPE
    elif src.issym():
        ti.type, ti.linkname = tarfile.SYMTYPE, src.linkname
    elif src.ischr() or src.isblk():
        ti.type = src.type
        ti.devmajor, ti.devminor = src.devmajor, src.devminor
    elif src.isfifo():
        ti.type = tarfile.FIFOTYPE
    return ti


class TarWriter:
    """Writes a POSIX.1-2001 (PAX) tar stream byte for byte as ``tarfile``'s ``w|`` mode
    would, but copies file bodies straight from the layer files with ``pread``."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.offset = 0

    def _write(self, data: bytes | memoryview) -> None:
        self.out.write(data)
        self.offset += len(data)

    def add(self, ti: tarfile.TarInfo, body: IO[bytes] | tuple[int, int] | bytes | None = None
            ) -> None:
        """``body``: a file object, ``(fd, offset)`` to pread ``ti.size`` bytes, or bytes."""
        self._write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if ti.type not in tarfile.REGULAR_TYPES or not ti.size:
            return
        left = ti.size
        if isinstance(body, bytes):
            self._write(body)
            left -= len(body)
        elif isinstance(body, tuple):
            fd, off = body
            while left > 0:
                chunk = os.pread(fd, min(left, 1 << 20), off)
                if not chunk:
                    break
                self._write(chunk)
                off += len(chunk)
                left -= len(chunk)
        elif body is not None:
            while left > 0:
                chunk = body.read(min(left, 1 << 20))
                if not chunk:
                    break
                self._write(chunk)
                left -= len(chunk)
        if left:
            raise ImageError(f"{ti.name}: layer data ends {left} bytes early (truncated layer)")
        if ti.size % tarfile.BLOCKSIZE:
            self._write(bytes(tarfile.BLOCKSIZE - ti.size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        """End-of-archive blocks, then zeros up to tarfile's record size."""
        self._write(bytes(2 * tarfile.BLOCKSIZE))
        rest = self.offset % tarfile.RECORDSIZE
        if rest:
            self._write(bytes(tarfile.RECORDSIZE - rest))


def write_entries(out: TarWriter, entries: list[Entry], layers: list[tarfile.TarFile]) -> None:
    """Write rootfs entries (``rootfs`` + ``rootfs/<path>``) with bodies from the layers."""
    for e in entries:
        arc = "rootfs/" + e.path if e.path else "rootfs"
        link = ("rootfs/" + e.link_to) if e.link_to is not None else None
        ti = tar_info(arc, e.ti, link_to=link)
        if e.data is not None and ti.type == tarfile.REGTYPE:
            layer, member = e.data
            tf = layers[layer]
            if member.issparse() or not hasattr(tf, "podrun_fd"):
                out.add(ti, tf.extractfile(member))
            else:
                out.add(ti, (tf.podrun_fd, member.offset_data))
        else:
            if ti.type == tarfile.REGTYPE:
                ti.size = 0
            out.add(ti)



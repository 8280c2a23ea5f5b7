"""The image store: content-addressed blobs, the sqlite index and rendered trees.

Layout under the data dir (``<data>/cas``)::

    blobs/sha512/<hh>/<hex>   uncompressed ACI tars, named by their SHA-512
    index.db                  sqlite index (see index.py)
    trees/<key>/              rendered trees: rootfs/ + manifest, shared read-only by pods
    tmp/                      work files named <kind>-<pid>-<rand>; swept by gc once <pid> died
    locks/                    flock files (per tree key, per image)

Import is temp file → fsync → validate → rename → index row, so a reader (or a
``kill -9`` at any point) never exposes a half entry: what is not in the index does
not exist, and gc removes it. A tree is keyed by the flattened, ordered list of
image IDs it is made of (dependencies first, the image last), rendered into tmp/
under the tree's lock and renamed into place; pods hold the tree's lock shared for
their lifetime so gc never removes a tree in use.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from podrun.errors import AmbiguousError, ImageError, NotFoundError, StoreError
from podrun.fsutil import fsync_dir, pid_alive, rmtree
from podrun.store.index import ImageRecord, Index, TreeRecord
from podrun.store.locks import FileLock, locked
from podrun.testpoint import checkpoint

if TYPE_CHECKING:
    from podrun.appc.manifest import Dependency, ImageManifest

CHUNK = 1 << 20
ID_PREFIX = "sha512-"
SHORT_ID_LEN = len(ID_PREFIX) + 32


def short_id(image_id: str) -> str:
    return image_id[:SHORT_ID_LEN]


def hash_file(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def parse_image_string(ref: str) -> tuple[str, dict[str, str]]:
    """``NAME[:VERSION][,LABEL=VALUE…]`` → (name, labels) as appc and rkt write them."""
    parts = ref.split(",")
    head, labels = parts[0], {}
    for p in parts[1:]:
        if "=" not in p:
            raise ImageError(f"bad image string {ref!r}: label {p!r} is not LABEL=VALUE")
        k, v = p.split("=", 1)
        labels[k] = v
    # AC identifiers never contain ':' so the last ':' separates the version.
    if ":" in head:
        head, version = head.rsplit(":", 1)
        if not version:
            raise ImageError(f"bad image string {ref!r}: empty version")
        labels["version"] = version
    return head, labels


@dataclass
class Tree:
    """A rendered tree: ``path/rootfs`` and ``path/manifest``."""

    key: str
    path: Path
    image_ids: list[str]

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"


class Store:
    """The content-addressed image store under ``<data_dir>/cas``."""

    def __init__(self, data_dir: Path, *, verify_on_render: bool = True) -> None:
        self.root = data_dir / "cas"
        self.blobs = self.root / "blobs" / "sha512"
        self.trees_dir = self.root / "trees"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        for d in (self.blobs, self.trees_dir, self.tmp, self.locks):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.index = Index(self.root / "index.db")
        self.verify_on_render = verify_on_render
        self._fresh: set[str] = set()  # blobs this process wrote (and hashed) itself

    def close(self) -> None:
        self.index.close()

    # paths ----------------------------------------------------------------
    def blob_path(self, image_id: str) -> Path:
        hexd = image_id.removeprefix(ID_PREFIX)
        return self.blobs / hexd[:2] / hexd

    def _tmp_path(self, kind: str) -> Path:
        return self.tmp / f"{kind}-{os.getpid()}-{secrets.token_hex(6)}"

    # import ---------------------------------------------------------------
    def import_aci(self, src: Path | BinaryIO, *, source_url: str | None = None,
                   etag: str | None = None, max_age: int | None = None) -> str:
        """Store an ACI (compressed or not); validate it first; return its image ID.

        One pass decompresses, hashes, checks the layout and manifest, and writes the
        uncompressed tar to a temp file, which is renamed into place only if all is well.
        """
        from podrun.appc.aci import inspect_aci

        tmp = self._tmp_path("blob")
        try:
            with open(tmp, "wb") as out:
                info = inspect_aci(src, copy_to=out)
                checkpoint("import:written")
                out.flush()
                os.fsync(out.fileno())
            manifest, image_id, size = info.manifest, info.image_id, tmp.stat().st_size
            dest = self.blob_path(image_id)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o644)
            os.rename(tmp, dest)
            fsync_dir(dest.parent)
            self._fresh.add(image_id)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        checkpoint("import:renamed")
        now = time.time()
        self.index.add_image(ImageRecord(
            id=image_id, name=manifest.name, labels=manifest.labels_dict,
            manifest=manifest.to_dict(), import_time=now, last_used=now, size=size,
            source_url=source_url, etag=etag, max_age=max_age,
            checked_time=now if source_url else None,
        ))
        return image_id

    def adopt(self, path: Path, image_id: str, manifest: dict[str, Any], *,
              source_url: str | None = None) -> str:
        """Store an uncompressed ACI tar that this process wrote and hashed itself (a
        converted Docker image): renamed into place from the store's tmp dir, not read
        again. ``path`` must be below ``self.tmp`` and already fsynced."""
        from podrun.appc.manifest import ImageManifest

        if self.tmp not in path.parents:
            raise StoreError(f"{path}: only files in the store's tmp dir can be adopted")
        m = ImageManifest.from_json(manifest, trusted=True)
        dest = self.blob_path(image_id)
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = path.stat().st_size
        os.chmod(path, 0o644)
        os.rename(path, dest)
        fsync_dir(dest.parent)
        self._fresh.add(image_id)
        now = time.time()
        self.index.add_image(ImageRecord(
            id=image_id, name=m.name, labels=m.labels_dict, manifest=m.to_dict(),
            import_time=now, last_used=now, size=size, source_url=source_url,
            checked_time=now if source_url else None))
        return image_id

    # lookup ---------------------------------------------------------------
    def get(self, image_id: str) -> ImageRecord:
        rec = self.index.get_image(image_id)
        if rec is None:
            raise NotFoundError(f"image {image_id} not found in the store")
        return rec

    def resolve_id(self, prefix: str) -> str:
        """A full or shortened ``sha512-…`` ID → the full ID (ambiguity is an error)."""
        if not prefix.startswith(ID_PREFIX) or len(prefix) <= len(ID_PREFIX):
            raise ImageError(f"bad image ID {prefix!r}: expected sha512-<hex>")
        body = prefix[len(ID_PREFIX):]
        if any(c not in "0123456789abcdef" for c in body):
            raise ImageError(f"bad image ID {prefix!r}: not lower-case hex")
        matches = self.index.images_by_prefix(prefix)
        if not matches:
            raise NotFoundError(f"image {prefix} not found in the store")
        if len(matches) > 1:
            raise AmbiguousError(f"image ID {prefix} is ambiguous: it matches {len(matches)} "
                                 "images; give more digits")
        return matches[0]

    def find(self, name: str, labels: dict[str, str] | None = None) -> list[ImageRecord]:
        """Images called ``name`` whose labels include ``labels``, newest first.

        ``version=latest`` matches any version (the newest import wins), as in rkt.
        """
        want = dict(labels or {})
        if want.get("version") == "latest":
            want.pop("version")
        found = [r for r in self.index.images_by_name(name)
                 if all(r.labels.get(k) == v for k, v in want.items())]
        return sorted(found, key=lambda r: r.import_time, reverse=True)

    def resolve(self, ref: str) -> str:
        """An image ID (prefix) or an image string ``NAME[:VERSION][,L=V…]`` → full ID."""
        if ref.startswith(ID_PREFIX):
            return self.resolve_id(ref)
        name, labels = parse_image_string(ref)
        found = self.find(name, labels)
        if not found:
            raise NotFoundError(f"image {ref} not found in the store")
        return found[0].id

    def images(self) -> list[ImageRecord]:
        return self.index.images()

    def open_blob(self, image_id: str) -> BinaryIO:
        return open(self.blob_path(image_id), "rb")

    def manifest(self, image_id: str) -> ImageManifest:
        from podrun.appc.manifest import ImageManifest

        # Validated (schema and rules) when it was imported; the rules run again here.
        return ImageManifest.from_json(self.get(image_id).manifest, trusted=True)

    def verify_blob(self, image_id: str) -> None:
        """Re-hash a blob; a mismatch means on-disk corruption."""
        path = self.blob_path(image_id)
        if not path.exists():
            raise StoreError(f"image {image_id}: blob {path} is missing")
        actual = ID_PREFIX + hash_file(path)
        if actual != image_id:
            raise StoreError(f"image {image_id}: blob {path} is corrupt (hashes to "
                             f"{short_id(actual)})")

    # dependencies and trees ------------------------------------------------
    def flatten(self, image_id: str, _seen: tuple[str, ...] = ()) -> list[str]:
        """The ordered image IDs a tree of ``image_id`` is made of: deps first, self last."""
        if image_id in _seen:
            raise ImageError(f"dependency cycle through image {short_id(image_id)}")
        if not self.get(image_id).manifest.get("dependencies"):
            return [image_id]  # the common case, without parsing the manifest
        out: list[str] = []
        for i, dep in enumerate(self.manifest(image_id).dependencies):
            dep_id = self.resolve_dependency(dep, f"{self.get(image_id).name} dependencies[{i}]")
            for d in self.flatten(dep_id, (*_seen, image_id)):
                if d not in out:
                    out.append(d)
        out.append(image_id)
        return out

    def resolve_dependency(self, dep: Dependency, where: str) -> str:
        labels = {lab.name: lab.value for lab in dep.labels}
        if dep.image_id:
            rec = self.index.get_image(dep.image_id)
            if rec is None:
                raise NotFoundError(f"{where}: image {dep.image_id} ({dep.image_name}) is not "
                                    "in the store")
            if rec.name != dep.image_name:
                raise ImageError(f"{where}: image {short_id(dep.image_id)} is called "
                                 f"{rec.name}, not {dep.image_name}")
            return rec.id
        found = self.find(dep.image_name, labels)
        if not found:
            lab = ",".join(f"{k}={v}" for k, v in labels.items())
            raise NotFoundError(f"{where}: no image {dep.image_name}"
                                f"{',' + lab if lab else ''} in the store")
        return found[0].id

    def tree_key(self, image_ids: Iterable[str]) -> str:
        return hashlib.sha512("\n".join(image_ids).encode()).hexdigest()[:64]

    def tree_lock(self, key: str) -> FileLock:
        return FileLock(self.locks / f"tree-{key}.lock")

    def render(self, image_id: str) -> Tree:
        """The rendered tree of ``image_id`` with its dependencies, rendering it if needed."""
        ids = self.flatten(image_id)
        key = self.tree_key(ids)
        path = self.trees_dir / key
        rec = self.index.get_tree(key)
        if rec is not None and path.is_dir():
            self.index.touch_tree(key)
            self.index.touch_image(*ids)
            return Tree(key, path, ids)
        with locked(self.locks / f"tree-{key}.lock"):
            rec = self.index.get_tree(key)
            if rec is not None and path.is_dir():
                return Tree(key, path, ids)
            if path.exists():  # a leftover without an index row: never trust it
                rmtree(path)
            tmp = self._tmp_path("tree")
            try:
                self._render_into(ids, tmp)
                tree_hash = hash_tree(tmp / "rootfs")
                checkpoint("render:rendered")
                os.rename(tmp, path)
                fsync_dir(self.trees_dir)
            except BaseException:
                rmtree(tmp)
                raise
            checkpoint("render:renamed")
            now = time.time()
            self.index.add_tree(TreeRecord(key, image_id, ids, tree_hash, now, now))
        self.index.touch_image(*ids)
        return Tree(key, path, ids)

    def _render_into(self, ids: list[str], dest: Path) -> None:
        from podrun.store.extract import extract_tar

        rootfs = dest / "rootfs"
        rootfs.mkdir(parents=True)
        for iid in ids:
            if self.verify_on_render and iid not in self._fresh:
                self.verify_blob(iid)
            apply_whiteouts(rootfs, self.manifest(iid))
            extract_tar(self.blob_path(iid), rootfs, strip="rootfs")
        top = self.manifest(ids[-1])
        if top.path_whitelist:
            apply_whitelist(rootfs, top.path_whitelist)
        (dest / "manifest").write_bytes(top.to_json())

    def extract(self, image_id: str, dest: Path, *, rootfs_only: bool = False,
                render: bool = False) -> None:
        """Write an image (alone, or rendered with dependencies) into ``dest``."""
        from podrun.store.extract import extract_tar

        dest.mkdir(parents=True, exist_ok=True)
        if render:
            tree = self.render(image_id)
            src_root = tree.rootfs
            target = dest if rootfs_only else dest / "rootfs"
            copy_tree(src_root, target)
            if not rootfs_only:
                shutil.copyfile(tree.path / "manifest", dest / "manifest")
            return
        if self.verify_on_render:
            self.verify_blob(image_id)
        if rootfs_only:
            extract_tar(self.blob_path(image_id), dest, strip="rootfs")
        else:
            extract_tar(self.blob_path(image_id), dest, strip=None)

    def verify_tree(self, image_id: str) -> Tree:
        """Re-hash a rendered tree against the hash recorded when it was rendered."""
        ids = self.flatten(image_id)
        key = self.tree_key(ids)
        rec = self.index.get_tree(key)
        path = self.trees_dir / key
        if rec is None or not path.is_dir():
            raise NotFoundError(f"image {short_id(image_id)} has no rendered tree "
                                "(run: podrun image render)")
        actual = hash_tree(path / "rootfs")
        if actual != rec.tree_hash:
            raise StoreError(f"rendered tree {path} of image {short_id(image_id)} was "
                             "modified on disk")
        return Tree(key, path, ids)

    # removal and gc -------------------------------------------------------
    def remove_image(self, image_id: str) -> None:
        self.get(image_id)
        for tree in self.index.trees():
            if image_id in tree.image_ids:
                self.remove_tree(tree.key)
        self.index.remove_image(image_id)
        self.blob_path(image_id).unlink(missing_ok=True)

    def remove_tree(self, key: str) -> bool:
        """Remove a tree unless a pod holds it; True if removed."""
        lock = self.tree_lock(key)
        if not lock.acquire(blocking=False):
            return False
        try:
            self.index.remove_tree(key)
            rmtree(self.trees_dir / key)
        finally:
            lock.release()
        return True

    def gc(self, grace_period: float, *, in_use: set[str] | frozenset[str] = frozenset(),
           log: Callable[[str], None] = lambda s: None) -> list[str]:
        """Remove images unused for ``grace_period`` seconds, unused trees and leftovers.

        ``in_use``: tree keys the caller knows are referenced (e.g. by prepared pods);
        they, their images, and trees locked by running pods are kept.
        """
        removed: list[str] = []
        cutoff = time.time() - grace_period
        needed: set[str] = set()  # dependencies of the images that stay
        for rec in self.index.images():
            if rec.last_used >= cutoff and rec.manifest.get("dependencies"):
                try:
                    needed.update(self.flatten(rec.id))
                except (NotFoundError, ImageError):
                    pass
        for rec in self.index.images():
            if rec.last_used < cutoff and rec.id in needed:
                log(f"image {short_id(rec.id)} is a dependency of a kept image; kept")
                continue
            if rec.last_used < cutoff:
                busy = [t for t in self.index.trees()
                        if rec.id in t.image_ids
                        and (t.key in in_use or not self._tree_free(t.key))]
                if busy:
                    log(f"image {short_id(rec.id)} is in use by a pod; kept")
                    continue
                self.remove_image(rec.id)
                removed.append(rec.id)
        for tree in self.index.trees():
            if tree.key in in_use:
                continue
            if tree.last_used < cutoff and self.remove_tree(tree.key):
                log(f"removed tree {tree.key[:16]}")
        self.sweep_leftovers(log)
        return removed

    def _tree_free(self, key: str) -> bool:
        lock = self.tree_lock(key)
        try:
            return lock.acquire(blocking=False)
        finally:
            lock.release()

    def sweep_leftovers(self, log: Callable[[str], None] = lambda s: None) -> None:
        """Remove tmp work of dead processes, blobs and trees the index does not know."""
        for entry in self.tmp.iterdir():
            parts = entry.name.split("-")
            if len(parts) >= 3 and parts[1].isdigit() and pid_alive(int(parts[1])):
                continue
            rmtree(entry)
            log(f"removed leftover {entry}")
        known = {r.id for r in self.index.images()}
        for sub in self.blobs.iterdir():
            for blob in sub.iterdir():
                if ID_PREFIX + blob.name not in known:
                    blob.unlink(missing_ok=True)
                    log(f"removed unindexed blob {blob.name[:16]}")
        trees = {t.key for t in self.index.trees()}
        for d in self.trees_dir.iterdir():
            if d.name not in trees and self._tree_free(d.name):
                rmtree(d)
                log(f"removed unindexed tree {d.name[:16]}")


def hash_tree(root: Path) -> str:
    """A hash of a tree's paths, types, modes, owners, link targets and file contents."""
    h = hashlib.sha512()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted([*dirnames, *filenames]):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            h.update(f"{rel}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                h.update(f"{st.st_rdev}".encode())
            h.update(b"\n")
    return "sha512-" + h.hexdigest()


WHITEOUTS = "podrun.io/whiteouts"
OPAQUE_DIRS = "podrun.io/opaque-dirs"


def apply_whiteouts(rootfs: Path, manifest: ImageManifest) -> None:
    """Layer deletions an image asks for before its own files are laid over the tree.

    A converted Docker/OCI layer (layered mode, :mod:`podrun.convert`) lists the
    paths its whiteouts remove (``podrun.io/whiteouts``) and the directories it
    makes opaque (``podrun.io/opaque-dirs``: their current content is removed),
    as JSON lists of rootfs paths. Paths are walked with ``O_NOFOLLOW`` from the
    rootfs fd and removed with fd-relative calls, so a symlink in the tree never
    leads outside it (a path through a symlink is simply not there).
    """
    import json

    for name, opaque in ((WHITEOUTS, False), (OPAQUE_DIRS, True)):
        text = manifest.annotation(name)
        if not text:
            continue
        try:
            paths = json.loads(text)
        except ValueError:
            raise ImageError(f"image {manifest.name}: annotation {name} is not JSON") from None
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ImageError(f"image {manifest.name}: annotation {name} is not a list of paths")
        for path in paths:
            _remove_inside(rootfs, path, contents_only=opaque)


def _remove_inside(rootfs: Path, path: str, *, contents_only: bool) -> None:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts or (not parts and not contents_only):
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(rootfs, flags)
    try:
        walk = parts if contents_only else parts[:-1]
        for comp in walk:
            try:
                nfd = os.open(comp, flags, dir_fd=fd)
            except (FileNotFoundError, NotADirectoryError, OSError):
                return  # missing, or not a directory (a symlink is not followed)
            os.close(fd)
            fd = nfd
        names = os.listdir(fd) if contents_only else [parts[-1]]
        for name in names:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def apply_whitelist(rootfs: Path, whitelist: list[str]) -> None:
    """Keep only whitelisted paths (and the directories leading to them)."""
    keep = {os.path.normpath(p.lstrip("/")) for p in whitelist}
    parents = set()
    for p in keep:
        d = os.path.dirname(p)
        while d:
            parents.add(d)
            d = os.path.dirname(d)
    for dirpath, dirnames, filenames in os.walk(rootfs, topdown=True):
        rel_dir = os.path.relpath(dirpath, rootfs)
        for name in list(dirnames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            full = os.path.join(dirpath, name)
            if rel in keep or rel in parents:
                if rel in keep:  # a whitelisted directory keeps its whole content
                    dirnames.remove(name)
                continue
            dirnames.remove(name)
            rmtree(Path(full))
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel not in keep:
                os.unlink(os.path.join(dirpath, name))


def copy_tree(src: Path, dest: Path) -> None:
    """Copy a rendered tree keeping owners, modes, links, devices and xattrs."""
    import subprocess

    dest.mkdir(parents=True, exist_ok=True)
    # cp -a keeps hardlinks, devices, owners, xattrs; GNU coreutils is always present.
    proc = subprocess.run(["cp", "-a", "--", f"{src}/.", str(dest)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise StoreError(f"copying {src} to {dest} failed: {proc.stderr.strip()}")


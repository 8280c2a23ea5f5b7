"""The layer cache: Docker/OCI blobs kept by digest under the store, verified on the way in.

Layout under ``<data>/cas/docker/``::

    layers/sha256/<hex>    uncompressed layer tars, named by their diffID (sha256)
    digests/sha256/<hex>   a compressed blob's digest → the diffID it unpacks to
    tmp/                   downloads in progress (<kind>-<pid>-<rand>)

A layer is written to a temp file while its compressed bytes are hashed
(digest) and decompressed and hashed again (diffID); only when both match what
the manifest and the config promise is it fsynced and renamed into place. So an
interrupted or tampered download never leaves a blob here: a later fetch starts
over, and a layer shared by two images is downloaded and decompressed once.

Compression is found from the bytes (gzip, bzip2, xz or none), not trusted from
the media type; zstd is refused with a clear message (Python has no zstd).
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import lzma
import os
import secrets
import zlib
from collections.abc import Iterable
from pathlib import Path

from podrun.errors import ImageError

CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def hex_of(digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
        raise ImageError(f"unsupported digest {digest!r} (expected sha256:<64 hex digits>)")
    return hexd


class _Decompressor:
    """Incremental decompression chosen from the first bytes of the stream."""

    def __init__(self, head: bytes, label: str) -> None:
        self.label = label
        if head.startswith(b"\x1f\x8b"):
            self.kind = "gzip"
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif head.startswith(b"BZh"):
            self.kind = "bzip2"
            self._d = bz2.BZ2Decompressor()
        elif head.startswith(b"\xfd7zXZ\x00"):
            self.kind = "xz"
            self._d = lzma.LZMADecompressor()
        elif head.startswith(ZSTD_MAGIC):
            raise ImageError(f"{label}: zstd-compressed layers are not supported")
        else:
            self.kind = "none"
            self._d = None

    def feed(self, data: bytes) -> bytes:
        if self._d is None:
            return data
        out = []
        try:
            while data:
                if getattr(self._d, "eof", False):
                    if self.kind != "gzip":
                        raise ImageError(f"{self.label}: trailing data after the compressed "
                                         "stream")
                    if not data.lstrip(b"\0"):
                        return b"".join(out)  # padding after the last member
                    self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # concatenated member
                out.append(self._d.decompress(data))
                data = getattr(self._d, "unused_data", b"")
        except (zlib.error, OSError, lzma.LZMAError, EOFError) as err:
            raise ImageError(f"{self.label}: corrupt {self.kind} data: {err}") from None
        return b"".join(out)

    def finish(self) -> bytes:
        if self._d is None:
            return b""
        if not getattr(self._d, "eof", False):
            raise ImageError(f"{self.label}: truncated layer ({self.kind} stream ends early)")
        return b""


class LayerCache:
    """Verified, decompressed layers, keyed by digest (see module doc)."""

    def __init__(self, store_root: Path, *, verify: bool = True) -> None:
        self.root = store_root / "docker"
        self.layers = self.root / "layers" / "sha256"
        self.digests = self.root / "digests" / "sha256"
        self.tmp = self.root / "tmp"
        self.verify = verify
        for d in (self.layers, self.digests, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self.sweep()

    def sweep(self) -> None:
        """Remove downloads left in tmp/ by processes that died (``kill -9``, power loss)."""
        from podrun.fsutil import pid_alive

        for entry in self.tmp.iterdir():
            parts = entry.name.split("-")
            if len(parts) >= 3 and parts[1].isdigit() and pid_alive(int(parts[1])):
                continue
            entry.unlink(missing_ok=True)

    def _tmp(self, kind: str) -> Path:
        return self.tmp / f"{kind}-{os.getpid()}-{secrets.token_hex(6)}"

    # layers ------------------------------------------------------------------
    def layer_path(self, diff_id: str) -> Path:
        return self.layers / hex_of(diff_id)

    def lookup(self, digest: str | None, diff_id: str | None) -> Path | None:
        """The cached layer for a compressed ``digest`` or a ``diff_id``, if present."""
        if diff_id is None and digest is not None:
            mapped = self.digests / hex_of(digest)
            with contextlib.suppress(OSError):
                diff_id = mapped.read_text().strip()
        if diff_id is None:
            return None
        path = self.layer_path(diff_id)
        if not path.is_file():
            return None
        if self.verify and _sha256_file(path) != diff_id:
            path.unlink(missing_ok=True)  # corrupt on disk: fetch it again
            return None
        return path

    def ingest_layer(self, chunks: Iterable[bytes], *, digest: str | None,
                     diff_id: str | None, label: str) -> tuple[str, Path]:
        """Store a layer from its (compressed) bytes; return (diffID, path).

        ``digest`` is the hash the bytes as given must have, ``diff_id`` the hash of
        the uncompressed tar (either may be unknown); a mismatch is an ImageError and
        nothing is kept.
        """
        tmp = self._tmp("layer")
        dgst, diff = hashlib.sha256(), hashlib.sha256()
        dec: _Decompressor | None = None
        broken: ImageError | None = None  # reported only if the digest matched
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    if not chunk:
                        continue
                    dgst.update(chunk)
                    if broken is not None:
                        continue  # keep hashing: a digest mismatch is the better message
                    try:
                        if dec is None:
                            dec = _Decompressor(chunk[:6], label)
                        data = dec.feed(chunk)
                    except ImageError as err:
                        broken = err
                        continue
                    diff.update(data)
                    out.write(data)
                got = "sha256:" + dgst.hexdigest()
                if digest is not None and got != digest:
                    raise ImageError(f"{label}: digest mismatch: content hashes to {got}, "
                                     f"expected {digest}")
                if broken is not None:
                    raise broken
                if dec is None:
                    raise ImageError(f"{label}: empty layer blob")
                dec.finish()
                got_diff = "sha256:" + diff.hexdigest()
                if diff_id is not None and got_diff != diff_id:
                    raise ImageError(f"{label}: uncompressed layer hashes to {got_diff}, but "
                                     f"the image config says {diff_id}")
                out.flush()
                os.fsync(out.fileno())
            dest = self.layer_path(got_diff)
            os.rename(tmp, dest)
            if digest is not None and digest != got_diff:
                self._write_small(self.digests / hex_of(digest), got_diff.encode())
            return got_diff, dest
        finally:
            tmp.unlink(missing_ok=True)

    def _write_small(self, dest: Path, data: bytes) -> None:
        tmp = self._tmp("blob")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()

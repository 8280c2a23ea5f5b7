"""Where Docker/OCI images come from: a registry, an OCI layout, a docker-archive.

Each source resolves to an :class:`Image`: the verified image manifest and
config, the layer list (with the diffIDs the config promises) and a way to read
each layer's bytes. Conversion (:mod:`podrun.convert.convert`) needs nothing else.

* ``docker://REF`` — :mod:`podrun.convert.registry`;
* ``oci:PATH[:REF]`` — an OCI image layout directory or a tar of one. REF matches
  an index entry's ``org.opencontainers.image.ref.name`` (full name or its tag
  part); without REF the index must hold one image (or one index, then the
  platform decides);
* ``docker-archive:FILE[:REPO:TAG]`` — ``docker save`` or skopeo's docker-archive:
  ``manifest.json`` with ``Config``, ``RepoTags``, ``Layers``. Entries may be
  symlinks to other entries of the archive (followed inside the archive, bounded).

Manifest lists / OCI indexes: the entry matching the wanted platform (host
os/arch/variant unless ``--os``/``--arch`` say otherwise) is chosen; none →
one error naming the platforms on offer. Media types outside the Docker v2
schema2 / OCI set (e.g. schema1) are refused by name. Every blob read from an
archive or layout is checked against its digest just like one from a registry.
"""

from __future__ import annotations

import json
import os
import platform
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from podrun.convert import registry as reg
from podrun.convert.cache import sha256_bytes
from podrun.convert.reference import DockerRef, appc_name
from podrun.errors import ImageError, NotFoundError, UsageError

CHUNK = 1 << 20
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = frozenset({
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
})
INDEX_TYPES = (reg.MT_OCI_INDEX, reg.MT_DOCKER_LIST)
IMAGE_TYPES = (reg.MT_OCI_MANIFEST, reg.MT_DOCKER_MANIFEST)
REF_NAME = "org.opencontainers.image.ref.name"

_ARCH_MAP = {"x86_64": ("amd64", ""), "aarch64": ("arm64", ""), "armv7l": ("arm", "v7"),
             "armv6l": ("arm", "v6"), "i686": ("386", ""), "i386": ("386", ""),
             "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", "")}


@dataclass(frozen=True)
class Platform:
    os: str
    arch: str
    variant: str = ""

    def __str__(self) -> str:
        return f"{self.os}/{self.arch}" + (f"/{self.variant}" if self.variant else "")


def host_platform(os_: str | None = None, arch: str | None = None) -> Platform:
    """The host's platform in OCI terms, with ``--os``/``--arch`` overrides.

    ``arch`` may carry a variant: ``arm/v7``.
    """
    h_arch, h_var = _ARCH_MAP.get(platform.machine(), (platform.machine(), ""))
    if arch:
        a, _, v = arch.partition("/")
        h_arch, h_var = a, v
    return Platform(os_ or "linux", h_arch, h_var)


@dataclass
class Layer:
    digest: str | None     # digest of the blob as stored (None: only the diffID is known)
    diff_id: str           # sha256 of the uncompressed tar, from the config
    media_type: str
    size: int | None = None


@dataclass
class Naming:
    """Where the image came from, for its appc name, labels and annotations."""

    name: str
    version: str | None
    original: str
    registry: str | None = None
    repository: str | None = None
    tag: str | None = None


@dataclass
class Image:
    label: str
    naming: Naming
    manifest_digest: str | None
    config: dict[str, Any]
    config_digest: str
    layers: list[Layer]
    read_layer: Callable[[Layer], Iterator[bytes]]
    parallel: bool = False      # downloads benefit from running side by side
    platform: Platform | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ImageError(f"{what}: not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ImageError(f"{what}: not a JSON object")
    return doc


def media_type_of(doc: dict[str, Any], header: str = "") -> str:
    mt = doc.get("mediaType") or ""
    if not mt and header in (*INDEX_TYPES, *IMAGE_TYPES):
        mt = header
    if not mt:
        if doc.get("schemaVersion") == 1:
            return "application/vnd.docker.distribution.manifest.v1+json"
        mt = reg.MT_OCI_INDEX if "manifests" in doc else reg.MT_OCI_MANIFEST
    return str(mt)


def select_platform(index: dict[str, Any], want: Platform, label: str) -> dict[str, Any]:
    """The index entry for ``want`` (variant optional when the index has one match)."""
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    offered = []
    exact, loose = [], []
    for m in entries:
        p = m.get("platform") or {}
        pos, parch, pvar = p.get("os", ""), p.get("architecture", ""), p.get("variant", "")
        offered.append(str(Platform(pos, parch, pvar)) if pos else "(none)")
        if pos == want.os and parch == want.arch:
            (exact if (pvar or "") == (want.variant or "") else loose).append(m)
    if exact:
        return exact[0]
    if len(loose) == 1 or (loose and not want.variant):
        return loose[0]
    raise NotFoundError(f"{label}: no image for platform {want} in the index (it offers "
                        f"{', '.join(offered) or 'nothing'}; use --os/--arch)")


def check_image_manifest(doc: dict[str, Any], mt: str, label: str) -> None:
    if mt not in IMAGE_TYPES:
        raise ImageError(f"{label}: unsupported manifest media type {mt!r}")
    cfg = doc.get("config") or {}
    if cfg.get("mediaType") not in (MT_DOCKER_CONFIG, MT_OCI_CONFIG):
        raise ImageError(f"{label}: unsupported config media type {cfg.get('mediaType')!r}")
    for i, lay in enumerate(doc.get("layers") or []):
        lmt = lay.get("mediaType", "")
        if lmt not in LAYER_TYPES:
            raise ImageError(f"{label}: layer {i} has unsupported media type {lmt!r}")


def layers_from(doc: dict[str, Any], config: dict[str, Any], label: str) -> list[Layer]:
    descs = doc.get("layers") or []
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(descs) != len(diff_ids):
        raise ImageError(f"{label}: the manifest lists {len(descs)} layers but the config "
                         f"{len(diff_ids)} diff_ids")
    return [Layer(d["digest"], diff, d.get("mediaType", ""), d.get("size"))
            for d, diff in zip(descs, diff_ids, strict=True)]


# --- registry -----------------------------------------------------------------

def from_registry(client: reg.Registry, ref: DockerRef, want: Platform) -> Image:
    label = ref.original
    data, header, digest = client.manifest(ref.reference)
    doc = _json(data, f"{label}: manifest")
    mt = media_type_of(doc, header)
    if mt in INDEX_TYPES:
        entry = select_platform(doc, want, label)
        data, header, digest = client.manifest(entry["digest"])
        doc = _json(data, f"{label}: manifest {entry['digest']}")
        mt = media_type_of(doc, header)
    check_image_manifest(doc, mt, label)
    cdigest = doc["config"]["digest"]
    config = _json(client.blob(cdigest), f"{label}: config {cdigest}")
    naming = Naming(ref.appc_name(), ref.tag, ref.original, ref.registry, ref.repository,
                    ref.tag)
    return Image(label, naming, digest, config, cdigest, layers_from(doc, config, label),
                 lambda lay: client.blob_chunks(lay.digest or lay.diff_id), parallel=True,
                 platform=want)


# --- files: a directory or a tar of one --------------------------------------------

class _Files:
    """Read named files from a directory or a tar archive (symlinks followed inside)."""

    def __init__(self, path: Path, label: str) -> None:
        self.path, self.label = path, label
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            return
        if not path.is_file():
            raise NotFoundError(f"{label}: {path} not found")
        try:
            self.tar = tarfile.open(path, "r:*")
            for m in self.tar.getmembers():
                self.members[posixpath.normpath(m.name).lstrip("/")] = m
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ImageError(f"{label}: {path} is not a tar archive or directory: {err}") from None

    def _member(self, name: str) -> tarfile.TarInfo:
        name = posixpath.normpath(name).lstrip("/")
        for _ in range(40):
            m = self.members.get(name)
            if m is None:
                raise ImageError(f"{self.label}: {name} is missing from the archive")
            if m.issym() or m.islnk():
                base = posixpath.dirname(name) if m.issym() else ""
                name = posixpath.normpath(posixpath.join(base, m.linkname)).lstrip("/")
                if name.startswith("../"):
                    raise ImageError(f"{self.label}: {m.name} links outside the archive")
                continue
            if not m.isreg():
                raise ImageError(f"{self.label}: {name} is not a regular file")
            return m
        raise ImageError(f"{self.label}: too many levels of symbolic links at {name}")

    def exists(self, name: str) -> bool:
        if self.tar is None:
            return (self.path / name).exists()
        return posixpath.normpath(name).lstrip("/") in self.members

    def open(self, name: str) -> IO[bytes]:
        if self.tar is None:
            full = os.path.realpath(self.path / name)
            if not full.startswith(os.path.realpath(self.path) + os.sep):
                raise ImageError(f"{self.label}: {name} points outside {self.path}")
            try:
                return open(full, "rb")  # noqa: SIM115 - caller closes
            except OSError as err:
                raise ImageError(f"{self.label}: cannot read {name}: {err.strerror}") from None
        f = self.tar.extractfile(self._member(name))
        assert f is not None
        return f

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def chunks(self, name: str) -> Iterator[bytes]:
        with self.open(name) as f:
            while chunk := f.read(CHUNK):
                yield chunk


def _blob_name(digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    if not hexd or "/" in hexd or "/" in algo:
        raise ImageError(f"bad digest {digest!r}")
    return f"blobs/{algo}/{hexd}"


def _verified(files: _Files, digest: str, label: str) -> bytes:
    data = files.read(_blob_name(digest))
    if sha256_bytes(data) != digest:
        raise ImageError(f"{label}: digest mismatch: blob {digest} hashes to "
                         f"{sha256_bytes(data)}")
    return data


def split_source(text: str, prefix: str) -> tuple[Path, str | None]:
    """``PREFIX:PATH[:REF]`` → (PATH, REF); the REF part may not contain ``/``."""
    body = text[len(prefix):]
    if not body:
        raise UsageError(f"{text}: no path given")
    if ":" in body:
        path, ref = body.split(":", 1)
        if not Path(body).exists() and Path(path).exists():
            return Path(path), ref or None
    return Path(body), None


# --- OCI image layout ------------------------------------------------------------

def from_oci_layout(text: str, want: Platform) -> Image:
    path, ref = split_source(text, "oci:")
    label = text
    files = _Files(path, label)
    if not files.exists("oci-layout"):
        raise ImageError(f"{label}: {path} is not an OCI image layout (no oci-layout file)")
    index = _json(files.read("index.json"), f"{label}: index.json")
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    if ref is not None:
        chosen = [m for m in entries if _ref_matches((m.get("annotations") or {})
                                                     .get(REF_NAME, ""), ref)]
        if not chosen:
            names = sorted({(m.get("annotations") or {}).get(REF_NAME, "") for m in entries})
            raise NotFoundError(f"{label}: no image named {ref!r} in the layout (it has "
                                f"{', '.join(n for n in names if n) or 'no named images'})")
    else:
        chosen = entries
    if not chosen:
        raise ImageError(f"{label}: the layout's index.json lists no images")
    if len(chosen) > 1:
        if all((m.get("platform") or {}).get("os") for m in chosen):
            chosen = [select_platform({"manifests": chosen}, want, label)]
        else:
            raise UsageError(f"{label}: the layout holds {len(chosen)} images; name one "
                             "as oci:PATH:REF")
    desc = chosen[0]
    ref_name = (desc.get("annotations") or {}).get(REF_NAME) or ref
    digest = desc["digest"]
    doc = _json(_verified(files, digest, label), f"{label}: manifest {digest}")
    mt = media_type_of(doc, desc.get("mediaType", ""))
    if mt in INDEX_TYPES:
        entry = select_platform(doc, want, label)
        digest = entry["digest"]
        doc = _json(_verified(files, digest, label), f"{label}: manifest {digest}")
        mt = media_type_of(doc, entry.get("mediaType", ""))
    check_image_manifest(doc, mt, label)
    cdigest = doc["config"]["digest"]
    config = _json(_verified(files, cdigest, label), f"{label}: config {cdigest}")
    naming = _local_naming(path, ref_name, label)
    return Image(label, naming, digest, config, cdigest, layers_from(doc, config, label),
                 lambda lay: files.chunks(_blob_name(lay.digest or lay.diff_id)),
                 platform=want)


def _ref_matches(name: str, ref: str) -> bool:
    return name == ref or name.rsplit(":", 1)[-1] == ref and ":" in name


def _local_naming(path: Path, ref_name: str | None, label: str) -> Naming:
    """Names for local files: a full docker reference in REF is used as such."""
    if ref_name and "/" in ref_name:
        from podrun.convert.reference import parse

        try:
            r = parse(ref_name)
            return Naming(r.appc_name(), r.tag, label, r.registry, r.repository, r.tag)
        except UsageError:
            pass
    stem = path.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        stem = stem.removesuffix(suffix)
    tag = ref_name.rsplit(":", 1)[-1] if ref_name else "latest"
    return Naming(appc_name(stem), tag, label, None, None, tag)


# --- docker-archive ----------------------------------------------------------------

def from_docker_archive(text: str, want: Platform) -> Image:
    body = text[len("docker-archive:"):]
    path, ref = Path(body), None
    if not path.exists() and ":" in body:
        p, ref = body.split(":", 1)
        path = Path(p)
    label = text
    files = _Files(path, label)
    entries = json.loads(files.read("manifest.json"))
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"{label}: manifest.json lists no images")
    if ref is not None:
        chosen = [e for e in entries if ref in (e.get("RepoTags") or [])
                  or any(t.split("/")[-1] == ref or t.endswith("/" + ref)
                         for t in e.get("RepoTags") or [])]
        if not chosen:
            raise NotFoundError(f"{label}: no image tagged {ref!r} in the archive")
    elif len(entries) > 1:
        raise UsageError(f"{label}: the archive holds {len(entries)} images; name one as "
                         "docker-archive:FILE:REPO:TAG")
    else:
        chosen = entries
    entry = chosen[0]
    cfg_name = entry.get("Config") or ""
    raw = files.read(cfg_name)
    cdigest = sha256_bytes(raw)
    stem = posixpath.basename(cfg_name).removesuffix(".json")
    if len(stem) == 64 and stem != cdigest.split(":")[1]:
        raise ImageError(f"{label}: config {cfg_name} does not hash to its name "
                         f"({cdigest})")
    config = _json(raw, f"{label}: {cfg_name}")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    paths = entry.get("Layers") or []
    if len(paths) != len(diff_ids):
        raise ImageError(f"{label}: manifest.json lists {len(paths)} layers but the config "
                         f"{len(diff_ids)} diff_ids")
    layers = [Layer(None, d, "application/vnd.docker.image.rootfs.diff.tar") for d in diff_ids]
    by_diff = dict(zip(diff_ids, paths, strict=True))
    tags = entry.get("RepoTags") or []
    tag = ref if ref and ref in tags else (tags[0] if tags else None)
    naming = _local_naming(path, tag if tag and "/" in tag else None, label)
    if tag and "/" not in tag:
        from podrun.convert.reference import parse

        r = parse(tag)
        naming = Naming(r.appc_name(), r.tag, label, r.registry, r.repository, r.tag)
    return Image(label, naming, None, config, cdigest, layers,
                 lambda lay: files.chunks(by_diff[lay.diff_id]), platform=want)

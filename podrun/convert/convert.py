"""Docker/OCI image → ACI(s): getting the layers, replaying them, writing the ACIs.

``resolve(text, …)`` turns ``docker://…``, ``oci:…`` or ``docker-archive:…`` into a
:class:`podrun.convert.sources.Image`; ``ensure_layers`` puts its layers in the
layer cache (registry layers download in parallel, with a progress bar on a TTY
and silence otherwise); ``convert`` writes the ACI files:

* squashed (default): one ACI holding the merged rootfs;
* layered: one ACI per layer, named ``docker-layer/sha256-<chainID hex>`` (the
  OCI chain ID: the layer and everything below it), each depending on the one
  below by imageID and carrying its whiteouts as annotations
  (``podrun.io/whiteouts``, ``podrun.io/opaque-dirs``: JSON lists of rootfs
  paths) for the store's renderer; plus the image ACI itself: the app manifest and
  an empty rootfs, depending on the top layer. Layer ACIs hold nothing specific
  to the image, so images sharing lower layers share those ACIs in the store.

ACIs are written uncompressed for the store, gzip-compressed for ``podrun
convert``; either way the image ID is the hash of the tar, and the same input
gives the same ID. Files are written to a temp name and renamed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from podrun.appc.aci import GZIP_LEVEL, HashingWriter
from podrun.convert import appmap
from podrun.convert import layers as lay
from podrun.convert.cache import LayerCache
from podrun.convert.sources import Image, Platform
from podrun.errors import ImageError, UsageError

if TYPE_CHECKING:
    from podrun.stage0.context import Context

PARALLEL = 4
WHITEOUTS = "podrun.io/whiteouts"
OPAQUE = "podrun.io/opaque-dirs"
LAYER_NAME = "docker-layer/sha256-"


@dataclass
class Built:
    """One written ACI: where, its image ID and manifest."""

    path: Path
    image_id: str
    manifest: dict[str, Any]


def registry_session(ctx: Context) -> Any:
    """A requests session for registries: podrun's TLS rules and CA bundle, but none of
    discovery's auth.d credentials (their per-host auth would replace the registry's
    Basic/Bearer ``Authorization`` header; registries use ``dockerAuth`` instead)."""
    from podrun.discovery import http

    if ctx.insecure.tls:
        ctx.warn("TLS certificate verification is disabled (--insecure-options=tls)")
    if hasattr(http, "ca_bundle"):
        return http.new_session(ctx.insecure,  # type: ignore[call-arg]
                                bundle=http.ca_bundle(ctx.local_config, ctx.system_config))
    return http.new_session(ctx.insecure)


def resolve(text: str, ctx: Context, want: Platform,
            session: Callable[[], Any] | None = None) -> Image:
    from podrun.convert import sources

    if text.startswith("docker://"):
        from podrun.convert.reference import parse
        from podrun.convert.registry import Registry

        ref = parse(text)
        client = Registry(session() if session else registry_session(ctx), ref, ctx.insecure, [ctx.local_config, ctx.system_config],
                          ctx.log)
        return sources.from_registry(client, ref, want)
    if text.startswith("oci:"):
        return sources.from_oci_layout(text, want)
    if text.startswith("docker-archive:"):
        return sources.from_docker_archive(text, want)
    raise UsageError(f"{text}: not a docker://, oci: or docker-archive: source")


def _progress(total: int | None, label: str) -> Any:
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False)


def ensure_layers(image: Image, cache: LayerCache, log: Callable[[str], None]) -> list[Path]:
    """Every layer of ``image`` in the cache (fetched and verified as needed), in order."""
    missing = [i for i, layer in enumerate(image.layers)
               if cache.lookup(layer.digest, layer.diff_id) is None]
    bar = _progress(sum(image.layers[i].size or 0 for i in missing) or None,
                    image.naming.name) if missing else None

    def fetch(i: int) -> None:
        layer = image.layers[i]
        what = f"{image.label}: layer {i} ({layer.digest or layer.diff_id})"
        log(f"fetching {what}")

        def chunks() -> Iterator[bytes]:
            for chunk in image.read_layer(layer):
                if bar is not None:
                    bar.update(len(chunk))
                yield chunk

        cache.ingest_layer(chunks(), digest=layer.digest, diff_id=layer.diff_id, label=what)

    try:
        if image.parallel and len(missing) > 1:
            pool = ThreadPoolExecutor(min(PARALLEL, len(missing)))
            try:
                for fut in [pool.submit(fetch, i) for i in missing]:
                    fut.result()
            finally:  # on the first failure, layers not started yet are not started
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            for i in missing:
                fetch(i)
    finally:
        if bar is not None:
            bar.close()
    paths = []
    for layer in image.layers:
        path = cache.layer_path(layer.diff_id)
        if not path.is_file():
            raise ImageError(f"{image.label}: layer {layer.diff_id} vanished from the cache")
        paths.append(path)
    return paths


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else
                   "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def _manifest_bytes(doc: dict[str, Any]) -> bytes:
    from podrun.appc.manifest import ImageManifest

    try:
        return ImageManifest.from_json(doc).to_json()
    except Exception as err:  # a ManifestError names the field
        raise ImageError(f"converted manifest for {doc.get('name')} is invalid: {err}") from err


def write_aci(out: IO[bytes], manifest: bytes, entries: list[lay.Entry],
              tars: list[tarfile.TarFile]) -> str:
    """Write one ACI tar (manifest, then rootfs entries) to ``out``; return its image ID."""
    hasher = HashingWriter(out)
    writer = lay.TarWriter(hasher)  # type: ignore[arg-type]
    mi = tarfile.TarInfo("manifest")
    mi.size, mi.mode, mi.mtime, mi.uname, mi.gname = len(manifest), 0o644, 0, "", ""
    writer.add(mi, manifest)
    lay.write_entries(writer, entries, tars)
    writer.close()
    return hasher.image_id


def write_file(dest: Path, manifest: bytes, entries: list[lay.Entry],
               tars: list[tarfile.TarFile], *, compress: bool) -> str:
    """Write an ACI file atomically (temp name + fsync + rename)."""
    from podrun.fsutil import atomic_file

    with atomic_file(dest) as f:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f,
                               compresslevel=GZIP_LEVEL, mtime=0) as gz:
                return write_aci(gz, manifest, entries, tars)
        return write_aci(f, manifest, entries, tars)


def convert(image: Image, layer_paths: list[Path], out: Path, *, squash: bool = True,
            compress: bool = True, layer_name: Callable[[int], Path] | None = None
            ) -> list[Built]:
    """Write the ACI(s) of ``image``: ``out`` is the image ACI; in layered mode the
    layer ACIs go to ``layer_name(i)`` (default ``OUT-layerNN.aci`` beside ``out``).
    Returns them in dependency order (layers first, the image last)."""
    tars = [lay.open_layer(p, f"{image.label}: layer {i}") for i, p in enumerate(layer_paths)]
    try:
        root = lay.Rootfs()
        diffs = [root.apply(i, tf, f"{image.label}: layer {i} ({image.layers[i].diff_id})")
                 for i, tf in enumerate(tars)]
        passwd = root.read_file("etc/passwd", tars)
        if squash:
            manifest = _manifest_bytes(appmap.image_manifest(image, passwd=passwd))
            image_id = write_file(out, manifest, root.squashed(), tars, compress=compress)
            return [Built(out, image_id, json.loads(manifest))]
        return _layered(image, root, diffs, tars, out, passwd, compress, layer_name)
    finally:
        for tf in tars:
            tf.close()


def _layered(image: Image, root: lay.Rootfs, diffs: list[lay.LayerDiff],
             tars: list[tarfile.TarFile], out: Path, passwd: bytes | None, compress: bool,
             layer_name: Callable[[int], Path] | None) -> list[Built]:
    if layer_name is None:
        stem = out.name.removesuffix(".aci")

        def layer_name(i: int) -> Path:
            return out.with_name(f"{stem}-layer{i:02d}.aci")

    built: list[Built] = []
    chains = chain_ids([layer.diff_id for layer in image.layers])
    for i, diff in enumerate(diffs):
        doc: dict[str, Any] = {"acKind": "ImageManifest", "acVersion": appmap.AC_VERSION,
                               "name": LAYER_NAME + chains[i].split(":")[1]}
        if built:
            doc["dependencies"] = [{"imageName": built[-1].manifest["name"],
                                    "imageID": built[-1].image_id}]
        notes = [{"name": "appc.io/docker/layerdiffid", "value": image.layers[i].diff_id}]
        if diff.whiteouts:
            notes.append({"name": WHITEOUTS, "value": json.dumps(diff.whiteouts)})
        if diff.opaque:
            notes.append({"name": OPAQUE, "value": json.dumps(diff.opaque)})
        doc["annotations"] = notes
        manifest = _manifest_bytes(doc)
        path = layer_name(i)
        image_id = write_file(path, manifest, diff.entries, tars, compress=compress)
        built.append(Built(path, image_id, json.loads(manifest)))
    deps = ([{"imageName": built[-1].manifest["name"], "imageID": built[-1].image_id}]
            if built else None)
    doc = appmap.image_manifest(image, passwd=passwd, dependencies=deps,
                                parent_image_id=built[-1].image_id if built else None)
    manifest = _manifest_bytes(doc)
    top = [lay.Entry("", root.nodes[""].ti)]
    image_id = write_file(out, manifest, top, tars, compress=compress)
    built.append(Built(out, image_id, json.loads(manifest)))
    return built

"""``podrun fetch/run docker://…`` (and ``oci:``/``docker-archive:``): convert into the store.

Called by :meth:`podrun.stage0.fetch.Fetcher.fetch_docker`. Order of work: parse
the reference → signature policy → pull policy → resolve the image (manifest,
platform, config; all verified) → layers into the layer cache → ACI(s) written
to the store's tmp → imported (layers first in layered mode). Nothing is
imported before every ACI has been written, so a failure stores nothing.

Signature policy: Docker images carry no GPG signature. A reference by tag is
refused unless ``--insecure-options=image``; a reference pinned by digest
(``@sha256:…``) is accepted, because the manifest, and through it the config
and every layer, is verified against that digest.

Pull policy (source URL = the canonical ``docker://REGISTRY/REPO[:TAG][@DIGEST]``):
``new`` uses an image fetched earlier from the same reference without asking the
registry; ``update`` asks again; ``never`` uses the store only.

Options read from the Fetcher's FetchOptions when present: ``os``, ``arch``
(platform of a multi-platform image; the host's by default) and ``no_squash``
(layered import).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from podrun.errors import NotFoundError, SignatureError

if TYPE_CHECKING:
    from podrun.stage0.fetch import Fetcher

MANIFEST_HASH = "appc.io/docker/manifesthash"


def fetch_docker(fetcher: Fetcher, text: str) -> str:
    """Fetch and convert ``text``; return the image ID of the (top) ACI in the store."""
    from podrun.convert.cache import LayerCache
    from podrun.convert.convert import convert, ensure_layers, resolve
    from podrun.convert.reference import parse
    from podrun.convert.sources import host_platform
    from podrun.store.store import short_id

    ctx, store, opts = fetcher.ctx, fetcher.store, fetcher.opts
    ref = parse(text) if text.startswith("docker://") else None
    if not ctx.insecure.image and (ref is None or ref.digest is None):
        hint = "pin it by digest (@sha256:…) or " if ref is not None else ""
        raise SignatureError(f"{text}: Docker images carry no signature; {hint}use "
                             "--insecure-options=image")
    if ctx.insecure.image:
        ctx.warn(f"signature verification of {text} is disabled (--insecure-options=image; "
                 "Docker images are not signed)")
    url = ref.url if ref is not None else None
    policy = getattr(opts, "pull_policy", "new")
    cached = store.index.images_by_url(url) if url else []
    if cached and (policy in ("never", "new") or (ref is not None and ref.digest)):
        ctx.log(f"using {short_id(cached[0].id)} fetched earlier from {url}")
        return cached[0].id
    if policy == "never" and url:
        raise NotFoundError(f"image from {url} not found in the store (--pull-policy=never)")
    want = host_platform(getattr(opts, "os", None), getattr(opts, "arch", None))
    squash = not getattr(opts, "no_squash", False)
    image = resolve(text, ctx, want)
    for rec in cached:  # pull policy "update": the same manifest is the same image
        notes = {a.get("name"): a.get("value") for a in rec.manifest.get("annotations") or []}
        if image.manifest_digest and notes.get(MANIFEST_HASH) == image.manifest_digest:
            ctx.log(f"{text}: manifest unchanged, using {short_id(rec.id)}")
            store.index.set_remote(rec.id, url=url, etag=None, max_age=None,
                                   checked=time.time())
            return rec.id
    cache = LayerCache(store.root, verify=store.verify_on_render)
    paths = ensure_layers(image, cache, ctx.log)
    work = store._tmp_path("convert")
    work.mkdir()
    try:
        built = convert(image, paths, work / "image.aci", squash=squash, compress=False,
                        layer_name=lambda i: work / f"layer{i:03d}.aci")
        # podrun wrote (and hashed) these tars itself, in the store's tmp dir: adopted
        # as they are, not re-read.
        for b in built[:-1]:  # layer ACIs (layered mode), shared with other images
            if store.index.get_image(b.image_id) is None:
                store.adopt(b.path, b.image_id, b.manifest)
        last = built[-1]
        image_id = store.adopt(last.path, last.image_id, last.manifest, source_url=url)
        ctx.log(f"stored {text} as {image_id}")
        return image_id
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)

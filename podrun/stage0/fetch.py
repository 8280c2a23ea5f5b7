"""Getting images into the store: local files, ``file://`` and ``https://`` URLs, store names.

The order of work for every fetch is: get the bytes into a temp file → check the
ACI's layout and manifest → verify the detached signature against the trust store
(unless ``--insecure-options=image``) → make sure every dependency is in the store
(fetching it too) → import. Nothing is stored when any step fails.

Signatures are looked for beside the image (``x.aci.asc``, or ``URL.asc``) unless
``--signature FILE`` names one. A name the store cannot serve is fetched by appc
discovery (:mod:`podrun.discovery.fetch`), which downloads through
:meth:`Fetcher.fetch_remote` with the discovered image and signature URLs.

HTTP caching (``--pull-policy``):
- ``new`` (default): an image already fetched from the URL is used without asking
  the server;
- ``update``: the server is asked again once the stored ``Cache-Control: max-age``
  has run out, with ``If-None-Match: <ETag>``; a 304 keeps the stored image;
- ``never``: only the store is used.
Local files are always (re)imported: importing is idempotent and cheap to undo.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from podrun.errors import FetchError, NotFoundError, SignatureError, UsageError
from podrun.store.store import ID_PREFIX, Store, parse_image_string, short_id
from podrun.testpoint import checkpoint

if TYPE_CHECKING:
    from podrun.appc.manifest import ImageManifest
    from podrun.stage0.context import Context

PULL_POLICIES = ("new", "update", "never")

# Vets a fetched image's (name, labels) against what was asked for; raises to refuse.
ManifestCheck = Callable[[str, dict[str, str]], None]


@dataclass
class FetchOptions:
    signature: Path | None = None
    pull_policy: str = "new"
    os: str | None = None          # docker/OCI platform choice (default: the host's)
    arch: str | None = None
    no_squash: bool = False        # docker/OCI: one ACI per layer, chained by dependencies


def classify(ref: str) -> str:
    """What kind of image reference this is: file, url, docker (also ``oci:`` and
    ``docker-archive:`` sources, converted like registry images), id or name."""
    if ref.startswith("file://"):
        return "file"
    if ref.startswith(("https://", "http://")):
        return "url"
    if ref.startswith(("docker://", "oci:", "docker-archive:")):
        return "docker"
    if ref.startswith(ID_PREFIX):
        return "id"
    if ref.startswith(("/", "./", "../")) or ref.endswith(".aci") or os.path.exists(ref):
        return "file"
    return "name"


class Fetcher:
    """Fetches images for one podrun command (one store, one trust store, one session)."""

    def __init__(self, ctx: Context, store: Store, options: FetchOptions | None = None) -> None:
        self.ctx = ctx
        self.store = store
        self.opts = options or FetchOptions()
        if self.opts.pull_policy not in PULL_POLICIES:
            raise UsageError(f"--pull-policy: {self.opts.pull_policy!r} is not one of "
                             f"{', '.join(PULL_POLICIES)}")
        self._session = None

    # entry point ------------------------------------------------------------
    def fetch(self, ref: str) -> str:
        kind = classify(ref)
        if kind == "file":
            path = Path(ref.removeprefix("file://"))
            return self.fetch_file(path)
        if kind == "url":
            return self.fetch_url(ref)
        if kind == "id":
            return self.store.resolve_id(ref)
        if kind == "docker":
            return self.fetch_docker(ref)
        name, labels = parse_image_string(ref)
        return self.fetch_name(name, labels, ref)

    def fetch_name(self, name: str, labels: dict[str, str], ref: str | None = None) -> str:
        """An image by name: from the store (pull policy ``new``/``never``), else by
        appc discovery (``podrun.discovery``)."""
        found = self.store.find(name, labels)
        if found and self.opts.pull_policy != "update":
            return found[0].id
        shown = ref or name
        if self.opts.pull_policy == "never":
            if found:
                return found[0].id
            raise NotFoundError(f"image {shown} not found in the store (--pull-policy=never)")
        try:
            from podrun.discovery.fetch import fetch_by_discovery
        except ImportError:
            if found:
                return found[0].id
            raise NotFoundError(f"image {shown} not found in the store, and fetching by "
                                "name (appc discovery) is not available") from None
        return fetch_by_discovery(self, name, labels)

    def fetch_docker(self, ref: str) -> str:
        """A ``docker://`` reference: fetched from a registry and converted (podrun.convert)."""
        try:
            from podrun.convert.fetch import fetch_docker
        except ImportError:
            raise FetchError(f"{ref}: docker:// images are not supported yet") from None
        return fetch_docker(self, ref)

    # local files ------------------------------------------------------------
    def fetch_file(self, path: Path) -> str:
        if not path.is_file():
            raise NotFoundError(f"image file {path} not found")
        sig = self.opts.signature or Path(str(path) + ".asc")
        return self._import(path, sig, source_url=None)

    # HTTPS ------------------------------------------------------------------
    def session(self):  # type: ignore[no-untyped-def]
        """The command's requests session (TLS rules, auth.d credentials, CA bundle)."""
        if self._session is None:
            from podrun.discovery.http import session_for

            self._session = session_for(self.ctx)
        return self._session

    def fetch_url(self, url: str) -> str:
        from podrun.discovery import http

        http.check_scheme(url, self.ctx.insecure)
        return self.fetch_remote(url, url + ".asc")

    def fetch_remote(self, url: str, sig_url: str, *,
                     check: ManifestCheck | None = None) -> str:
        """An ACI at ``url`` signed at ``sig_url`` (a URL fetch, or a discovered
        endpoint), honouring the pull policy and the URL's stored ETag/max-age.

        ``check(name, labels)`` vets the image's name and labels (also of a copy
        already stored) before anything is verified or stored; it raises to refuse.
        """
        from podrun.discovery import http

        cached = self.store.index.images_by_url(url)
        rec = cached[0] if cached else None
        if rec and check:
            check(rec.name, rec.labels)
        if rec and self.opts.pull_policy == "new":
            self.ctx.log(f"using {short_id(rec.id)} fetched earlier from {url}")
            return rec.id
        if self.opts.pull_policy == "never":
            if rec:
                return rec.id
            raise NotFoundError(f"image from {url} not found in the store (--pull-policy=never)")
        headers = {}
        if rec and rec.etag:
            fresh_until = (rec.checked_time or 0) + (rec.max_age or 0)
            if rec.max_age and time.time() < fresh_until:
                self.ctx.log(f"{url}: still fresh (max-age), using {short_id(rec.id)}")
                return rec.id
            headers["If-None-Match"] = rec.etag
        resp = http.get(self.session(), url, headers=headers, stream=True, ok=(200, 304))
        if resp.status_code == 304 and rec:
            resp.close()
            self.store.index.set_remote(rec.id, url=url, etag=rec.etag,
                                        max_age=http.max_age(resp), checked=time.time())
            self.ctx.log(f"{url}: not modified, using {short_id(rec.id)}")
            return rec.id
        tmp = self.store._tmp_path("download")
        sig_tmp: Path | None = None
        try:
            with open(tmp, "wb") as f:
                http.download(resp, f, url)
            checkpoint("fetch:downloaded")
            etag = resp.headers.get("ETag")
            age = http.max_age(resp)
            sig = self.opts.signature
            if sig is None and not self.ctx.insecure.image:
                sig_tmp = self.store._tmp_path("download-asc")
                try:
                    sresp = http.get(self.session(), sig_url)
                except FetchError as err:
                    raise SignatureError(f"no signature for {url}: {err} "
                                         "(use --insecure-options=image to skip)") from None
                sig_tmp.write_bytes(sresp.content)
                sig = sig_tmp
            return self._import(tmp, sig, source_url=url, etag=etag, max_age=age,
                                shown=url, check=check)
        finally:
            tmp.unlink(missing_ok=True)
            if sig_tmp:
                sig_tmp.unlink(missing_ok=True)

    # common -----------------------------------------------------------------
    def _import(self, path: Path, sig: Path | None, *, source_url: str | None,
                etag: str | None = None, max_age: int | None = None,
                shown: str | None = None, check: ManifestCheck | None = None) -> str:
        from podrun.appc.aci import read_manifest
        from podrun.errors import ImageError, ManifestError

        shown = shown or str(path)
        # The manifest (for the name, the signature's trust and the dependencies) is read
        # here; the whole layout is checked by the store's one-pass import, before the
        # blob becomes visible, so a bad ACI still leaves nothing behind.
        try:
            manifest = read_manifest(path)[0]
        except ManifestError as err:
            raise ImageError(f"{shown}: {err}") from None
        if check:
            check(manifest.name, manifest.labels_dict)
        self._verify(manifest, path, sig, shown)
        self._fetch_dependencies(manifest)
        image_id = self.store.import_aci(path, source_url=source_url, etag=etag,
                                         max_age=max_age)
        self.ctx.log(f"stored {shown} as {image_id}")
        return image_id

    def _verify(self, manifest: ImageManifest, path: Path, sig: Path | None,
                shown: str) -> None:
        if self.ctx.insecure.image:
            self.ctx.warn(f"signature verification of {manifest.name} is disabled "
                          "(--insecure-options=image)")
            return
        if sig is None or not sig.is_file():
            raise SignatureError(f"no signature for {shown} (looked for {sig}; use --signature "
                                 "FILE, or --insecure-options=image to skip)")
        from podrun.stage0.trust import TrustStore
        from podrun.stage0.verify import verify_signature

        trust = TrustStore(self.ctx.local_config, self.ctx.system_config)
        key = verify_signature(trust, manifest.name, path, sig)
        self.ctx.log(f"signature of {shown} by {key.fingerprint} verified")

    def _fetch_dependencies(self, manifest: ImageManifest) -> None:
        for i, dep in enumerate(manifest.dependencies):
            where = f"{manifest.name} dependencies[{i}]"
            try:
                self.store.resolve_dependency(dep, where)
                continue
            except NotFoundError:
                if dep.image_id and self.store.index.get_image(dep.image_id):
                    raise
            labels = {lab.name: lab.value for lab in dep.labels}
            try:
                dep_id = self.fetch_name(dep.image_name, labels)
            except NotFoundError as err:
                raise NotFoundError(f"{where}: {err}") from None
            if dep.image_id and dep_id != dep.image_id:
                raise FetchError(f"{where}: fetched {dep.image_name} is {short_id(dep_id)}, "
                                 f"not the required {short_id(dep.image_id)}")



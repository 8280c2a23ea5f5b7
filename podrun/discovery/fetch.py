"""Fetching by name through appc discovery, and discovering publishers' keys.

:func:`fetch_by_discovery` is what :meth:`podrun.stage0.fetch.Fetcher.fetch_name`
calls for a name the store cannot serve (or with ``--pull-policy=update``):

1. discover the name's endpoints (:func:`podrun.discovery.appc.discover`) with
   os/arch defaulting to the host's and version to ``latest``;
2. refuse endpoints the insecure options do not allow (plain HTTP), then take the
   first usable one, longest prefix first; when an image URL answers with an HTTP
   error the next endpoint is tried, and the first failure is reported;
3. with ``--trust-keys-from-https``, first trust the keys named by the name's
   ``ac-discovery-pubkeys`` tags for the image name — only keys whose page and URL
   are HTTPS with verified certificates (rkt: never with ``--insecure-options=tls``,
   over plain HTTP only with ``pubkey``); a failure there is a warning, since an
   already trusted key may still verify the image;
4. fetch ACI + signature through the Fetcher (:meth:`Fetcher.fetch_remote`), so
   the ACI URL is the image's ``source_url`` and ETag/max-age work on re-fetch,
   and verification, dependencies (by name → discovery again) and storing happen
   as for any fetch. Before anything is verified or stored, the image's name must
   be the requested one and its labels must agree: every label the user gave must
   be present with that value (``version=latest`` excepted); ``os``/``arch``, when
   defaulted to the host's, must match if the image carries them (an image
   without them is taken as portable).

:func:`discover_keys` serves ``podrun trust --prefix PREFIX`` without key files.
Plain HTTP anywhere on a key's way (page or key URL) needs ``--insecure-options=pubkey``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from podrun.discovery.appc import ACIEndpoint, discover, discovery_labels
from podrun.discovery.meta import DISCOVERY, PUBKEYS
from podrun.errors import FetchError, PodrunError

if TYPE_CHECKING:
    import requests

    from podrun.stage0.context import Context
    from podrun.stage0.fetch import Fetcher, ManifestCheck
    from podrun.stage0.trust import TrustStore

MAX_KEY_SIZE = 1 << 20


def fetch_by_discovery(fetcher: Fetcher, name: str, labels: Mapping[str, str]) -> str:
    """Discover, fetch, verify and store ``name`` with ``labels``; returns the image ID."""
    from podrun.discovery import http

    ctx = fetcher.ctx
    wanted = discovery_labels(labels)
    session = fetcher.session()
    ctx.log(f"discovering {name} with labels {wanted}")
    eps = discover(session, name, wanted, ctx.insecure, want="aci", log=ctx.log)
    if not eps.aci:
        raise FetchError(f"discovery of {name} found no {DISCOVERY} meta tag giving an image "
                         f"URL ({eps.describe_attempts()})")
    usable = [ep for ep in eps.aci if _allowed(ep, ctx)]
    if not usable:
        ep = eps.aci[0]
        http.check_scheme(ep.aci, ctx.insecure, what=f" (discovered for {name} at {ep.page})")
        raise FetchError(f"{ep.aci}: unsupported URL scheme (discovered for {name} at {ep.page})")
    if ctx.trust_keys_from_https:
        trust_keys_from_https(fetcher, name)
    first: FetchError | None = None
    for ep in usable:
        ctx.log(f"{name}: fetching {ep.aci} (prefix {ep.prefix!r} at {ep.page})")
        try:
            return fetcher.fetch_remote(ep.aci, ep.asc, check=manifest_check(name, labels,
                                                                              wanted, ep))
        except http.HTTPStatusError as err:
            if err.url != ep.aci:
                raise
            first = first or err
    assert first is not None
    more = f"; {len(usable) - 1} other endpoint(s) failed too" if len(usable) > 1 else ""
    raise FetchError(f"{first} (image URL discovered for {name} at {usable[0].page}{more})")


def _allowed(ep: ACIEndpoint, ctx: Context) -> bool:
    for url in (ep.aci, ep.asc):
        if url.startswith("http://") and not ctx.insecure.http:
            return False
        if not url.startswith(("https://", "http://")):
            return False
    return True


def manifest_check(name: str, asked: Mapping[str, str], wanted: Mapping[str, str],
                   ep: ACIEndpoint) -> ManifestCheck:
    """A check refusing an image whose name or labels differ from the request."""
    def check(got_name: str, got: dict[str, str]) -> None:
        where = f"{ep.aci} (discovered for {name})"
        if got_name != name:
            raise FetchError(f"{where}: the image is named {got_name}, not {name}")
        for key, value in asked.items():
            if key == "version" and value == "latest":
                continue
            if got.get(key) != value:
                have = f"{key}={got[key]}" if key in got else f"no {key} label"
                raise FetchError(f"{where}: the image has {have}, not the requested "
                                 f"{key}={value}")
        for key in ("os", "arch"):
            if key not in asked and key in got and got[key] != wanted[key]:
                raise FetchError(f"{where}: the image has {key}={got[key]}, this host needs "
                                 f"{key}={wanted[key]}")
    return check


# --------------------------------------------------------------------------- keys


def discover_keys(ctx: Context, prefix: str,
                  session: requests.Session | None = None) -> list[tuple[str, bytes]]:
    """The keys ``prefix``'s ``ac-discovery-pubkeys`` tags name, as (URL, bytes).

    Raises FetchError when no tag is found or a key cannot be fetched.
    """
    from podrun.discovery import http

    session = session or http.session_for(ctx)
    plain = dataclasses.replace(ctx.insecure, http=ctx.insecure.pubkey)
    eps = discover(session, prefix, {}, plain, want="keys", log=ctx.log)
    if not eps.keys:
        raise FetchError(f"key discovery for {prefix} found no {PUBKEYS} meta tag "
                         f"({eps.describe_attempts()})")
    return [(url, _fetch_key(session, url, ctx)) for url in eps.keys]


def _fetch_key(session: requests.Session, url: str, ctx: Context) -> bytes:
    from podrun.discovery import http

    if url.startswith("http://"):
        if not ctx.insecure.pubkey:
            raise FetchError(f"{url}: key URL is plain HTTP (use --insecure-options=pubkey)")
        ctx.warn(f"fetching key {url} over plain HTTP (--insecure-options=pubkey)")
    elif not url.startswith("https://"):
        raise FetchError(f"{url}: key URL is not https://")
    return http.read_limited(http.get(session, url, stream=True), MAX_KEY_SIZE, url)


def trust_keys_from_https(fetcher: Fetcher, name: str) -> None:
    """``--trust-keys-from-https``: trust ``name``'s discovered keys for ``name``.

    Keys already trusted for the name are left alone, and so are keys the user
    withdrew with ``podrun trust rm`` (an empty local key file). Failures are warnings.
    """
    ctx = fetcher.ctx
    if ctx.insecure.tls:
        ctx.warn("--trust-keys-from-https is ignored: TLS verification is disabled")
        return
    if ctx.insecure.image:
        return
    from podrun.stage0.trust import TrustStore, fingerprint_of

    store = TrustStore(ctx.local_config, ctx.system_config)
    try:
        found = discover_keys(ctx, name, fetcher.session())
        known = {k.fingerprint for k in store.keys_for(name)}
        for url, data in found:
            fps = [fp for fp, _ in fingerprint_of(data, source=f"key {url}")]
            withdrawn = [fp for fp in fps if _masked(store, fp, name)]
            if withdrawn:
                ctx.warn(f"--trust-keys-from-https: not trusting {url}: key {withdrawn[0]} "
                         "was removed with 'podrun trust rm'")
                continue
            if all(fp in known for fp in fps):
                continue
            for key in store.add(data, name):
                uid = key.uids[0] if key.uids else ""
                print(f"podrun: trusting key {key.fingerprint} {uid} for {name}, fetched "
                      f"from {url} (--trust-keys-from-https)", file=sys.stderr)
    except PodrunError as err:
        ctx.warn(f"--trust-keys-from-https: {err}")


def _masked(store: TrustStore, fingerprint: str, name: str) -> bool:
    """Whether the user withdrew trust in the key for ``name`` (an empty local key
    file at root or at a prefix covering the name, written by ``podrun trust rm``)."""
    from podrun.stage0.trust import covering_prefixes

    for prefix in [None, *covering_prefixes(name)]:
        path = store.key_path(fingerprint, prefix)
        if path.is_file() and path.stat().st_size == 0:
            return True
    return False

"""appc meta discovery: from an image name and labels to ACI, signature and key URLs.

The algorithm (appc ``spec/discovery.md``, as appc's reference code and rkt do it):

1. Labels for discovery are the requested ones, with ``os`` and ``arch`` defaulting
   to the host's and ``version`` to ``latest`` (:func:`discovery_labels`).
2. For the name ``host/a/b`` try ``https://host/a/b?ac-discovery=1``, then
   ``https://host/a?…``, then ``https://host?…``: a level whose page cannot be had
   (an HTTP error status) or carries no usable tag sends the walk one element up.
   A TLS or connection failure stops the walk at once with that URL: every level
   is the same host, so walking up could not help. With ``--insecure-options=http``
   each level is tried over HTTPS first and then over plain HTTP (appc's rule).
3. On a page, ``ac-discovery`` tags whose prefix starts the name render their
   template: ``{name}``, then every label (``{version}``, ``{os}``, ``{arch}``, any
   other), then ``{ext}`` = ``aci`` / ``aci.asc``; a template with a placeholder
   left over (a label not given) is skipped. The walk stops at the first level
   giving an endpoint. Endpoints are ordered longest prefix first (document order
   among equal prefixes); the caller uses the first one it can.
4. ``ac-discovery-pubkeys`` tags matching the name give key URLs (not templates);
   a key walk stops at the first level giving any.

This module does HTTP through :mod:`podrun.discovery.http` and never touches the
store; :mod:`podrun.discovery.fetch` turns endpoints into stored images.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from podrun.discovery.meta import DISCOVERY, PUBKEYS, MetaTag, parse_meta
from podrun.errors import FetchError

if TYPE_CHECKING:
    import requests

    from podrun.stage0.context import InsecureOptions

DEFAULT_VERSION = "latest"
MAX_PAGE = 1 << 20  # a discovery page larger than this is refused
PLACEHOLDER = re.compile(r"\{.*?\}")


@dataclass(frozen=True)
class ACIEndpoint:
    """Where an image and its signature are, and which tag (prefix, page) said so."""

    aci: str
    asc: str
    prefix: str
    page: str


@dataclass
class Endpoints:
    """What a discovery walk found, plus the levels that failed (for messages)."""

    aci: list[ACIEndpoint] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    attempts: list[tuple[str, str]] = field(default_factory=list)  # (url, what went wrong)

    def describe_attempts(self) -> str:
        return "; ".join(f"{url}: {why}" for url, why in self.attempts)


def discovery_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels discovery fills templates with: os/arch of the host, version latest."""
    from podrun.appc.types import host_arch, host_os

    out = dict(labels)
    out.setdefault("os", host_os())
    out.setdefault("arch", host_arch())
    if not out.get("version"):
        out["version"] = DEFAULT_VERSION
    return out


def render(template: str, name: str, labels: Mapping[str, str], ext: str) -> str | None:
    """The template filled in, or None when a placeholder is left (appc's rule)."""
    out = template.replace("{name}", name)
    for key, value in labels.items():
        if key != "name":
            out = out.replace("{" + key + "}", value)
    out = out.replace("{ext}", ext)
    return None if PLACEHOLDER.search(out) else out


def endpoints_from(tags: list[MetaTag], name: str, labels: Mapping[str, str],
                   page: str) -> tuple[list[ACIEndpoint], list[str]]:
    """The ACI endpoints (longest prefix first) and key URLs ``tags`` give for ``name``."""
    aci: list[ACIEndpoint] = []
    keys: list[str] = []
    for tag in tags:
        if not tag.matches(name):
            continue
        if tag.name == DISCOVERY:
            url = render(tag.uri, name, labels, "aci")
            asc = render(tag.uri, name, labels, "aci.asc")
            if url and asc:
                aci.append(ACIEndpoint(url, asc, tag.prefix, page))
        elif tag.name == PUBKEYS:
            keys.append(tag.uri)
    aci.sort(key=lambda e: len(e.prefix), reverse=True)  # stable: document order on ties
    return aci, keys


def levels(name: str) -> list[str]:
    """``host/a/b`` → ``host/a/b``, ``host/a``, ``host``."""
    parts = name.split("/")
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]


def discover(session: requests.Session, name: str, labels: Mapping[str, str],
             insecure: InsecureOptions, *, want: str = "aci",
             log: Callable[[str], None] = lambda s: None) -> Endpoints:
    """Walk up ``name`` until a page gives an ACI endpoint (``want="aci"``) or a
    key URL (``want="keys"``). Returns what was found (possibly nothing) with the
    failed levels in ``attempts``; raises FetchError on TLS/connection failures."""
    found = Endpoints()
    for level in levels(name):
        page_url, page = _fetch_page(session, level, insecure, found, log)
        if page is None:
            continue
        aci, keys = endpoints_from(parse_meta(page), name, labels, page_url)
        log(f"{page_url}: {len(aci)} image endpoint(s), {len(keys)} key URL(s) for {name}")
        found.aci.extend(aci)
        found.keys.extend(k for k in keys if k not in found.keys)
        if (want == "aci" and aci) or (want == "keys" and keys):
            return found
        tag = DISCOVERY if want == "aci" else PUBKEYS
        found.attempts.append((page_url, f"no {tag} meta tag for {name}"))
    return found


def _fetch_page(session: requests.Session, level: str, insecure: InsecureOptions,
                found: Endpoints, log: Callable[[str], None]) -> tuple[str, bytes | None]:
    """GET one level's discovery page: (url, body) or (url, None) to walk on."""
    from podrun.discovery import http

    schemes = ("https", "http") if insecure.http else ("https",)
    url = ""
    for i, scheme in enumerate(schemes):
        url = f"{scheme}://{level}?ac-discovery=1"
        last = i == len(schemes) - 1
        try:
            # With a plain-HTTP fallback to come, do not linger on HTTPS.
            resp = http.get(session, url, stream=True, retries=http.RETRIES if last else 0)
            return url, http.read_limited(resp, MAX_PAGE, url)
        except http.HTTPStatusError as err:
            log(f"discovery: {err}")
            found.attempts.append((url, f"HTTP {err.status}"))
        except FetchError as err:
            if last:
                raise
            log(f"discovery: {err}; trying plain HTTP")
    return url, None

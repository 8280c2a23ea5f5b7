"""Credentials for HTTP downloads: rkt's ``auth.d`` configuration (rktKind ``auth``, v1).

Files ``*.json`` directly inside ``<system-config>/auth.d`` and
``<local-config>/auth.d`` (not recursive; other files are ignored)::

    {"rktKind": "auth", "rktVersion": "v1",
     "domains": ["example.com", "example.com:8443"],
     "type": "basic", "credentials": {"user": "foo", "password": "bar"}}

    {"rktKind": "auth", "rktVersion": "v1", "domains": ["example.com"],
     "type": "oauth", "credentials": {"token": "sometoken"}}

``basic`` sends ``Authorization: Basic base64(user:password)``, ``oauth`` sends
``Authorization: Bearer token``. A domain is a URL's host, or host:port for a
non-default port (rkt matches the URL's host[:port] exactly; ``example.com:443``
is the same as ``example.com`` for https). Overriding is per domain: the local
dir wins over the system dir. Within one dir a domain named by two files is an
error, as in rkt. Files of other kinds (``dockerAuth`` is for docker registries)
are skipped here.

Credentials are only ever sent over HTTPS: a plain-HTTP request (allowed with
``--insecure-options=http``) goes without them, so a password never crosses the
network in clear text. They are attached preemptively (rkt did the same), to the
discovery pages, images, signatures and keys of the configured hosts.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from podrun.errors import FetchError

if TYPE_CHECKING:
    import requests

AUTH_DIR = "auth.d"
KIND = "auth"
VERSION = "v1"
TYPES = ("basic", "oauth")


@dataclass(frozen=True)
class Credential:
    """What to send to one domain, and the file it came from (for messages)."""

    type: str
    source: Path
    user: str = ""
    password: str = ""
    token: str = ""

    def header(self) -> str:
        if self.type == "basic":
            raw = f"{self.user}:{self.password}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        return f"Bearer {self.token}"


def load_auth(local_config: Path, system_config: Path) -> dict[str, Credential]:
    """domain → credential from both config dirs (local wins per domain)."""
    creds = _load_dir(Path(system_config) / AUTH_DIR)
    creds.update(_load_dir(Path(local_config) / AUTH_DIR))
    return creds


def _load_dir(directory: Path) -> dict[str, Credential]:
    out: dict[str, Credential] = {}
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix == ".json" and p.is_file())
    except FileNotFoundError:
        return out
    except OSError as err:
        raise FetchError(f"cannot read auth config dir {directory}: {err.strerror}") from None
    for path in files:
        for domain, cred in _load_file(path):
            if domain in out:
                raise FetchError(f"auth config {path}: domain {domain!r} is already "
                                 f"configured in {out[domain].source}")
            out[domain] = cred
    return out


def _load_file(path: Path) -> list[tuple[str, Credential]]:
    try:
        doc = json.loads(path.read_text())
    except OSError as err:
        raise FetchError(f"cannot read auth config {path}: {err.strerror}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise FetchError(f"auth config {path}: not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise FetchError(f"auth config {path}: expected a JSON object")
    kind, version = doc.get("rktKind"), doc.get("rktVersion")
    if not kind or not version:
        raise FetchError(f"auth config {path}: rktKind and rktVersion must be set")
    if kind != KIND:
        return []
    if version != VERSION:
        raise FetchError(f"auth config {path}: unsupported rktVersion {version!r} (want v1)")
    domains = doc.get("domains")
    if (not isinstance(domains, list) or not domains
            or not all(isinstance(d, str) and d for d in domains)):
        raise FetchError(f"auth config {path}: domains must be a non-empty list of hosts")
    cred = _credential(path, doc.get("type"), doc.get("credentials"))
    return [(normalize_domain(d), cred) for d in domains]


def _credential(path: Path, type_: Any, fields: Any) -> Credential:
    if type_ not in TYPES:
        raise FetchError(f"auth config {path}: type must be one of {', '.join(TYPES)}, "
                         f"not {type_!r}")
    if not isinstance(fields, dict):
        raise FetchError(f"auth config {path}: credentials must be an object")
    need = ("user", "password") if type_ == "basic" else ("token",)
    for key in need:
        if not isinstance(fields.get(key), str) or not fields[key]:
            raise FetchError(f"auth config {path}: credentials.{key} must be a non-empty string")
    return Credential(type_, path, **{k: fields[k] for k in need})


def normalize_domain(domain: str, scheme: str = "https") -> str:
    """``Host[:port]`` lower-cased, the scheme's default port dropped."""
    domain = domain.strip().lower()
    default = ":443" if scheme == "https" else ":80"
    return domain.removesuffix(default)


class HostAuth:
    """A requests auth callable choosing the credential by the request URL's host."""

    def __init__(self, creds: dict[str, Credential]) -> None:
        self.creds = creds

    def for_url(self, url: str) -> Credential | None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            return None
        host = parts.hostname
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return self.creds.get(normalize_domain(netloc))

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        # An Authorization the caller set explicitly is kept (requests itself drops
        # it when a redirect leaves the host or downgrades to plain HTTP).
        cred = self.for_url(r.url or "")
        if cred is not None and "Authorization" not in r.headers:
            r.headers["Authorization"] = cred.header()
        return r

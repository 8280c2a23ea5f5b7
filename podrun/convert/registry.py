"""A Docker registry (distribution spec v2) client: manifests and blobs, with auth.

* Transport: HTTPS by default (podrun's session rules, :mod:`podrun.discovery.http`).
  With ``--insecure-options=http`` the registry is first tried over HTTPS and, if
  that fails at the TLS or connection level, over plain HTTP (Docker's
  insecure-registry behaviour); ``tls`` skips certificate checks.
* Auth: the first ``GET /v2/`` tells the scheme. ``Bearer realm=…,service=…`` → a
  token is asked from the realm with ``service`` and
  ``scope=repository:<repo>:pull`` (with basic credentials if there are any) and
  sent as ``Authorization: Bearer``; ``Basic`` → the credentials are sent as is.
  Credentials come from :mod:`podrun.convert.auth`. A refused login is one
  FetchError saying so; a missing one says where credentials are looked for.
* Every manifest is checked against the digest it was asked by, and against the
  registry's ``Docker-Content-Digest`` header when there is one. Blobs are checked
  by the layer cache while they are written (:mod:`podrun.convert.cache`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from podrun.convert import auth as authmod
from podrun.convert.cache import sha256_bytes
from podrun.convert.reference import DockerRef
from podrun.errors import FetchError, ImageError

if TYPE_CHECKING:
    from pathlib import Path

    import requests

    from podrun.stage0.context import InsecureOptions

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_MANIFEST)
ACCEPT = ", ".join(MANIFEST_TYPES)
MAX_MANIFEST = 4 << 20
BLOB_CHUNK = 1 << 20

_PARAM_RE = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ("bearer", {"realm": …, "service": …})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in _PARAM_RE.findall(rest)}


class Registry:
    """One registry host and repository, with its negotiated scheme and auth."""

    def __init__(self, session: requests.Session, ref: DockerRef, insecure: InsecureOptions,
                 config_dirs: list[Path], log=lambda s: None) -> None:  # type: ignore[no-untyped-def]
        self.session = session
        self.ref = ref
        self.insecure = insecure
        self.config_dirs = config_dirs
        self.log = log
        self.base: str | None = None
        self.auth_header: str | None = None
        self.challenge: tuple[str, dict[str, str]] | None = None
        self._creds: authmod.Credentials | None | bool = False

    # connection and auth ----------------------------------------------------
    def _credentials(self) -> authmod.Credentials | None:
        if self._creds is False:
            self._creds = authmod.lookup(self.ref.registry, self.config_dirs)
        return self._creds  # type: ignore[return-value]

    def connect(self) -> None:
        """Ping ``/v2/``: choose https/http and learn the auth challenge."""
        if self.base is not None:
            return
        from podrun.discovery import http

        host = self.ref.api_host
        schemes = ["https", "http"] if self.insecure.http else ["https"]
        last: FetchError | None = None
        for scheme in schemes:
            url = f"{scheme}://{host}/v2/"
            try:
                resp = http.get(self.session, url, ok=(200, 401, 403, 404))
            except FetchError as err:
                last = err
                continue
            resp.close()
            self.base = f"{scheme}://{host}/v2/{self.ref.repository}/"
            if resp.status_code == 401 and resp.headers.get("WWW-Authenticate"):
                self.challenge = parse_challenge(resp.headers["WWW-Authenticate"])
            self.log(f"registry {host}: {scheme}, auth "
                     f"{self.challenge[0] if self.challenge else 'none'}")
            return
        hint = "" if self.insecure.http else " (a plain-HTTP registry needs " \
                                             "--insecure-options=http)"
        raise FetchError(f"{self.ref.original}: cannot reach registry {host}: {last}{hint}")

    def _authenticate(self, challenge: tuple[str, dict[str, str]]) -> None:
        scheme, params = challenge
        creds = self._credentials()
        if scheme == "basic":
            if creds is None:
                raise FetchError(self._need_creds())
            token = base64.b64encode(f"{creds.user}:{creds.password}".encode()).decode()
            self.auth_header = f"Basic {token}"
            return
        if scheme != "bearer" or not params.get("realm"):
            raise FetchError(f"{self.ref.original}: registry {self.ref.registry} asks for "
                             f"unsupported authentication {scheme!r}")
        self.auth_header = "Bearer " + self._token(params, creds)

    def _need_creds(self) -> str:
        return (f"{self.ref.original}: registry {self.ref.registry} requires authentication "
                f"and no credentials were found for it (auth.d dockerAuth, or "
                f"{authmod.docker_config_path()})")

    def _token(self, params: dict[str, str], creds: authmod.Credentials | None) -> str:
        from podrun.discovery import http

        realm = params["realm"]
        http.check_scheme(realm, self.insecure)
        query = {"scope": params.get("scope") or f"repository:{self.ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {}
        if creds is not None:
            basic = base64.b64encode(f"{creds.user}:{creds.password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        import urllib.parse

        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        resp = http.get(self.session, url, headers=headers, ok=(200, 401, 403))
        if resp.status_code != 200:
            who = f" as {creds.user}" if creds else " (no credentials found)"
            raise FetchError(f"{self.ref.original}: authentication failed{who}: token service "
                             f"{realm} answered HTTP {resp.status_code}")
        try:
            doc = resp.json()
            token = doc.get("token") or doc.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise FetchError(f"{self.ref.original}: token service {realm} gave no token")
        return str(token)

    def _get(self, url: str, headers: dict[str, str], *, stream: bool = False,
             what: str) -> requests.Response:
        from podrun.discovery import http

        self.connect()
        if self.auth_header is None and self.challenge is not None:
            self._authenticate(self.challenge)
        for attempt in range(2):
            h = dict(headers)
            if self.auth_header:
                h["Authorization"] = self.auth_header
            resp = http.get(self.session, url, headers=h, stream=stream,
                            ok=(200, 401, 403, 404))
            if resp.status_code == 200:
                return resp
            status, body = resp.status_code, _error_code(resp)
            chal = resp.headers.get("WWW-Authenticate")
            resp.close()
            if status == 401 and attempt == 0 and chal:
                # first contact, or a token that ran out during a long download
                self._authenticate(parse_challenge(chal))
                continue
            if status in (401, 403):
                creds = self._credentials()
                who = f" as {creds.user} ({creds.origin})" if creds else ""
                if not creds and status == 401:  # Docker Hub answers so for unknown repos too
                    raise FetchError(f"{self.ref.original}: access denied: the repository does "
                                     f"not exist or needs credentials (none found for "
                                     f"{self.ref.registry} in auth.d or "
                                     f"{authmod.docker_config_path()})")
                raise FetchError(f"{self.ref.original}: authentication failed{who}: "
                                 f"HTTP {status} for {url}")
            raise FetchError(f"{self.ref.original}: {what} not found: "
                             f"{body or 'HTTP 404'} ({url})")
        raise FetchError(f"{self.ref.original}: authentication failed for {url}")

    # manifests and blobs ----------------------------------------------------
    def manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest by tag or digest, verified."""
        self.connect()
        url = f"{self.base}manifests/{reference}"
        resp = self._get(url, {"Accept": ACCEPT}, what="manifest")
        data = resp.content
        if len(data) > MAX_MANIFEST:
            raise ImageError(f"{self.ref.original}: manifest larger than {MAX_MANIFEST} bytes")
        digest = sha256_bytes(data)
        if reference.startswith("sha256:") and digest != reference:
            raise ImageError(f"{self.ref.original}: manifest digest mismatch: content hashes "
                             f"to {digest}, expected {reference}")
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != digest:
            raise ImageError(f"{self.ref.original}: manifest digest mismatch: content hashes "
                             f"to {digest}, the registry says {header}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return data, media_type, digest

    def blob(self, digest: str) -> bytes:
        url = f"{self.base}blobs/{digest}"
        data = self._get(url, {}, what=f"blob {digest}").content
        got = sha256_bytes(data)
        if got != digest:
            raise ImageError(f"{self.ref.original}: blob digest mismatch: {digest} hashes to "
                             f"{got}")
        return data

    def blob_chunks(self, digest: str) -> Iterator[bytes]:
        """The bytes of a blob as they arrive (the caller verifies the digest)."""
        import requests

        url = f"{self.base}blobs/{digest}"
        resp = self._get(url, {}, stream=True, what=f"blob {digest}")
        with resp:
            try:
                yield from resp.iter_content(BLOB_CHUNK)
            except requests.exceptions.RequestException as err:
                raise FetchError(f"{self.ref.original}: download of {digest} failed: "
                                 f"{type(err).__name__}") from None


def _error_code(resp: requests.Response) -> str:
    try:
        errs = resp.json().get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                         for e in errs if isinstance(e, dict))
    except (ValueError, AttributeError):
        return ""

"""The HTTP side of fetching: one requests session with podrun's TLS, auth, retry and error rules.

- HTTPS with certificate verification by default. The CA bundle used to verify
  servers is, first found: ``PODRUN_CA_BUNDLE`` (environment), ``REQUESTS_CA_BUNDLE``
  (requests' own convention), the config setting ``<local-config>/ca-bundle.pem``,
  then ``<system-config>/ca-bundle.pem``, else requests' default (certifi). Like
  ``REQUESTS_CA_BUNDLE``, a bundle *replaces* the default one (concatenate the
  system bundle with yours to add a private CA). The insecure option ``tls`` turns
  verification off (:func:`session_for` warns); plain ``http://`` is refused unless
  the insecure option ``http`` is set — also as the target of a redirect.
- Credentials from ``auth.d`` (:mod:`podrun.discovery.auth`) are attached per
  request host, also after a redirect to another configured host.
- Bounded redirects, connect/read timeouts, retries with exponential backoff on
  connection errors and 5xx answers.
- Every failure becomes a one-line :class:`FetchError` naming the URL; an HTTP
  status outside the accepted ones is the subclass :class:`HTTPStatusError`
  (discovery walks up the name on those, but not on TLS or connection failures).
- :func:`download` copies a response body to a file, with a progress bar (tqdm)
  when stderr is a terminal and nothing otherwise.

``requests`` is imported here only, and this module only by code that fetches.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from podrun.errors import FetchError

if TYPE_CHECKING:
    import requests

    from podrun.stage0.context import Context, InsecureOptions

TIMEOUT = (10, 60)
RETRIES = 3
BACKOFF = 0.5
MAX_REDIRECTS = 10
CHUNK = 1 << 20
CA_BUNDLE_FILE = "ca-bundle.pem"

Auth = Callable[["requests.PreparedRequest"], "requests.PreparedRequest"]


class HTTPStatusError(FetchError):
    """The server answered with a status the caller does not accept."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(f"{url}: HTTP {status} {reason}".rstrip())
        self.url = url
        self.status = status


def check_scheme(url: str, insecure: InsecureOptions, *, what: str = "") -> None:
    if url.startswith("http://") and not insecure.http:
        raise FetchError(f"{url}: plain HTTP is not allowed{what} (use --insecure-options=http)")
    if not url.startswith(("https://", "http://")):
        raise FetchError(f"{url}: not an http(s) URL")


def ca_bundle(local_config: Path | None = None, system_config: Path | None = None) -> str | None:
    """The CA bundle to verify servers with (see the module docstring), or None."""
    for env in ("PODRUN_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
        if os.environ.get(env):
            return os.environ[env]
    for d in (local_config, system_config):
        if d is not None and (Path(d) / CA_BUNDLE_FILE).is_file():
            return str(Path(d) / CA_BUNDLE_FILE)
    return None


def new_session(insecure: InsecureOptions, *, auth: Auth | None = None,
                bundle: str | None = None) -> requests.Session:
    """A session with podrun's rules; ``bundle`` defaults to the environment's."""
    import requests

    class Session(requests.Session):
        def rebuild_auth(self, prepared: requests.PreparedRequest,
                         response: requests.Response) -> None:
            # requests drops Authorization when a redirect changes host; the
            # per-host auth then decides afresh for the new URL.
            super().rebuild_auth(prepared, response)
            if self.auth is not None and callable(self.auth):
                self.auth(prepared)

    s = Session()
    s.max_redirects = MAX_REDIRECTS
    s.headers["User-Agent"] = "podrun"
    s.auth = auth
    s.hooks["response"].append(_redirect_guard(insecure))
    if insecure.tls:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        s.verify = False
    else:
        bundle = bundle or ca_bundle()
        if bundle:
            s.verify = bundle
    return s


def session_for(ctx: Context) -> requests.Session:
    """The session of one podrun command: auth.d credentials and the configured CAs."""
    from podrun.discovery.auth import HostAuth, load_auth

    if ctx.insecure.tls:
        ctx.warn("TLS certificate verification is disabled (--insecure-options=tls)")
    creds = load_auth(ctx.local_config, ctx.system_config)
    return new_session(ctx.insecure, auth=HostAuth(creds) if creds else None,
                       bundle=ca_bundle(ctx.local_config, ctx.system_config))


def _redirect_guard(insecure: InsecureOptions) -> Callable[..., None]:
    def hook(resp: requests.Response, *args: object, **kwargs: object) -> None:
        if not resp.is_redirect or insecure.http:
            return
        target = resp.headers.get("Location", "")
        if target.lower().startswith("http://"):
            resp.close()
            raise FetchError(f"{resp.url}: redirect to plain HTTP {target} refused "
                             "(use --insecure-options=http)")
    return hook


def get(session: requests.Session, url: str, *, headers: Mapping[str, str] | None = None,
        stream: bool = False, ok: tuple[int, ...] = (200,),
        retries: int = RETRIES) -> requests.Response:
    """GET with retries on connection errors and 5xx; a status outside ``ok`` is an error."""
    import requests

    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(BACKOFF * 2 ** (attempt - 1))
        try:
            resp = session.get(url, headers=dict(headers or {}), stream=stream, timeout=TIMEOUT,
                               verify=session.verify)
        except requests.exceptions.SSLError as err:
            raise FetchError(f"{url}: TLS failure: {_short(err)}") from None
        except requests.exceptions.TooManyRedirects:
            raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects") from None
        except requests.exceptions.RequestException as err:
            last = _short(err)
            continue
        if resp.status_code >= 500 and attempt < retries:
            last = f"HTTP {resp.status_code}"
            resp.close()
            continue
        if resp.status_code not in ok:
            resp.close()
            raise HTTPStatusError(url, resp.status_code, resp.reason or "")
        return resp
    raise FetchError(f"{url}: {last} (after {retries + 1} attempts)")


def read_limited(resp: requests.Response, limit: int, url: str) -> bytes:
    """The body of a (streamed) response, refusing more than ``limit`` bytes."""
    data = bytearray()
    with resp:
        for chunk in resp.iter_content(64 << 10):
            data += chunk
            if len(data) > limit:
                raise FetchError(f"{url}: response larger than {limit} bytes")
    return bytes(data)


def download(resp: requests.Response, out: IO[bytes], label: str) -> int:
    """Copy a streamed response body to ``out``; returns the byte count.

    On a terminal (stderr is a TTY) a tqdm progress bar shows the transfer and is
    removed when it ends; elsewhere nothing is printed.
    """
    total = int(resp.headers.get("Content-Length") or 0) or None
    bar = _progress(total, label)
    n = 0
    try:
        with resp:
            for chunk in resp.iter_content(CHUNK):
                out.write(chunk)
                n += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return n


def _progress(total: int | None, label: str):  # type: ignore[no-untyped-def]
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return None
    from tqdm import tqdm

    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        width = 0
    name = label.rsplit("/", 1)[-1] or label
    # A terminal that reports no size (a bare pty) gets 80 columns, not an empty bar.
    sizing = {"dynamic_ncols": True} if width else {"ncols": 80, "nrows": 24}
    return tqdm(total=total, desc=f"Downloading {name[:40]}", unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, leave=False, **sizing)


def max_age(resp: requests.Response) -> int | None:
    """Cache-Control max-age in seconds, if the response gives one (no-store/no-cache → 0)."""
    cc = resp.headers.get("Cache-Control", "")
    if re.search(r"\b(no-cache|no-store)\b", cc):
        return 0
    m = re.search(r"\bmax-age=(\d+)", cc)
    return int(m.group(1)) if m else None


def _short(err: Exception) -> str:
    text = str(err)
    m = re.search(r"\[SSL: [A-Z_]+\][^(')]*", text)
    if m:
        return m.group(0).strip()
    m = re.search(r"Failed to resolve '([^']+)'(?: \(\[Errno -?\d+\] ([^)]+)\))?", text)
    if m:
        return f"cannot resolve host {m.group(1)}" + (f": {m.group(2)}" if m.group(2) else "")
    for pat in (r"Failed to establish a new connection: \[Errno -?\d+\] ([^'\")]+)",
                r"(Connection refused)", r"(timed out)"):
        m = re.search(pat, text)
        if m:
            return m.group(1)
    return text.splitlines()[0][:200] if text else type(err).__name__

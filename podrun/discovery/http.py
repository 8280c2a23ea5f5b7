"""The HTTP side of fetching: one requests session with podrun's TLS, retry and error rules.

- HTTPS with certificate verification by default; ``REQUESTS_CA_BUNDLE`` (requests'
  own convention) or the ``PODRUN_CA_BUNDLE`` setting names extra CAs; the insecure
  option ``tls`` turns verification off (the caller warns); plain ``http://`` is
  refused unless the insecure option ``http`` is set.
- Bounded redirects, connect/read timeouts, retries with exponential backoff on
  connection errors and 5xx answers.
- Every failure becomes a one-line :class:`FetchError` naming the URL.

``requests`` is imported here only, and this module only by code that fetches.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from podrun.errors import FetchError

if TYPE_CHECKING:
    import requests

    from podrun.stage0.context import InsecureOptions

TIMEOUT = (10, 60)
RETRIES = 3
BACKOFF = 0.5
MAX_REDIRECTS = 10


def check_scheme(url: str, insecure: InsecureOptions) -> None:
    if url.startswith("http://") and not insecure.http:
        raise FetchError(f"{url}: plain HTTP is not allowed (use --insecure-options=http)")
    if not url.startswith(("https://", "http://")):
        raise FetchError(f"{url}: not an http(s) URL")


def new_session(insecure: InsecureOptions) -> requests.Session:
    import requests

    s = requests.Session()
    s.max_redirects = MAX_REDIRECTS
    s.headers["User-Agent"] = "podrun"
    if insecure.tls:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        s.verify = False
    else:
        bundle = os.environ.get("PODRUN_CA_BUNDLE") or os.environ.get("REQUESTS_CA_BUNDLE")
        if bundle:
            s.verify = bundle
    return s


def get(session: requests.Session, url: str, *, headers: Mapping[str, str] | None = None,
        stream: bool = False, ok: tuple[int, ...] = (200,)) -> requests.Response:
    """GET with retries on connection errors and 5xx; a status outside ``ok`` is an error."""
    import requests

    last = ""
    for attempt in range(RETRIES + 1):
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
        if resp.status_code >= 500:
            last = f"HTTP {resp.status_code}"
            resp.close()
            continue
        if resp.status_code not in ok:
            resp.close()
            raise FetchError(f"{url}: HTTP {resp.status_code} {resp.reason}")
        return resp
    raise FetchError(f"{url}: {last} (after {RETRIES + 1} attempts)")


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
    for pat in (r"Failed to establish a new connection: \[Errno -?\d+\] ([^'\")]+)",
                r"(Connection refused)", r"(timed out)"):
        m = re.search(pat, text)
        if m:
            return m.group(1)
    return text.splitlines()[0][:200] if text else type(err).__name__

"""appc discovery end to end: real HTTPS servers on loopback, real gpg, the real CLI.

Image names cannot carry a port (':' is not allowed in an AC identifier), so the
servers listen on the standard ports 443 (HTTPS) and 80 (plain HTTP). To never
collide with anything else on 127.0.0.1, each test module picks a free address
of its own in 127.0.0.0/8 (all of it is loopback on Linux) and the test CA's
server certificate names that address: images are then called e.g.
``127.143.7.21/app``, a valid AC name that resolves without /etc/hosts or DNS.
Binding ports below 1024 needs root, hence the ``root`` marker.

podrun learns the test CA through ``REQUESTS_CA_BUNDLE`` (requests' convention)
or through the config setting ``<local-config>/ca-bundle.pem``.
"""

from __future__ import annotations

import base64
import fcntl
import http.server
import json
import os
import pty
import random
import socket
import ssl
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.gpgutil import GpgKey, sign
from tests.httpsserver import CA, Route
from tests.images import tiny_aci

pytestmark = pytest.mark.root


# --------------------------------------------------------------------------- servers


def _free_loopback(ports: tuple[int, ...]) -> str:
    rng = random.Random()
    for _ in range(50):
        ip = f"127.{rng.randint(100, 250)}.{rng.randint(1, 250)}.{rng.randint(1, 250)}"
        socks = []
        try:
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind((ip, port))
            return ip
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip(f"no free loopback address with ports {ports} free")


def make_ca_for(directory: Path, ips: list[str]) -> CA:
    """A test CA (openssl) and a server certificate for ``ips``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "ext.cnf"
    sans = ",".join(f"IP:{ip}" for ip in ips)
    ext.write_text(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2", "-subj", "/CN=disco CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={ips[0]}")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return CA(ca_cert, cert, key)


@dataclass
class Site:
    """An HTTP(S) server on ``ip:port`` serving ``routes`` (path → Route), logging requests.

    ``auth`` set: every request without exactly that Authorization header gets 401.
    ``redirects`` maps a path to a Location answered with 302.
    """

    ip: str
    port: int
    ca: CA | None = None
    routes: dict[str, Route] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    auth: str | None = None
    log: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def start(self) -> Site:
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                site.log.append((self.path, dict(self.headers)))
                if site.auth and self.headers.get("Authorization") != site.auth:
                    return self._send(401, {"WWW-Authenticate": 'Basic realm="t"'})
                if path in site.redirects:
                    return self._send(302, {"Location": site.redirects[path]})
                route = site.routes.get(path)
                if route is None:
                    return self._send(404, {})
                body = route.body() if callable(route.body) else route.body
                import hashlib
                tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                headers = {"ETag": tag} if route.etag else {}
                if route.cache_control:
                    headers["Cache-Control"] = route.cache_control
                if route.etag and self.headers.get("If-None-Match") == tag:
                    return self._send(304, headers)
                self._send(route.status, headers, body)

        self._httpd = http.server.ThreadingHTTPServer((self.ip, self.port), Handler)
        self._httpd.daemon_threads = True
        if self.ca:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.ca.server_cert, self.ca.server_key)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    @property
    def base(self) -> str:
        return f"{'https' if self.ca else 'http'}://{self.ip}"

    def hits(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.log if p.split("?", 1)[0] == path]

    def paths(self) -> list[str]:
        return [p for p, _ in self.log]

    def page(self, path: str, *tags: tuple[str, str, str], noise: bool = True) -> None:
        """A discovery page at ``path`` with ``(meta name, prefix, url)`` tags."""
        metas = "\n".join(f'<meta name="{n}" content="{p} {u}">' for n, p, u in tags)
        html = (f"<!DOCTYPE html><html><head><title>x</title>\n{metas}\n"
                '<meta name="description" content="not ac">'
                "</head><body><p>hello <b>world</p></body></html>") if noise else metas
        self.routes[path] = Route(html.encode(), etag=False)

    def publish(self, tmp: Path, key: GpgKey | None, name: str, version: str = "1.0.0",
                *, path: str | None = None, labels: dict[str, str] | None = None,
                cache_control: str | None = None, arch: str = "amd64",
                **extra: object) -> Path:
        """Build, sign and serve an ACI at ``path`` (default the standard template's)."""
        path = path or f"/aci/{name}-{version}-linux-amd64.aci"
        lab = [{"name": "version", "value": version}, {"name": "os", "value": "linux"},
               {"name": "arch", "value": arch}]
        lab += [{"name": k, "value": v} for k, v in (labels or {}).items()]
        aci = tiny_aci(tmp / f"{len(self.routes)}", name, version,
                       files={"v": version.encode()}, labels=lab, **extra)
        self.routes[path] = Route(aci.read_bytes(), cache_control=cache_control)
        if key is not None:
            self.routes[path + ".asc"] = Route(sign(key, aci).read_bytes())
        return aci


TEMPLATE = "/aci/{name}-{version}-{os}-{arch}.{ext}"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two loopback addresses: one for HTTPS (443 and 80), one for plain HTTP only (80)."""
    if os.geteuid() != 0:
        pytest.skip("binding ports 80/443 needs root")
    a = _free_loopback((443, 80))
    b = _free_loopback((80, 443))
    return a, b


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory, hosts: tuple[str, str]) -> CA:
    return make_ca_for(tmp_path_factory.mktemp("disco-ca"), list(hosts))


@pytest.fixture
def site(hosts: tuple[str, str], ca: CA) -> Iterator[Site]:
    s = Site(hosts[0], 443, ca).start()
    yield s
    s.stop()


@pytest.fixture
def plain(hosts: tuple[str, str]) -> Iterator[Site]:
    """Plain HTTP on port 80 of the second address (nothing on its 443)."""
    s = Site(hosts[1], 80).start()
    yield s
    s.stop()


@pytest.fixture
def env_ca(ca: CA, monkeypatch: pytest.MonkeyPatch) -> CA:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_cert))
    monkeypatch.delenv("PODRUN_CA_BUNDLE", raising=False)
    return ca


def images(podrun) -> list[dict]:  # type: ignore[no-untyped-def]
    return json.loads(podrun.run("image", "list", "--format=json", check=True).stdout)


def trust(podrun, key: GpgKey, prefix: str) -> None:  # type: ignore[no-untyped-def]
    podrun.run("trust", "--prefix", prefix, "--skip-fingerprint-review", key.pubkey_path,
               check=True)


def failed(res, *needles: str) -> None:  # type: ignore[no-untyped-def]
    """exit 254 with one line on stderr containing every needle."""
    assert res.returncode == 254, res
    assert res.stderr.count("\n") == 1, res.stderr
    for n in needles:
        assert n in res.stderr, (n, res.stderr)


# --------------------------------------------------------------------------- fetch by name


def test_fetch_by_name_walks_up(podrun, tmp_path: Path, site: Site, env_ca: CA,  # type: ignore[no-untyped-def]
                                gpg_keys) -> None:
    ip = site.ip
    name = f"{ip}/a/b/c"
    # /a/b/c: no page (404); /a/b: a page without ac tags; /a: the tags.
    site.routes["/a/b"] = Route(b"<html><head><title>nothing here</title></head></html>")
    site.page("/a", ("ac-discovery", f"{ip}/a", site.base + TEMPLATE),
              ("ac-discovery-pubkeys", f"{ip}/a", site.base + "/keys.asc"))
    site.publish(tmp_path, gpg_keys["alice"], name)
    trust(podrun, gpg_keys["alice"], ip)
    res = podrun.run("fetch", f"{name}:1.0.0", check=True)
    image_id = res.stdout.strip()
    assert image_id.startswith("sha512-") and res.stderr == ""  # no TTY: no progress bar
    pages = [p for p in site.paths() if "ac-discovery=1" in p]
    assert pages == ["/a/b/c?ac-discovery=1", "/a/b?ac-discovery=1", "/a?ac-discovery=1"]
    rec = images(podrun)[0]
    aci_url = f"https://{ip}/aci/{name}-1.0.0-linux-amd64.aci"
    assert rec["id"] == image_id and rec["name"] == name and rec["source_url"] == aci_url
    # In the store now: fetched by name again without asking the server.
    n = len(site.log)
    assert podrun.run("fetch", f"{name}:1.0.0", check=True).stdout.strip() == image_id
    assert len(site.log) == n


def test_longest_prefix_wins_and_labels_fill_templates(podrun, tmp_path: Path, site: Site,  # type: ignore[no-untyped-def]
                                                      env_ca: CA, gpg_keys) -> None:
    ip = site.ip
    site.page("/", ("ac-discovery", ip, site.base + "/generic/{name}.{ext}"),
              ("ac-discovery", f"{ip}/app", site.base + "/{channel}/{name}-{version}.{ext}"),
              ("ac-discovery", f"{ip}/other", site.base + "/other/{name}.{ext}"),
              ("ac-discovery", f"{ip}/app-x", site.base + "/x/{name}.{ext}"))
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/app", "2.0.0",
                 path=f"/beta/{ip}/app-2.0.0.aci", labels={"channel": "beta"})
    trust(podrun, gpg_keys["alice"], ip)
    image_id = podrun.run("fetch", f"{ip}/app:2.0.0,channel=beta", check=True).stdout.strip()
    assert images(podrun)[0]["source_url"] == f"https://{ip}/beta/{ip}/app-2.0.0.aci"
    assert image_id and not site.hits(f"/generic/{ip}/app.aci")
    # Without the channel label the specific template cannot be filled: the generic
    # one (shorter prefix) is used, and it 404s → one line naming that URL.
    res = podrun.run("fetch", "--pull-policy=update", f"{ip}/app:2.0.0")
    failed(res, f"https://{ip}/generic/{ip}/app.aci", "404")
    assert len(images(podrun)) == 1


def test_discovery_follows_https_redirects(podrun, tmp_path: Path, site: Site,  # type: ignore[no-untyped-def]
                                           env_ca: CA, gpg_keys) -> None:
    ip = site.ip
    site.redirects["/moved"] = f"{site.base}/new-home?ac-discovery=1"
    site.page("/new-home", ("ac-discovery", f"{ip}/moved", site.base + TEMPLATE))
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/moved")
    trust(podrun, gpg_keys["alice"], ip)
    podrun.run("fetch", f"{ip}/moved:1.0.0", check=True)
    assert site.hits("/new-home") and not site.hits("/")  # no walk up was needed
    # A redirect loop is bounded and named.
    site.redirects["/loop"] = f"{site.base}/loop?ac-discovery=1"
    failed(podrun.run("fetch", f"{ip}/loop"), "redirects")


def test_fetch_dependency_by_name(podrun, tmp_path: Path, site: Site, env_ca: CA,  # type: ignore[no-untyped-def]
                                  gpg_keys) -> None:
    ip = site.ip
    site.page("/", ("ac-discovery", ip, site.base + TEMPLATE))
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/base", "3.0.0")
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/top",
                 dependencies=[{"imageName": f"{ip}/base",
                                "labels": [{"name": "version", "value": "3.0.0"}]}])
    trust(podrun, gpg_keys["alice"], ip)
    podrun.run("fetch", f"{ip}/top:1.0.0", check=True)
    names = sorted(i["name"] for i in images(podrun))
    assert names == [f"{ip}/base", f"{ip}/top"]
    assert site.hits("/aci/" + f"{ip}/base-3.0.0-linux-amd64.aci")
    out = tmp_path / "rendered"
    top = next(i["id"] for i in images(podrun) if i["name"].endswith("/top"))
    podrun.run("image", "render", top, out, check=True)
    assert (out / "rootfs/v").read_text() == "1.0.0"


def test_update_rediscovers_with_etag_and_max_age(podrun, tmp_path: Path, site: Site,  # type: ignore[no-untyped-def]
                                                 env_ca: CA, gpg_keys) -> None:
    ip = site.ip
    site.page("/", ("ac-discovery", ip, site.base + "/{name}-{version}.{ext}"))
    path = f"/{ip}/web-latest.aci"
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/web", "1.0.0", path=path,
                 cache_control="max-age=0")
    trust(podrun, gpg_keys["alice"], ip)
    first = podrun.run("fetch", f"{ip}/web", check=True).stdout.strip()
    etag = images(podrun)[0]["etag"]
    assert etag and len(site.hits(path)) == 1
    # update: discovery again, then a conditional GET answered 304.
    same = podrun.run("fetch", "--pull-policy=update", f"{ip}/web", check=True).stdout.strip()
    assert same == first
    assert len(site.hits("/")) == 2 and site.hits(path)[-1].get("If-None-Match") == etag
    # A new image behind the same URL, cacheable for an hour.
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/web", "1.1.0", path=path,
                 cache_control="max-age=3600")
    new = podrun.run("fetch", "--pull-policy=update", f"{ip}/web", check=True).stdout.strip()
    assert new != first and len(images(podrun)) == 2
    n = len(site.hits(path))
    assert podrun.run("fetch", "--pull-policy=update", f"{ip}/web",
                      check=True).stdout.strip() == new
    assert len(site.hits(path)) == n  # fresh: no request for the image at all
    # never: store only, no request at all.
    m = len(site.log)
    podrun.run("fetch", "--pull-policy=never", f"{ip}/web", check=True)
    assert len(site.log) == m


# --------------------------------------------------------------------------- bad input


def test_bad_input_one_line_nothing_stored(podrun, tmp_path: Path, site: Site,  # type: ignore[no-untyped-def]
                                           env_ca: CA, gpg_keys) -> None:
    ip = site.ip
    trust(podrun, gpg_keys["alice"], ip)
    # No meta tags anywhere up the path.
    res = podrun.run("fetch", f"{ip}/none/deeper")
    failed(res, f"{ip}/none/deeper", "ac-discovery", f"https://{ip}?ac-discovery=1")
    site.page("/", ("ac-discovery", ip, site.base + TEMPLATE))
    # The template yields a 404.
    failed(podrun.run("fetch", f"{ip}/ghost"),
           f"https://{ip}/aci/{ip}/ghost-latest-linux-amd64.aci", "404")
    # Signature missing.
    site.publish(tmp_path, None, f"{ip}/nosig")
    failed(podrun.run("fetch", f"{ip}/nosig:1.0.0"), "signature",
           f"https://{ip}/aci/{ip}/nosig-1.0.0-linux-amd64.aci")
    # Bad signature: a good signature over other bytes.
    aci = site.publish(tmp_path, gpg_keys["alice"], f"{ip}/bad")
    other = tiny_aci(tmp_path / "o", f"{ip}/other", files={"o": b"o"})
    site.routes[f"/aci/{ip}/bad-1.0.0-linux-amd64.aci.asc"] = Route(
        sign(gpg_keys["alice"], other).read_bytes())
    failed(podrun.run("fetch", f"{ip}/bad:1.0.0"), "bad signature")
    assert aci.exists()
    # Untrusted key.
    site.publish(tmp_path, gpg_keys["bob"], f"{ip}/bobs")
    failed(podrun.run("fetch", f"{ip}/bobs:1.0.0"), "untrusted")
    # The manifest's name differs from the request.
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/impostor",
                 path=f"/aci/{ip}/wanted-1.0.0-linux-amd64.aci")
    failed(podrun.run("fetch", f"{ip}/wanted:1.0.0"), f"named {ip}/impostor")
    # A label differs: asked 2.0.0, the file says 1.0.0.
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/ver",
                 path=f"/aci/{ip}/ver-2.0.0-linux-amd64.aci")
    failed(podrun.run("fetch", f"{ip}/ver:2.0.0"), "version=1.0.0", "version=2.0.0")
    # os/arch default to the host's: an image for another arch is refused.
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/arm", arch="aarch64",
                 path=f"/aci/{ip}/arm-1.0.0-linux-amd64.aci")
    failed(podrun.run("fetch", f"{ip}/arm:1.0.0"), "arch=aarch64", "arch=amd64")
    assert images(podrun) == []


def test_plain_http_and_tls_failures(podrun, tmp_path: Path, site: Site, plain: Site,  # type: ignore[no-untyped-def]
                                     ca: CA, monkeypatch, gpg_keys) -> None:
    ip = site.ip
    site.page("/", ("ac-discovery", ip, f"http://{plain.ip}" + TEMPLATE))
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/app")
    # No CA: TLS failure on the discovery page, one line naming it, nothing stored.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("PODRUN_CA_BUNDLE", raising=False)
    failed(podrun.run("fetch", f"{ip}/app:1.0.0"), f"https://{ip}/app?ac-discovery=1", "TLS")
    # The CA through the config setting instead of the environment.
    (podrun.local_config / "ca-bundle.pem").write_bytes(ca.ca_cert.read_bytes())
    # A template pointing at plain HTTP on a secure run.
    failed(podrun.run("fetch", f"{ip}/app:1.0.0"), f"http://{plain.ip}/aci/",
           "insecure-options=http")
    # A redirect to plain HTTP is refused as well.
    site.routes.pop("/")
    site.redirects["/app"] = f"http://{plain.ip}/app?ac-discovery=1"
    failed(podrun.run("fetch", f"{ip}/app:1.0.0"), "redirect to plain HTTP")
    assert not plain.log
    assert images(podrun) == []


def test_plain_http_discovery_when_allowed(podrun, tmp_path: Path, plain: Site,  # type: ignore[no-untyped-def]
                                           gpg_keys) -> None:
    ip = plain.ip
    plain.page("/", ("ac-discovery", ip, plain.base + TEMPLATE))
    plain.publish(tmp_path, gpg_keys["alice"], f"{ip}/app")
    trust(podrun, gpg_keys["alice"], ip)
    failed(podrun.run("fetch", f"{ip}/app:1.0.0"), f"https://{ip}/app?ac-discovery=1")
    podrun.run("--insecure-options=http", "fetch", f"{ip}/app:1.0.0", check=True)
    assert images(podrun)[0]["source_url"] == f"http://{ip}/aci/{ip}/app-1.0.0-linux-amd64.aci"


# --------------------------------------------------------------------------- auth.d


def _auth_file(d: Path, name: str, domains: list[str], type_: str, **creds: str) -> None:
    (d / "auth.d").mkdir(parents=True, exist_ok=True)
    (d / "auth.d" / name).write_text(json.dumps({
        "rktKind": "auth", "rktVersion": "v1", "domains": domains, "type": type_,
        "credentials": creds}))


def test_auth_basic_and_oauth(podrun, tmp_path: Path, site: Site, env_ca: CA,  # type: ignore[no-untyped-def]
                              gpg_keys) -> None:
    ip = site.ip
    site.page("/", ("ac-discovery", ip, site.base + TEMPLATE))
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/app")
    trust(podrun, gpg_keys["alice"], ip)
    site.auth = "Basic " + base64.b64encode(b"foo:s3cret").decode()
    failed(podrun.run("fetch", f"{ip}/app:1.0.0"), "401")
    assert images(podrun) == []
    # The system dir has wrong credentials; the local dir overrides them per domain.
    _auth_file(podrun.system_config, "sys.json", [ip, "other.example"], "basic",
               user="foo", password="wrong")
    failed(podrun.run("fetch", f"{ip}/app:1.0.0"), "401")
    _auth_file(podrun.local_config, "mine.json", [ip], "basic", user="foo", password="s3cret")
    (podrun.local_config / "auth.d" / "README").write_text("not json, ignored\n")
    podrun.run("fetch", f"{ip}/app:1.0.0", check=True)
    assert all(h.get("Authorization") == site.auth for _, h in site.log[-3:])
    # oauth: a bearer token.
    site.auth = "Bearer tok-123"
    _auth_file(podrun.local_config, "mine.json", [f"{ip}:443"], "oauth", token="tok-123")
    podrun.run("fetch", "--pull-policy=update", f"{ip}/app:1.0.0", check=True)
    # A domain named twice in one dir is an error naming both files.
    _auth_file(podrun.local_config, "twice.json", [ip], "oauth", token="x")
    failed(podrun.run("fetch", "--pull-policy=update", f"{ip}/app:1.0.0"), "twice.json",
           "mine.json")


def test_auth_follows_redirect_per_host(podrun, tmp_path: Path, site: Site, env_ca: CA,  # type: ignore[no-untyped-def]
                                        hosts: tuple[str, str], ca: CA, gpg_keys) -> None:
    """A redirect to another host gets that host's credentials, never the first one's."""
    ip, other_ip = hosts
    other = Site(other_ip, 443, ca).start()
    try:
        site.auth = "Basic " + base64.b64encode(b"a:pw").decode()
        other.auth = "Bearer token-b"
        site.redirects["/app"] = f"https://{other_ip}/pages/app?ac-discovery=1"
        other.page("/pages/app", ("ac-discovery", f"{ip}/app", other.base + "/{name}.{ext}"))
        other.publish(tmp_path, gpg_keys["alice"], f"{ip}/app", path=f"/{ip}/app.aci")
        _auth_file(podrun.local_config, "a.json", [ip], "basic", user="a", password="pw")
        _auth_file(podrun.local_config, "b.json", [other_ip], "oauth", token="token-b")
        trust(podrun, gpg_keys["alice"], ip)
        podrun.run("fetch", f"{ip}/app:1.0.0", check=True)
        assert [h.get("Authorization") for _, h in site.log] == [site.auth]
        assert {h.get("Authorization") for _, h in other.log} == {"Bearer token-b"}
        assert len(other.log) == 3  # page, image, signature
    finally:
        other.stop()


# --------------------------------------------------------------------------- keys


def test_trust_prefix_discovers_keys(podrun, site: Site, env_ca: CA, gpg_keys) -> None:  # type: ignore[no-untyped-def]
    ip = site.ip
    alice = gpg_keys["alice"]
    failed(podrun.run("trust", "--prefix", ip, "--skip-fingerprint-review"),
           "ac-discovery-pubkeys", f"https://{ip}?ac-discovery=1")
    site.page("/", ("ac-discovery-pubkeys", ip, site.base + "/pubkeys.asc"))
    site.routes["/pubkeys.asc"] = Route(alice.public_armored)
    res = podrun.run("trust", "--prefix", ip, "--skip-fingerprint-review", check=True)
    stored = podrun.local_config / "trustedkeys/prefix.d" / ip / alice.fingerprint
    assert res.stdout.strip() == str(stored) and stored.is_file()
    assert alice.fingerprint[:4].upper() in res.stderr  # the fingerprint was shown
    # Non-TTY stdin without --skip-fingerprint-review: shown, not asked, trusted.
    stored.unlink()
    podrun.run("trust", "--prefix", ip, check=True)
    assert stored.is_file()
    listed = json.loads(podrun.run("trust", "list", "--format=json", check=True).stdout)
    assert [(k["prefix"], k["fingerprint"]) for k in listed] == [(ip, alice.fingerprint)]
    # A key URL over plain HTTP is refused unless --insecure-options=pubkey.
    stored.unlink()
    site.page("/", ("ac-discovery-pubkeys", ip, f"http://{ip}/pubkeys.asc"))
    failed(podrun.run("trust", "--prefix", ip), f"http://{ip}/pubkeys.asc", "pubkey")
    assert not stored.exists()


def test_trust_keys_from_https(podrun, tmp_path: Path, site: Site, env_ca: CA,  # type: ignore[no-untyped-def]
                               gpg_keys) -> None:
    ip = site.ip
    carol = gpg_keys["carol"]
    site.page("/", ("ac-discovery", ip, site.base + TEMPLATE),
              ("ac-discovery-pubkeys", ip, site.base + "/pubkeys.asc"))
    site.routes["/pubkeys.asc"] = Route(carol.public_armored)
    site.publish(tmp_path, carol, f"{ip}/app")
    failed(podrun.run("fetch", f"{ip}/app:1.0.0"), "no trusted keys")
    res = podrun.run("--trust-keys-from-https", "fetch", f"{ip}/app:1.0.0", check=True)
    assert carol.fingerprint in res.stderr and len(images(podrun)) == 1
    assert (podrun.local_config / "trustedkeys/prefix.d" / ip / "app" / carol.fingerprint).is_file()
    # A key withdrawn with 'trust rm' (a system key, masked locally) is not re-trusted.
    podrun.run("image", "rm", images(podrun)[0]["id"], check=True)
    sys_key = podrun.system_config / "trustedkeys/prefix.d" / ip / carol.fingerprint
    sys_key.parent.mkdir(parents=True)
    sys_key.write_bytes(carol.public_armored)
    (podrun.local_config / "trustedkeys/prefix.d" / ip / "app" / carol.fingerprint).unlink()
    podrun.run("trust", "rm", carol.fingerprint, check=True)
    res = podrun.run("--trust-keys-from-https", "fetch", f"{ip}/app:1.0.0")
    assert res.returncode == 254 and "trust rm" in res.stderr and images(podrun) == []
    # Never with TLS verification off.
    for p in (podrun.local_config / "trustedkeys").rglob("*"):
        if p.is_file():
            p.unlink()
    sys_key.unlink()
    res = podrun.run("--insecure-options=tls", "--trust-keys-from-https", "fetch",
                     f"{ip}/app:1.0.0")
    assert res.returncode == 254 and "ignored" in res.stderr and images(podrun) == []


# --------------------------------------------------------------------------- progress


@pytest.mark.parametrize("with_size", [True, False], ids=["sized-tty", "bare-pty"])
def test_progress_bar_on_a_tty_only(podrun, tmp_path: Path, site: Site, env_ca: CA,  # type: ignore[no-untyped-def]
                                    gpg_keys, with_size: bool) -> None:
    """A progress bar on a terminal (also one reporting no size); none elsewhere (the
    other tests check that stderr stays empty without a TTY)."""
    ip = site.ip
    site.page("/", ("ac-discovery", ip, site.base + TEMPLATE))
    site.publish(tmp_path, gpg_keys["alice"], f"{ip}/big")
    trust(podrun, gpg_keys["alice"], ip)
    master, slave = pty.openpty()
    if with_size:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.run([sys.executable, "-m", "podrun", "fetch", f"{ip}/big:1.0.0"],
                              env=podrun.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=slave, timeout=120)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0 and proc.stdout.startswith(b"sha512-")
    assert b"Downloading big-1.0.0-linux-amd64.aci" in out and b"\r" in out, out


# --------------------------------------------------------------------------- actool agreement


def _actool(name: str) -> dict:
    proc = subprocess.run(["actool", "discover", "--insecure", "--json", name],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Failed walk levels are reported on stdout before the JSON document.
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def test_actool_discover_agrees(plain: Site) -> None:
    """Debian's ``actool discover --insecure`` and podrun resolve the same URLs for
    pages served over plain HTTP (port 80; nothing listens on 443 there)."""
    from podrun.discovery.appc import discover, discovery_labels
    from podrun.discovery.http import new_session
    from podrun.stage0.context import InsecureOptions
    from podrun.store.store import parse_image_string

    ip = plain.ip
    plain.routes["/"] = Route(
        (f'<html><HEAD><META content="{ip} http://{ip}/aci/{{name}}-{{version}}-{{os}}-'
         f'{{arch}}.{{ext}}" NAME="ac-discovery"/>\n'
         f"<meta name='ac-discovery-pubkeys' content='{ip} http://{ip}/keys.asc'>"
         "<!-- <meta name=\"ac-discovery\" content=\"x y\"> -->"
         "</HEAD><body>root</body></html>").encode(), etag=False)
    plain.page("/app", ("ac-discovery", f"{ip}/app", f"http://{ip}/{{channel}}/{{name}}.{{ext}}"),
               ("ac-discovery", f"{ip}/app", f"http://{ip}/app/{{name}}-{{version}}.{{ext}}"),
               ("ac-discovery", ip, f"http://{ip}/root/{{name}}.{{ext}}"),
               ("ac-discovery", f"{ip}/zzz", f"http://{ip}/never/{{name}}.{{ext}}"))
    plain.routes["/app/sub"] = Route(b"<html><p>no tags at this level</p></html>", etag=False)
    insecure = InsecureOptions(http=True)
    session = new_session(insecure)
    for ref in (f"{ip}/app", f"{ip}/app/sub/deep", f"{ip}/other:2.0", f"{ip}/app:2.0,channel=beta",
                f"{ip}/app,os=freebsd,arch=arm64"):
        theirs = _actool(ref)
        name, labels = parse_image_string(ref)
        ours = discover(session, name, discovery_labels(labels), insecure, want="aci")
        keys = discover(session, name, {}, insecure, want="keys").keys
        got = {(e.aci, e.asc) for e in ours.aci}
        assert got == {(e["ACI"], e["ASC"]) for e in theirs["ACIEndpoints"]}, ref
        assert got, ref
        assert keys == (theirs.get("PublicKeys") or []), ref
        # podrun prefers the longest matching prefix.
        assert ours.aci[0].prefix == max((e.prefix for e in ours.aci), key=len)

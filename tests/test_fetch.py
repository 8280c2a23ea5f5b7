"""``podrun fetch`` from files and from a real HTTPS server on 127.0.0.1, with real gpg.

The server is Python's http.server wrapped in TLS with a test CA made by openssl;
podrun is told about the CA through REQUESTS_CA_BUNDLE (requests' convention).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gpgutil import GpgKey, sign
from tests.httpsserver import CA, Route, Server, make_ca
from tests.images import tiny_aci


def trust(podrun, key: GpgKey, prefix: str = "example.com") -> None:  # type: ignore[no-untyped-def]
    podrun.run("trust", "--prefix", prefix, "--skip-fingerprint-review", key.pubkey_path,
               check=True)


def images(podrun) -> list[dict]:  # type: ignore[no-untyped-def]
    return json.loads(podrun.run("image", "list", "--format=json", check=True).stdout)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def server(ca: CA) -> Iterator[Server]:
    srv = Server(ca=ca).start()
    yield srv
    srv.stop()


def test_fetch_file_signed(podrun, tmp_path: Path, gpg_keys) -> None:  # type: ignore[no-untyped-def]
    aci = tiny_aci(tmp_path, "example.com/app", files={"x": b"x"})
    r = podrun.run("fetch", aci)
    assert r.returncode == 254 and "no signature" in r.stderr and images(podrun) == []
    sign(gpg_keys["alice"], aci)
    r = podrun.run("fetch", aci)
    assert r.returncode == 254 and "trust" in r.stderr.lower() and images(podrun) == []
    trust(podrun, gpg_keys["alice"])
    image_id = podrun.run("fetch", aci, check=True).stdout.strip()
    assert image_id.startswith("sha512-")
    assert podrun.run("fetch", f"file://{aci}", check=True).stdout.strip() == image_id
    assert [i["id"] for i in images(podrun)] == [image_id]


def test_fetch_file_bad_or_untrusted_signature(podrun, tmp_path: Path, gpg_keys) -> None:  # type: ignore[no-untyped-def]
    aci = tiny_aci(tmp_path, "example.com/app", files={"x": b"x"})
    trust(podrun, gpg_keys["alice"])
    sign(gpg_keys["bob"], aci)
    r = podrun.run("fetch", aci)
    assert r.returncode == 254 and r.stderr.count("\n") == 1 and images(podrun) == []
    # A good signature over other bytes is a bad signature for this file.
    other = tiny_aci(tmp_path, "example.com/other", files={"y": b"y"})
    sig = sign(gpg_keys["alice"], other)
    r = podrun.run("fetch", "--signature", sig, aci)
    assert r.returncode == 254 and "bad signature" in r.stderr.lower() and images(podrun) == []
    # Trusted for another prefix only: refused.
    aci2 = tiny_aci(tmp_path, "example.org/app", files={"x": b"x"})
    sign(gpg_keys["alice"], aci2)
    r = podrun.run("fetch", aci2)
    assert r.returncode == 254 and images(podrun) == []
    # --signature names the file explicitly.
    sig = sign(gpg_keys["alice"], aci, output=tmp_path / "elsewhere.asc")
    podrun.run("fetch", "--signature", sig, aci, check=True)
    assert len(images(podrun)) == 1


def test_fetch_insecure_image_warns(podrun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    aci = tiny_aci(tmp_path, "example.com/app", files={"x": b"x"})
    r = podrun.run("--insecure-options=image", "fetch", aci, check=True)
    assert "warning" in r.stderr and r.stdout.startswith("sha512-")


def test_fetch_refuses_invalid_aci(podrun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.aci"
    bad.write_bytes(b"this is not a tar at all")
    r = podrun.run("--insecure-options=image", "fetch", bad)
    assert r.returncode == 254 and str(bad) in r.stderr or "bad.aci" in r.stderr
    assert images(podrun) == []


def test_fetch_https_signed_with_etag_and_max_age(podrun, tmp_path: Path, server: Server,  # type: ignore[no-untyped-def]
                                                  ca: CA, gpg_keys, monkeypatch) -> None:
    aci = tiny_aci(tmp_path, "example.com/web", files={"v": b"1"})
    sig = sign(gpg_keys["alice"], aci)
    server.routes["/web.aci"] = Route(aci.read_bytes(), cache_control="max-age=0")
    server.routes["/web.aci.asc"] = Route(sig.read_bytes())
    trust(podrun, gpg_keys["alice"])
    url = f"{server.base}/web.aci"

    # Without the CA the TLS handshake fails: one line naming the URL.
    r = podrun.run("fetch", url)
    assert r.returncode == 254 and url in r.stderr and r.stderr.count("\n") == 1
    assert images(podrun) == []

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_cert))
    podrun_env = podrun  # the fixture reads os.environ for each run
    image_id = podrun_env.run("fetch", url, check=True).stdout.strip()
    assert len(server.hits("/web.aci")) == 1
    rec = images(podrun)[0]
    assert rec["id"] == image_id and rec["source_url"] == url and rec["etag"]

    # pull-policy new: the stored copy, no request.
    assert podrun.run("fetch", url, check=True).stdout.strip() == image_id
    assert len(server.hits("/web.aci")) == 1
    # update: max-age ran out → conditional GET → 304 → the stored copy.
    assert podrun.run("fetch", "--pull-policy=update", url, check=True).stdout.strip() == image_id
    hits = server.hits("/web.aci")
    assert len(hits) == 2 and hits[1].get("If-None-Match") == rec["etag"]
    # The server's image changes: update downloads the new one.
    aci2 = tiny_aci(tmp_path / "v2", "example.com/web", "2.0.0", files={"v": b"2"})
    server.routes["/web.aci"] = Route(aci2.read_bytes(), cache_control="max-age=3600")
    server.routes["/web.aci.asc"] = Route(sign(gpg_keys["alice"], aci2).read_bytes())
    new_id = podrun.run("fetch", "--pull-policy=update", url, check=True).stdout.strip()
    assert new_id != image_id
    # Now within max-age: update does not even ask.
    n = len(server.hits("/web.aci"))
    assert podrun.run("fetch", "--pull-policy=update", url, check=True).stdout.strip() == new_id
    assert len(server.hits("/web.aci")) == n
    # never: store only.
    assert podrun.run("fetch", "--pull-policy=never", url, check=True).stdout.strip() == new_id
    r = podrun.run("fetch", "--pull-policy=never", f"{server.base}/other.aci")
    assert r.returncode == 254 and "never" in r.stderr


def test_fetch_https_errors(podrun, tmp_path: Path, server: Server, ca: CA,  # type: ignore[no-untyped-def]
                            gpg_keys, monkeypatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_cert))
    aci = tiny_aci(tmp_path, "example.com/web", files={"v": b"1"})
    server.routes["/nosig.aci"] = Route(aci.read_bytes())
    trust(podrun, gpg_keys["alice"])
    r = podrun.run("fetch", f"{server.base}/missing.aci")
    assert r.returncode == 254 and "404" in r.stderr and "/missing.aci" in r.stderr
    r = podrun.run("fetch", f"{server.base}/nosig.aci")
    assert r.returncode == 254 and "signature" in r.stderr and images(podrun) == []
    r = podrun.run("fetch", f"http://127.0.0.1:{server.port}/nosig.aci")
    assert r.returncode == 254 and "insecure-options=http" in r.stderr
    # --insecure-options=tls skips verification (with a warning) even without the CA.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    r = podrun.run("--insecure-options=tls,image", "fetch", f"{server.base}/nosig.aci",
                   check=True)
    assert "warning" in r.stderr and len(images(podrun)) == 1


def test_fetch_plain_http_when_allowed(podrun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    aci = tiny_aci(tmp_path, "example.com/plain", files={"v": b"1"})
    srv = Server(routes={"/p.aci": Route(aci.read_bytes())}).start()
    try:
        r = podrun.run("--insecure-options=http,image", "fetch", f"{srv.base}/p.aci", check=True)
        assert r.stdout.startswith("sha512-")
    finally:
        srv.stop()


def test_fetch_dependencies(podrun, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = tiny_aci(tmp_path, "example.com/base", files={"b": b"b"})
    top = tiny_aci(tmp_path, "example.com/top", files={"t": b"t"},
                   dependencies=[{"imageName": "example.com/base"}])
    r = podrun.run("--insecure-options=image", "fetch", top)
    assert r.returncode == 254 and "example.com/base" in r.stderr and images(podrun) == []
    podrun.run("--insecure-options=image", "fetch", base, check=True)
    top_id = podrun.run("--insecure-options=image", "fetch", top, check=True).stdout.strip()
    out = tmp_path / "rendered"
    podrun.run("image", "render", top_id, out, check=True)
    assert (out / "rootfs/b").is_file() and (out / "rootfs/t").is_file()

"""Registry auth and transport against the real docker-registry: htpasswd basic auth,
the Bearer token flow with the test as token issuer, credentials from a docker
config.json and from podrun's auth.d, and HTTPS with a test CA."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PodrunEnv
from tests.httpsserver import make_ca
from tests.registry import Registry, TokenIssuer, busybox_fill, push, umoci_image

pytestmark = pytest.mark.root

INSECURE = "--insecure-options=image,http"
USERS = {"alice": "s3cret"}


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("oci")
    umoci_image(root / "layout", "base", root, busybox_fill)
    return root / "layout"


@pytest.fixture(scope="module")
def basic_registry(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("basic"), users=USERS).start()
    try:
        push(layout, "base", reg, "private/base", dest_tag="v1")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def token_registry(layout: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, TokenIssuer]]:
    issuer = TokenIssuer(tmp_path_factory.mktemp("token"), USERS).start()
    reg = Registry(tmp_path_factory.mktemp("tokreg"), users=USERS, token=issuer).start()
    try:
        push(layout, "base", reg, "private/base", dest_tag="v1")
        yield reg, issuer
    finally:
        reg.stop()
        issuer.stop()


def docker_config(path: Path, host: str, user: str, pw: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{pw}".encode()).decode()
    (path / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def auth_d(podrun: PodrunEnv, host: str, user: str, pw: str) -> None:
    d = podrun.local_config / "auth.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / "registry.json").write_text(json.dumps({
        "rktKind": "dockerAuth", "rktVersion": "v1", "registries": [host],
        "credentials": {"user": user, "password": pw}}))


def images(env: PodrunEnv) -> list[dict]:
    return json.loads(env.run("image", "list", "--format=json", check=True).stdout)


def one_line_failure(r, says: str) -> None:  # type: ignore[no-untyped-def]
    assert r.returncode == 254, r.stderr
    lines = [x for x in r.stderr.splitlines() if "warning:" not in x]
    assert len(lines) == 1 and says in lines[0], r.stderr


def test_basic_auth(podrun: PodrunEnv, basic_registry: Registry, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    ref = f"docker://{basic_registry.host}/private/base:v1"
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    one_line_failure(podrun.run(INSECURE, "fetch", ref), "requires authentication")
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "bad", basic_registry.host,
                                                          "alice", "wrong")))
    one_line_failure(podrun.run(INSECURE, "fetch", ref), "authentication failed as alice")
    assert images(podrun) == []
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "good",
                                                          basic_registry.host, "alice",
                                                          "s3cret")))
    r = podrun.run(INSECURE, "fetch", ref)
    assert r.returncode == 0, r.stderr
    assert [i["id"] for i in images(podrun)] == [r.stdout.strip()]


def test_token_auth_with_auth_d(podrun: PodrunEnv, token_registry: tuple[Registry, TokenIssuer],
                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg, issuer = token_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    ref = f"docker://{reg.host}/private/base:v1"
    one_line_failure(podrun.run(INSECURE, "fetch", ref), "authentication failed")
    auth_d(podrun, reg.host, "alice", "wrong")
    one_line_failure(podrun.run(INSECURE, "fetch", ref), "authentication failed as alice")
    assert images(podrun) == []
    auth_d(podrun, reg.host, "alice", "s3cret")
    # discovery credentials for another host (rktKind auth) must not get in the way
    (podrun.local_config / "auth.d/other.json").write_text(json.dumps({
        "rktKind": "auth", "rktVersion": "v1", "domains": ["example.com"], "type": "basic",
        "credentials": {"user": "x", "password": "y"}}))
    before = len(issuer.requests)
    r = podrun.run(INSECURE, "fetch", ref)
    assert r.returncode == 0, r.stderr
    asked = issuer.requests[before:]
    assert asked and "scope=repository%3Aprivate%2Fbase%3Apull" in asked[-1]
    assert f"service={issuer.service}" in asked[-1]


def test_https_registry_with_test_ca(podrun: PodrunEnv, layout: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ca = make_ca(tmp_path / "ca")
    reg = Registry(tmp_path / "reg", tls=(ca.server_cert, ca.server_key)).start()
    try:
        push(layout, "base", reg, "tls/base", dest_tag="v1")
        ref = f"docker://{reg.host}/tls/base:v1"
        one_line_failure(podrun.run("--insecure-options=image", "fetch", ref), "TLS")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_cert))
        r = podrun.run("--insecure-options=image", "fetch", ref)
        assert r.returncode == 0, r.stderr
    finally:
        reg.stop()

"""Discovery building blocks without a network: meta tag parsing, templates, the walk
order, label defaults, and auth.d loading (real files in a temp dir)."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

from podrun.discovery.appc import discovery_labels, endpoints_from, levels, render
from podrun.discovery.auth import HostAuth, load_auth
from podrun.discovery.meta import MetaTag, parse_meta
from podrun.errors import FetchError


def test_parse_meta_arbitrary_markup() -> None:
    page = """<!DOCTYPE html>
<html><HEAD>
<META NAME="ac-discovery" CONTENT="example.com https://s.example.com/{name}.{ext}">
<meta content='example.com/app  https://a.example.com/{os}/{name}?x=1&amp;y={version}.{ext}'
      name='AC-Discovery' />
<meta name=ac-discovery-pubkeys content="example.com https://example.com/keys.asc">
<meta name="description" content="a b">
<meta name="ac-discovery" content="only-one-field">
<meta name="ac-discovery" content="three fields here">
<meta name="ac-discovery">
<!-- <meta name="ac-discovery" content="commented https://no/{ext}"> -->
<script>var s = '<meta name="ac-discovery" content="script https://no/{ext}">';</script>
</head><body><div><p>unclosed <b>tags
<meta name="ac-discovery" content="late.example https://late/{name}.{ext}">
</body>"""
    assert parse_meta(page) == [
        MetaTag("ac-discovery", "example.com", "https://s.example.com/{name}.{ext}"),
        MetaTag("ac-discovery", "example.com/app",
                "https://a.example.com/{os}/{name}?x=1&y={version}.{ext}"),
        MetaTag("ac-discovery-pubkeys", "example.com", "https://example.com/keys.asc"),
        MetaTag("ac-discovery", "late.example", "https://late/{name}.{ext}"),
    ]
    # Bytes with invalid UTF-8 are read too.
    assert parse_meta(b'\xff\xfe<meta name="ac-discovery" content="a b">') == [
        MetaTag("ac-discovery", "a", "b")]


def test_parse_meta_never_raises_on_garbage() -> None:
    rng = random.Random(5)
    alphabet = '<>/="\' !-&#;metaMETAnamecontentac-discovery{}\n\x00\xff'
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        tags = parse_meta(text)
        assert all(t.prefix and t.uri for t in tags)
    assert parse_meta("") == [] and parse_meta("<meta") == []


def test_render_fills_name_labels_ext_or_skips() -> None:
    labels = {"version": "1.0", "os": "linux", "arch": "amd64", "channel": "beta",
              "name": "ignored"}
    tpl = "https://h/{os}/{arch}/{name}-{version}-{channel}.{ext}"
    assert render(tpl, "h/app", labels, "aci") == "https://h/linux/amd64/h/app-1.0-beta.aci"
    assert render(tpl, "h/app", labels, "aci.asc").endswith("-beta.aci.asc")
    assert render(tpl, "h/app", {"version": "1.0", "os": "linux", "arch": "amd64"}, "aci") is None
    assert render("https://h/{name}", "h/app", {}, "aci") == "https://h/h/app"


def test_endpoints_longest_prefix_first_and_prefix_match() -> None:
    tags = [MetaTag("ac-discovery", "h", "https://h/short/{name}.{ext}"),
            MetaTag("ac-discovery", "h/app", "https://h/long/{name}.{ext}"),
            MetaTag("ac-discovery", "h/app", "https://h/long2/{name}.{ext}"),
            MetaTag("ac-discovery", "h/other", "https://h/other/{name}.{ext}"),
            MetaTag("ac-discovery", "h/app", "https://h/{missing}/{name}.{ext}"),
            MetaTag("ac-discovery-pubkeys", "h", "https://h/k1"),
            MetaTag("ac-discovery-pubkeys", "x", "https://x/k2")]
    aci, keys = endpoints_from(tags, "h/app", {"version": "1"}, "https://h?ac-discovery=1")
    assert [e.aci for e in aci] == ["https://h/long/h/app.aci", "https://h/long2/h/app.aci",
                                    "https://h/short/h/app.aci"]
    assert aci[0].asc == "https://h/long/h/app.aci.asc" and keys == ["https://h/k1"]


def test_levels_and_label_defaults() -> None:
    assert levels("h/a/b") == ["h/a/b", "h/a", "h"]
    assert levels("h") == ["h"]
    d = discovery_labels({"channel": "x"})
    assert d["version"] == "latest" and d["os"] == "linux" and d["channel"] == "x"
    assert discovery_labels({"version": "2", "arch": "i386"})["arch"] == "i386"


# --------------------------------------------------------------------------- auth.d


def _write(d: Path, name: str, doc: object) -> Path:
    (d / "auth.d").mkdir(parents=True, exist_ok=True)
    p = d / "auth.d" / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def _auth(domains: list[str], type_: str = "basic", **creds: str) -> dict:
    return {"rktKind": "auth", "rktVersion": "v1", "domains": domains, "type": type_,
            "credentials": creds}


class _Req:
    def __init__(self, url: str) -> None:
        self.url = url
        self.headers: dict[str, str] = {}


def test_auth_local_wins_per_domain_and_https_only(tmp_path: Path) -> None:
    local, system = tmp_path / "etc", tmp_path / "lib"
    _write(system, "a.json", _auth(["a.example", "b.example"], "oauth", token="common"))
    _write(local, "b.json", _auth(["b.example"], user="foo", password="bar"))
    _write(local, "c.json", _auth(["c.example:8443"], "oauth", token="c"))
    _write(local, "docker.json", {"rktKind": "dockerAuth", "rktVersion": "v1",
                                  "registries": ["d.example"], "credentials": {}})
    _write(local, "notes.txt", "ignored")
    auth = HostAuth(load_auth(local, system))

    def header(url: str) -> str | None:
        return auth(_Req(url)).headers.get("Authorization")  # type: ignore[arg-type]

    assert header("https://a.example/x") == "Bearer common"
    assert header("https://b.example:443/x") == "Basic " + base64.b64encode(b"foo:bar").decode()
    assert header("https://c.example:8443/x") == "Bearer c"
    assert header("https://c.example/x") is None
    assert header("http://a.example/x") is None  # never over plain HTTP
    assert header("https://d.example/x") is None


@pytest.mark.parametrize("doc,needle", [
    ("{not json", "not valid JSON"),
    ({"rktKind": "auth"}, "rktVersion"),
    ({**_auth(["h"]), "rktVersion": "v2"}, "unsupported rktVersion"),
    (_auth([]), "domains"),
    (_auth(["h"], "digest"), "type must be"),
    (_auth(["h"], user="u"), "credentials.password"),
    (_auth(["h"], "oauth"), "credentials.token"),
])
def test_auth_bad_files_name_the_file(tmp_path: Path, doc: object, needle: str) -> None:
    p = _write(tmp_path / "etc", "bad.json", doc)
    with pytest.raises(FetchError) as ei:
        load_auth(tmp_path / "etc", tmp_path / "lib")
    assert str(p) in str(ei.value) and needle in str(ei.value)


def test_auth_domain_twice_in_one_dir(tmp_path: Path) -> None:
    _write(tmp_path / "etc", "one.json", _auth(["h"], "oauth", token="1"))
    _write(tmp_path / "etc", "two.json", _auth(["h"], "oauth", token="2"))
    with pytest.raises(FetchError, match="one.json"):
        load_auth(tmp_path / "etc", tmp_path / "lib")
    # The same domain in the system and the local dir is an override, not an error.
    _write(tmp_path / "lib", "one.json", _auth(["h"], "oauth", token="sys"))
    (tmp_path / "etc/auth.d/two.json").unlink()
    assert load_auth(tmp_path / "etc", tmp_path / "lib")["h"].token == "1"

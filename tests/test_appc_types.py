"""appc scalar types: identifiers, names, image IDs, SemVer, os/arch, quantities, etc.

Besides fixed expectations, each rule is checked against the real ``actool
validate``: the value is put into an otherwise valid manifest and actool's
verdict must equal ours. That is where the spec's prose and actool 0.8.11 differ
(``a..b`` is a valid identifier to actool), and we follow actool.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from podrun.appc import types as t
from podrun.errors import ManifestError

needs_actool = pytest.mark.skipif(shutil.which("actool") is None, reason="actool not installed")

BASE: dict[str, Any] = {
    "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/probe",
    "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
    "app": {"exec": ["/bin/sh"], "user": "0", "group": "0"},
}


def _actool_accepts(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> bool:
    doc = json.loads(json.dumps(BASE))
    edit(doc)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc))
    rc = subprocess.run(["actool", "validate", str(path)], capture_output=True).returncode
    assert rc in (0, 1), f"actool crashed on {doc}"
    return rc == 0


def _accepts(check: Callable[..., Any], value: Any) -> bool:
    try:
        check(value, "x")
    except (ManifestError, ValueError):
        return False
    return True


IDENTIFIERS = {
    "example.com/reduce-worker": True, "database": True, "a": True, "0": True,
    "example.com/~user/app_v1": True, "sub-domain.example.com/org/product/release": True,
    "a..b": True, "a//b": True, "a-/-b": True,  # spec regex says no, actool says yes
    "": False, "-a": False, "a-": False, "a/": False, "_a": False, "a~": False,
    "Example.com": False, "exämple": False, "a b": False, "a\n": False, "a:b": False,
}
NAMES = {
    "database": True, "product-database": True, "a": True, "a1-b2": True,
    "a--b": True,  # spec regex says no, actool says yes
    "": False, "-a": False, "a-": False, "a.b": False, "A": False, "a_b": False, "a/b": False,
}


@pytest.mark.parametrize(("value", "ok"), IDENTIFIERS.items())
def test_ac_identifier(value: str, ok: bool) -> None:
    assert t.is_ac_identifier(value) is ok
    assert _accepts(t.check_ac_identifier, value) is ok
    if ok:
        assert t.check_ac_identifier(value, "name") == value


@pytest.mark.parametrize(("value", "ok"), NAMES.items())
def test_ac_name(value: str, ok: bool) -> None:
    assert t.is_ac_name(value) is ok
    assert _accepts(t.check_ac_name, value) is ok


def test_identifier_errors_name_path_and_value() -> None:
    with pytest.raises(ManifestError) as info:
        t.check_ac_identifier("Bad/Name", "labels[2].name", kind="image manifest")
    assert info.value.path == "labels[2].name"
    assert str(info.value) == ("invalid image manifest field labels[2].name: AC Identifier "
                               "'Bad/Name' must contain only lower case alphanumeric "
                               'characters plus "-._~/"')
    with pytest.raises(ManifestError, match="start and end"):
        t.check_ac_name("db-", "apps[0].name")
    with pytest.raises(ManifestError, match="cannot be empty"):
        t.check_ac_name("", "apps[0].name")


@needs_actool
def test_identifiers_and_names_agree_with_actool(tmp_path: Path) -> None:
    for value, ok in IDENTIFIERS.items():
        if value:  # an empty name is "missing" to actool's manifest check
            assert _actool_accepts(tmp_path, lambda d, v=value: d.update(name=v)) is ok, value
    for value, ok in NAMES.items():
        def edit(d: dict[str, Any], v: str = value) -> None:
            d["app"]["mountPoints"] = [{"name": v, "path": "/x"}]
        assert _actool_accepts(tmp_path, edit) is ok, value


IMAGE_IDS = {
    "sha512-" + "0f" * 64: ("sha512", "0f" * 64),
    "sha512-abc": ("sha512", "abc"),
    "sha512-...": ("sha512", "..."),  # the spec's own example; actool does not check hex
}
BAD_IMAGE_IDS = ["", "sha512", "sha512-", "sha256-abc", "abc", "sha512-a-b", "-abc"]


@pytest.mark.parametrize(("value", "parts"), IMAGE_IDS.items())
def test_parse_image_id(value: str, parts: tuple[str, str]) -> None:
    assert t.parse_image_id(value) == parts


@pytest.mark.parametrize("value", BAD_IMAGE_IDS)
def test_parse_image_id_rejects(value: str) -> None:
    with pytest.raises(ManifestError) as info:
        t.parse_image_id(value, "apps[0].image.id")
    assert info.value.path == "apps[0].image.id"


@needs_actool
def test_image_ids_agree_with_actool(tmp_path: Path) -> None:
    for value in [*IMAGE_IDS, *BAD_IMAGE_IDS]:
        def edit(d: dict[str, Any], v: str = value) -> None:
            d["dependencies"] = [{"imageName": "example.com/base", "imageID": v}]
        assert _actool_accepts(tmp_path, edit) is (value in IMAGE_IDS), value


SEMVERS = {
    "0.8.11": (0, 8, 11, "", ""), "1.0.0": (1, 0, 0, "", ""),
    "0.8.11-rc.1+git.abc": (0, 8, 11, "rc.1", "git.abc"),
    "0.08.11": (0, 8, 11, "", ""),  # go-semver is lenient about leading zeros
    "0.8.11-": (0, 8, 11, "", ""), "0.0.0-rc": (0, 0, 0, "rc", ""),
}
BAD_SEMVERS = ["", "0.8", "v0.8.11", "0.8.11.1", " 0.8.11", "0.0.0", "-1.8.11", "0.8.11-a..b",
               "0.8.x", "0.8.11\n", "99999999999999999999.0.0"]


@pytest.mark.parametrize(("value", "parsed"), SEMVERS.items())
def test_parse_semver(value: str, parsed: tuple[int, int, int, str, str]) -> None:
    assert t.parse_semver(value) == parsed
    assert t.check_semver(value, "acVersion") == value


@pytest.mark.parametrize("value", BAD_SEMVERS)
def test_semver_rejects(value: str) -> None:
    with pytest.raises(ManifestError) as info:
        t.check_semver(value, "acVersion")
    assert info.value.path == "acVersion"


@needs_actool
def test_semver_agrees_with_actool(tmp_path: Path) -> None:
    for value in [*SEMVERS, *BAD_SEMVERS]:
        ok = _actool_accepts(tmp_path, lambda d, v=value: d.update(acVersion=v))
        assert ok is (value in SEMVERS), value


QUANTITIES: dict[Any, tuple[int, int]] = {  # text: (parse_quantity, parse_quantity_milli)
    "1G": (10**9, 10**12), "512Mi": (512 * 2**20, 512 * 2**20 * 1000),
    "1.5Gi": (3 * 2**29, 3 * 2**29 * 1000), "500m": (1, 500), "2": (2, 2000),
    "1k": (1000, 10**6), "1e3": (1000, 10**6), "1E-3": (1, 1), "1e+3": (1000, 10**6),
    "250u": (1, 1), " 1G ": (10**9, 10**12), "1E": (10**18, 10**21),
    ".5": (1, 500), "5.": (5, 5000), "-1G": (-(10**9), -(10**12)), "+2": (2, 2000),
    1024: (1024, 1024000), 1.5: (2, 1500), "1Ei": (2**60, 2**60 * 1000),
    "10Ei": (2**63 - 1, (2**63 - 1) * 1000), "1.e3": (1000, 10**6), "00012": (12, 12000),
    "G": (0, 0), "+": (0, 0), ".": (0, 0),  # no digits at all reads as zero, as in actool
    "1e-40": (1, 1), "1e40": (2**63 - 1, (2**63 - 1) * 1000),
}
BAD_QUANTITIES = ["", "1GB", "1K", "1e", "1i", "1kM", "1.2.3", "lots", "1 G", "5+3", "1Gi2",
                  "1ee3", True, None, {"limit": 1}]


@pytest.mark.parametrize(("text", "expected"), QUANTITIES.items())
def test_parse_quantity(text: Any, expected: tuple[int, int]) -> None:
    value = t.parse_quantity(text)
    milli = t.parse_quantity_milli(text)
    assert (value, milli) == expected  # capped at the int64 maximum, like Kubernetes


@pytest.mark.parametrize("text", BAD_QUANTITIES, ids=repr)
def test_parse_quantity_rejects(text: Any) -> None:
    with pytest.raises(ValueError):
        t.parse_quantity(text)


@needs_actool
def test_quantities_agree_with_actool(tmp_path: Path) -> None:
    cases = [(v, True) for v in QUANTITIES] + [(v, False) for v in BAD_QUANTITIES]
    for value, ok in cases:
        if value is None:
            continue  # null means "no limit" to actool, tested in the manifest tests
        def edit(d: dict[str, Any], v: Any = value) -> None:
            d["app"]["isolators"] = [{"name": "resource/memory", "value": {"limit": v}}]
        assert _actool_accepts(tmp_path, edit) is ok, value


ENV_NAMES = {"PATH": True, "_": True, "_9": True, "a.b-c": True, "a-": True,
             "": False, "1A": False, "-a": False, ".a": False, "A=B": False, "A B": False,
             "aé": False, "a:b": False, "a/b": False}


@pytest.mark.parametrize(("value", "ok"), ENV_NAMES.items())
def test_env_names(value: str, ok: bool) -> None:
    assert _accepts(t.check_env_name, value) is ok


@needs_actool
def test_env_names_agree_with_actool(tmp_path: Path) -> None:
    for value, ok in ENV_NAMES.items():
        def edit(d: dict[str, Any], v: str = value) -> None:
            d["app"]["environment"] = [{"name": v, "value": "x"}]
        assert _actool_accepts(tmp_path, edit) is ok, value


DATES = {"2014-10-27T19:32:27.67021798Z": True, "2014-10-27T19:32:27Z": True,
         "2014-10-27T19:32:27+02:00": True, "2016-02-29T00:00:00Z": True,
         "2014-10-27t19:32:27z": False, "2014-10-27 19:32:27Z": False, "2014-10-27": False,
         "2014-13-27T19:32:27Z": False, "2015-02-29T00:00:00Z": False, "yesterday": False}
URLS = {"https://example.com/docs": True, "http://": True, "HTTP://x.com": True,
        "ftp://x": False, "/docs": False, "http://a b.com": False, "http://a.com/%zz": False}


@needs_actool
def test_dates_and_urls(tmp_path: Path) -> None:
    for value, ok in DATES.items():
        assert _accepts(t.check_rfc3339, value) is ok, value
        edit = lambda d, v=value: d.update(annotations=[{"name": "created", "value": v}])  # noqa: E731
        assert _actool_accepts(tmp_path, edit) is ok, value
    for value, ok in URLS.items():
        assert _accepts(t.check_http_url, value) is ok, value
        edit = lambda d, v=value: d.update(annotations=[{"name": "homepage", "value": v}])  # noqa: E731
        assert _actool_accepts(tmp_path, edit) is ok, value


OS_ARCH = {("linux", "amd64"): True, ("linux", "aarch64"): True, ("linux", "s390x"): True,
           ("linux", None): True, ("freebsd", "arm"): True, ("darwin", "x86_64"): True,
           ("linux", "arm64"): False, ("linux", "x86_64"): False, ("darwin", "amd64"): False,
           ("plan9", "amd64"): False, ("", None): False}


@needs_actool
def test_os_arch_agree_with_actool(tmp_path: Path) -> None:
    for (os_name, arch), ok in OS_ARCH.items():
        try:
            t.check_os_arch(os_name, arch, "labels")
            accepted = True
        except ManifestError:
            accepted = False
        assert accepted is ok
        labels = [{"name": "os", "value": os_name}]
        if arch is not None:
            labels.append({"name": "arch", "value": arch})
        assert _actool_accepts(tmp_path, lambda d, lb=labels: d.update(labels=lb)) is ok


def test_host_os_and_arch() -> None:
    assert t.host_os() == "linux"
    machine = os.uname().machine
    expected = {"x86_64": "amd64", "aarch64": "aarch64", "i686": "i386",
                "armv7l": "armv7l", "ppc64le": "ppc64le", "s390x": "s390x"}.get(machine)
    if expected is not None:
        assert t.host_arch() == expected
    assert t.host_arch() in t.VALID_OS_ARCH["linux"]


def test_ip_addresses() -> None:
    for ok in ("127.0.0.1", "::1", "", "10.1.2.3"):
        assert t.check_ip(ok, "ports[0].hostIP") == ok
    for bad in ("localhost", "1.2.3", "::g"):
        with pytest.raises(ManifestError):
            t.check_ip(bad, "ports[0].hostIP")


def test_errno_rule() -> None:
    assert t.is_upper_errno("EPERM") and t.is_upper_errno("E2BIG") and t.is_upper_errno("E")
    assert not t.is_upper_errno("eperm") and not t.is_upper_errno("XPERM")
    assert not t.is_upper_errno("E_X") and not t.is_upper_errno("Eperm")

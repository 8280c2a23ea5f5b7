"""Image and pod manifests: lossless round trip, error paths, the model's API.

The corpus under tests/data/manifests is shared with test_actool_agreement.py
(which proves the verdicts match actool); here we check what podrun adds on top:
the exact JSON path of each error, one-line messages, ``to_dict(from_json(x)) == x``
with key order kept, edits showing up in ``to_dict``, and a cheap import.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from podrun.appc.manifest import (
    App,
    EnvVar,
    ImageManifest,
    Isolator,
    Label,
    Mount,
    PodManifest,
    Port,
    RuntimeApp,
    RuntimeImage,
    Volume,
    validate_image_manifest,
    validate_manifest,
    validate_pod_manifest,
)
from podrun.appc.validate import _validator, json_path, load_schema
from podrun.errors import ManifestError

CORPUS = Path(__file__).parent / "data" / "manifests"
VALID = sorted(CORPUS.glob("*/valid/*.json"))
INVALID = sorted(CORPUS.glob("*/invalid/*.json"))
SPEC_IMAGE = CORPUS / "image" / "valid" / "spec-example.json"
SPEC_POD = CORPUS / "pod" / "valid" / "spec-runtime.json"
ID = "sha512-" + "ab" * 64


def _ids(p: Path) -> str:
    return "/".join(p.parts[-3:])


def _dump(doc: object) -> str:
    """JSON text that differs whenever values, nulls or key order differ."""
    return json.dumps(doc, indent=1, ensure_ascii=False)


@pytest.mark.parametrize("path", VALID, ids=_ids)
def test_round_trip_is_lossless(path: Path) -> None:
    doc = json.loads(path.read_text())
    m = validate_manifest(path.read_bytes())
    assert _dump(m.to_dict()) == _dump(doc)
    assert json.loads(m.to_json()) == doc
    # Parsing our own output gives an equal model.
    assert type(m).from_json(m.to_json()) == m


@pytest.mark.parametrize("path", INVALID, ids=_ids)
def test_invalid_files_give_one_line_errors_with_a_path(path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        validate_manifest(path.read_bytes())
    err = info.value
    assert err.path
    assert "\n" not in str(err)
    assert str(err).startswith(f"invalid {path.parts[-3]} manifest field {err.path}: ")
    assert err.exit_code == 254


ERROR_PATHS = {
    "image/ac-version-zero": "acVersion",
    "image/name-missing": "name",
    "image/label-duplicate": "labels[3].name",
    "image/label-called-name": "labels[3].name",
    "image/label-bad-os": "labels[2].value",
    "image/label-arch-x86_64-on-linux": "labels[1].value",
    "image/app-user-missing": "app.user",
    "image/exec-not-array": "app.exec",
    "image/working-directory-relative": "app.workingDirectory",
    "image/event-handler-duplicate": "app.eventHandlers[2].name",
    "image/env-name-starts-with-digit": "app.environment[1].name",
    "image/port-zero": "app.ports[0].port",
    "image/port-float": "app.ports[0].port",
    "image/port-range-past-65535": "app.ports[0].count",
    "image/isolator-unknown": "app.isolators[5].name",
    "image/isolator-memory-default-true": "app.isolators[1].value.default",
    "image/isolator-memory-bad-suffix": "app.isolators[1].value.limit",
    "image/isolator-seccomp-retain-and-remove": "app.isolators[5]",
    "image/isolator-oom-score-adj-out-of-range": "app.isolators[5].value",
    "image/isolator-sysctl-value-not-string": 'app.isolators[5].value["net.core.somaxconn"]',
    "image/annotation-created-not-rfc3339": "annotations[1].value",
    "image/dependency-image-id-sha256": "dependencies[0].imageID",
    "image/path-whitelist-not-strings": "pathWhitelist[5]",
    "pod/app-duplicate-name": "apps[1].name",
    "pod/image-id-sha256": "apps[0].image.id",
    "pod/app-user-missing": "apps[0].app.user",
    "pod/app-volume-bad-kind": "apps[0].mounts[0].appVolume.kind",
    "pod/volume-duplicate-name": "volumes[2].name",
    "pod/volume-host-relative-source": "volumes[0].source",
    "pod/volume-uid-not-integer": "volumes[1].uid",
    "pod/pod-isolator-bad-quantity": "isolators[0].value.limit",
    "pod/exposed-port-bad-host-ip": "ports[0].hostIP",
    "pod/user-labels-value-not-string": "userLabels.tier",
}


@pytest.mark.parametrize("name", sorted(ERROR_PATHS))
def test_error_names_the_json_path(name: str) -> None:
    kind, stem = name.split("/")
    with pytest.raises(ManifestError) as info:
        validate_manifest((CORPUS / kind / "invalid" / f"{stem}.json").read_bytes())
    assert info.value.path == ERROR_PATHS[name], str(info.value)


def test_error_messages_name_the_bad_value() -> None:
    doc = json.loads(SPEC_IMAGE.read_text())
    doc["app"]["isolators"][1]["value"]["limit"] = "1GB"
    with pytest.raises(ManifestError, match=r"bad quantity '1GB'"):
        validate_image_manifest(doc)
    doc = json.loads(SPEC_IMAGE.read_text())
    doc["name"] = "Bad"
    with pytest.raises(ManifestError, match=r'"Bad" is not a valid AC Identifier'):
        validate_image_manifest(doc)


def test_known_isolator_without_value_is_an_error() -> None:
    # actool 0.8.11 panics on this (nil pointer), so it is not in the agreement corpus.
    doc = json.loads(SPEC_IMAGE.read_text())
    doc["app"]["isolators"].append({"name": "os/linux/oom-score-adj"})
    with pytest.raises(ManifestError) as info:
        validate_image_manifest(doc)
    assert info.value.path == "app.isolators[5].value"
    pod = json.loads(SPEC_POD.read_text())
    pod["isolators"].append({"name": "resource/cpu", "value": None})
    with pytest.raises(ManifestError) as info:
        validate_pod_manifest(pod)
    assert info.value.path == "isolators[2].value"


def test_kind_must_match_entry_point_and_dispatch() -> None:
    image = SPEC_IMAGE.read_bytes()
    assert isinstance(validate_manifest(image), ImageManifest)
    assert isinstance(validate_manifest(SPEC_POD.read_text()), PodManifest)
    with pytest.raises(ManifestError) as info:
        validate_pod_manifest(image)
    assert info.value.path == "acKind"
    assert str(info.value).startswith("invalid pod manifest field acKind")
    with pytest.raises(ManifestError, match="acKind is missing"):
        validate_manifest(b'{"acVersion": "0.8.11"}')


@pytest.mark.parametrize("text", [b"", b"{", b"[]", b'"x"', b"\xff\xfe"])
def test_not_a_json_object(text: bytes) -> None:
    with pytest.raises(ManifestError) as info:
        validate_image_manifest(text)
    assert info.value.path == ""
    assert "\n" not in str(info.value)


def test_dict_input_is_not_mutated_or_aliased() -> None:
    doc = json.loads(SPEC_IMAGE.read_text())
    before = copy.deepcopy(doc)
    m = validate_image_manifest(doc)
    m.labels[0].value = "2.0.0"
    m.to_dict()["labels"].append({"name": "x", "value": "y"})
    assert doc == before


def test_accessors() -> None:
    m = validate_image_manifest(SPEC_IMAGE.read_bytes())
    assert m.label("version") == "1.0.0"
    assert m.label("nope") is None
    assert m.labels_dict == {"version": "1.0.0", "arch": "amd64", "os": "linux"}
    assert m.annotation("homepage") == "https://example.com"
    assert m.app is not None
    assert m.app.exec == ["/usr/bin/reduce-worker", "--quiet"]
    assert m.app.env_dict == {"REDUCE_WORKER_DEBUG": "true"}
    assert m.app.event_handler("post-stop").exec[0] == "/usr/bin/deregister-worker"
    assert m.app.isolator("resource/memory") == Isolator("resource/memory", {"limit": "1G"})
    assert m.app.ports == [Port("health", "tcp", 4000, 1, True)]
    assert m.app.mount_points[0].read_only is False
    assert m.dependencies[0].image_id == "sha512-..."
    pod = validate_pod_manifest(SPEC_POD.read_bytes())
    assert [a.name for a in pod.apps] == ["reduce-worker", "backup", "register"]
    assert pod.app("backup").mounts[1] == Mount("buildoutput", "/mnt/out")
    assert pod.app("register").app is None
    assert pod.volume("dbvolume") == Volume("dbvolume", "host", "/opt/tenant1/database", True)
    assert pod.volume("buildoutput").uid == 0
    assert pod.volume("buildoutput").mode == "0777"


def test_edits_show_up_and_everything_else_is_kept() -> None:
    doc = json.loads(SPEC_IMAGE.read_text())
    doc["x-extra"] = {"kept": True}
    m = validate_image_manifest(doc)
    assert m.app is not None
    m.app.exec = ["/bin/true"]
    m.app.environment.append(EnvVar("NEW", "1"))
    m.labels = [lb for lb in m.labels if lb.name != "arch"]
    m.path_whitelist = []
    out = m.to_dict()
    assert list(out) == [k for k in doc if k != "pathWhitelist"]
    assert out["x-extra"] == {"kept": True}
    assert out["app"]["exec"] == ["/bin/true"]
    assert out["app"]["environment"][-1] == {"name": "NEW", "value": "1"}
    assert [lb["name"] for lb in out["labels"]] == ["version", "os"]
    assert out["app"]["isolators"] == doc["app"]["isolators"]
    assert validate_image_manifest(m.to_json()) == m


def test_port_count_zero_reads_as_one_and_round_trips() -> None:
    doc = json.loads(SPEC_IMAGE.read_text())
    doc["app"]["ports"][0]["count"] = 0
    m = validate_image_manifest(doc)
    assert m.app is not None and m.app.ports[0].count == 1
    assert m.to_dict() == doc
    m.app.ports[0].count = 3
    assert m.to_dict()["app"]["ports"][0]["count"] == 3


def test_fresh_manifests_serialize_to_valid_documents() -> None:
    m = ImageManifest(ac_version="0.8.11", name="example.com/fresh",
                      labels=[Label("os", "linux"), Label("arch", "amd64")],
                      app=App(exec=["/bin/sh"], user="0", group="0",
                              ports=[Port("http", "tcp", 80)]))
    d = m.to_dict()
    assert d == {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/fresh",
                 "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
                 "app": {"exec": ["/bin/sh"], "user": "0", "group": "0",
                         "ports": [{"name": "http", "protocol": "tcp", "port": 80}]}}
    assert validate_image_manifest(m.to_json()) == m
    pod = PodManifest(ac_version="0.8.11", apps=[
        RuntimeApp("web", RuntimeImage("example.com/fresh", ID), mounts=[Mount("data", "/d")])],
        volumes=[Volume("data", "empty", mode="0755", uid=0, gid=0)])
    pd = pod.to_dict()
    assert pd["apps"] == [{"name": "web", "image": {"name": "example.com/fresh", "id": ID},
                           "mounts": [{"volume": "data", "path": "/d"}]}]
    assert pd["volumes"] == [{"name": "data", "kind": "empty", "mode": "0755", "uid": 0,
                              "gid": 0}]
    assert validate_pod_manifest(pod.to_json()) == pod


def test_explicit_nulls_survive() -> None:
    doc = json.loads((CORPUS / "image" / "valid" / "nulls-mean-absent.json").read_text())
    m = validate_image_manifest(doc)
    assert m.labels == [] and m.app is None and m.path_whitelist == []
    assert m.to_dict() == doc
    pod = json.loads(SPEC_POD.read_text())
    pod["volumes"][0]["mode"] = None
    pod["apps"][1]["image"]["name"] = None
    p = validate_pod_manifest(pod)
    assert p.volumes[0].mode is None and p.apps[1].image.name is None
    assert p.to_dict() == pod


def test_json_path_format() -> None:
    assert json_path(["app", "exec", 0]) == "app.exec[0]"
    assert json_path([]) == ""
    assert json_path(["labels", 2, "name"]) == "labels[2].name"
    assert json_path(["value", "net.ipv4.x"]) == 'value["net.ipv4.x"]'


def test_schemas_are_valid_draft_2020_12_and_package_data() -> None:
    import jsonschema

    for name in ("image-manifest.json", "pod-manifest.json"):
        schema = load_schema(name)
        assert schema["$schema"].endswith("2020-12/schema")
        jsonschema.Draft202012Validator.check_schema(schema)
        assert _validator(name) is _validator(name)  # compiled once


def test_schema_integer_rejects_floats() -> None:
    v = _validator("image-manifest.json")
    doc = json.loads(SPEC_IMAGE.read_text())
    assert v.is_valid(doc)
    doc["app"]["supplementaryGIDs"] = [1.0]
    assert not v.is_valid(doc)
    doc["app"]["supplementaryGIDs"] = [True]
    assert not v.is_valid(doc)


def test_import_and_trusted_parse_are_cheap() -> None:
    code = ("import sys, podrun.appc.manifest as m, podrun.appc.types; "
            f"p = m.PodManifest.from_json(open({str(SPEC_POD)!r}, 'rb').read(), trusted=True); "
            "assert p.apps[0].name == 'reduce-worker'; "
            "bad = [m for m in ('jsonschema', 'referencing', 'requests') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_nan_and_infinity_are_not_json() -> None:
    for text in (b'{"acKind": "ImageManifest", "x": NaN}', b'{"a": Infinity}'):
        with pytest.raises(ManifestError, match="not valid JSON"):
            validate_image_manifest(text)


def test_spec_examples_are_runnable() -> None:
    validate_image_manifest(SPEC_IMAGE.read_bytes()).check_runnable()
    validate_pod_manifest(SPEC_POD.read_bytes()).check_runnable()
    validate_pod_manifest((CORPUS / "pod" / "valid" / "spec-template.json").read_bytes()
                          ).check_runnable()


RUNNABLE_PROBLEMS = {
    # corpus file accepted by actool → the path check_runnable names
    "image/relative-exec-accepted-by-actool": "app.exec[0]",
    "image/relative-mount-point-and-whitelist": "app.mountPoints[0].path",
    "pod/mount-of-undeclared-volume-accepted-by-actool": "apps[1].mounts[2].volume",
}


@pytest.mark.parametrize("name", sorted(RUNNABLE_PROBLEMS))
def test_check_runnable_is_stricter_than_actool(name: str) -> None:
    kind, stem = name.split("/")
    m = validate_manifest((CORPUS / kind / "valid" / f"{stem}.json").read_bytes())
    with pytest.raises(ManifestError) as info:
        m.check_runnable()
    assert info.value.path == RUNNABLE_PROBLEMS[name]


@pytest.mark.parametrize(("edit", "path"), [
    (lambda d: d["apps"][0]["app"].update(exec=[]), "apps[0].app.exec"),
    (lambda d: d["apps"][0]["mounts"][0].update(path="var/lib/db"), "apps[0].mounts[0].path"),
    (lambda d: d["volumes"][1].update(mode="rwx"), "volumes[1].mode"),
    (lambda d: d["volumes"][1].update(uid=-1), "volumes[1].uid"),
    (lambda d: d["apps"][1].pop("name"), "apps[1].name"),
    (lambda d: d["apps"][1].pop("image"), "apps[1].image"),
    (lambda d: d.update(ports=[{"name": "x", "hostPort": 0}]), "ports[0].hostPort"),
    (lambda d: d["apps"][0]["app"].update(ports=[{"name": "p", "protocol": "sctp", "port": 1}]),
     "apps[0].app.ports[0].protocol"),
])
def test_check_runnable_pod_rules(edit, path: str) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(SPEC_POD.read_text())
    edit(doc)
    pod = validate_pod_manifest(doc)  # actool's rules: fine
    with pytest.raises(ManifestError) as info:
        pod.check_runnable()
    assert info.value.path == path

"""Pods from appc pod manifests and pod-level settings, run for real (root).

- The appc spec's own example ``pod_runtime.json`` (appc-spec package) runs once its
  images are swapped for busybox test images: three apps, a read-only host volume
  shared by two apps, an ``empty`` volume with mode 0777, app and pod isolators
  (memory, a namespaced sysctl), annotations; ``--pod`` is an alias of
  ``--pod-manifest``; ``cat-manifest`` shows what was written, image IDs filled in.
- A manifest with an invalid field: exit 254, one line naming the JSON path, no pod.
- appc eventHandlers: pre-start before the app, post-stop after it, in the app's
  rootfs with its volumes; a failing pre-start keeps the app from running and
  the status says so.
- Pod-level sysctls: namespaced ones apply inside the pod only; others are refused.
- ``--net=host`` shows the host's interfaces; ``--net=none`` only ``lo``, up.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PodrunEnv
from tests.images import tiny_aci
from tests.podutil import INSECURE, fetch, pod_dirs, status

pytestmark = pytest.mark.root

EXAMPLE = Path("/usr/share/doc/appc-spec/examples/pod_runtime.json")


def script_aci(root: Path, name: str, version: str, scripts: dict[str, str],
               **extra: Any) -> Path:
    """A busybox ACI with executable shell scripts at the given rootfs paths."""
    from podrun.appc.aci import build_aci

    aci = tiny_aci(root, name, version, busybox=True,
                   files={k: v.encode() for k, v in scripts.items()}, **extra)
    src = root / f"{name.replace('/', '_')}-{version}.src"
    for rel in scripts:
        (src / "rootfs" / rel).chmod(0o755)
    build_aci(src, aci, overwrite=True)
    return aci


def last_uuid(env: PodrunEnv) -> str:
    pods = json.loads(env.run("list", "--format=json", check=True).stdout)
    return max(pods, key=lambda p: p["created"])["uuid"] if "created" in pods[0] \
        else pods[-1]["uuid"]


# -- the spec's example --------------------------------------------------------------

REDUCE_WORKER = """#!/bin/sh
echo "reduce-worker $*"
echo "reduce-worker sees $(cat /var/lib/db/records)"
touch /var/lib/db/new 2>/dev/null && echo "reduce-worker db-writable" \
  || echo "reduce-worker db-readonly"
echo "reduce-worker fin_timeout=$(cat /proc/sys/net/ipv4/tcp_fin_timeout)"
"""
BACKUP = """#!/bin/sh
echo "backup sees $(cat /mnt/db/records)"
echo saved > /mnt/out/result && echo "backup out-mode=$(stat -c %a /mnt/out)"
"""
REGISTER = """#!/bin/sh
echo "register as $AC_APP_NAME"
"""


@pytest.fixture
def example_manifest(pods: PodrunEnv, tmp_path: Path) -> tuple[Path, dict[str, Any], dict]:  # type: ignore[type-arg]
    """The spec's example with test images (fetched) and a host volume under tmp_path.

    Returns (manifest file, the manifest written, {app name: image ID})."""
    m = json.loads(EXAMPLE.read_text())
    images = {
        "reduce-worker": script_aci(tmp_path, "example.com/reduce-worker", "1.0.0",
                                    {"usr/bin/reduce-worker": REDUCE_WORKER},
                                    exec_=["/usr/bin/reduce-worker"]),
        "backup": script_aci(tmp_path, "example.com/worker-backup", "latest",
                             {"usr/bin/backup": BACKUP}, exec_=["/usr/bin/backup"]),
        "register": script_aci(tmp_path, "example.com/reduce-worker-register", "3.0.0",
                               {"usr/bin/register": REGISTER}, exec_=["/usr/bin/register"]),
    }
    ids = {name: fetch(pods, aci) for name, aci in images.items()}
    for rapp in m["apps"]:
        rapp["image"]["id"] = ids[rapp["name"]]
    # One app names its image by name and labels only: podrun fills the ID in.
    del next(a for a in m["apps"] if a["name"] == "register")["image"]["id"]
    db = tmp_path / "opt/tenant1/database"
    db.mkdir(parents=True)
    (db / "records").write_text("r1 r2\n")
    vol = next(v for v in m["volumes"] if v["name"] == "dbvolume")
    assert vol["source"] == "/opt/tenant1/database"
    vol["source"] = str(db)
    path = tmp_path / "pod_runtime.json"
    path.write_text(json.dumps(m, indent=2))
    return path, m, ids


def test_spec_example_pod_runs(pods: PodrunEnv, example_manifest: tuple) -> None:  # type: ignore[type-arg]
    path, written, ids = example_manifest
    host_db = Path(written["volumes"][0]["source"])
    host_fin = Path("/proc/sys/net/ipv4/tcp_fin_timeout").read_text()
    assert host_fin.strip() != "6"  # else the pod's value could not be told apart
    r = pods.run("run", f"--pod-manifest={path}")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted([
        "reduce-worker --debug=true --data-dir=/mnt/foo",
        "reduce-worker sees r1 r2",
        "reduce-worker db-readonly",
        "reduce-worker fin_timeout=6",
        "backup sees r1 r2",
        "backup out-mode=777",
        "register as register",
    ]), r.stdout
    assert sorted(p.name for p in host_db.iterdir()) == ["records"]  # readOnly held
    uuid = last_uuid(pods)
    st = status(pods, uuid)
    assert [(a["name"], a["exit_code"]) for a in st["apps"]] == \
        [("reduce-worker", 0), ("backup", 0), ("register", 0)]
    shown = json.loads(pods.run("cat-manifest", uuid, check=True).stdout)
    expected = copy.deepcopy(written)
    expected["apps"][2]["image"]["id"] = ids["register"]
    # Apps without an app section run the image's app, which the pod manifest records.
    for i, name in ((1, "backup"), (2, "register")):
        assert shown["apps"][i]["app"]["exec"] == [f"/usr/bin/{name}"]
        expected["apps"][i]["app"] = shown["apps"][i]["app"]
    assert shown == expected
    # the pod-level sysctl stayed in the pod's network namespace
    assert Path("/proc/sys/net/ipv4/tcp_fin_timeout").read_text() == host_fin


def test_pod_alias_and_empty_volume_content(pods: PodrunEnv,
                                            example_manifest: tuple) -> None:  # type: ignore[type-arg]
    path, _, _ = example_manifest
    r = pods.run("run", f"--pod={path}")
    assert r.returncode == 0, r.stderr
    pod = next(d for d in pod_dirs(pods) if d.name == last_uuid(pods))
    assert (pod / "volumes/buildoutput/result").read_text() == "saved\n"
    assert oct((pod / "volumes/buildoutput").stat().st_mode & 0o777) == "0o777"


def mutate(m: dict[str, Any], where: str) -> None:
    if where == "volumes[1].kind":
        m["volumes"][1]["kind"] = "bogus"
    elif where == "apps[0].app.exec":
        m["apps"][0]["app"]["exec"] = "/usr/bin/reduce-worker"
    elif where == "apps[1].mounts[1].volume":
        m["apps"][1]["mounts"][1]["volume"] = "nosuchvolume"
    elif where == "isolators[0].value.limit":
        m["isolators"][0]["value"]["limit"] = "lots"


@pytest.mark.parametrize("where", ["volumes[1].kind", "apps[0].app.exec",
                                   "apps[1].mounts[1].volume", "isolators[0].value.limit"])
def test_invalid_field_is_one_line_254_no_pod(pods: PodrunEnv, example_manifest: tuple,  # type: ignore[type-arg]
                                              where: str) -> None:
    path, written, _ = example_manifest
    bad = copy.deepcopy(written)
    mutate(bad, where)
    path.write_text(json.dumps(bad))
    r = pods.run("run", f"--pod-manifest={path}")
    assert r.returncode == 254, r
    assert r.stderr.count("\n") == 1 and where in r.stderr, r.stderr
    assert pod_dirs(pods) == []


# -- event handlers ------------------------------------------------------------------

def handler_aci(root: Path, pre: str) -> Path:
    app = {"exec": ["/bin/sh", "-c", "echo app >> /v/log; echo app-ran"],
           "user": "0", "group": "0",
           "mountPoints": [{"name": "v", "path": "/v"}],
           "eventHandlers": [
               {"name": "pre-start", "exec": ["/bin/sh", "-c", pre]},
               {"name": "post-stop", "exec": ["/bin/sh", "-c", "echo post >> /v/log; "
                                              "echo post-ran"]}]}
    return tiny_aci(root, "example.com/handlers", busybox=True, app=app)


def test_event_handlers_run_in_order(pods: PodrunEnv, tmp_path: Path) -> None:
    aci = handler_aci(tmp_path, "test -e /v/log && echo stale; echo pre >> /v/log; "
                      "echo pre-ran")
    r = pods.run(INSECURE, "run", "--volume=v,kind=empty", aci)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["pre-ran", "app-ran", "post-ran"]
    pod = next(d for d in pod_dirs(pods) if d.name == last_uuid(pods))
    assert (pod / "volumes/v/log").read_text() == "pre\napp\npost\n"


def test_failing_pre_start_keeps_the_app_from_running(pods: PodrunEnv, tmp_path: Path) -> None:
    aci = handler_aci(tmp_path, "echo pre >> /v/log; exit 3")
    r = pods.run(INSECURE, "run", "--volume=v,kind=empty", aci)
    assert r.returncode == 3, r.stderr
    assert "app-ran" not in r.stdout and "post-ran" not in r.stdout
    uuid = last_uuid(pods)
    pod = next(d for d in pod_dirs(pods) if d.name == uuid)
    assert (pod / "volumes/v/log").read_text() == "pre\n"
    app = status(pods, uuid)["apps"][0]
    assert app["exit_code"] == 3 and app["started"] is None
    raw = json.loads((pod / "apps/handlers/status.json").read_text())
    assert "pre-start" in raw["error"]
    assert not (pod / "apps/handlers/pid").exists()


# -- sysctls ---------------------------------------------------------------------------

def test_namespaced_sysctl_applies_in_the_pod_only(pods: PodrunEnv, busybox_aci: Path) -> None:
    host = Path("/proc/sys/kernel/shmmax").read_text()
    assert host.strip() != "12345678"
    r = pods.run(INSECURE, "run", "--sysctl", "kernel.shmmax=12345678", busybox_aci,
                 "--exec", "/bin/cat", "--", "/proc/sys/kernel/shmmax")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "12345678\n"
    assert Path("/proc/sys/kernel/shmmax").read_text() == host


@pytest.mark.parametrize("flags, message", [
    (["--sysctl", "vm.swappiness=13"], "vm.swappiness is not namespaced"),
    (["--net=host", "--sysctl", "net.ipv4.tcp_fin_timeout=7"], "net.ipv4.tcp_fin_timeout"),
])
def test_host_sysctl_is_refused(pods: PodrunEnv, busybox_aci: Path, flags: list[str],
                                message: str) -> None:
    before = {p: Path(p).read_text() for p in ("/proc/sys/vm/swappiness",
                                               "/proc/sys/net/ipv4/tcp_fin_timeout")}
    r = pods.run(INSECURE, "run", *flags, busybox_aci)
    assert r.returncode == 254, r
    assert r.stderr.strip().splitlines()[-1].startswith("podrun:") and message in r.stderr
    assert "hello" not in r.stdout  # the app never ran
    assert {p: Path(p).read_text() for p in before} == before


def test_host_sysctl_leaves_no_pod(pods: PodrunEnv, busybox_aci: Path) -> None:
    fetch(pods, busybox_aci)
    r = pods.run("run", "--sysctl", "vm.swappiness=13", "example.com/busybox")
    assert r.returncode == 254
    assert r.stderr.count("\n") == 1, r.stderr
    assert pod_dirs(pods) == []


# -- networks ------------------------------------------------------------------------

def test_net_host_sees_the_host_interfaces(pods: PodrunEnv, busybox_aci: Path) -> None:
    r = pods.run(INSECURE, "run", "--net=host", busybox_aci, "--exec", "/bin/ls", "--",
                 "/sys/class/net", check=True)
    assert sorted(r.stdout.split()) == sorted(os.listdir("/sys/class/net"))
    assert len(r.stdout.split()) > 1  # more than lo: this is not a fresh namespace


def test_net_none_has_only_lo_and_it_is_up(pods: PodrunEnv, busybox_aci: Path) -> None:
    r = pods.run(INSECURE, "run", "--net=none", busybox_aci, "--exec", "/bin/sh", "--", "-c",
                 "ls /sys/class/net; cat /sys/class/net/lo/flags; ping -c1 -W1 127.0.0.1 "
                 ">/dev/null && echo ping-ok", check=True)
    lines = r.stdout.split()
    assert lines[0] == "lo" and len(lines) == 3, r.stdout
    assert int(lines[1], 16) & 0x1  # IFF_UP
    assert lines[2] == "ping-ok"

"""The stage1 contract of docs/stage1.md, seen from a stage1's side (root; real pods).

- A tiny third-party flavor (an ACI of one ``/bin/sh`` script, no builtin
  annotation) is exec'd by ``podrun run --stage1-path`` and ``--stage1-name``: it
  records its cwd (the pod dir in ``pods/run/``), its arguments (``--net=none`` …
  UUID last), ``PODRUN_LOCK_FD`` (an inherited fd of the pod dir whose lock is held:
  ``flock -n`` on the pod dir fails), ``PODRUN_PYTHON``/``PODRUN_DIR``, and its PID
  (``podrun run``'s own: an exec, not a child); the status file it writes is what
  ``podrun status`` shows, and its exit code is ``podrun run``'s.
- A stage1 with the wrong interface version is refused before any pod exists, and a
  builtin annotation on a foreign image does not buy the in-process fast path.
- The default flavor's own entrypoint scripts honour the same contract when run by
  hand on a prepared pod (what stage0 does by exec for a third-party flavor).
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PodrunEnv
from tests.podutil import INSECURE, fetch, pod_dirs, spawn, status

pytestmark = pytest.mark.root

RECORDER = r"""#!/bin/sh
# A third-party stage1 run entrypoint: records what stage0 handed it, then "runs"
# the pod by writing its app's status and exiting with the app's code.
out=@RECORD@
{
  echo "cwd=$(pwd -P)"
  echo "pid=$$"
  echo "lockfd=$PODRUN_LOCK_FD"
  echo "lockfd_target=$(readlink /proc/$$/fd/$PODRUN_LOCK_FD)"
  if flock -n "$PWD" true; then echo "flock=free"; else echo "flock=held"; fi
  echo "python=$PODRUN_PYTHON"
  echo "dir=$PODRUN_DIR"
  for a in "$@"; do echo "arg=$a"; done
} > "$out"
printf '{"pid": %d, "started": %s}' $$ "$(date +%s)" > runtime.json
mkdir -p apps/busybox
printf '{"exit_code": 7, "signal": null, "oom_killed": false, "started": 1, "finished": 2}' \
  > apps/busybox/status.json
exit 7
"""


def stage1_aci(root: Path, name: str, record: Path, **annotations: str) -> Path:
    """A stage1 ACI whose run entrypoint is :data:`RECORDER` writing to *record*."""
    from podrun.appc.aci import build_aci

    anns = {"podrun.io/stage1/interface-version": "1", "podrun.io/stage1/run": "/run.sh"}
    anns.update(annotations)
    src = root / f"{name.replace('/', '_')}.src"
    (src / "rootfs").mkdir(parents=True)
    script = src / "rootfs/run.sh"
    script.write_text(RECORDER.replace("@RECORD@", str(record)))
    script.chmod(0o755)
    m = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": name,
         "labels": [{"name": "version", "value": "1.0.0"}, {"name": "os", "value": "linux"},
                    {"name": "arch", "value": "amd64"}],
         "annotations": [{"name": k, "value": v} for k, v in anns.items()]}
    (src / "manifest").write_text(json.dumps(m))
    out = root / f"{name.replace('/', '_')}.aci"
    build_aci(src, out)
    return out


def read_record(path: Path) -> tuple[dict[str, str], list[str]]:
    facts: dict[str, str] = {}
    args: list[str] = []
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "arg":
            args.append(value)
        else:
            facts[key] = value
    return facts, args


def check_recorded(env: PodrunEnv, record: Path, proc: subprocess.Popen[str]) -> str:
    """Assert every fact the recorder wrote; returns the pod's UUID."""
    facts, args = read_record(record)
    uuid = args[-1]
    pod_dir = env.data_dir / "pods" / "run" / uuid
    assert facts["cwd"] == os.path.realpath(pod_dir)
    assert facts["pid"] == str(proc.pid)  # exec'd: podrun run's own PID
    assert int(facts["lockfd"]) > 2
    assert facts["lockfd_target"] == os.path.realpath(pod_dir)
    assert facts["flock"] == "held"
    assert facts["python"] == sys.executable
    assert facts["dir"] == str(env.data_dir)
    assert args[0] == "--net=none"
    assert "--stop-timeout=10.0" in args or "--stop-timeout=10" in args, args
    assert any(a.startswith("--cgroup-parent=/podrun-test-") for a in args), args
    assert "--debug" not in args and "--interactive" not in args
    return uuid


def test_external_stage1_by_path(pods: PodrunEnv, busybox_aci: Path, tmp_path: Path) -> None:
    record = tmp_path / "record"
    s1 = stage1_aci(tmp_path, "example.com/stage1-recorder", record)
    p = spawn(pods, INSECURE, "run", f"--stage1-path={s1}", busybox_aci)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 7, err
    uuid = check_recorded(pods, record, p)
    st = status(pods, uuid)
    assert st["state"] == "exited"  # the lock died with the stage1 process
    assert st["apps"][0]["name"] == "busybox" and st["apps"][0]["exit_code"] == 7
    assert st["pid"] == p.pid


def test_external_stage1_by_name_with_flags(pods: PodrunEnv, busybox_aci: Path,
                                            tmp_path: Path) -> None:
    record = tmp_path / "record"
    s1 = stage1_aci(tmp_path, "example.com/stage1-recorder", record)
    fetch(pods, s1)
    fetch(pods, busybox_aci)
    p = spawn(pods, "--debug", "run", "--stage1-name=example.com/stage1-recorder",
              "--net=host", "--hostname=h1", "--stop-timeout=3s", "example.com/busybox")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 7, err
    facts, args = read_record(record)
    assert facts["pid"] == str(p.pid)
    assert args[:3] == ["--net=host", "--hostname=h1", "--debug"], args
    assert "--stop-timeout=3.0" in args or "--stop-timeout=3" in args, args
    assert args[-1] == json.loads(pods.run("list", "--format=json").stdout)[0]["uuid"]


def test_foreign_builtin_annotation_is_still_exec(pods: PodrunEnv, busybox_aci: Path,
                                                  tmp_path: Path) -> None:
    """Only podrun's own flavor images are entered in-process; a foreign image that
    claims ``podrun.io/stage1/builtin=default`` is exec'd like any third party."""
    record = tmp_path / "record"
    s1 = stage1_aci(tmp_path, "example.com/fake-default", record,
                    **{"podrun.io/stage1/builtin": "default"})
    p = spawn(pods, INSECURE, "run", f"--stage1-path={s1}", busybox_aci)
    p.communicate(timeout=60)
    assert p.returncode == 7
    check_recorded(pods, record, p)


@pytest.mark.parametrize("version", ["2", None])
def test_wrong_interface_version_is_refused(pods: PodrunEnv, busybox_aci: Path,
                                            tmp_path: Path, version: str | None) -> None:
    record = tmp_path / "record"
    s1 = stage1_aci(tmp_path, "example.com/stage1-v2", record)
    if version is None:  # no interface-version annotation at all: not a stage1
        src = tmp_path / "example.com_stage1-v2.src"
        m = json.loads((src / "manifest").read_text())
        m["annotations"] = [a for a in m["annotations"] if "interface" not in a["name"]]
        (src / "manifest").write_text(json.dumps(m))
        from podrun.appc.aci import build_aci

        build_aci(src, s1, overwrite=True)
    else:
        s1 = stage1_aci(tmp_path / "v", "example.com/stage1-v2", record,
                        **{"podrun.io/stage1/interface-version": version})
    r = pods.run(INSECURE, "run", f"--stage1-path={s1}", busybox_aci)
    assert r.returncode == 254
    assert r.stderr.strip().splitlines()[-1].count("interface-version") == 1, r.stderr
    assert "podrun.io/stage1/interface-version" in r.stderr
    assert not record.exists()
    assert pod_dirs(pods) == []


def prepared_pod(env: PodrunEnv, *args: str | Path) -> tuple[str, Path, dict]:  # type: ignore[type-arg]
    uuid = env.run(INSECURE, "prepare", "--quiet", *args, check=True).stdout.strip()
    prepared = env.data_dir / "pods/prepared" / uuid
    run_dir = env.data_dir / "pods/run" / uuid
    os.rename(prepared, run_dir)  # what stage0 does before the exec
    return uuid, run_dir, json.loads((run_dir / "pod.json").read_text())


def locked(pod_dir: Path) -> int:
    fd = os.open(pod_dir, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_default_flavor_run_script_by_hand(pods: PodrunEnv, busybox_aci: Path,
                                           test_parent: str) -> None:
    """stage1-images/default/rootfs/podrun/run, exec'd as a third-party flavor would be:
    cwd = pod dir, the locked pod dir as an inherited fd, the documented flags."""
    uuid, pod_dir, info = prepared_pod(pods, busybox_aci, "--exec", "/bin/sh", "--",
                                       "-c", "echo by-hand; exit 5")
    assert info["stage1"]["builtin"] is True and info["stage1"]["flavor"] == "default"
    script = Path(info["stage1"]["tree"]) / "rootfs" / info["stage1"]["entrypoints"]["run"].lstrip("/")
    assert script.is_file() and os.stat(script).st_mode & stat.S_IXUSR
    fd = locked(pod_dir)
    try:
        env = dict(pods.env, PODRUN_LOCK_FD=str(fd), PODRUN_PYTHON=sys.executable)
        p = subprocess.Popen([str(script), "--net=none", "--stop-timeout=10",
                              f"--cgroup-parent={test_parent}", uuid],
                             cwd=pod_dir, env=env, pass_fds=(fd,), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
        out, err = p.communicate(timeout=60)
    finally:
        os.close(fd)
    assert p.returncode == 5, err
    assert out == "by-hand\n"
    rt = json.loads((pod_dir / "runtime.json").read_text())
    assert rt["pid"] == p.pid  # the script exec'd the interpreter: same PID
    assert rt["init_pid"] != p.pid and rt["net"] == "none"
    assert all(v.startswith("/sys/fs/cgroup/") and f"{test_parent}/podrun-{uuid}" in v
               for v in rt["cgroups"].values()), rt["cgroups"]
    st = json.loads((pod_dir / "apps/busybox/status.json").read_text())
    assert st["exit_code"] == 5 and st["signal"] is None and st["oom_killed"] is False
    assert status(pods, uuid)["state"] == "exited"


def test_default_flavor_run_script_rejects_unknown_flags(pods: PodrunEnv, busybox_aci: Path,
                                                         test_parent: str) -> None:
    uuid, pod_dir, info = prepared_pod(pods, busybox_aci)
    script = Path(info["stage1"]["tree"]) / "rootfs/podrun/run"
    fd = locked(pod_dir)
    try:
        r = subprocess.run([str(script), "--net=none", "--frobnicate", uuid], cwd=pod_dir,
                           env=dict(pods.env, PODRUN_LOCK_FD=str(fd), PODRUN_PYTHON=sys.executable),
                           pass_fds=(fd,),
                           capture_output=True, text=True, timeout=60)
    finally:
        os.close(fd)
    assert r.returncode == 254
    assert r.stderr.count("\n") == 1 and "--frobnicate" in r.stderr, r.stderr
    assert not (pod_dir / "runtime.json").exists()


def test_default_flavor_stop_and_gc_scripts(pods: PodrunEnv, busybox_aci: Path,
                                            tmp_path: Path) -> None:
    uf = tmp_path / "uuid"
    p = spawn(pods, INSECURE, "run", f"--uuid-file-save={uf}", busybox_aci, "--exec",
              "/bin/sleep", "--", "60")
    from tests.podutil import read_uuid, wait_for

    wait_for(lambda: any((d / "apps/busybox/pid").exists() for d in pod_dirs(pods)),
             what="app up")
    uuid = read_uuid(uf)
    pod_dir = pods.data_dir / "pods/run" / uuid
    tree = Path(json.loads((pod_dir / "pod.json").read_text())["stage1"]["tree"]) / "rootfs"
    try:
        r = subprocess.run([str(tree / "podrun/stop"), "--force", uuid], cwd=pod_dir,
                           env=dict(pods.env, PODRUN_PYTHON=sys.executable),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        p.communicate(timeout=30)
        assert p.returncode == 137
    finally:
        if p.poll() is None:
            pods.run("stop", "--force", uuid)
            p.communicate(timeout=30)
    fd = locked(pod_dir)
    try:
        r = subprocess.run([str(tree / "podrun/gc"), uuid], cwd=pod_dir,
                           env=dict(pods.env, PODRUN_PYTHON=sys.executable),
                           capture_output=True, text=True, timeout=30)
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr

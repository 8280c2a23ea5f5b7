"""The pod lifecycle library (podrun.stage0.pods), the stage1 stop/gc entrypoints and
the pod commands (list, status, cat-manifest, rm, gc, stop).

Pods are real pod dirs made through PodStore. A "running" pod is a real helper
process (HOLDER below) that inherits the pod's lock fd the way stage1 does, forks a
child that plays the pod init (it inherits the lock too), writes runtime.json with
both pids and their start times, and exits when the init dies. Killing both makes
the pod "exited" — nothing but the lock tells.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.errors import AmbiguousError, NotFoundError, PodError
from podrun.stage0 import pods as podlib
from podrun.stage0.pods import Pod, PodStore, write_json
from podrun.stage1 import gc as stage1gc
from podrun.stage1.stop import proc_starttime, stop_pod
from tests.images import actool_validate

HOLDER = r"""
import fcntl, json, os, signal, sys, time
from podrun.linux.calls import set_pdeathsig

lock_fd, pod_dir, marker, cgroups = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
fcntl.flock(lock_fd, fcntl.LOCK_EX)  # already ours: the description is inherited

def starttime(pid):
    data = open(f"/proc/{pid}/stat", "rb").read()
    return int(data[data.rfind(b")") + 2:].split()[19])

child = os.fork()
if child == 0:  # the "pod init": holds the inherited lock too
    set_pdeathsig(signal.SIGKILL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        time.sleep(3600)

def on_term(signum, frame):
    with open(marker, "w") as f:
        f.write("TERM")
    os.kill(child, signal.SIGKILL)

signal.signal(signal.SIGTERM, on_term)
rt = {"pid": os.getpid(), "pid_starttime": starttime(os.getpid()), "init_pid": child,
      "init_starttime": starttime(child), "started": time.time(), "cgroups": cgroups}
tmp = os.path.join(pod_dir, ".runtime.json.tmp")
with open(tmp, "w") as f:
    json.dump(rt, f)
os.rename(tmp, os.path.join(pod_dir, "runtime.json"))
print("ready", child, flush=True)
os.waitpid(child, 0)
"""

IMAGE_ID = "sha512-" + "ab" * 64


def pod_manifest(*apps: str) -> dict:
    return {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [{
            "name": name,
            "image": {"name": f"example.com/{name}", "id": IMAGE_ID,
                      "labels": [{"name": "version", "value": "1.0"}]},
            "app": {"exec": ["/bin/true"], "user": "0", "group": "0"},
        } for name in apps],
        "volumes": [],
        "isolators": [],
        "annotations": [],
        "ports": [],
    }


def write_pod_files(pod: Pod, apps: tuple[str, ...]) -> None:
    (pod.path / "pod").write_text(json.dumps(pod_manifest(*apps)))
    pod.update_info(stage1={"flavor": "test"})


def put_status(pod: Pod, app: str, code: int = 0, sig: int | None = None,
               oom: bool = False) -> None:
    write_json(pod.path / "apps" / app / "status.json", {
        "exit_code": code, "signal": sig, "oom_killed": oom,
        "started": time.time() - 1, "finished": time.time()})


def wait_for(cond, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    return data[data.rfind(b")") + 2:].split()[0] != b"Z"


class Holder:
    """A real process holding a pod's lock (stage1) with a forked child (the pod init)."""

    def __init__(self, pod: Pod, tmp: Path, cgroups: dict | None = None) -> None:
        self.marker = tmp / f"term-{pod.uuid}"
        assert pod.lock_fd is not None
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(pod.lock_fd), str(pod.path), str(self.marker),
             json.dumps(cgroups or {})],
            pass_fds=(pod.lock_fd,), stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "ready", line
        self.pid = self.proc.pid
        self.init_pid = int(line[1])

    def kill(self) -> None:
        """kill -9 both; return once both are dead (so the lock is free)."""
        for pid in (self.init_pid, self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        wait_for(lambda: not alive(self.init_pid), what=f"pid {self.init_pid} to die")


@pytest.fixture
def store(tmp_path: Path) -> PodStore:
    return PodStore(tmp_path / "data")


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    hs: list[Holder] = []
    yield hs
    for h in hs:
        h.kill()


def make_pod(store: PodStore, to: str = "prepared", apps: tuple[str, ...] = ("web",)) -> Pod:
    pod = store.create()
    write_pod_files(pod, apps)
    if to != "prepare":
        pod.move("prepared")
    if to == "run":
        pod.move("run")
    pod.unlock()
    return pod


def start_pod(store: PodStore, holders: list[Holder], tmp: Path, *, in_dir: str = "run",
              apps: tuple[str, ...] = ("web",), cgroups: dict | None = None) -> tuple[Pod, Holder]:
    """A pod in *in_dir* whose lock a real process holds (as stage1 would)."""
    pod = store.create()
    write_pod_files(pod, apps)
    if in_dir == "run":
        pod.move("prepared")
        pod.move("run")
    h = Holder(pod, tmp, cgroups)
    holders.append(h)
    pod.unlock()  # the holder keeps the lock: same open file description
    return pod, h


def exited_pod(store: PodStore, holders: list[Holder], tmp: Path,
               apps: tuple[str, ...] = ("web",)) -> Pod:
    pod, h = start_pod(store, holders, tmp, apps=apps)
    h.kill()
    return pod


# -- layout, create, states ---------------------------------------------------------


def test_create_locks_and_moves_to_prepare(store: PodStore) -> None:
    pod = store.create()
    try:
        assert pod.dir_state == "prepare"
        assert pod.path == store.pods_dir / "prepare" / pod.uuid
        assert pod.path.is_dir() and not (store.pods_dir / "embryo" / pod.uuid).exists()
        assert str(uuidlib.UUID(pod.uuid)) == pod.uuid
        assert pod.lock_fd is not None
        assert pod.state() == "preparing"
        assert abs(pod.created - time.time()) < 5
        assert pod.started is None and pod.runtime() is None
        # a second Pod object for the same dir sees the lock (a new open file description)
        other = store.get(pod.uuid)
        assert other.lock(blocking=False) is False and other.lock_fd is None
        assert sorted(p.name for p in store.pods_dir.iterdir()) == sorted(podlib.STATE_DIRS)
    finally:
        pod.unlock()
    assert pod.state() == "aborted-prepare"


def test_pod_manifest_is_valid_for_actool(tmp_path: Path) -> None:
    f = tmp_path / "pod_manifest.json"
    f.write_text(json.dumps(pod_manifest("web", "db")))
    res = actool_validate(f)
    assert res.returncode == 0, res.stdout + res.stderr


def test_lock_fd_survives_move_and_is_cloexec(store: PodStore) -> None:
    pod = store.create()
    fd = pod.lock_fd
    assert fd is not None and not os.get_inheritable(fd)
    pod.move("prepared")
    pod.move("run")
    assert pod.lock_fd == fd and pod.path.parent.name == "run"
    assert os.fstat(fd).st_ino == pod.path.stat().st_ino
    assert pod.state() == "running"
    pod.unlock()
    assert pod.lock_fd is None and pod.state() == "exited"
    pod.lock(cloexec=False)
    assert os.get_inheritable(pod.lock_fd)
    pod.unlock()


def test_lock_relocates_when_pod_moved(store: PodStore) -> None:
    pod = make_pod(store)
    stale = Pod(store.pods_dir, pod.uuid, "prepared")
    pod.lock()
    pod.move("run")
    pod.unlock()
    assert stale.lock(blocking=False) and stale.dir_state == "run"
    stale.unlock()
    assert stale.state() == "exited"


def test_states_with_real_lock_holder(store: PodStore, holders: list[Holder],
                                      tmp_path: Path) -> None:
    prepared = make_pod(store)
    assert prepared.state() == "prepared"
    pod, h = start_pod(store, holders, tmp_path)
    assert pod.state() == "running"
    rt = pod.runtime()
    assert rt["pid"] == h.pid and rt["init_pid"] == h.init_pid
    assert rt["pid_starttime"] == proc_starttime(h.pid)
    assert pod.started == pytest.approx(rt["started"])
    h.kill()  # kill -9 stage1 and the init: nothing but the lock tells
    assert pod.state() == "exited"
    prep, ph = start_pod(store, holders, tmp_path, in_dir="prepare")
    assert prep.state() == "preparing"
    ph.kill()
    assert prep.state() == "aborted-prepare"
    embryo = store.pods_dir / "embryo" / str(uuidlib.uuid4())
    embryo.mkdir()
    states = {p.uuid: p.state() for p in store.list()}
    assert states == {prepared.uuid: "prepared", pod.uuid: "exited",
                      prep.uuid: "aborted-prepare", embryo.name: "embryo"}


def test_list_sorted_by_created(store: PodStore) -> None:
    pods = [make_pod(store) for _ in range(3)]
    pods[0].update_info(created=time.time() + 100)
    assert [p.uuid for p in store.list()] == [pods[1].uuid, pods[2].uuid, pods[0].uuid]
    assert store.list()[0].info()["stage1"] == {"flavor": "test"}


def test_get_by_prefix_and_ambiguity(store: PodStore) -> None:
    a = "0123abcd-0000-4000-8000-000000000001"
    b = "0123abce-0000-4000-8000-000000000002"
    for u in (a, b):
        (store.pods_dir / "prepared" / u).mkdir(parents=True)
    assert store.get(a).uuid == a
    assert store.get("0123abcd").uuid == a
    assert store.get("0123ABCE").uuid == b
    with pytest.raises(AmbiguousError, match="0123abc"):
        store.get("0123abc")
    with pytest.raises(NotFoundError):
        store.get("ffff")
    with pytest.raises(NotFoundError):
        store.get("")


# -- statuses and exit codes --------------------------------------------------------


def test_app_statuses_and_exit_code_rule(store: PodStore) -> None:
    one = make_pod(store, "run")
    assert one.app_statuses() == {"web": None} and one.exit_code() is None
    put_status(one, "web", sig=9)
    assert one.exit_code() == 128 + 9
    put_status(one, "web", code=3)
    assert one.exit_code() == 3 and one.app_statuses()["web"]["exit_code"] == 3

    many = make_pod(store, "run", apps=("a", "b", "c"))
    put_status(many, "a", 0)
    put_status(many, "c", 7)
    assert many.exit_code() is None  # b has not finished
    put_status(many, "b", 5)
    assert many.exit_code() == 5  # first non-zero in manifest order
    assert list(many.app_statuses()) == ["a", "b", "c"]
    for app in "abc":
        put_status(many, app, 0)
    assert many.exit_code() == 0


def test_manifest_raw_and_typed(store: PodStore) -> None:
    pod = make_pod(store, apps=("web", "db"))
    assert pod.manifest_json()["apps"][1]["name"] == "db"
    assert pod.app_names() == ["web", "db"]
    try:
        import podrun.appc.manifest  # noqa: F401  (written by another helper)
    except ImportError:
        pytest.skip("podrun.appc.manifest not there yet")
    m = pod.manifest()
    assert [a.name for a in m.apps] == ["web", "db"]


# -- gc -------------------------------------------------------------------------


def test_gc_marks_then_sweeps_after_grace(store: PodStore, holders: list[Holder],
                                          tmp_path: Path) -> None:
    running, _ = start_pod(store, holders, tmp_path)
    exited = exited_pod(store, holders, tmp_path)
    prepared = make_pod(store)
    logs: list[str] = []
    assert store.gc(3600, 86400, log=logs.append) == []
    exited.relocate()
    assert exited.dir_state == "exited-garbage" and exited.state() == "exited-garbage"
    assert abs(exited.gc_info()["marked"] - time.time()) < 5
    assert running.state() == "running" and prepared.state() == "prepared"
    assert any(exited.uuid in line and "exited-garbage" in line for line in logs)
    # within the grace period nothing is deleted
    assert store.gc(3600, 86400) == []
    assert exited.path.is_dir()
    # once the grace period has passed it is swept
    write_json(exited.path / "gc.json", {"marked": time.time() - 7200})
    assert store.gc(3600, 86400) == [exited.uuid]
    assert not exited.path.exists()
    assert {p.uuid for p in store.list()} == {running.uuid, prepared.uuid}


def test_gc_mark_only_and_zero_grace(store: PodStore, holders: list[Holder],
                                     tmp_path: Path) -> None:
    pod = exited_pod(store, holders, tmp_path)
    assert store.gc(0, 86400, mark_only=True) == []
    pod.relocate()
    assert pod.dir_state == "exited-garbage"
    assert store.gc(0, 86400) == [pod.uuid]
    assert store.list() == []


def test_gc_aborted_prepare_goes_to_garbage(store: PodStore, holders: list[Holder],
                                            tmp_path: Path) -> None:
    pod, h = start_pod(store, holders, tmp_path, in_dir="prepare")
    store.gc(3600, 86400, mark_only=True)
    assert pod.state() == "preparing"  # its preparer is alive: untouched
    h.kill()
    store.gc(3600, 86400, mark_only=True)
    pod.relocate()
    assert pod.dir_state == "garbage"
    assert store.gc(3600, 86400) == [pod.uuid]  # garbage/ needs no grace
    assert not pod.path.exists()


def test_gc_expires_old_prepared_and_stale_embryos(store: PodStore,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pod = make_pod(store)
    embryo = store.pods_dir / "embryo" / str(uuidlib.uuid4())
    embryo.mkdir()
    assert store.gc(0, 3600) == []
    assert pod.state() == "prepared" and embryo.is_dir()  # young: kept
    assert store.gc(0, 0) == [pod.uuid]  # prepared longer than expire_prepared
    assert not pod.path.exists() and embryo.is_dir()
    monkeypatch.setattr(podlib, "EMBRYO_EXPIRY", 0.0)  # as if a minute had passed
    assert store.gc(0, 3600) == [embryo.name]
    assert store.list() == []


def test_gc_skips_locked_prepared_pod(store: PodStore) -> None:
    pod = make_pod(store)
    pod.lock()  # run-prepared is starting it
    try:
        assert store.gc(0, 0) == []
        assert pod.path.is_dir() and pod.dir_state == "prepared"
    finally:
        pod.unlock()


def test_gc_goes_on_when_one_teardown_fails(store: PodStore, holders: list[Holder],
                                            tmp_path: Path) -> None:
    bad = exited_pod(store, holders, tmp_path)
    good = exited_pod(store, holders, tmp_path)
    (bad.path / "runtime.json").write_text("{not json")  # stage1 gc cannot read it
    errors: list[tuple[str, str]] = []
    removed = store.gc(0, 86400, on_error=lambda u, m: errors.append((u, m)))
    assert removed == [good.uuid]
    assert [u for u, _ in errors] == [bad.uuid] and "runtime.json" in errors[0][1]
    bad.relocate()
    assert bad.dir_state == "exited-garbage"  # left for the next gc
    (bad.path / "runtime.json").write_text("{}")
    assert store.gc(0, 86400) == [bad.uuid]


# -- rm -------------------------------------------------------------------------


def test_remove(store: PodStore, holders: list[Holder], tmp_path: Path) -> None:
    running, h = start_pod(store, holders, tmp_path)
    with pytest.raises(PodError, match=f"pod {running.uuid} is running \\(stop it first\\)"):
        store.remove(running)
    assert running.state() == "running"
    h.kill()
    store.remove(running)
    assert not running.path.exists()
    prepared = make_pod(store)
    store.remove(prepared)
    assert store.list() == []
    preparing = store.create()
    try:
        with pytest.raises(PodError, match="being prepared"):
            store.remove(store.get(preparing.uuid))
    finally:
        preparing.unlock()
    store.remove(store.get(preparing.uuid))  # aborted prepare
    assert store.list() == []


# -- stop -----------------------------------------------------------------------


def test_proc_starttime() -> None:
    me = proc_starttime(os.getpid())
    assert isinstance(me, int) and me > 0
    assert proc_starttime(os.getpid()) == me
    p = subprocess.Popen(["sleep", "0"])
    p.wait()
    assert proc_starttime(p.pid) is None


def test_stop_sends_sigterm_to_stage1(store: PodStore, holders: list[Holder],
                                      tmp_path: Path) -> None:
    pod, h = start_pod(store, holders, tmp_path)
    stop_pod(pod.path, force=False)
    assert h.proc.wait(10) == 0
    assert h.marker.read_text() == "TERM"
    wait_for(lambda: pod.state() == "exited", what="pod exited")


def test_stop_force_kills_the_init(store: PodStore, holders: list[Holder],
                                   tmp_path: Path) -> None:
    pod, h = start_pod(store, holders, tmp_path)
    stop_pod(pod.path, force=True)
    assert h.proc.wait(10) == 0  # stage1 saw its init die
    assert not h.marker.exists()  # no SIGTERM went anywhere
    assert not alive(h.init_pid)
    wait_for(lambda: pod.state() == "exited", what="pod exited")


def test_stop_never_signals_a_stale_pid(store: PodStore, holders: list[Holder],
                                        tmp_path: Path) -> None:
    pod, h = start_pod(store, holders, tmp_path)
    rt = pod.runtime()
    # same pid, another start time: a recycled pid
    write_json(pod.path / "runtime.json", {**rt, "pid_starttime": rt["pid_starttime"] - 1,
                                           "init_starttime": rt["init_starttime"] + 1})
    with pytest.raises(PodError, match="another process"):
        stop_pod(pod.path, force=False)
    with pytest.raises(PodError, match="another process"):
        stop_pod(pod.path, force=True)
    # a pid whose process is gone
    gone = subprocess.Popen(["sleep", "0"])
    gone.wait()
    write_json(pod.path / "runtime.json", {**rt, "pid": gone.pid})
    with pytest.raises(PodError, match="gone"):
        stop_pod(pod.path, force=False)
    # no start time recorded: refuse
    write_json(pod.path / "runtime.json", {k: v for k, v in rt.items() if k != "pid_starttime"})
    with pytest.raises(PodError, match="no start time"):
        stop_pod(pod.path, force=False)
    assert h.proc.poll() is None and alive(h.init_pid) and not h.marker.exists()
    assert pod.state() == "running"


def test_stop_refuses_an_exited_pod_with_a_live_recorded_pid(
        store: PodStore, holders: list[Holder], tmp_path: Path) -> None:
    pod = exited_pod(store, holders, tmp_path)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        write_json(pod.path / "runtime.json", {
            "pid": bystander.pid, "pid_starttime": proc_starttime(bystander.pid),
            "init_pid": bystander.pid, "init_starttime": proc_starttime(bystander.pid)})
        for force in (False, True):
            with pytest.raises(PodError, match="not running"):
                stop_pod(pod.path, force=force)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# -- stage1 gc: cgroups and mounts (root) ----------------------------------------


@pytest.fixture
def pids_parent() -> Iterator[Path]:
    """A test-owned parent cgroup at the pids hierarchy root."""
    root = Path("/sys/fs/cgroup/pids")
    if not (root / "cgroup.procs").exists():
        pytest.skip("no v1 pids hierarchy at /sys/fs/cgroup/pids")
    parent = root / f"podrun-test-{uuidlib.uuid4().hex[:8]}"
    parent.mkdir()
    yield parent
    from podrun.stage2.cgroups.common import procs, remove_tree

    for pid in procs(parent):
        os.kill(pid, signal.SIGKILL)
    remove_tree(parent)


def _sleeper_in(cgroup: Path) -> subprocess.Popen:
    p = subprocess.Popen(["sleep", "300"])
    (cgroup / "cgroup.procs").write_text(str(p.pid))
    return p


@pytest.mark.root
def test_gc_pod_kills_and_removes_cgroups(store: PodStore, pids_parent: Path) -> None:
    pod = make_pod(store, "run")
    podcg = pids_parent / "pod"
    appcg = podcg / "app"
    appcg.mkdir(parents=True)
    relcg = pids_parent / "other"
    relcg.mkdir()
    a, b, c = _sleeper_in(podcg), _sleeper_in(appcg), _sleeper_in(relcg)
    outside = subprocess.Popen(["sleep", "300"])  # not in the pod's cgroups
    try:
        write_json(pod.path / "runtime.json", {"cgroups": {"pids": str(podcg)}})
        stage1gc.gc_pod(pod.path)
        for p in (a, b):
            assert p.wait(10) == -signal.SIGKILL
        assert outside.poll() is None and c.poll() is None  # not in the pod's cgroups
        assert not podcg.exists() and relcg.is_dir()
        assert pids_parent.is_dir()  # never the parent
        stage1gc.gc_pod(pod.path)  # idempotent
    finally:
        for p in (a, b, c, outside):
            p.kill()
            p.wait()


@pytest.mark.root
def test_resolve_cgroups_is_confined(pids_parent: Path) -> None:
    mine = pids_parent / "pod"
    mine.mkdir()
    got = stage1gc.resolve_cgroups({
        "pids": str(mine),
        "memory": "/sys/fs/cgroup/memory",  # a hierarchy root: never
        "unified": "/sys/fs/cgroup/unified/",
        "cpu": "/sys/fs/cgroup/cpu/../../../etc",  # climbs out
        "cpuset": "/sys/fs/cgroup",  # the tmpfs holding the mounts
        "x": "relative/path",
        "y": "/tmp",
        "z": 42,
    })
    assert got == [mine]
    assert stage1gc.resolve_cgroups({"pids": f"/{pids_parent.name}/pod"}) == []
    assert stage1gc.resolve_cgroups({"pids": "/"}) == []


def _mounts_under(path: Path) -> list[str]:
    return [mp for _, mp in stage1gc.mounts_below(path)]


@pytest.fixture
def mount_cleanup() -> Iterator[list[Path]]:
    roots: list[Path] = []
    yield roots
    for r in roots:
        stage1gc.unmount_below(r)


@pytest.mark.root
def test_gc_pod_unmounts_below_pod_dir(store: PodStore, mount_cleanup: list[Path]) -> None:
    pod = make_pod(store, "run")
    mount_cleanup.append(pod.path)
    rootfs = pod.path / "stage1" / "rootfs"
    rootfs.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(rootfs)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(rootfs)], check=True)  # stacked
    (rootfs / "app dir").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(rootfs / "app dir")], check=True)
    # a busy mount: a process with its cwd inside it
    busy = subprocess.Popen(["sleep", "300"], cwd=rootfs / "app dir")
    try:
        assert len(_mounts_under(pod.path)) == 3
        assert str(rootfs / "app dir") in _mounts_under(pod.path)  # \040 unescaped
        stage1gc.gc_pod(pod.path)
        assert _mounts_under(pod.path) == []
        stage1gc.gc_pod(pod.path)  # idempotent
    finally:
        busy.kill()
        busy.wait()


@pytest.mark.root
def test_gc_sweeps_a_pod_with_mounts_and_cgroups(store: PodStore, holders: list[Holder],
                                                 tmp_path: Path, pids_parent: Path,
                                                 mount_cleanup: list[Path]) -> None:
    podcg = pids_parent / "pod"
    podcg.mkdir()
    pod, h = start_pod(store, holders, tmp_path, cgroups={"pids": str(podcg)})
    mount_cleanup.append(store.pods_dir)
    leftover = _sleeper_in(podcg)  # an app that outlived its pod
    mnt = pod.path / "apps" / "web" / "rootfs"
    mnt.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)
    try:
        h.kill()
        assert store.gc(0, 86400) == [pod.uuid]
        assert leftover.wait(10) == -signal.SIGKILL
        assert not podcg.exists() and _mounts_under(store.pods_dir) == []
        assert store.list() == []
    finally:
        leftover.kill()
        leftover.wait()


# -- the commands ---------------------------------------------------------------


def _store_of(podrun) -> PodStore:
    return PodStore(podrun.data_dir)


def test_cli_list(podrun, holders: list[Holder], tmp_path: Path) -> None:
    store = _store_of(podrun)
    assert podrun.run("list", "--no-legend").stdout == ""
    running, h = start_pod(store, holders, tmp_path, apps=("web", "db"))
    done = exited_pod(store, holders, tmp_path)
    put_status(done, "web", sig=15)
    res = podrun.run("list", "--format", "json", check=True)
    data = {d["uuid"]: d for d in json.loads(res.stdout)}
    assert data[running.uuid]["state"] == "running"
    assert data[running.uuid]["pid"] == h.pid
    assert [a["name"] for a in data[running.uuid]["apps"]] == ["web", "db"]
    assert data[running.uuid]["apps"][0] == {"name": "web", "image_name": "example.com/web",
                                             "image_id": IMAGE_ID}
    assert data[done.uuid]["state"] == "exited"
    assert data[done.uuid]["apps"][0]["exit_code"] == 128 + 15
    assert data[done.uuid]["apps"][0]["signal"] == 15
    assert isinstance(data[done.uuid]["created"], float)

    running.update_info(created=time.time() - 150)
    lines = podrun.run("list", check=True).stdout.splitlines()
    assert lines[0].split() == ["UUID", "APP", "IMAGE", "NAME", "STATE", "CREATED", "STARTED"]
    row = next(line for line in lines if line.startswith(running.uuid[:8] + " "))
    assert "web" in row and "example.com/web:1.0" in row and "running" in row and "2 minutes ago" in row
    assert running.uuid not in row  # short UUIDs
    extra = lines[lines.index(row) + 1]
    assert extra.split() == ["db", "example.com/db:1.0"]

    full = podrun.run("list", "--full", "--no-legend", check=True).stdout
    assert running.uuid in full and "UUID" not in full and "ago" not in full
    assert re.search(r"running\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", full)


def test_cli_status(podrun, holders: list[Holder], tmp_path: Path) -> None:
    store = _store_of(podrun)
    pod = exited_pod(store, holders, tmp_path, apps=("web", "db"))
    put_status(pod, "web", code=0)
    put_status(pod, "db", sig=9, oom=True)
    res = podrun.run("status", pod.uuid[:6], check=True)
    kv = dict(line.split("=", 1) for line in res.stdout.splitlines())
    assert kv["state"] == "exited" and kv["exited"] == "true"
    assert kv["app-web"] == "0" and kv["app-db"] == str(128 + 9)
    assert kv["app-db-signal"] == "9" and kv["app-db-oom-killed"] == "true"
    assert "app-web-signal" not in kv and "created" in kv and "started" in kv
    assert int(kv["pid"]) > 0
    assert res.stdout.splitlines()[0] == "state=exited"
    js = json.loads(podrun.run("status", pod.uuid, "--format", "json", check=True).stdout)
    assert js["uuid"] == pod.uuid and js["exit_code"] == 128 + 9 and js["exited"] is True
    assert [a["name"] for a in js["apps"]] == ["web", "db"]

    prepared = make_pod(store)
    kv = dict(line.split("=", 1)
              for line in podrun.run("status", prepared.uuid, check=True).stdout.splitlines())
    assert kv == {"state": "prepared", "created": kv["created"], "pid": "-1",
                  "exited": "false"}

    bad = podrun.run("status", "nosuchpod")
    assert bad.returncode == 254 and bad.stderr.startswith("podrun: ")
    assert len(bad.stderr.splitlines()) == 1


def test_cli_status_wait(podrun, holders: list[Holder], tmp_path: Path) -> None:
    store = _store_of(podrun)
    pod, h = start_pod(store, holders, tmp_path)
    res = podrun.run("status", "--wait=300ms", pod.uuid)
    assert res.returncode == 254 and "timed out" in res.stderr

    def finish() -> None:
        time.sleep(0.5)
        put_status(pod, "web", code=4)
        h.kill()

    t = threading.Thread(target=finish)
    t.start()
    start = time.monotonic()
    res = podrun.run("status", "--wait", pod.uuid, check=True)  # ``--wait UUID``
    t.join()
    assert time.monotonic() - start >= 0.4
    assert "state=exited" in res.stdout and "app-web=4" in res.stdout

    pod2, h2 = start_pod(store, holders, tmp_path)
    threading.Timer(0.3, h2.kill).start()
    res = podrun.run("status", "--wait=20s", pod2.uuid, "--format", "json", check=True)
    assert json.loads(res.stdout)["state"] == "exited"


def test_cli_cat_manifest(podrun) -> None:
    pod = make_pod(_store_of(podrun), apps=("web",))
    res = podrun.run("cat-manifest", pod.uuid[:8], check=True)
    assert json.loads(res.stdout) == pod_manifest("web")
    pretty = podrun.run("cat-manifest", "--pretty-print", pod.uuid, check=True).stdout
    assert json.loads(pretty) == pod_manifest("web") and "\n  " in pretty


def test_cli_rm(podrun, holders: list[Holder], tmp_path: Path) -> None:
    store = _store_of(podrun)
    running, _ = start_pod(store, holders, tmp_path)
    done = exited_pod(store, holders, tmp_path)
    prepared = make_pod(store)
    res = podrun.run("rm", running.uuid, done.uuid[:8], "nosuch", prepared.uuid)
    assert res.returncode == 254
    assert res.stdout.split() == [done.uuid, prepared.uuid]
    errs = res.stderr.splitlines()
    assert len(errs) == 2 and all(e.startswith("podrun: ") for e in errs)
    assert f"pod {running.uuid} is running (stop it first)" in errs[0]
    assert [p.uuid for p in store.list()] == [running.uuid]


def test_cli_gc(podrun, holders: list[Holder], tmp_path: Path) -> None:
    store = _store_of(podrun)
    done = exited_pod(store, holders, tmp_path)
    res = podrun.run("gc", "--mark-only", check=True)
    done.relocate()
    assert done.dir_state == "exited-garbage" and done.uuid in res.stderr
    podrun.run("gc", check=True)  # within the default 30m grace
    assert done.path.is_dir()
    podrun.run("gc", "--grace-period=0s", check=True)
    assert store.list() == []
    bad = podrun.run("gc", "--grace-period=soon")
    assert bad.returncode == 254 and "--grace-period" in bad.stderr


def test_cli_stop(podrun, holders: list[Holder], tmp_path: Path) -> None:
    store = _store_of(podrun)
    pod, h = start_pod(store, holders, tmp_path)
    pod2, h2 = start_pod(store, holders, tmp_path)
    prepared = make_pod(store)
    res = podrun.run("stop", pod.uuid, prepared.uuid)
    assert res.returncode == 254 and res.stdout.split() == [pod.uuid]
    assert f"pod {prepared.uuid} is not running" in res.stderr
    assert h.proc.wait(10) == 0 and h.marker.read_text() == "TERM"
    res = podrun.run("stop", "--force", pod2.uuid[:8], check=True)
    assert res.stdout.split() == [pod2.uuid]
    assert h2.proc.wait(10) == 0 and not h2.marker.exists()
    wait_for(lambda: pod2.state() == "exited", what="pod exited")


# -- with the real ``podrun run`` -------------------------------------------------


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """``/podrun-test-<id>`` made at every hierarchy root (never below our own cgroups)."""
    name = f"podrun-test-{uuidlib.uuid4().hex[:8]}"
    roots = [p for p in Path("/sys/fs/cgroup").iterdir()
             if (p / "cgroup.procs").exists() and p.name != "systemd"]
    made = []
    for root in roots:
        (root / name).mkdir()
        made.append(root / name)
    yield f"/{name}"
    from podrun.stage2.cgroups.common import procs, remove_tree

    for d in made:
        for pid in procs(d):
            os.kill(pid, signal.SIGKILL)
        remove_tree(d)


@pytest.mark.root
@pytest.mark.slow
def test_real_pod_list_status_stop_gc(podrun, tmp_path: Path, cgroup_parent: str) -> None:
    from tests.images import tiny_aci

    aci = tiny_aci(tmp_path, "example.com/sleeper", busybox=True,
                   exec_=["/bin/sh", "-c", "sleep 60"])
    run = subprocess.Popen(
        [sys.executable, "-m", "podrun", "run", "--insecure-options=image",
         f"--cgroup-parent={cgroup_parent}", str(aci)],
        env=podrun.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    store = _store_of(podrun)
    try:
        wait_for(lambda: [p.state() for p in store.list()] == ["running"]
                 and store.list()[0].runtime() and "init_pid" in store.list()[0].runtime(),
                 timeout=30, what="the pod to run")
        pod = store.list()[0]
        rt = pod.runtime()
        assert rt["pid"] == run.pid  # stage1 runs in podrun's own process
        kv = dict(line.split("=", 1) for line in
                  podrun.run("status", pod.uuid[:8], check=True).stdout.splitlines())
        assert kv["state"] == "running" and kv["pid"] == str(run.pid)
        listed = json.loads(podrun.run("list", "--format", "json", check=True).stdout)
        assert listed[0]["apps"][0]["name"] == "sleeper"
        assert podrun.run("rm", pod.uuid).returncode == 254
        assert podrun.run("stop", pod.uuid, check=True).stdout.strip() == pod.uuid
        res = podrun.run("status", "--wait=30s", pod.uuid, check=True)
        kv = dict(line.split("=", 1) for line in res.stdout.splitlines())
        assert kv["state"] == "exited" and kv["app-sleeper"] == str(128 + 15)
        assert run.wait(30) == 128 + 15  # podrun run's exit code: the app's
        podrun.run("gc", "--grace-period=0s", check=True)
        assert store.list() == []
        for hier, path in rt["cgroups"].items():
            assert not Path(path).exists(), hier
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate(timeout=30)
        podrun.run("gc", "--grace-period=0s")

"""Pod benchmark: start time against runc and crun, multi-app pods, idle runtime memory.

Start: ``podrun run --net=none`` of a cached busybox image running ``/bin/true``,
alternated with ``runc run`` and ``crun run`` of an OCI bundle over a busybox rootfs
made the same way (``runc spec``; root = that rootfs read-only, args ``/bin/true``,
no terminal, runc's default namespaces pid/net/ipc/uts/mount). runc 1.1 manages
cgroups with cgroupfs by default (it has no ``--cgroup-manager`` flag) and its
``linux.cgroupsPath`` points below the benchmark's own cgroup parent. crun refuses
this machine's hybrid cgroup layout, so it runs as
``unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec crun …'`` (the cgroup2 mount
hidden in a private mount namespace); podrun needs no such trick. Medians, plus the
median of the per-run ratios podrun/runc. Goal: podrun start ≤ 1.0× runc.

Apps: pods of 1, 5 and 20 ``/bin/true`` apps (podrun only), alternated.

Memory: the runtime-side PSS (``/proc/<pid>/smaps_rollup``) of an idle one-app pod
whose app is ``sleep 30``: podrun's own processes (the ``podrun run`` process, which
is the stage1 supervisor, plus the pod init; both from the pod's ``runtime.json``),
not the app; against a foreground ``runc run`` (the runc process while the container
sleeps), crun likewise, and podman's ``conmon`` (monitoring a runc container) when
installed. Goal: idle pod ≤ 3 MB PSS.

Every podrun pod and OCI container gets a cgroup below ``/podrun-bench-<rand>``,
made here at each hierarchy root and removed at the end.

Usage (root, from the repo root): ``.venv/bin/python bench/pods.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchutil import (
    PODRUN,
    bench_parent,
    machine,
    median,
    mounts_under,
    paired_ratio,
    require_root,
    table,
    timed,
    timed_out,
    unmount_all_under,
)

START_GOAL = 1.0  # podrun / runc
PSS_GOAL_MB = 3.0
CRUN_NOTE = ("crun runs as `unshare -m sh -c 'umount /sys/fs/cgroup/unified; exec crun ...'`: "
             "it refuses this hybrid cgroup layout otherwise; podrun needs no such trick.")


@dataclass
class Env:
    tmp: Path
    parent: str
    image_id: str = ""

    @property
    def data(self) -> Path:
        return self.tmp / "podrun"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PODRUN_DIR=str(self.data), PODRUN_LOCAL_CONFIG=str(self.data / "etc"),
                   PODRUN_SYSTEM_CONFIG=str(self.data / "lib"))
        env.pop("PODRUN_INSECURE_OPTIONS", None)
        return env

    def podrun(self, *args: str | Path, **kw: object) -> tuple[float, str]:
        return timed_out([PODRUN, *args], env=self.env, **kw)


# setup ----------------------------------------------------------------------------------

def setup_podrun(e: Env) -> None:
    from tests.images import tiny_aci

    for d in ("", "etc", "lib"):
        (e.data / d).mkdir(parents=True, exist_ok=True)
    aci = tiny_aci(e.tmp / "img", "example.com/bench-busybox", busybox=True,
                   exec_=["/bin/true"])
    _, out = e.podrun("--insecure-options=image", "fetch", aci)
    e.image_id = out.strip()
    podrun_true(e)  # warm-up: imports the stage1 flavor and renders both trees


def bundle(e: Env, name: str, args: list[str]) -> Path:
    """An OCI bundle ``tmp/bundle-<name>`` over the shared busybox rootfs."""
    from tests.images import busybox_rootfs

    rootfs = e.tmp / "rootfs"
    if not rootfs.exists():
        busybox_rootfs(rootfs)
    b = e.tmp / f"bundle-{name}"
    b.mkdir()
    subprocess.run(["runc", "spec"], cwd=b, check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["root"] = {"path": str(rootfs), "readonly": True}
    cfg["process"]["args"] = args
    cfg["process"]["terminal"] = False
    cfg["linux"]["cgroupsPath"] = f"{e.parent}/{name}"
    (b / "config.json").write_text(json.dumps(cfg, indent=2))
    return b


# the start commands ---------------------------------------------------------------------

def podrun_pod(e: Env, n_apps: int) -> float:
    """``podrun run`` of ``n_apps`` true apps; removes the exited pod (untimed)."""
    uuid_file = e.tmp / "uuid"
    uuid_file.unlink(missing_ok=True)
    apps: list[str] = []
    for i in range(n_apps):
        apps += [e.image_id] + ([f"--name=a{i}"] if n_apps > 1 else [])
    dt, _ = e.podrun("run", "--net=none", f"--cgroup-parent={e.parent}",
                     f"--uuid-file-save={uuid_file}", *apps)
    e.podrun("rm", uuid_file.read_text().strip())
    return dt


def podrun_true(e: Env) -> float:
    return podrun_pod(e, 1)


def oci_cmd(runtime: str, state: Path, verb: list[str]) -> list[str]:
    if runtime == "crun":
        inner = " ".join(["exec", "crun", f"--root={state}", *verb])
        return ["unshare", "-m", "sh", "-c", f"umount /sys/fs/cgroup/unified; {inner}"]
    return ["runc", f"--root={state}", *verb]


def oci_true(e: Env, runtime: str, n: int) -> float:
    b = e.tmp / f"bundle-{runtime}"
    return timed(oci_cmd(runtime, e.tmp / f"state-{runtime}", ["run", "-b", str(b),
                                                                f"{runtime}-{n}"]))


def crun_plain(e: Env) -> str:
    """What crun says when run without the unshare trick on this host."""
    state = e.tmp / "state-crun"
    p = subprocess.run(["crun", f"--root={state}", "run", "-b", str(e.tmp / "bundle-crun"),
                        "crun-plain"], capture_output=True, text=True)
    subprocess.run(["crun", f"--root={state}", "delete", "--force", "crun-plain"],
                   capture_output=True)
    if p.returncode == 0:
        return "plain `crun run` worked on this host"
    return f"plain `crun run` fails here: {p.stderr.strip().splitlines()[-1]}"


def bench_start(e: Env, runs: int) -> tuple[dict[str, list[float]], str]:
    for rt in ("runc", "crun"):
        bundle(e, rt, ["/bin/true"])
        (e.tmp / f"state-{rt}").mkdir()
        oci_true(e, rt, -1)  # warm-up
    plain = crun_plain(e)
    t: dict[str, list[float]] = {"podrun": [], "runc": [], "crun": [],
                                 "(python -c pass)": [], "(podrun version)": []}
    for i in range(runs):
        t["podrun"].append(podrun_true(e))
        t["runc"].append(oci_true(e, "runc", i))
        t["crun"].append(oci_true(e, "crun", i))
        t["(python -c pass)"].append(timed([sys.executable, "-c", "pass"]))
        t["(podrun version)"].append(e.podrun("version")[0])
    return t, plain


def bench_apps(e: Env, runs: int) -> dict[int, list[float]]:
    t: dict[int, list[float]] = {1: [], 5: [], 20: []}
    for _ in range(runs):
        for n in t:
            t[n].append(podrun_pod(e, n))
    return t


# memory ---------------------------------------------------------------------------------

Mem = tuple[int, int]  # (PSS, USS) in kB


def mem_kb(pid: int) -> Mem:
    """PSS and USS (Private_Clean + Private_Dirty) of ``pid`` from smaps_rollup, in kB."""
    f: dict[str, int] = {}
    for ln in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        k, _, v = ln.partition(":")
        if v.strip().endswith("kB"):
            f[k] = int(v.split()[0])
    return f["Pss"], f["Private_Clean"] + f["Private_Dirty"]


def add(a: Mem, b: Mem) -> Mem:
    return a[0] + b[0], a[1] + b[1]


def children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def wait_for(pred: Callable[[], object], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def has_sleeping_child(pid: int) -> bool:
    todo = [pid]
    while todo:
        p = todo.pop()
        if comm(p) == "sleep":
            return True
        todo += children(p)
    return False


def stop_proc(proc: subprocess.Popen[bytes], stop: Callable[[], object]) -> None:
    try:
        stop()
        proc.wait(timeout=15)
    except BaseException as exc:
        proc.kill()
        proc.wait()
        if not isinstance(exc, Exception):
            raise


def mem_podrun(e: Env) -> tuple[Mem, Mem, str]:
    """PSS (kB) of the supervisor and of the pod init of an idle sleep pod; a note of extras."""
    uuid_file = e.tmp / "uuid-mem"
    uuid_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [str(PODRUN), "run", "--net=none", f"--cgroup-parent={e.parent}",
         f"--uuid-file-save={uuid_file}", e.image_id, "--exec", "/bin/sleep", "--", "30"],
        env=e.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: uuid_file.exists() and uuid_file.read_text().strip(), "pod uuid")
        uuid = uuid_file.read_text().strip()
        rt = e.data / "pods" / "run" / uuid / "runtime.json"
        wait_for(lambda: rt.exists() and "init_pid" in json.loads(rt.read_text() or "{}"),
                 "runtime.json with init_pid")
        wait_for(lambda: has_sleeping_child(proc.pid), "the app to run")
        # An idle pod: stage1 hands over to its native loop once the pod has run 1 s.
        time.sleep(2.0)
        runtime = json.loads(rt.read_text())
        ours = {runtime["pid"], runtime["init_pid"]}
        sup, init = mem_kb(runtime["pid"]), mem_kb(runtime["init_pid"])
        extra = sorted(f"{p}:{comm(p)}" for p in tree(proc.pid) - ours if comm(p) != "sleep")
        if runtime["pid"] != proc.pid:
            extra.append(f"runtime.json pid {runtime['pid']} != podrun run pid {proc.pid}")
    finally:
        stop_proc(proc, lambda: e.podrun("stop", uuid_file.read_text().strip()))
    e.podrun("rm", uuid_file.read_text().strip())
    return sup, init, ", ".join(extra)


def tree(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += children(p)
    return out


def mem_oci(e: Env, runtime: str, n: int) -> Mem:
    """PSS (kB) of a foreground ``runc run``/``crun run`` process while its app sleeps."""
    b = e.tmp / f"bundle-{runtime}-sleep"
    state = e.tmp / f"state-{runtime}"
    cid = f"{runtime}-sleep-{n}"
    proc = subprocess.Popen(oci_cmd(runtime, state, ["run", "-b", str(b), cid]),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: has_sleeping_child(proc.pid), f"{runtime} container to run")
        time.sleep(0.5)
        if comm(proc.pid) != runtime:
            raise RuntimeError(f"pid {proc.pid} is {comm(proc.pid)}, not {runtime}")
        return mem_kb(proc.pid)
    finally:
        stop_proc(proc, lambda: subprocess.run(oci_cmd(runtime, state, ["kill", cid, "KILL"]),
                                               capture_output=True))


def mem_conmon(e: Env, n: int) -> Mem:
    """PSS (kB) of podman's ``conmon`` monitoring a runc container whose app sleeps."""
    b = e.tmp / "bundle-conmon"
    d = e.tmp / f"conmon-{n}"
    for sub in ("exits", "sock", "state"):
        (d / sub).mkdir(parents=True)
    cid = f"conmon-{n}"
    state_arg = f"--root={d / 'state'}"
    subprocess.run(["conmon", "--api-version", "1", "-c", cid, "-u", cid, "-n", cid,
                    "-r", shutil.which("runc") or "runc", "-b", str(b), "-p", str(d / "pid"),
                    "-l", f"k8s-file:{d / 'log'}", "--exit-dir", str(d / "exits"),
                    "--socket-dir-path", str(d / "sock"), "--conmon-pidfile",
                    str(d / "conmon.pid"), "--runtime-arg", state_arg, "--log-level", "error"],
                   check=True, capture_output=True)
    conmon_pid = 0
    try:
        wait_for(lambda: (d / "pid").exists() and (d / "pid").read_text().strip(),
                 "runc create under conmon")
        conmon_pid = int((d / "conmon.pid").read_text())
        subprocess.run(["runc", state_arg, "start", cid], check=True, capture_output=True)
        wait_for(lambda: has_sleeping_child(conmon_pid), "conmon's container to run")
        time.sleep(0.5)
        return mem_kb(conmon_pid)
    finally:
        subprocess.run(["runc", state_arg, "kill", cid, "KILL"], capture_output=True)
        if conmon_pid:
            try:
                wait_for(lambda: not Path(f"/proc/{conmon_pid}").exists(), "conmon to exit", 10)
            except RuntimeError:
                os.kill(conmon_pid, signal.SIGKILL)
        subprocess.run(["runc", state_arg, "delete", "--force", cid], capture_output=True)


def mem_python() -> Mem:
    """Reference: an idle ``python -c 'import time; time.sleep(30)'`` (podrun's interpreter)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        return mem_kb(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def bench_memory(e: Env, runs: int) -> tuple[dict[str, list[Mem]], str]:
    for rt in ("runc", "crun"):
        bundle(e, f"{rt}-sleep", ["/bin/sleep", "30"])
    have_conmon = shutil.which("conmon") is not None
    if have_conmon:
        bundle(e, "conmon", ["/bin/sleep", "30"])
    m: dict[str, list[Mem]] = {"podrun": [], "  supervisor": [], "  pod init": [],
                               "runc": [], "crun": []}
    if have_conmon:
        m["conmon"] = []
    notes = set()
    for i in range(runs):
        sup, init, extra = mem_podrun(e)
        m["podrun"].append(add(sup, init))
        m["  supervisor"].append(sup)
        m["  pod init"].append(init)
        if extra:
            notes.add(extra)
        m["runc"].append(mem_oci(e, "runc", i))
        m["crun"].append(mem_oci(e, "crun", i))
        if have_conmon:
            m["conmon"].append(mem_conmon(e, i))
        m.setdefault("(idle python, reference)", []).append(mem_python())
    note = "" if have_conmon else "conmon: not installed, not measured\n"
    if notes:
        note += "other processes in podrun's pod tree (not counted): " + "; ".join(notes) + "\n"
    return m, note


# report ---------------------------------------------------------------------------------

def met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def report(start: dict[str, list[float]], crun_note: str, apps: dict[int, list[float]],
           mem: dict[str, list[Mem]], mem_note: str, runs: int) -> str:
    out = [f"pods: medians of {runs} runs", machine(), ""]
    rows = [[k, f"{median(v) * 1000:.1f}", f"{min(v) * 1000:.1f}",
             f"{paired_ratio(v, start['runc']):.2f}x"] for k, v in start.items()]
    out += ["start: one /bin/true container/pod, --net=none for podrun "
            "(rows in parentheses: references, no pod)",
            table(["runtime", "median ms", "min ms", "vs runc (paired)"], rows), CRUN_NOTE,
            f"({crun_note})"]
    ratio = paired_ratio(start["podrun"], start["runc"])
    out += [f"goal start <= {START_GOAL:.1f}x runc: {ratio:.2f}x -> {met(ratio <= START_GOAL)}",
            ""]
    rows = [[f"{n} app{'s' if n > 1 else ''}", f"{median(v) * 1000:.1f}",
             f"{(median(v) - median(apps[1])) / max(n - 1, 1) * 1000:.1f}" if n > 1 else "-"]
            for n, v in apps.items()]
    out += ["apps: podrun run of N /bin/true apps",
            table(["pod", "median ms", "ms per extra app"], rows), ""]
    rows = []
    for k, v in mem.items():
        pss = [x[0] / 1024 for x in v]
        rows.append([k, f"{median(pss):.2f}", f"{min(pss):.2f}", f"{max(pss):.2f}",
                     f"{median([x[1] / 1024 for x in v]):.2f}"])
    out += ["memory: runtime-side PSS while one app sleeps (podrun: supervisor + pod init; "
            "runc/crun: the foreground run process; conmon: the monitor)",
            table(["runtime", "PSS MB", "min", "max", "USS MB"], rows),
            "(PSS splits shared pages among all processes mapping them, so it drops when "
            "other Python processes run; USS = private pages only)"]
    pss = median([x[0] for x in mem["podrun"]]) / 1024
    out += [mem_note.rstrip(),
            f"goal idle pod <= {PSS_GOAL_MB:.1f} MB PSS: {pss:.2f} MB -> "
            f"{met(pss <= PSS_GOAL_MB)}"]
    return "\n".join(x for x in out if x is not None)


def cleanup(e: Env) -> None:
    """Stop anything left in the OCI state dirs, then unmount and remove the temp dir."""
    for rt in ("runc", "crun"):
        state = e.tmp / f"state-{rt}"
        if state.is_dir():
            for c in state.iterdir():
                subprocess.run(oci_cmd(rt, state, ["delete", "--force", c.name]),
                               capture_output=True)
    unmount_all_under(e.tmp)
    left = mounts_under(e.tmp)
    if left:
        print(f"bench: mounts left under {e.tmp}: {left}", file=sys.stderr)
    shutil.rmtree(e.tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    require_root()
    for tool in ("runc", "crun", "unshare"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not installed")
    with bench_parent() as parent:
        e = Env(Path(tempfile.mkdtemp(prefix="podrun-bench-pods-")), parent)
        try:
            setup_podrun(e)
            start, crun_note = bench_start(e, args.runs)
            print("start done", file=sys.stderr)
            apps = bench_apps(e, args.runs)
            print("apps done", file=sys.stderr)
            mem, note = bench_memory(e, args.runs)
            print(report(start, crun_note, apps, mem, note, args.runs))
        finally:
            cleanup(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())

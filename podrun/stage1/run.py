"""The default flavor's run entrypoint: the pod's supervisor in the host namespaces.

This process keeps the PID of ``podrun run`` (stage0 exec'd it, or entered it
in-process), so a systemd unit's main PID is the pod's supervisor. It:

1. creates the pod's cgroup below ``--cgroup-parent`` (default: its own cgroup, per
   hierarchy) and one sub-cgroup per app with the app's limits, plus ``_init`` for
   the pod init (cgroup v2 allows processes only in leaves);
2. writes ``runtime.json`` (its PID and start time, the init's, the cgroups);
3. forks the pod init into a new pid namespace (init.py, sandbox.py do the rest);
4. forwards SIGTERM/SIGINT/SIGHUP to the init, waits for it, marks OOM-killed apps,
   removes the cgroups and returns the pod's exit code.

The init gets ``PR_SET_PDEATHSIG=SIGKILL``: if this process is killed (even by
``kill -9``) the pod dies with it, and the pod reads as exited.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from podrun.errors import PodError
from podrun.fsutil import atomic_write

INIT_CGROUP = "_init"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="stage1 run", add_help=False)
    p.add_argument("--net", default="none")
    p.add_argument("--hostname")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--interactive", action="store_true")
    p.add_argument("--stop-timeout", type=float, default=10.0)
    p.add_argument("--cgroup-parent")
    p.add_argument("uuid")
    args, unknown = p.parse_known_args(argv)
    if unknown:
        raise PodError(f"stage1 run: unknown arguments {' '.join(unknown)}")
    return args


def write_etc(pod_dir: Path, hostname: str, net: str,
              pod_in: str = "/opt/podrun/pod") -> dict[str, str]:
    """The pod's /etc/hosts, /etc/hostname and (host net) /etc/resolv.conf, as init paths."""
    etc = pod_dir / "etc"
    etc.mkdir(exist_ok=True)
    hosts = ("127.0.0.1\tlocalhost localhost.localdomain\n"
             "::1\tlocalhost ip6-localhost ip6-loopback\n"
             f"127.0.1.1\t{hostname}\n")
    files = {"/etc/hosts": hosts, "/etc/hostname": hostname + "\n"}
    if net == "host":
        try:
            files["/etc/resolv.conf"] = Path("/etc/resolv.conf").read_text()
        except OSError:
            pass
    out = {}
    for target, content in files.items():
        name = target.rsplit("/", 1)[1]
        (etc / name).write_text(content)
        out[target] = f"{pod_in}/etc/{name}"
    return out


def make_pod_dirs(pod_dir: Path, manifest: dict[str, Any]) -> None:
    for rapp in manifest["apps"]:
        for sub in ("upper", "work", "rootfs"):
            (pod_dir / "apps" / rapp["name"] / sub).mkdir(parents=True, exist_ok=True)
    for vol in manifest.get("volumes", []):
        if vol["kind"] == "empty":
            d = pod_dir / "volumes" / vol["name"]
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, int(vol.get("mode") or "0755", 8))
            os.chown(d, vol.get("uid", 0) or 0, vol.get("gid", 0) or 0)


class PodCgroups:
    """The pod's cgroup and its apps' sub-cgroups."""

    def __init__(self, uuid: str, parent: str | None, apps: list[dict[str, Any]], *,
                 create: bool = True) -> None:
        from podrun.stage1.specs import app_resources
        from podrun.stage2.cgroups import get_manager

        self.pod = get_manager(parent)
        if not create:  # the cgroups of a running pod, made earlier by this same PID
            self.pod.attach(f"podrun-{uuid}")
            self.init = self.pod.child(INIT_CGROUP)
            self.apps = {a["name"]: self.pod.child(a["name"]) for a in apps}
            return
        self.pod.create(f"podrun-{uuid}")
        self.apps = {}
        try:
            self.init = self.pod.child(INIT_CGROUP)
            self.init.create()
            for rapp in apps:
                m = self.pod.child(rapp["name"])
                m.create()
                m.apply(app_resources(rapp["app"]))
                self.apps[rapp["name"]] = m
        except BaseException:
            self.destroy()
            raise

    def procs_files(self, name: str) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.apps[name].directories().values()]

    def directories(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.pod.directories().items()}

    def oom_killed(self, name: str) -> bool:
        try:
            return bool(self.apps[name].stats().oom_killed)
        except Exception:  # noqa: BLE001 - stats are best effort at the end
            return False

    def destroy(self, *, kill: bool = True) -> None:
        """Remove the cgroups; ``kill=False`` when the pod init is known dead (its pid
        namespace, and so every process of the pod, died with it)."""
        if kill:
            try:
                self.pod.kill_all()
            except Exception:  # noqa: BLE001
                pass
        self.pod.destroy()


def hold_tree_locks(info: dict[str, Any]) -> list[int]:
    """Take the pod's rendered trees' locks shared, for as long as this process (and the
    pod init, which inherits the fds) lives: the store never removes a locked tree.
    The fds are close-on-exec and closed by stage2 before any app runs."""
    import fcntl

    fds = []
    for path in info.get("tree_locks", []):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        fds.append(fd)
    return fds


def run(argv: list[str]) -> int:
    from podrun.linux import constants as c
    from podrun.linux.calls import unshare
    from podrun.stage1 import specs
    from podrun.stage1.stop import proc_starttime

    opts = parse_args(argv)
    pod_dir = Path.cwd()
    manifest = json.loads((pod_dir / "pod").read_text())
    info = json.loads((pod_dir / "pod.json").read_text())
    hold_tree_locks(info)
    for name in specs.sysctls(manifest):
        specs.check_sysctl(name, opts.net)
    hostname = opts.hostname or f"podrun-{opts.uuid[:8]}"
    make_pod_dirs(pod_dir, manifest)
    etc_files = write_etc(pod_dir, hostname, opts.net)
    cgroups = PodCgroups(opts.uuid, opts.cgroup_parent, manifest["apps"])
    runtime: dict[str, Any] = {
        "pid": os.getpid(), "pid_starttime": proc_starttime(os.getpid()),
        "started": time.time(), "net": opts.net, "hostname": hostname,
        "cgroups": cgroups.directories(),
    }
    atomic_write(pod_dir / "runtime.json", json.dumps(runtime).encode())
    sync_r, sync_w = os.pipe()
    unshare(c.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        os.close(sync_w)
        from podrun.stage1.init_main import init_main

        init_main(pod_dir, manifest, info, opts, hostname, etc_files, sync_r,
                  {n: cgroups.procs_files(n) for n in cgroups.apps})
        os._exit(254)
    os.close(sync_r)
    try:
        cgroups.init.add_pid(pid)
        runtime.update(init_pid=pid, init_starttime=proc_starttime(pid))
        atomic_write(pod_dir / "runtime.json", json.dumps(runtime).encode())
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        cgroups.destroy()
        raise

    watched = {signal.SIGCHLD, *FORWARDED}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        os.write(sync_w, b"go")
    except BrokenPipeError:
        pass  # the init already failed (it said why on stderr): collect it below
    os.close(sync_w)
    wstatus = supervise(pid, opts.interactive)
    if wstatus is None:
        go_idle(pod_dir, info, pid, opts)  # a long-running pod: only returns if it cannot
        wstatus = supervise(pid, opts.interactive, idle_after=None)
    assert wstatus is not None
    return finish(pod_dir, manifest, cgroups, wstatus)


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
IDLE_AFTER = 1.0  # seconds a pod runs before its supervisor hands over to the native loop


def supervise(init_pid: int, interactive: bool, idle_after: float | None = IDLE_AFTER,
              kill_after: float | None = None,
              on_timeout: Callable[[], None] | None = None) -> int | None:
    """Wait for the init, forwarding SIGTERM/SIGINT/SIGHUP to it (SIGINT not when
    interactive: the terminal sends it to the app itself). The signals are blocked and
    taken with sigtimedwait. With ``kill_after`` (the fly flavor, whose "init" is the
    app), ``on_timeout`` runs that many seconds after the first SIGTERM. Returns the
    init's wait status, or None once ``idle_after`` seconds have passed with the pod
    still running."""
    watched = {signal.SIGCHLD, *FORWARDED}
    idle_at = None if idle_after is None else time.monotonic() + idle_after
    kill_at: float | None = None
    while True:
        pid, wstatus = os.waitpid(init_pid, os.WNOHANG)
        if pid == init_pid:
            return wstatus
        now = time.monotonic()
        if kill_at is not None and now >= kill_at:
            kill_at = None
            if on_timeout is not None:
                on_timeout()
            continue
        if idle_at is not None and now >= idle_at and kill_at is None:
            return None
        until = kill_at if kill_at is not None else idle_at  # no hand-over while stopping
        info = (signal.sigwaitinfo(watched) if until is None
                else signal.sigtimedwait(watched, max(0.0, until - now)))
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_signo == signal.SIGINT and interactive:
            continue
        try:
            os.kill(init_pid, info.si_signo)
        except ProcessLookupError:
            pass
        if info.si_signo == signal.SIGTERM and kill_after is not None and kill_at is None:
            kill_at = time.monotonic() + kill_after


def idle_binary(info: dict[str, Any]) -> Path | None:
    """The flavor's native idle loop (stage1-images/default/src/idle.c), if it was built."""
    path = Path(info["stage1"]["tree"]) / "rootfs" / "podrun" / "idle"
    return path if os.access(path, os.X_OK) else None


def go_idle(pod_dir: Path, info: dict[str, Any], init_pid: int, opts: Any,
            extra: tuple[str, ...] = (), kill_after: float | None = None) -> None:
    """Exec the native loop, which waits for the init as this process would, then execs
    ``python -m podrun.stage1.finish``. Same PID, same child; the watched signals stay
    blocked across the exec, so none is lost or default-handled in between."""
    binary = idle_binary(info)
    if binary is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    args = [str(binary), "wait", "--init", str(init_pid)]
    if opts.interactive:
        args.append("--interactive")
    if kill_after is not None:
        args += ["--kill-after", str(int(kill_after * 1000))]
    args += ["--", sys.executable, "-m", "podrun.stage1.finish", *extra]
    if opts.cgroup_parent:
        args.append(f"--cgroup-parent={opts.cgroup_parent}")
    args.append(opts.uuid)
    os.execv(binary, args)


def finish(pod_dir: Path, manifest: dict[str, Any], cgroups: PodCgroups, wstatus: int) -> int:
    """After the init: mark OOM-killed apps, remove the cgroups, the pod's exit code."""
    from podrun.stage1.status import pod_exit_code, read_status, write_status

    statuses = []
    for rapp in manifest["apps"]:
        app_dir = pod_dir / "apps" / rapp["name"]
        st = read_status(app_dir)
        if st is None and os.WIFSIGNALED(wstatus) and (app_dir / "pid").exists():
            # The init was killed (stop --force, kill -9): its apps died with it.
            st = {"exit_code": None, "signal": os.WTERMSIG(wstatus), "started": None,
                  "finished": time.time(), "oom_killed": False,
                  "error": "killed with the pod's init"}
            write_status(app_dir, st)
        if st is not None and st.get("signal") == signal.SIGKILL and \
                cgroups.oom_killed(rapp["name"]):
            st["oom_killed"] = True
            write_status(app_dir, st)
        statuses.append(st)
    try:
        cgroups.destroy(kill=False)
    except PodError as err:
        print(f"podrun: warning: {err} (podrun gc will retry)", file=sys.stderr)
    code = pod_exit_code(statuses)
    if code is None:
        init_code = os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else 254
        return init_code or 254
    return code

"""The pod init: PID 1 of the pod. Starts the apps, supervises them, records their end.

Per app, in pod-manifest order: the ``pre-start`` event handler (in the app's rootfs,
before the app; a failure means the app does not start), then the app, and once it
has exited the ``post-stop`` handler. Every process is a child forked by the init that
calls stage2's ``launch``. The init:

- reaps every zombie of the pod (it is PID 1 of the pid namespace);
- forwards SIGTERM, SIGINT and SIGHUP to the running apps; after SIGTERM (a stop) it
  SIGKILLs whatever still runs once the stop timeout has passed;
- writes ``apps/<name>/status.json`` (exit code or signal) as each app ends;
- exits when every app and handler is done.

Signals are taken synchronously with ``sigtimedwait`` on a blocked mask, so there is
no handler racing the bookkeeping.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from podrun.stage1.status import from_wait_status, write_status

if TYPE_CHECKING:
    from podrun.stage2.app import AppSpec

POD_IN = "/opt/podrun/pod"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
WATCHED = {signal.SIGCHLD, *FORWARDED}
IDLE_BINARY = "/podrun/idle"   # in the stage1 rootfs, when the flavor's C source was built
IDLE_AFTER = 1.0               # seconds after the apps started


@dataclass
class AppRun:
    spec: AppSpec
    pre_start: list[str] | None
    post_stop: list[str] | None
    phase: str = "waiting"   # waiting → pre-start → running → post-stop → done
    pid: int | None = None
    status: dict[str, object] = field(default_factory=dict)


class Init:
    def __init__(self, apps: list[AppRun], *, stop_timeout: float, interactive: bool,
                 debug: bool = False) -> None:
        self.apps = apps
        self.stop_timeout = stop_timeout
        self.interactive = interactive
        self.debug = debug
        self.children: dict[int, AppRun] = {}
        self.kill_at: float | None = None
        self.stopping = False

    def log(self, msg: str) -> None:
        if self.debug:
            print(f"podrun: init: {msg}", file=sys.stderr, flush=True)

    # processes ----------------------------------------------------------
    def _fork(self, spec: AppSpec, run: AppRun) -> int:
        from podrun.stage2.launch import launch

        pid = os.fork()
        if pid == 0:
            try:
                if not self.interactive:
                    os.setsid()
                    null = os.open("/dev/null", os.O_RDONLY)
                    os.dup2(null, 0)
                    os.close(null)
            except OSError:
                pass
            launch(spec)
        self.children[pid] = run
        return pid

    def _start_phase(self, run: AppRun) -> None:
        from podrun.stage1.specs import handler_spec

        if self.stopping and run.phase in ("waiting", "pre-start"):
            self._finish(run, {"exit_code": 128 + signal.SIGTERM, "signal": int(signal.SIGTERM),
                               "error": "stopped before it started"})
            return
        if run.phase == "waiting" and run.pre_start:
            run.phase = "pre-start"
            run.pid = self._fork(handler_spec(run.spec, run.pre_start), run)
            return
        if run.phase in ("waiting", "pre-start"):
            run.phase = "running"
            run.pid = self._fork(run.spec, run)
            run.status["started"] = time.time()
            self._write_pid(run)
            self.log(f"started app {run.spec.name} (pid {run.pid})")
            return

    def _write_pid(self, run: AppRun) -> None:
        try:
            with open(f"{POD_IN}/apps/{run.spec.name}/pid", "w") as f:
                f.write(f"{run.pid}\n")
        except OSError:
            pass

    def _finish(self, run: AppRun, status: dict[str, object]) -> None:
        run.status.update(status)
        run.status.setdefault("started", None)
        run.status["finished"] = time.time()
        run.status.setdefault("oom_killed", False)
        write_status(f"{POD_IN}/apps/{run.spec.name}", run.status)
        if run.post_stop and run.phase == "running":
            from podrun.stage1.specs import handler_spec

            run.phase = "post-stop"
            run.pid = self._fork(handler_spec(run.spec, run.post_stop), run)
            return
        run.phase = "done"
        run.pid = None

    def _exited(self, pid: int, wstatus: int) -> None:
        run = self.children.pop(pid, None)
        if run is None:
            return  # an orphan of the pod, reaped
        code, sig = from_wait_status(wstatus)
        if run.phase == "pre-start":
            if code != 0:
                self._finish(run, {"exit_code": code, "signal": sig,
                                   "error": f"pre-start handler failed with {code}"})
            else:
                self._start_phase(run)
        elif run.phase == "running":
            self.log(f"app {run.spec.name} exited: code {code} signal {sig}")
            self._finish(run, {"exit_code": code if sig is None else None, "signal": sig})
        elif run.phase == "post-stop":
            run.phase = "done"
            run.pid = None

    def _reap(self) -> None:
        while True:
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._exited(pid, wstatus)

    def _forward(self, sig: int) -> None:
        for pid, run in list(self.children.items()):
            if run.phase == "running":
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        if sig == signal.SIGTERM and not self.stopping:
            self.stopping = True
            self.kill_at = time.monotonic() + self.stop_timeout
            self.log(f"stopping: SIGKILL in {self.stop_timeout}s")

    # main loop ----------------------------------------------------------
    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        if self.interactive:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        for run in self.apps:
            self._start_phase(run)
            # Run each pre-start handler to its end before the next app starts.
            while run.phase == "pre-start":
                self._wait_once()
        idle_at: float | None = time.monotonic() + IDLE_AFTER
        while any(r.phase != "done" for r in self.apps) or self.children:
            self._wait_once(idle_at)
            if not any(r.phase != "done" for r in self.apps):
                break
            if idle_at is not None and time.monotonic() >= idle_at:
                self._go_idle()  # returns only when this pod cannot go idle
                idle_at = None
        return 0

    def _go_idle(self) -> None:
        """Exec the flavor's native loop (stage1-images/default/src/idle.c) once every
        app runs and nothing but reaping, forwarding and recording is left to do; it
        keeps PID 1, the children and the blocked signals, and writes the same
        status files. Pods with post-stop handlers, or stopping, stay in Python."""
        if self.stopping or not os.access(IDLE_BINARY, os.X_OK):
            return
        running = [r for r in self.apps if r.phase == "running"]
        if any(r.phase not in ("running", "done") for r in self.apps) or \
                any(r.post_stop for r in running):
            return
        args = [IDLE_BINARY, "init", "--apps-dir", f"{POD_IN}/apps",
                "--stop-timeout", str(int(self.stop_timeout * 1000))]
        if self.interactive:
            args.append("--interactive")
        args += [f"{r.pid}:{r.spec.name}:{r.status.get('started') or 'null'}" for r in running]
        self.log("going idle")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(IDLE_BINARY, args)

    def _wait_once(self, until: float | None = None) -> None:
        deadlines = [d for d in (self.kill_at, until) if d is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 3600.0
        info = signal.sigtimedwait(WATCHED, timeout)
        if info is not None and info.si_signo in FORWARDED:
            if not (self.interactive and info.si_signo == signal.SIGINT):
                self._forward(info.si_signo)
        self._reap()
        if self.kill_at is not None and time.monotonic() >= self.kill_at:
            self.log("stop timeout: killing every process of the pod")
            try:
                os.kill(-1, signal.SIGKILL)  # as PID 1: every other process of the pod
            except ProcessLookupError:
                pass
            self.kill_at = None
            self._reap()

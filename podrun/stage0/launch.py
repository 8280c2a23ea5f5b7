"""Handing a prepared pod to its stage1: the run and enter entrypoints.

stage0 moves the locked pod to ``run/``, makes the lock fd inheritable, changes to
the pod dir and execs the stage1 run entrypoint (docs/pods.md), so ``podrun run``
keeps its PID. podrun's built-in flavors are entered in-process instead — the same
arguments, cwd and lock fd, as if exec'd — which saves an interpreter start.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podrun.errors import PodError, UsageError

if TYPE_CHECKING:
    from podrun.stage0.context import Context
    from podrun.stage0.pods import Pod


def stage1_args(info: dict[str, Any], ctx: Context, uuid: str) -> list[str]:
    args = [f"--net={info.get('net', 'none')}"]
    if info.get("hostname"):
        args.append(f"--hostname={info['hostname']}")
    if ctx.debug:
        args.append("--debug")
    if info.get("interactive"):
        args.append("--interactive")
    args.append(f"--stop-timeout={info.get('stop_timeout', 10)}")
    if info.get("cgroup_parent"):
        args.append(f"--cgroup-parent={info['cgroup_parent']}")
    args.append(uuid)
    return args


def _environ(ctx: Context, lock_fd: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PODRUN_LOCK_FD=str(lock_fd), PODRUN_PYTHON=sys.executable,
               PODRUN_DIR=str(ctx.data_dir))
    if ctx.debug:
        env["PODRUN_DEBUG"] = "1"
    return env


def entrypoint(info: dict[str, Any], kind: str) -> tuple[bool, str, Path | None]:
    """(builtin?, flavor, host path of the entrypoint) for ``kind``."""
    s1 = info["stage1"]
    rel = s1["entrypoints"].get(kind)
    if rel is None:
        raise PodError(f"stage1 {s1['name']} has no {kind} entrypoint")
    path = Path(s1["tree"]) / "rootfs" / rel.lstrip("/")
    return bool(s1.get("builtin")), s1.get("flavor", "external"), path


def prepare_retitle() -> None:
    """Let the pod init retitle itself later (stage1/init_main.py): setproctitle finds
    the command line through the original environment, so it must look before
    anything changes ``os.environ``."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.getproctitle()


def start_pod(ctx: Context, pod: Pod, overrides: dict[str, Any] | None = None) -> int:
    """Run a locked, prepared pod in the foreground; returns the pod's exit code."""
    info = pod.info()
    if overrides:
        if "net" in overrides and overrides["net"] not in ("none", "host"):
            raise UsageError(f"--net={overrides['net']}: only none and host are available")
        if "net" in overrides:
            from podrun.stage0.prepare import check_sysctls

            check_sysctls(pod.manifest_json(), overrides["net"])
        info.update(overrides)
        pod.update_info(**overrides)
    builtin, flavor, path = entrypoint(info, "run")
    if builtin:
        prepare_retitle()
    pod.move("run")
    fd = pod.lock_fd
    assert fd is not None
    os.set_inheritable(fd, True)
    os.chdir(pod.path)
    argv = stage1_args(info, ctx, pod.uuid)
    env = _environ(ctx, fd)
    sys.stdout.flush()
    sys.stderr.flush()
    if builtin:
        os.environ.update(env)
        from podrun.stage1.entry import main

        return main([flavor, "run", *argv])
    assert path is not None
    try:
        os.execve(path, [str(path), *argv], env)
    except OSError as err:
        raise PodError(f"cannot exec stage1 run entrypoint {path}: {err.strerror}") from None
    raise AssertionError("unreachable")


def enter_pod(ctx: Context, pod: Pod, app: str | None, cmd: list[str]) -> int:
    if pod.state() != "running":
        raise PodError(f"pod {pod.uuid} is {pod.state()}, not running")
    names = pod.app_names()
    if app is None:
        if len(names) != 1:
            raise UsageError(f"pod {pod.uuid} has several apps ({', '.join(names)}): "
                             "give --app")
        app = names[0]
    elif app not in names:
        raise UsageError(f"pod {pod.uuid} has no app {app!r} (apps: {', '.join(names)})")
    info = pod.info()
    builtin, flavor, path = entrypoint(info, "enter")
    os.chdir(pod.path)
    argv = [f"--app={app}", pod.uuid, "--", *cmd]
    if builtin:
        from podrun.stage1.entry import main

        return main([flavor, "enter", *argv])
    assert path is not None
    env = dict(os.environ, PODRUN_PYTHON=sys.executable, PODRUN_DIR=str(ctx.data_dir))
    os.execve(path, [str(path), *argv], env)
    raise AssertionError("unreachable")


def _stage1_info(pod_path: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads((pod_path / "pod.json").read_text()).get("stage1")
    except (OSError, ValueError):
        return None


def call_entrypoint(pod_path: Path, kind: str, args: list[str]) -> None:
    """Run a pod's stage1 ``stop`` or ``gc`` entrypoint with cwd = the pod dir.

    podrun's own flavors (and pods whose stage1 is unknown, e.g. an aborted prepare)
    are served in-process; a third-party flavor's entrypoint is executed, and a
    non-zero exit is an error naming it.
    """
    s1 = _stage1_info(pod_path)
    rel = (s1 or {}).get("entrypoints", {}).get(kind)
    if s1 is None or s1.get("builtin") or rel is None:
        if kind == "gc":
            from podrun.stage1.gc import gc_pod

            gc_pod(pod_path)
        else:
            from podrun.stage1.stop import stop_pod

            stop_pod(pod_path, "--force" in args)
        return
    import subprocess

    path = Path(s1["tree"]) / "rootfs" / rel.lstrip("/")
    env = dict(os.environ, PODRUN_PYTHON=sys.executable)
    proc = subprocess.run([str(path), *args], cwd=pod_path, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise PodError(f"stage1 {kind} entrypoint of pod {pod_path.name} failed: {detail}")

"""The enter entrypoint: run a command inside a running app of a pod.

The app's process is found below the pod init (by its PID in the pod's pid
namespace, from ``apps/<name>/pid``, matched against ``NSpid`` in /proc); the command
joins the app's cgroups, then its ipc, uts, net, pid and mount namespaces (mount last:
it also moves the root to the app's), gets the app's environment and runs; its exit
code is returned. Fly pods have no pid namespace: the app's PID is the host's.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from podrun.errors import PodError

NAMESPACES = ("ipc", "uts", "net", "pid", "mnt")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _nspid(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []


def find_app_pid(init_pid: int, ns_pid: int) -> int | None:
    """The host PID of the process whose PID in the pod's namespace is ``ns_pid``."""
    todo = _children(init_pid)
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        ns = _nspid(p)
        if ns and ns[-1] == ns_pid:
            return p
        todo += _children(p)
    return None


def enter(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="stage1 enter", add_help=False)
    p.add_argument("--app", required=True)
    p.add_argument("uuid")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    cmd = cmd or ["/bin/sh"]
    pod_dir = Path.cwd()
    runtime = json.loads((pod_dir / "runtime.json").read_text())
    manifest = json.loads((pod_dir / "pod").read_text())
    app = next((a for a in manifest["apps"] if a["name"] == args.app), None)
    if app is None:
        raise PodError(f"pod {args.uuid} has no app {args.app!r}")
    try:
        ns_pid = int((pod_dir / "apps" / args.app / "pid").read_text())
    except (OSError, ValueError):
        ns_pid = None
    if runtime.get("flavor") == "fly":
        target = runtime.get("init_pid")
    else:
        target = find_app_pid(runtime["init_pid"], ns_pid) if ns_pid else None
    if not target or not os.path.exists(f"/proc/{target}"):
        raise PodError(f"app {args.app} of pod {args.uuid} is not running")
    from podrun.linux.calls import setns
    from podrun.stage1.specs import app_env

    fds = {ns: os.open(f"/proc/{target}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
           for ns in NAMESPACES}
    procs = [os.open(Path(d) / args.app / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
             for d in runtime.get("cgroups", {}).values()
             if (Path(d) / args.app / "cgroup.procs").exists()]
    env = app_env(args.app, app["app"])
    env.setdefault("HOME", "/root")
    env.setdefault("TERM", os.environ.get("TERM", "xterm"))
    for fd in procs:
        os.write(fd, b"0")
        os.close(fd)
    for ns in NAMESPACES:
        setns(fds[ns], 0)
        os.close(fds[ns])
    pid = os.fork()  # the pid namespace applies to children only
    if pid == 0:
        try:
            os.chdir(app["app"].get("workingDirectory") or "/")
        except OSError:
            os.chdir("/")
        try:
            os.execvpe(cmd[0], cmd, env)
        except OSError as err:
            os.write(2, f"podrun: enter: {cmd[0]}: {err.strerror}\n".encode())
            os._exit(127 if isinstance(err, FileNotFoundError) else 126)
    _, wstatus = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wstatus) if os.WIFEXITED(wstatus) else \
        128 + os.WTERMSIG(wstatus)

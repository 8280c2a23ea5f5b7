"""stage1 stop entrypoint: ask a running pod to stop, or kill it.

Without force, SIGTERM goes to stage1 (``runtime.json`` "pid"), which stops the pod
gracefully within its stop timeout. With force, SIGKILL goes to the pod's init
(``"init_pid"``, PID 1 of the pod's pid namespace): the kernel then kills every
process in that namespace.

A stale pid is never signalled: the pod must be running (its lock held), and the
target process must still be the one stage1 recorded — same pid *and* same start
time (field 22 of /proc/<pid>/stat, recorded as ``pid_starttime`` /
``init_starttime``). The check and the signal go through a pidfd, so the pid cannot
be recycled between them.

Only the stdlib is imported here: this runs as its own entrypoint.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from pathlib import Path

from podrun.errors import PodError


def proc_starttime(pid: int) -> int | None:
    """The start time of *pid* in clock ticks since boot (field 22 of /proc/<pid>/stat),
    or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ')'
    rest = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(rest[22 - 3])  # rest[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def pod_is_running(pod_dir: Path) -> bool:
    """True while someone holds the pod's lock (stage1 and the pod init do)."""
    fd = os.open(pod_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def read_runtime(pod_dir: Path) -> dict:
    try:
        return json.loads((pod_dir / "runtime.json").read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise PodError(f"cannot read {pod_dir / 'runtime.json'}: {e}") from e


def signal_recorded(pid: object, starttime: object, sig: int, what: str) -> None:
    """Send *sig* to *pid* only if it is still the process that started at *starttime*."""
    if not isinstance(pid, int) or pid <= 0:
        raise PodError(f"no {what} pid recorded in runtime.json")
    if not isinstance(starttime, int):
        raise PodError(f"no start time recorded for {what} pid {pid}: not signalling it")
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise PodError(f"{what} (pid {pid}) is gone") from None
    try:
        if proc_starttime(pid) != starttime:
            raise PodError(f"{what} pid {pid} now belongs to another process: not signalling it")
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            raise PodError(f"{what} (pid {pid}) is gone") from None
    finally:
        os.close(pidfd)


def stop_pod(pod_dir: Path, force: bool) -> None:
    """Stop the running pod in *pod_dir*: SIGTERM to stage1, or with *force* SIGKILL to
    the pod's init. PodError if the pod is not running or the pid is stale."""
    pod_dir = Path(pod_dir)
    if not pod_is_running(pod_dir):
        raise PodError(f"pod {pod_dir.name} is not running")
    rt = read_runtime(pod_dir)
    if force:
        signal_recorded(rt.get("init_pid"), rt.get("init_starttime"), signal.SIGKILL,
                        "the pod's init")
    else:
        signal_recorded(rt.get("pid"), rt.get("pid_starttime"), signal.SIGTERM, "stage1")


def main(argv: list[str]) -> int:
    """The stop entrypoint: ``[--force] UUID``, cwd = the pod dir."""
    force = "--force" in argv or "--force=true" in argv
    stop_pod(Path.cwd(), force)
    return 0

"""The ``fly`` flavor: one app, the host's namespaces, its own mounts — for system services.

As rkt's fly: no new pid, uts, ipc or net namespace; the app gets its own mount
namespace and rootfs (overlay of its tree, volumes, /proc, /dev, /sys) and runs with
every capability and no seccomp filter: fly is for privileged services that are
meant to see the host. The supervisor (this process, keeping ``podrun run``'s PID)
forks the app, forwards SIGTERM/SIGINT/SIGHUP to it, SIGKILLs the app's cgroup once
``--stop-timeout`` has passed after a SIGTERM, records its status and returns its
exit code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podrun.errors import PodError
from podrun.fsutil import atomic_write

if TYPE_CHECKING:
    from podrun.stage1.run import PodCgroups


def run(argv: list[str]) -> int:
    from podrun.stage1 import specs
    from podrun.stage1.run import (
        FORWARDED,
        PodCgroups,
        go_idle,
        hold_tree_locks,
        make_pod_dirs,
        parse_args,
        supervise,
        write_etc,
    )
    from podrun.stage1.stop import proc_starttime
    from podrun.stage2 import caps as capmod

    opts = parse_args(argv)
    pod_dir = Path.cwd()
    manifest: dict[str, Any] = json.loads((pod_dir / "pod").read_text())
    info = json.loads((pod_dir / "pod.json").read_text())
    hold_tree_locks(info)
    if len(manifest["apps"]) != 1:
        raise PodError("the fly stage1 runs exactly one app")
    make_pod_dirs(pod_dir, manifest)
    hostname = os.uname().nodename
    etc = write_etc(pod_dir, hostname, "host", pod_in=str(pod_dir))
    view = specs.View(pod=str(pod_dir), trees=None, volumes=None)
    spec = specs.app_specs(manifest, info, etc_files=etc, view=view)[0]
    # Every capability podrun itself holds (the host may already lack some).
    spec = dataclasses.replace(spec, caps=capmod.current()["permitted"], seccomp=None)
    cgroups = PodCgroups(opts.uuid, opts.cgroup_parent, manifest["apps"])
    spec.cgroup_procs_fds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC)
                             for p in cgroups.procs_files(spec.name)]
    runtime: dict[str, Any] = {"pid": os.getpid(), "pid_starttime": proc_starttime(os.getpid()),
                               "started": time.time(), "net": "host", "hostname": hostname,
                               "cgroups": cgroups.directories(), "flavor": "fly"}
    atomic_write(pod_dir / "runtime.json", json.dumps(runtime).encode())
    started = time.time()
    pid = os.fork()
    if pid == 0:
        from podrun.stage2.launch import launch

        if not opts.interactive:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        launch(spec)
    for fd in spec.cgroup_procs_fds:
        os.close(fd)
    runtime.update(init_pid=pid, init_starttime=proc_starttime(pid))
    atomic_write(pod_dir / "runtime.json", json.dumps(runtime).encode())
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *FORWARDED})
    wstatus = supervise(pid, opts.interactive, kill_after=opts.stop_timeout,
                        on_timeout=cgroups.pod.kill_all)
    if wstatus is None:  # a long-running service: hand over to the native loop
        go_idle(pod_dir, info, pid, opts, extra=("--fly", f"--started={started}"),
                kill_after=opts.stop_timeout)
        wstatus = supervise(pid, opts.interactive, idle_after=None,
                            kill_after=opts.stop_timeout, on_timeout=cgroups.pod.kill_all)
    assert wstatus is not None
    return finish_fly(pod_dir, spec.name, cgroups, wstatus, started)


def finish_fly(pod_dir: Path, name: str, cgroups: PodCgroups, wstatus: int,
               started: float | None) -> int:
    """Record the app's end (the fly app is this process's own child), then clean up."""
    from podrun.stage1.status import from_wait_status, write_status

    code, sig = from_wait_status(wstatus)
    status = {"exit_code": code if sig is None else None, "signal": sig, "started": started,
              "finished": time.time(),
              "oom_killed": sig == signal.SIGKILL and cgroups.oom_killed(name)}
    write_status(pod_dir / "apps" / name, status)
    try:
        cgroups.destroy()  # kills what the app left behind in its cgroup
    except PodError as err:
        print(f"podrun: warning: {err} (podrun gc will retry)", file=sys.stderr)
    return code

"""Test driver for stage2: play the pod init's part for one app.

``python -m tests.stage2_driver CONFIG_JSON``: CONFIG has ``spec`` (an AppSpec as
:func:`podrun.stage2.app.to_json` makes it) and optionally ``seccomp``
(``build_filter`` keyword arguments), ``leak`` (paths opened WITHOUT close-on-exec,
which must not reach the app), ``keep`` (paths opened and passed as ``keep_fds``) and
``cgroups`` (``cgroup.procs`` files opened and passed as ``cgroup_procs_fds``).

The driver unshares pid/uts/ipc namespaces and forks: the child is PID 1 of the new
pid namespace (as an app child of the pod init would be one of its PIDs) and calls
``launch``; the driver exits with the child's status (128+N for a signal).
"""

from __future__ import annotations

import json
import os
import sys

from podrun.linux import CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWUTS, unshare
from podrun.stage2.app import from_json
from podrun.stage2.launch import launch


def main() -> int:
    cfg = json.loads(sys.argv[1])
    spec = from_json(cfg["spec"])
    if cfg.get("seccomp"):
        from podrun.stage2.seccomp import build_filter

        spec.seccomp = build_filter(**cfg["seccomp"])
    for p in cfg.get("leak", []):
        fd = os.open(p, os.O_RDONLY)
        os.set_inheritable(fd, True)
    for p in cfg.get("keep", []):
        spec.keep_fds.append(os.open(p, os.O_RDONLY | os.O_CLOEXEC))
    for p in cfg.get("cgroups", []):
        spec.cgroup_procs_fds.append(os.open(p, os.O_WRONLY | os.O_CLOEXEC))
    sys.stdout.flush()
    unshare(CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC)
    pid = os.fork()
    if pid == 0:
        launch(spec)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())

"""The end of a pod whose supervisor went idle: ``python -m podrun.stage1.finish``.

The native idle loop (stage1-images/default/src/idle.c) execs this, in the same
process (the PID of ``podrun run``) and cwd (the pod dir), once the pod init has
exited; it marks OOM-killed apps, removes the cgroups and exits with the pod's exit
code — what stage1/run.py does itself for pods that end quickly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from podrun.stage1.run import PodCgroups, finish

    uuid = next(a for a in argv if not a.startswith("--"))
    parent = next((a.split("=", 1)[1] for a in argv if a.startswith("--cgroup-parent=")), None)
    wstatus = int(next(a.split("=", 1)[1] for a in argv if a.startswith("--wstatus=")))
    pod_dir = Path.cwd()
    manifest = json.loads((pod_dir / "pod").read_text())
    cgroups = PodCgroups(uuid, parent, manifest["apps"], create=False)
    if "--fly" in argv:  # the fly flavor: the waited-for process was the app itself
        from podrun.stage1.fly import finish_fly

        started = next((float(a.split("=", 1)[1]) for a in argv
                        if a.startswith("--started=")), None)
        return finish_fly(pod_dir, manifest["apps"][0]["name"], cgroups, wstatus, started)
    return finish(pod_dir, manifest, cgroups, wstatus)


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except Exception as err:  # noqa: BLE001 - one line, podrun's exit code
        print(f"podrun: stage1 finish: {err}", file=sys.stderr)
        code = 254
    sys.exit(code)

"""stage1 gc entrypoint: tear down what a pod left on the host, before stage0 deletes it.

stage0's gc (and ``rm``) calls :func:`gc_pod` on a pod dir in ``exited-garbage/`` or
``garbage/`` while holding the pod's lock. In order:

1. kill every process still in the pod's cgroups (``runtime.json`` "cgroups":
   ``{hierarchy: absolute filesystem path}``, e.g. ``{"pids":
   "/sys/fs/cgroup/pids/…/pod-<uuid>"}``) — SIGKILL (``cgroup.kill`` where cgroup v2 has it), only
   processes found in those cgroups' ``cgroup.procs``, until they are empty;
2. tear down the pod's network (:func:`teardown_network`, a hook for now);
3. unmount every mount point at or below the pod dir in /proc/self/mountinfo,
   deepest first, with ``MNT_DETACH`` so a busy mount never makes gc fail;
4. rmdir the pod's cgroups (and any child cgroups), deepest first, retrying while
   the kernel still reports them busy.

Each step is tried even when an earlier one failed; failures are collected and
raised as one PodError, so the pod stays for the next gc. Everything is idempotent:
a second call (or a call on a pod that never started) finds nothing to do.

Safety: a cgroup path is used only if it lies strictly below a mounted cgroup
hierarchy (never a hierarchy root), so a corrupt runtime.json cannot make gc kill
or remove anything outside the cgroup filesystems' subtrees it names.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from podrun.errors import PodError

KILL_TIMEOUT = 5.0
RMDIR_TIMEOUT = 5.0


def read_mountinfo() -> list[tuple[int, str, str]]:
    """(mount id, mount point, fs type) for every mount this process sees."""
    from podrun.linux import mountinfo

    return [(m.id, m.mount_point, m.fstype) for m in mountinfo.read()]


def _read_runtime(pod_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((pod_dir / "runtime.json").read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise PodError(f"cannot read {pod_dir / 'runtime.json'}: {e}") from e
    return data if isinstance(data, dict) else {}


# -- cgroups ----------------------------------------------------------------------


def _cgroup_mounts() -> list[Path]:
    return [Path(mp) for _, mp, fstype in read_mountinfo() if fstype in ("cgroup", "cgroup2")]


def _below(path: Path, root: Path) -> bool:
    return path != root and path.is_relative_to(root)


def resolve_cgroups(cgroups: dict[str, str]) -> list[Path]:
    """The pod's cgroup dirs (``runtime.json`` "cgroups": ``{hierarchy: fs path}``) that
    may be touched: absolute filesystem paths, without ``..``, strictly below a
    mounted cgroup hierarchy. Anything else (a hierarchy root, a path elsewhere, a
    relative path) is ignored, so a corrupt runtime.json cannot aim gc at the host."""
    mounts = _cgroup_mounts()
    found: set[Path] = set()
    for value in (cgroups or {}).values():
        if not isinstance(value, str) or not value.startswith("/"):
            continue
        path = Path(value)
        if ".." in path.parts:
            continue
        if any(_below(path, m) for m in mounts):
            found.add(path)
    return sorted(found)


def _procs(path: Path) -> list[int]:
    from podrun.stage2.cgroups.common import procs

    return procs(path, recursive=True)


def kill_cgroup_processes(paths: list[Path], timeout: float = KILL_TIMEOUT) -> None:
    """SIGKILL every process in *paths* (and their child cgroups) until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = {p: _procs(p) for p in paths}
        if not any(left.values()):
            return
        if time.monotonic() >= deadline:
            busy = [f"{p} ({' '.join(map(str, pids[:5]))})" for p, pids in left.items() if pids]
            raise PodError(f"processes survive SIGKILL in {', '.join(busy)}")
        for path, pids in left.items():
            if pids and (path / "cgroup.kill").exists():
                try:
                    (path / "cgroup.kill").write_text("1")
                    continue
                except OSError:
                    pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.02)


def remove_cgroups(paths: list[Path], timeout: float = RMDIR_TIMEOUT) -> None:
    """rmdir each cgroup and its children, deepest first, retrying while busy."""
    from podrun.stage2.cgroups.common import remove_tree

    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        remove_tree(path, timeout=timeout)


# -- network ----------------------------------------------------------------------


def teardown_network(pod_dir: Path, runtime: dict[str, Any]) -> None:
    """Undo the pod's host-side networking (hook; nothing to do yet).

    With ``--net=none`` and ``--net=host`` stage1 leaves nothing on the host. When
    private networks arrive (``--net=default``, named CNI networks, ``--port``) this
    will read ``runtime["net"]`` and the results stage1 stored in the pod dir, and:
    run each CNI plugin's DEL, delete the host end of the pod's veth, release
    host-local IPAM leases, remove port-forwarding and masquerade rules, and unmount
    and remove the pod's netns bind mount. It must stay idempotent and must succeed
    even when the netns is already gone.
    """
    return None


# -- mounts -----------------------------------------------------------------------


def mounts_below(pod_dir: Path) -> list[tuple[int, str]]:
    """(mount id, mount point) of every mount at or below *pod_dir*, deepest first."""
    root = os.path.realpath(pod_dir)
    found = [(mid, mp) for mid, mp, _ in read_mountinfo()
             if mp == root or mp.startswith(root.rstrip("/") + "/")]
    return sorted(found, key=lambda m: (m[1].count("/"), m[0]), reverse=True)


def unmount_below(pod_dir: Path) -> None:
    """Detach every mount at or below *pod_dir* (stacked mounts included)."""
    errors: list[str] = []
    from podrun.linux.calls import umount2
    from podrun.linux.constants import MNT_DETACH, UMOUNT_NOFOLLOW

    for _ in range(64):  # each pass peels at least one layer of stacked mounts
        mounts = mounts_below(pod_dir)
        if not mounts:
            return
        errors = []
        for _mid, mp in mounts:
            try:
                umount2(mp, MNT_DETACH | UMOUNT_NOFOLLOW)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOENT):
                    errors.append(f"{mp}: {e.strerror}")
        if errors:
            raise PodError(f"cannot unmount {'; '.join(errors[:3])}")
    raise PodError(f"mounts keep appearing below {pod_dir}")


# -- entrypoint -------------------------------------------------------------------


def gc_pod(pod_dir: Path) -> None:
    """Tear down everything the pod in *pod_dir* left on the host (idempotent)."""
    pod_dir = Path(pod_dir)
    runtime = _read_runtime(pod_dir)
    errors: list[str] = []
    cgroups = resolve_cgroups(runtime.get("cgroups") or {})
    steps = (
        ("kill", lambda: kill_cgroup_processes(cgroups)),
        ("network", lambda: teardown_network(pod_dir, runtime)),
        ("unmount", lambda: unmount_below(pod_dir)),
        ("cgroups", lambda: remove_cgroups(cgroups)),
    )
    for _name, step in steps:
        try:
            step()
        except (PodError, OSError) as e:
            errors.append(str(e))
    if errors:
        raise PodError(f"gc of pod {pod_dir.name}: {'; '.join(errors)}")


def main(argv: list[str]) -> int:
    """The gc entrypoint: ``UUID``, cwd = the pod dir (which stage0 deletes afterwards)."""
    gc_pod(Path.cwd())
    return 0

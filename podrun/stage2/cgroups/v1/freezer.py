"""v1 freezer controller: freeze/thaw a cgroup tree (used to kill a pod atomically)."""

from __future__ import annotations

import time
from pathlib import Path

from podrun.stage2.cgroups.common import CgroupError, Resources, Stats, read, write

NAME = "freezer"


def needed(res: Resources) -> bool:
    return False


def apply(path: Path, res: Resources) -> None:
    return None


def stats(path: Path, out: Stats) -> None:
    return None


def set_state(path: Path, state: str, timeout: float = 5.0) -> None:
    """Write FROZEN or THAWED and wait until freezer.state reports it."""
    deadline = time.monotonic() + timeout
    while True:
        write(path / "freezer.state", state)
        if read(path / "freezer.state") == state:
            return
        if time.monotonic() >= deadline:
            raise CgroupError(f"cgroup {path} did not reach {state} in {timeout:g}s")
        time.sleep(0.01)

"""v1 pids controller: pids.max."""

from __future__ import annotations

from pathlib import Path

from podrun.stage2.cgroups.common import Resources, Stats, read_int, write

NAME = "pids"


def needed(res: Resources) -> bool:
    return res.pids_limit is not None


def apply(path: Path, res: Resources) -> None:
    if res.pids_limit is not None:
        write(path / "pids.max", res.pids_limit)


def stats(path: Path, out: Stats) -> None:
    out.pids_current = read_int(path / "pids.current")

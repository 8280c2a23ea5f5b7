"""v2 memory controller: memory.max (+ memory.swap.max = 0 so, as on v1 with memsw,
the limit is not stretched by swap), and OOM counts from memory.events."""

from __future__ import annotations

from pathlib import Path

from podrun.stage2.cgroups.common import Resources, Stats, read_int, read_keyed, write

NAME = "memory"


def needed(res: Resources) -> bool:
    return res.memory_limit is not None


def apply(path: Path, res: Resources) -> None:
    if res.memory_limit is None:
        return
    write(path / "memory.max", res.memory_limit)
    if (path / "memory.swap.max").exists():
        write(path / "memory.swap.max", 0)


def stats(path: Path, out: Stats) -> None:
    if not (path / "memory.current").exists():
        return
    out.memory_usage = read_int(path / "memory.current")
    out.memory_limit = read_int(path / "memory.max")
    ev = read_keyed(path / "memory.events")
    out.oom_events = ev.get("oom")
    out.oom_kills = ev.get("oom_kill")
    out.memory_failcnt = ev.get("max")

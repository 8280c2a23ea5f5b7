"""v1 memory controller: memory.limit_in_bytes (+ memory.memsw.limit_in_bytes, so the
limit covers swap too and an app over it is OOM-killed instead of swapping), and OOM
accounting from memory.oom_control (``oom_kill N``, kernel ≥ 4.13) and memory.failcnt."""

from __future__ import annotations

from pathlib import Path

from podrun.stage2.cgroups.common import Resources, Stats, read, read_int, write

NAME = "memory"
UNLIMITED = -1


def needed(res: Resources) -> bool:
    return res.memory_limit is not None


def apply(path: Path, res: Resources) -> None:
    if res.memory_limit is None:
        return
    limit = res.memory_limit
    memsw = path / "memory.memsw.limit_in_bytes"
    if not memsw.exists():
        write(path / "memory.limit_in_bytes", limit)
        return
    # the kernel insists memsw >= limit at every step: raise memsw first when growing
    current = read_int(memsw)
    if current is not None and limit > current:
        write(memsw, limit)
        write(path / "memory.limit_in_bytes", limit)
    else:
        write(path / "memory.limit_in_bytes", limit)
        write(memsw, limit)


def stats(path: Path, out: Stats) -> None:
    out.memory_usage = read_int(path / "memory.usage_in_bytes")
    limit = read_int(path / "memory.limit_in_bytes")
    out.memory_limit = None if limit is None or limit >= 1 << 62 else limit
    out.memory_failcnt = read_int(path / "memory.failcnt")
    oom = dict(line.split() for line in read(path / "memory.oom_control").splitlines())
    # kernels before 4.13 have no kill counter: oom_kills stays None and callers
    # fall back to memory_failcnt (limit hits) plus the app's SIGKILL exit
    if "oom_kill" in oom:
        out.oom_kills = int(oom["oom_kill"])

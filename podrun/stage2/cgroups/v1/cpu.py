"""v1 cpu controller: CFS quota/period from millicores, and cpu.shares."""

from __future__ import annotations

from pathlib import Path

from podrun.stage2.cgroups.common import CPU_PERIOD_US, Resources, Stats, read_keyed, write

NAME = "cpu"


def needed(res: Resources) -> bool:
    return res.cpu_quota_millis is not None or res.cpu_shares is not None


def apply(path: Path, res: Resources) -> None:
    quota = res.cpu_quota_us()
    if quota is not None:
        write(path / "cpu.cfs_period_us", CPU_PERIOD_US)
        write(path / "cpu.cfs_quota_us", quota)
    if res.cpu_shares is not None:
        write(path / "cpu.shares", res.cpu_shares)


def stats(path: Path, out: Stats) -> None:
    try:
        st = read_keyed(path / "cpu.stat")
    except Exception:
        return
    if "usage_usec" in st:  # present on newer kernels
        out.cpu_usage_us = st["usage_usec"]

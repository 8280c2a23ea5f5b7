"""v2 cpu controller: cpu.max ("quota period") and cpu.weight from v1 shares.

Shares → weight uses runc's long-standing linear map of [2, 262144] onto
[1, 10000]: ``1 + (shares - 2) * 9999 / 262142`` (so 1024 shares → weight 39).
"""

from __future__ import annotations

from pathlib import Path

from podrun.stage2.cgroups.common import CPU_PERIOD_US, Resources, Stats, read_keyed, write

NAME = "cpu"


def shares_to_weight(shares: int) -> int:
    if shares <= 0:
        return 0  # unset
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def needed(res: Resources) -> bool:
    return res.cpu_quota_millis is not None or res.cpu_shares is not None


def apply(path: Path, res: Resources) -> None:
    quota = res.cpu_quota_us()
    if quota is not None:
        write(path / "cpu.max", f"{quota} {CPU_PERIOD_US}")
    if res.cpu_shares is not None and shares_to_weight(res.cpu_shares):
        write(path / "cpu.weight", shares_to_weight(res.cpu_shares))


def stats(path: Path, out: Stats) -> None:
    if (path / "cpu.stat").exists():
        out.cpu_usage_us = read_keyed(path / "cpu.stat").get("usage_usec")

"""Durations and times as podrun's flags and tables show them (Go-style ``1h30m``)."""

from __future__ import annotations

import re
import time

from podrun.errors import UsageError

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str, flag: str = "duration") -> float:
    """``90s``, ``30m``, ``1h30m``, ``24h``, ``0`` or a bare number of seconds → seconds."""
    t = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    pos, total = 0, 0.0
    for m in _PART.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t) or not t:
        raise UsageError(f"{flag}: bad duration {text!r} (examples: 90s, 30m, 1h30m)")
    return total


def format_age(ts: float | None, now: float | None = None) -> str:
    """A short relative time for tables: ``5 seconds ago``, ``3 hours ago``."""
    if not ts:
        return "-"
    delta = max(0.0, (now or time.time()) - ts)
    for unit, secs in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if delta >= secs:
            n = int(delta // secs)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def format_time(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(ts))


def format_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}B"

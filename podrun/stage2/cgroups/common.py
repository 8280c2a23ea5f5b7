"""Shared pieces of the cgroup backends: the resource and stats types, the error,
and careful file/directory helpers (clear one-line errors, bounded rmdir retries)."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from podrun.errors import PodError

#: CFS period podrun uses for CPU quotas (100 ms, the kernel's default).
CPU_PERIOD_US = 100_000


class CgroupError(PodError):
    """A cgroup could not be created, configured, read or removed."""


@dataclass(frozen=True)
class Resources:
    """Limits for one cgroup, from the appc ``resource/*`` isolators.

    - ``memory_limit``: bytes (``resource/memory`` limit); None = unlimited.
    - ``cpu_quota_millis``: millicores (``resource/cpu`` limit, 1000 = one CPU),
      turned into a CFS quota over a :data:`CPU_PERIOD_US` period.
    - ``cpu_shares``: cgroup v1 shares (2..262144, default 1024); v2 converts to weight.
    - ``pids_limit``: maximum number of tasks.
    """

    memory_limit: int | None = None
    cpu_quota_millis: int | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None

    def cpu_quota_us(self) -> int | None:
        if self.cpu_quota_millis is None:
            return None
        # millicores/1000 CPUs × period; the kernel's minimum quota is 1 ms
        return max(1000, self.cpu_quota_millis * CPU_PERIOD_US // 1000)


@dataclass
class Stats:
    """What ``podrun status`` needs from a pod's cgroup. Missing data stays None."""

    pids: list[int] = field(default_factory=list)
    memory_usage: int | None = None
    memory_limit: int | None = None
    memory_failcnt: int | None = None
    oom_events: int | None = None      # times the limit triggered the OOM path
    oom_kills: int | None = None       # processes the OOM killer killed here
    pids_current: int | None = None
    cpu_usage_us: int | None = None

    @property
    def oom_killed(self) -> bool:
        """True once the OOM killer killed a process in this cgroup."""
        return bool(self.oom_kills)


def read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise CgroupError(f"cannot read {path}: {e.strerror}") from e


def read_int(path: Path) -> int | None:
    """An integer file; ``max`` → None."""
    text = read(path)
    return None if text == "max" else int(text)


def read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed file (``key value`` per line) like memory.events."""
    out: dict[str, int] = {}
    for line in read(path).splitlines():
        key, _, val = line.partition(" ")
        if val.strip().lstrip("-").isdigit():
            out[key] = int(val)
    return out


def write(path: Path, value: str | int) -> None:
    """Write one value to a cgroup control file (one write(2), as the kernel wants)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"cannot open {path}: {e.strerror}") from e
    try:
        os.write(fd, str(value).encode())
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def procs(path: Path, recursive: bool = True) -> list[int]:
    """PIDs in the cgroup at *path* (and below it, if *recursive*)."""
    found: list[int] = []
    dirs = [path]
    while dirs:
        d = dirs.pop()
        try:
            found += [int(p) for p in (d / "cgroup.procs").read_text().split()]
            if recursive:
                dirs += [c for c in d.iterdir() if c.is_dir()]
        except FileNotFoundError:
            continue
    return sorted(set(found))


def make_below(parent: Path, rel: str) -> Path:
    """mkdir -p *rel* under *parent*; *parent* must exist and is never created."""
    rel = rel.strip("/")
    if not rel or ".." in Path(rel).parts:
        raise CgroupError(f"bad cgroup path {rel!r}: must be relative, below the parent")
    if not parent.is_dir():
        raise CgroupError(f"cgroup parent {parent} does not exist")
    target = parent / rel
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CgroupError(f"cannot create cgroup {target}: {e.strerror}") from e
    return target


def remove_tree(path: Path, timeout: float = 5.0) -> None:
    """rmdir *path* and its child cgroups, deepest first, retrying while the kernel
    still reports them busy (exiting tasks linger briefly). Gives up after *timeout*
    seconds with a CgroupError naming the cgroup and the PIDs still inside."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            _rmdir_depth_first(path)
            return
        except OSError as e:
            if e.errno == errno.ENOENT and not path.exists():
                return
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.EAGAIN, errno.ENOENT):
                raise CgroupError(f"cannot remove cgroup {path}: {e.strerror}") from e
            if time.monotonic() >= deadline:
                left = procs(path)
                raise CgroupError(
                    f"cgroup {path} still busy after {timeout:g}s"
                    + (f" (pids {' '.join(map(str, left[:10]))})" if left else "")) from e
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _rmdir_depth_first(path: Path) -> None:
    if not path.exists():
        return
    for child in path.iterdir():
        if child.is_dir():
            _rmdir_depth_first(child)
    os.rmdir(path)

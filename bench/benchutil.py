"""Shared helpers of the benchmark scripts: timing, medians, tables, a cgroup parent.

Benchmarks run on demand (never in the test suite) as root from the repo root:
``.venv/bin/python bench/<name>.py [--runs N]``. Each script alternates the compared
commands (A B A B …), reports medians, and cleans up everything it made.

``bench_parent()`` makes ``/podrun-bench-<rand>`` at the root of every cgroup
hierarchy podrun uses (memory, cpu, pids, freezer v1 and the cgroup2 mount) and, on
exit, kills whatever is left in it and removes it from *every* mounted hierarchy
(runc and crun create their cgroups in all v1 controllers). Nothing is ever created
below the cgroup the calling shell sits in.
"""

from __future__ import annotations

import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_PY = REPO / ".venv" / "bin" / "python"
PODRUN = REPO / ".venv" / "bin" / "podrun"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PODRUN_CTRLS = ("memory", "cpu", "pids", "freezer")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def require_root() -> None:
    """Exit unless root; make SIGTERM/SIGINT unwind (so cleanup runs) like Ctrl-C does."""
    if os.geteuid() != 0:
        sys.exit("bench: run me as root")

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def timed(cmd: Sequence[str | os.PathLike[str]], **kw: object) -> float:
    """Run ``cmd`` to completion (it must succeed); return wall seconds."""
    return timed_out(cmd, **kw)[0]


def timed_out(cmd: Sequence[str | os.PathLike[str]], **kw: object) -> tuple[float, str]:
    """Run ``cmd`` to completion (it must succeed); return wall seconds and its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-800:]}")
    return dt, proc.stdout


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median of the per-run ratios a[i]/b[i]."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table (first column left-aligned, the others right-aligned)."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def machine() -> str:
    """One line naming the date, commit, machine, kernel, Python and the load average."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    model = "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}  commit {commit}  nproc {os.cpu_count()}  "
            f"kernel {platform.release()}  cpu {model}  python {platform.python_version()}  "
            f"loadavg {load}")


# cgroups -------------------------------------------------------------------------------

def _cgroup_mounts() -> list[Path]:
    """Mount points of every cgroup (v1) and cgroup2 hierarchy."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for ln in f:
            left, _, right = ln.partition(" - ")
            if right.split()[0] in ("cgroup", "cgroup2"):
                out.append(Path(left.split()[4]))
    return out


def _podrun_roots() -> list[Path]:
    mounts = set(_cgroup_mounts())
    roots = [CGROUP_ROOT / c for c in PODRUN_CTRLS if CGROUP_ROOT / c in mounts]
    for m in mounts:  # the cgroup2 mount of a hybrid (or pure v2) host
        if m in (CGROUP_ROOT / "unified", CGROUP_ROOT):
            roots.append(m)
    return roots


def _wipe(d: Path) -> None:
    """Kill what is left in *d* (only the benchmark's processes) and remove it, with the
    same code ``podrun gc`` uses."""
    from podrun.stage1.gc import kill_cgroup_processes, remove_cgroups

    if d.exists():
        kill_cgroup_processes([d])
        remove_cgroups([d], timeout=10)


@contextmanager
def bench_parent() -> Iterator[str]:
    """``/podrun-bench-<rand>`` at each hierarchy root podrun uses; removed everywhere after."""
    name = f"podrun-bench-{secrets.token_hex(4)}"
    try:
        for root in _podrun_roots():
            (root / name).mkdir()
        yield "/" + name
    finally:
        errors = []
        for root in _cgroup_mounts():
            if (root / name).is_dir():
                try:
                    _wipe(root / name)
                except OSError as e:
                    errors.append(f"{root / name}: {e}")
        if errors:
            print("bench: could not remove cgroups: " + "; ".join(errors), file=sys.stderr)


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(str(path))]


def unmount_all_under(path: Path) -> None:
    """Lazily unmount anything left below ``path`` (deepest first); should be nothing."""
    for m in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)

"""Test cgroup parents: ``/podrun-test-<rand>`` at the root of each hierarchy podrun uses.

Tests never create anything under a cgroup they did not create (DESIGN host rules):
the fixture ``test_parent`` makes its own parent, yields its path (to pass as
``--cgroup-parent``), and afterwards kills what is left in it, removes it, and fails
the test if it cannot.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.stage2 import cgroups

HIER = cgroups.detect()
V1_CTRLS = ("memory", "cpu", "pids", "freezer")


def roots() -> list[Path]:
    out = [HIER.v1[c].mountpoint for c in V1_CTRLS if c in HIER.v1]
    if HIER.v2 is not None:
        out.append(HIER.v2.mountpoint)
    return out


def wipe(d: Path) -> None:
    """Kill what is left in *d* (only our test processes can be there) and remove it,
    with the same code ``podrun gc`` uses for a pod's cgroups."""
    from podrun.stage1.gc import kill_cgroup_processes, remove_cgroups

    if d.exists():
        kill_cgroup_processes([d])
        remove_cgroups([d], timeout=10)


def leftovers(name: str) -> list[Path]:
    """Directories below the test parent ``/name`` in any hierarchy."""
    return [p for r in roots() for p in (r / name).glob("*") if p.is_dir()]


@pytest.fixture
def test_parent() -> Iterator[str]:
    """``/podrun-test-<rand>`` created at the root of each hierarchy; removed after."""
    name = f"podrun-test-{secrets.token_hex(4)}"
    made = []
    try:
        for root in roots():
            (root / name).mkdir()
            made.append(root / name)
        yield "/" + name
    finally:
        for d in made:
            wipe(d)

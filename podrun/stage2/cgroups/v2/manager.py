"""cgroup v2 manager: one cgroup in the unified hierarchy below the parent.

Controllers: a child can use a controller only if every ancestor lists it in
``cgroup.subtree_control``. podrun writes subtree_control on the cgroups it created
(those strictly below the parent, excluding the leaf, which holds processes and so
must not enable controllers — the "no internal processes" rule). The parent's own
subtree_control is written only with ``manage_parent=True``; otherwise the parent
must already delegate what the resources need, or :meth:`apply` raises a
:class:`CgroupError` naming the controller and the parent.

``tracking_only`` (hybrid hosts, where the controllers live in v1): the cgroup only
groups processes (pids, freeze, cgroup.kill), :meth:`apply` writes nothing.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import ModuleType

from podrun.stage2.cgroups.common import (
    CgroupError,
    Resources,
    Stats,
    make_below,
    procs,
    read,
    read_keyed,
    remove_tree,
    write,
)
from podrun.stage2.cgroups.hierarchy import Mount
from podrun.stage2.cgroups.manager import Manager
from podrun.stage2.cgroups.v2 import cpu, memory, pids

CONTROLLERS: dict[str, ModuleType] = {m.NAME: m for m in (memory, cpu, pids)}


class V2Manager(Manager):
    def __init__(self, mount: Mount, parent: str, *, manage_parent: bool = False,
                 tracking_only: bool = False) -> None:
        self.parent = mount.path_of(parent)
        self.manage_parent = manage_parent
        self.tracking_only = tracking_only
        self.dir: Path | None = None

    # -- lifecycle -----------------------------------------------------------
    def create(self, path: str | None = None) -> None:
        self.path = (path or self._need_path()).strip("/")
        self.dir = make_below(self.parent, self.path)

    def directories(self) -> dict[str, Path]:
        return {"unified": self.dir}

    def attach(self, path: str) -> None:
        self.path = path.strip("/")
        self.dir = self.parent / self.path

    def _d(self) -> Path:
        self._need_path()
        assert self.dir is not None
        return self.dir

    def exists(self) -> bool:
        return self.dir is not None and self.dir.is_dir()

    def destroy(self, timeout: float = 5.0) -> None:
        if self.dir is not None:
            remove_tree(self.dir, timeout)

    # -- resources -----------------------------------------------------------
    def apply(self, resources: Resources) -> None:
        d = self._d()
        if self.tracking_only:
            return
        mods = [m for m in CONTROLLERS.values() if m.needed(resources)]
        self.enable([m.NAME for m in mods])
        for m in mods:
            m.apply(d, resources)

    def enable(self, controllers: list[str]) -> None:
        """Make *controllers* available in our cgroup (see module docstring)."""
        if not controllers:
            return
        self._d()
        chain = [self.parent]
        for part in Path(self.path or "").parts[:-1]:
            chain.append(chain[-1] / part)
        for cg in chain:
            enabled = set(read(cg / "cgroup.subtree_control").split())
            missing = [c for c in controllers if c not in enabled]
            if not missing:
                continue
            available = set(read(cg / "cgroup.controllers").split())
            absent = [c for c in missing if c not in available]
            if absent:
                raise CgroupError(f"cgroup v2 controller {', '.join(absent)} not available "
                                  f"in {cg} (not delegated by its parent)")
            if cg == self.parent and not self.manage_parent:
                raise CgroupError(f"cgroup parent {cg} does not delegate the "
                                  f"{', '.join(missing)} controller (enable it in its "
                                  f"cgroup.subtree_control, or let podrun manage the parent)")
            write(cg / "cgroup.subtree_control", " ".join("+" + c for c in missing))

    # -- processes -----------------------------------------------------------
    def add_pid(self, pid: int) -> None:
        write(self._d() / "cgroup.procs", pid)

    def pids(self) -> list[int]:
        return procs(self.dir) if self.dir is not None else []

    def stats(self) -> Stats:
        d = self._d()
        st = Stats(pids=self.pids())
        for m in CONTROLLERS.values():
            m.stats(d, st)
        return st

    def freeze(self) -> None:
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def _set_frozen(self, on: bool, timeout: float = 5.0) -> None:
        d = self._d()
        if not (d / "cgroup.freeze").exists():
            raise CgroupError(f"{d}: cgroup.freeze not supported by this kernel")
        write(d / "cgroup.freeze", int(on))
        deadline = time.monotonic() + timeout
        while read_keyed(d / "cgroup.events").get("frozen") != int(on):
            if time.monotonic() >= deadline:
                raise CgroupError(f"cgroup {d} did not {'freeze' if on else 'thaw'} "
                                  f"in {timeout:g}s")
            time.sleep(0.005)

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
        d = self._d()
        if not d.is_dir():
            return
        if sig == signal.SIGKILL and (d / "cgroup.kill").exists():
            write(d / "cgroup.kill", 1)  # kernel ≥ 5.14: atomic, recursive
        else:
            can_freeze = (d / "cgroup.freeze").exists()
            if can_freeze:
                self.freeze()
            try:
                for pid in self.pids():
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            finally:
                if can_freeze:
                    self.thaw()
        if sig != signal.SIGKILL:
            return
        deadline = time.monotonic() + timeout
        while self.pids():
            if time.monotonic() >= deadline:
                raise CgroupError(f"processes {self.pids()[:10]} survive SIGKILL in "
                                  f"cgroup {d} after {timeout:g}s")
            time.sleep(0.005)

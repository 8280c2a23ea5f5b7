"""cgroup v1 manager: the same relative path created in each managed controller's
hierarchy, each below that hierarchy's parent."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from podrun.stage2.cgroups.common import (
    CgroupError,
    Resources,
    Stats,
    make_below,
    procs,
    remove_tree,
    write,
)
from podrun.stage2.cgroups.hierarchy import Hierarchies
from podrun.stage2.cgroups.manager import Manager, Parent, parent_for
from podrun.stage2.cgroups.v1 import cpu, freezer, memory, pids

#: controller modules by name; a new controller is a new module here
CONTROLLERS: dict[str, ModuleType] = {m.NAME: m for m in (memory, cpu, pids, freezer)}


class V1Manager(Manager):
    def __init__(self, h: Hierarchies, parent: Parent, own: Mapping[str, str],
                 controllers: tuple[str, ...] | None = None) -> None:
        wanted = controllers or tuple(CONTROLLERS)
        unknown = [c for c in wanted if c not in CONTROLLERS]
        if unknown:
            raise CgroupError(f"unsupported cgroup v1 controller(s): {', '.join(unknown)}")
        #: controller → filesystem path of its parent cgroup
        self.parents: dict[str, Path] = {
            c: h.v1[c].path_of(parent_for(parent, c, own)) for c in wanted if c in h.v1
        }
        self.dirs: dict[str, Path] = {}

    def _set(self, path: str) -> None:
        self.path = path.strip("/")
        self.dirs = {c: p / self.path for c, p in self.parents.items()}

    def create(self, path: str | None = None) -> None:
        self._set(path or self._need_path())
        made: list[Path] = []
        try:
            for c, parent in self.parents.items():
                made.append(make_below(parent, self.path))
                if c == "cpuset":  # pragma: no cover - not managed by default
                    raise CgroupError("cpuset is not supported")
        except CgroupError:
            for d in made:
                remove_tree(d, timeout=1)
            raise

    def directories(self) -> dict[str, Path]:
        return dict(self.dirs)

    def attach(self, path: str) -> None:
        self._set(path)

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs.values())

    def apply(self, resources: Resources) -> None:
        self._need_path()
        for name, mod in CONTROLLERS.items():
            if not mod.needed(resources):
                continue
            if name not in self.dirs:
                raise CgroupError(f"cgroup v1 controller {name} is not mounted; "
                                  f"cannot apply its limits")
            mod.apply(self.dirs[name], resources)

    def add_pid(self, pid: int) -> None:
        self._need_path()
        for d in self.dirs.values():
            write(d / "cgroup.procs", pid)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs.values():
            found.update(procs(d))
        return sorted(found)

    def stats(self) -> Stats:
        self._need_path()
        st = Stats(pids=self.pids())
        for name, d in self.dirs.items():
            if d.is_dir():
                CONTROLLERS[name].stats(d, st)
        return st

    def freeze(self) -> None:
        if "freezer" not in self.dirs:
            raise CgroupError("cgroup v1 freezer is not mounted")
        freezer.set_state(self.dirs["freezer"], "FROZEN")

    def thaw(self) -> None:
        if "freezer" in self.dirs:
            freezer.set_state(self.dirs["freezer"], "THAWED")

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
        self._need_path()
        deadline = time.monotonic() + timeout
        can_freeze = "freezer" in self.dirs and self.dirs["freezer"].is_dir()
        while True:
            if can_freeze:
                self.freeze()
            try:
                for pid in self.pids():
                    _kill(pid, sig)
            finally:
                if can_freeze:
                    self.thaw()
            if sig != signal.SIGKILL or not self.pids():
                return
            if time.monotonic() >= deadline:
                raise CgroupError(f"processes {self.pids()[:10]} survive SIGKILL in cgroup "
                                  f"{self.path} after {timeout:g}s")
            time.sleep(0.01)

    def destroy(self, timeout: float = 5.0) -> None:
        if self.path is None:
            return
        errors = []
        for d in self.dirs.values():
            try:
                remove_tree(d, timeout)
            except CgroupError as e:
                errors.append(str(e))
        if errors:
            raise CgroupError("; ".join(errors))


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass

"""The one interface every cgroup backend implements, and the factory that picks
the backend for this host (v1, v2, or hybrid = v1 for limits + v2 for tracking).

Host rules (DESIGN "Host rules"): a manager is given a *parent* per hierarchy —
default: the cgroup the calling process sits in (/proc/self/cgroup) — and creates,
writes and removes only cgroups *below* it, never the parent itself. The single
exception is cgroup v2's ``cgroup.subtree_control`` of the parent, which must list
a controller before any child can use it: podrun writes it only when told it may
manage the parent (``manage_parent=True``); otherwise the parent must already
delegate the controllers the resources need, or :meth:`Manager.apply` fails naming
the missing controller.

Typical use (stage1 for the pod, stage2 per app)::

    m = get_manager(parent=None)          # or parent="/podrun-test", {"memory": "/x", ...}
    m.create("podrun/pod-<uuid>")
    m.apply(Resources(memory_limit=50 << 20))
    m.add_pid(pid)
    ...
    m.kill_all(); m.destroy()
"""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

from podrun.stage2.cgroups.common import CgroupError, Resources, Stats
from podrun.stage2.cgroups.hierarchy import UNIFIED, Hierarchies, detect, own_cgroup_paths

Parent = str | Mapping[str, str] | None


class Manager(ABC):
    """A cgroup (per hierarchy) below a fixed parent."""

    path: str | None = None  # relative to the parent(s), set by create/attach

    @abstractmethod
    def create(self, path: str | None = None) -> None:
        """Create cgroup *path* (relative, may be nested) below the parent(s);
        None = the path this manager is already bound to (see :meth:`child`)."""

    @abstractmethod
    def attach(self, path: str) -> None:
        """Bind to an existing cgroup *path* (for status/gc from another process)."""

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def apply(self, resources: Resources) -> None:
        """Write the limits in *resources* (None fields are left alone)."""

    @abstractmethod
    def add_pid(self, pid: int) -> None:
        """Move process *pid* (all its threads) into the cgroup."""

    @abstractmethod
    def pids(self) -> list[int]:
        """Processes in the cgroup and its descendants."""

    @abstractmethod
    def stats(self) -> Stats: ...

    @abstractmethod
    def freeze(self) -> None: ...

    @abstractmethod
    def thaw(self) -> None: ...

    @abstractmethod
    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
        """Send *sig* to every process inside (freezing first so none escapes by
        forking); with SIGKILL, wait until the cgroup is empty."""

    @abstractmethod
    def destroy(self, timeout: float = 5.0) -> None:
        """Remove the cgroup and its children; bounded retries, then CgroupError."""

    @abstractmethod
    def directories(self) -> dict[str, Path]:
        """Hierarchy (v1 controller name, or ``"unified"``) → filesystem path of this cgroup."""

    def child(self, name: str) -> Manager:
        """A manager bound to sub-cgroup *name* of this one, with the same parents
        (e.g. an app's cgroup inside its pod's); call ``create()`` or use it as is."""
        import copy

        m = copy.copy(self)
        m.attach(f"{self._need_path()}/{name.strip('/')}")
        return m

    def _need_path(self) -> str:
        if self.path is None:
            raise CgroupError("cgroup manager used before create() or attach()")
        return self.path


def parent_for(parent: Parent, key: str, own: Mapping[str, str] | None = None) -> str:
    """The parent cgroup path for hierarchy *key* (controller name or ``""`` for v2)."""
    if isinstance(parent, str):
        return parent
    if parent is not None:
        for k in (key, "unified" if key == UNIFIED else key):
            if k in parent:
                return parent[k]
    own = own if own is not None else own_cgroup_paths()
    if key in own:
        return own[key]
    raise CgroupError(f"no cgroup parent for hierarchy {key or 'unified'!r}")


def get_manager(parent: Parent = None, *, manage_parent: bool = False,
                hierarchies: Hierarchies | None = None,
                v1_controllers: tuple[str, ...] | None = None) -> Manager:
    """The manager for this host's layout.

    *parent*: one path for every hierarchy, a mapping hierarchy → path (v1 controller
    names; ``""``/``"unified"`` for v2), or None for the caller's own cgroups.
    """
    from podrun.stage2.cgroups.v1.manager import V1Manager
    from podrun.stage2.cgroups.v2.manager import V2Manager

    h = hierarchies or detect()
    own = own_cgroup_paths() if not isinstance(parent, str) else {}
    if h.layout == "v2":
        assert h.v2 is not None
        return V2Manager(h.v2, parent_for(parent, UNIFIED, own), manage_parent=manage_parent)
    if h.layout == "v1":
        return V1Manager(h, parent, own, controllers=v1_controllers)
    if h.layout == "hybrid":
        assert h.v2 is not None
        v1 = V1Manager(h, parent, own, controllers=v1_controllers)
        v2 = V2Manager(h.v2, parent_for(parent, UNIFIED, own), manage_parent=manage_parent,
                       tracking_only=True)
        return HybridManager(v1, v2)
    raise CgroupError("no cgroup hierarchy is mounted")


class HybridManager(Manager):
    """v1 controllers carry the limits; the cgroup2 mount (often without
    controllers) tracks the processes, as systemd does on hybrid hosts."""

    def __init__(self, v1: Manager, v2: Manager) -> None:
        self.v1, self.v2 = v1, v2

    def create(self, path: str | None = None) -> None:
        path = path or self._need_path()
        self.v1.create(path)
        try:
            self.v2.create(path)
        except CgroupError:
            self.v1.destroy()
            raise
        self.path = path

    def child(self, name: str) -> Manager:
        m = HybridManager(self.v1.child(name), self.v2.child(name))
        m.path = m.v1.path
        return m

    def directories(self) -> dict[str, Path]:
        return {**self.v1.directories(), **self.v2.directories()}

    def attach(self, path: str) -> None:
        self.v1.attach(path)
        self.v2.attach(path)
        self.path = path

    def exists(self) -> bool:
        return self.v1.exists() or self.v2.exists()

    def apply(self, resources: Resources) -> None:
        self.v1.apply(resources)

    def add_pid(self, pid: int) -> None:
        self.v1.add_pid(pid)
        self.v2.add_pid(pid)

    def pids(self) -> list[int]:
        return sorted(set(self.v1.pids()) | set(self.v2.pids()))

    def stats(self) -> Stats:
        st = self.v1.stats()
        st.pids = self.pids()
        return st

    def freeze(self) -> None:
        self.v1.freeze()

    def thaw(self) -> None:
        self.v1.thaw()

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
        self.v1.kill_all(sig, timeout)
        self.v2.kill_all(sig, timeout)

    def destroy(self, timeout: float = 5.0) -> None:
        errors = []
        for m in (self.v1, self.v2):
            try:
                m.destroy(timeout)
            except CgroupError as e:
                errors.append(str(e))
        if errors:
            raise CgroupError("; ".join(errors))

"""Where the cgroup hierarchies are mounted and where this process sits in them.

Reads /proc/self/mountinfo (v1 mounts and their controllers, the cgroup2 mount) and
/proc/self/cgroup. Layouts: ``v2`` (only cgroup2), ``v1`` (only v1 hierarchies),
``hybrid`` (v1 controllers plus a cgroup2 mount, usually /sys/fs/cgroup/unified,
which may carry no controllers and then serves only process tracking).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: key used for the cgroup2 (unified) hierarchy in per-hierarchy mappings
UNIFIED = ""


@dataclass(frozen=True)
class Mount:
    """One mounted hierarchy: its mount point and which cgroup its root shows
    (``/`` unless mounted from inside a cgroup namespace or a bind of a subtree)."""

    mountpoint: Path
    root: str = "/"

    def path_of(self, cgroup: str) -> Path:
        """Filesystem path of *cgroup* (a hierarchy path as in /proc/self/cgroup)."""
        rel = cgroup
        if self.root != "/" and (rel == self.root or rel.startswith(self.root + "/")):
            rel = rel[len(self.root):]
        return self.mountpoint / rel.strip("/")


@dataclass
class Hierarchies:
    """The host's cgroup mounts: v1 by controller name (a comounted hierarchy such as
    ``cpu,cpuacct`` appears under each name), and the cgroup2 mount if any."""

    v1: dict[str, Mount] = field(default_factory=dict)
    v2: Mount | None = None

    @property
    def layout(self) -> str:
        if self.v1 and self.v2:
            return "hybrid"
        if self.v2:
            return "v2"
        if self.v1:
            return "v1"
        return "none"

    def v2_controllers(self) -> set[str]:
        if self.v2 is None:
            return set()
        try:
            return set((self.v2.mountpoint / "cgroup.controllers").read_text().split())
        except OSError:
            return set()


def parse_mountinfo(text: str) -> Hierarchies:
    """Build :class:`Hierarchies` from /proc/self/mountinfo content."""
    from podrun.linux import mountinfo

    h = Hierarchies()
    for m in mountinfo.parse(text):
        if not m.super_options:
            continue
        mount = Mount(Path(m.mount_point), m.root)
        if m.fstype == "cgroup2":
            if h.v2 is None:
                h.v2 = mount
        elif m.fstype == "cgroup":
            for opt in m.super_options:
                if opt in ("rw", "ro") or "=" in opt and not opt.startswith("name="):
                    continue
                if opt in _NOT_CONTROLLERS:
                    continue
                h.v1.setdefault(opt, mount)
    return h


_NOT_CONTROLLERS = {"noprefix", "clone_children", "cpuset_v2_mode", "xattr", "favordynmods",
                    "nsdelegate", "memory_recursiveprot", "memory_localevents"}


def detect() -> Hierarchies:
    """The hierarchies visible to this process."""
    with open("/proc/self/mountinfo") as f:
        return parse_mountinfo(f.read())


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Map each hierarchy to a cgroup path from /proc/<pid>/cgroup content.

    Keys: each v1 controller name (``cpu`` and ``cpuacct`` separately for a comounted
    ``cpu,cpuacct``), ``name=…`` for named v1 hierarchies, and ``""``
    (:data:`UNIFIED`) for the cgroup2 hierarchy.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out[UNIFIED] = path
            continue
        for c in controllers.split(","):
            out[c] = path
    return out


def own_cgroup_paths() -> dict[str, str]:
    """Where the calling process sits, per hierarchy (see :func:`parse_proc_cgroup`)."""
    with open("/proc/self/cgroup") as f:
        return parse_proc_cgroup(f.read())

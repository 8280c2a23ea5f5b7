"""cgroups for pods and apps, youki-style: sibling backends behind one interface.

- :mod:`.hierarchy` — find the mounts (v1, v2, hybrid) and our own cgroups
- :mod:`.manager` — the :class:`Manager` interface, :func:`get_manager`, hybrid
- :mod:`.v1` / :mod:`.v2` — backends; one small module per controller
- :mod:`.common` — :class:`Resources`, :class:`Stats`, :class:`CgroupError`, file helpers

Host rules: see :mod:`.manager` — podrun creates and removes only cgroups below the
parent it is given (default: its own), writing the parent's v2 subtree_control only
when allowed to manage the parent.
"""

from podrun.stage2.cgroups.common import CgroupError, Resources, Stats
from podrun.stage2.cgroups.hierarchy import (
    UNIFIED,
    Hierarchies,
    Mount,
    detect,
    own_cgroup_paths,
    parse_mountinfo,
    parse_proc_cgroup,
)
from podrun.stage2.cgroups.manager import HybridManager, Manager, get_manager

__all__ = [
    "UNIFIED", "CgroupError", "Hierarchies", "HybridManager", "Manager", "Mount",
    "Resources", "Stats", "detect", "get_manager", "own_cgroup_paths", "parse_mountinfo",
    "parse_proc_cgroup",
]

"""The stage2 input: what the pod init hands :func:`podrun.stage2.launch.launch` for
one app (``AppSpec``) and each of its extra mounts (``MountSpec``).

Every path that is not an in-app path (``lower``, ``app_dir``, mount sources, etc
file sources) is a path in the *current* view of the process that calls ``launch``
(the pod init's mount namespace). In-app paths (mount targets, ``working_dir``, etc
file keys) are absolute paths inside the app's rootfs and are always resolved within
it, never through a symlink that leaves it.

``to_json``/``from_json`` carry a spec across a process boundary (tests, a future
exec'd stage2); the seccomp filter is not serialised (build it on the other side).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from podrun.stage2.seccomp import Filter

MOUNT_KINDS = ("bind", "file", "tmpfs")


@dataclass
class MountSpec:
    """One extra mount of an app (a pod volume or a host path)."""

    target: str                    # absolute path inside the app
    source: str | None             # path in the current view; None for "tmpfs"
    kind: str                      # "bind" | "file" (bind one file) | "tmpfs"
    read_only: bool = False
    recursive: bool = True
    #: empty volume serving a mountPoint: if the volume dir is empty, copy the
    #: image's own content at *target* into it first (owners, modes kept)
    seed_from_image: bool = False
    mode: int | None = None        # applied to the source dir (tmpfs: mount option)
    uid: int | None = None
    gid: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in MOUNT_KINDS:
            raise ValueError(f"mount {self.target}: unknown kind {self.kind!r}")
        if not self.target.startswith("/"):
            raise ValueError(f"mount target {self.target!r} is not an absolute path")
        if self.kind != "tmpfs" and not self.source:
            raise ValueError(f"mount {self.target}: kind {self.kind} needs a source")


@dataclass
class AppSpec:
    """Everything stage2 needs to set up one app and exec it."""

    name: str
    lower: str                     # rendered tree rootfs (read-only)
    app_dir: str                   # <pod dir>/apps/<name>: upper/, work/, rootfs/ live here
    exec: list[str]                # argv; exec[0] looked up in the app's PATH if relative
    env: dict[str, str]
    user: str = "0"                # name, number or /path, resolved in the IMAGE's /etc
    group: str = "0"               # "" = the user's primary group
    supplementary_gids: list[int] = field(default_factory=list)
    working_dir: str = "/"
    read_only_rootfs: bool = False
    overlay: bool = True           # False: copy the tree into app_dir/rootfs (once)
    mounts: list[MountSpec] = field(default_factory=list)
    hostname: str | None = None    # informational; the init set the UTS hostname
    #: in-app path → file in the current view, bind-mounted over the app's file
    etc_files: dict[str, str] = field(default_factory=dict)
    caps: set[int] | None = None   # None: the appc default set
    no_new_privs: bool = False
    seccomp: Filter | None = None
    oom_score_adj: int | None = None
    rlimits: dict[int, tuple[int, int]] = field(default_factory=dict)
    cgroup_procs_fds: list[int] = field(default_factory=list)
    keep_fds: list[int] = field(default_factory=list)   # become fds 3, 4, … in the app

    @property
    def rootfs(self) -> str:
        return f"{self.app_dir.rstrip('/')}/rootfs"


def to_json(spec: AppSpec) -> dict[str, Any]:
    """A JSON-able dict of *spec* (without the seccomp filter)."""
    d = asdict(spec)
    d.pop("seccomp", None)
    d["caps"] = sorted(spec.caps) if spec.caps is not None else None
    d["rlimits"] = {str(k): list(v) for k, v in spec.rlimits.items()}
    return d


def from_json(d: dict[str, Any]) -> AppSpec:
    """Inverse of :func:`to_json` (unknown keys are rejected)."""
    known = {f.name for f in fields(AppSpec)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown AppSpec fields: {', '.join(sorted(unknown))}")
    d = dict(d)
    d["mounts"] = [MountSpec(**m) for m in d.get("mounts", [])]
    if d.get("caps") is not None:
        d["caps"] = set(d["caps"])
    d["rlimits"] = {int(k): (int(v[0]), int(v[1])) for k, v in d.get("rlimits", {}).items()}
    return AppSpec(**d)

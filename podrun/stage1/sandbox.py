"""The pod init's own root: the stage1 rootfs, with only what the pod needs bound in.

The init shares its pid namespace with the apps, so ``/proc/1/root`` must not be the
host's ``/`` (DESIGN, security invariants). In a mount namespace of its own the init
mounts the stage1 rootfs (overlay of the stage1 tree, upper dir in the pod dir) and
binds into it, read-only unless said otherwise:

- what its interpreter needs: ``/usr``, Python's prefixes and podrun's own package;
- the pod dir at ``/opt/podrun/pod`` (read-write: status files, app upper dirs;
  ``nodev,nosuid``, which the apps' empty volumes inherit);
- each app's rendered tree at ``/opt/podrun/trees/<key>/rootfs``;
- each host volume at ``/opt/podrun/volumes/<name>`` (its ``readOnly`` kept);
- a ``/dev`` tmpfs with null, zero, full, random, urandom and tty, and a ``/proc`` of
  the pod's pid namespace;

then pivots into it and detaches the old root. Nothing else of the host stays
reachable from the init's root.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from podrun.linux import constants as c
from podrun.linux.calls import mount, pivot_root, umount2

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def interpreter_paths() -> list[str]:
    import podrun

    cands = ["/usr", sys.base_prefix, sys.prefix,
             str(Path(podrun.__file__).resolve().parent.parent)]
    out: list[str] = []
    for p in sorted({os.path.realpath(x) for x in cands}, key=len):
        if p == "/" or any(p == q or p.startswith(q + "/") for q in out):
            continue
        out.append(p)
    return out


def _mkdirs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _bind(src: str, dest: Path, *, read_only: bool, recursive: bool = True,
          extra: int = 0) -> None:
    """Bind ``src`` at ``dest``; ``read_only`` (implies nosuid) and ``extra`` mount flags
    are applied by a remount of the new bind."""
    if os.path.isdir(src):
        _mkdirs(dest)
    else:
        _mkdirs(dest.parent)
        if not dest.exists():
            dest.touch()
    flags = c.MS_BIND | (c.MS_REC if recursive else 0)
    mount(src, dest, None, flags)
    if read_only:
        extra |= c.MS_RDONLY | c.MS_NOSUID
    if extra:
        mount(None, dest, None, c.MS_BIND | c.MS_REMOUNT | extra
              | (c.MS_REC if recursive else 0))


def mount_stage1_rootfs(pod_dir: Path, info: dict[str, Any]) -> Path:
    s1 = pod_dir / "stage1"
    root, upper, work = s1 / "rootfs", s1 / "upper", s1 / "work"
    for d in (root, upper, work):
        _mkdirs(d)
    lower = Path(info["stage1"]["tree"]) / "rootfs"
    try:
        mount("overlay", root, "overlay", 0,
              f"lowerdir={lower},upperdir={upper},workdir={work}")
    except OSError:
        # No overlayfs (or not on this fs): a private tmpfs copy of the small stage1 tree.
        import subprocess

        mount("tmpfs", root, "tmpfs", c.MS_NOSUID | c.MS_NODEV, "mode=0755")
        subprocess.run(["cp", "-a", f"{lower}/.", str(root)], check=True)
    return root


def enter(pod_dir: Path, info: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Build the init's root (see module doc) and pivot into it. Runs as the pod init."""
    mount(None, "/", None, c.MS_REC | c.MS_SLAVE)
    root = mount_stage1_rootfs(pod_dir, info)
    for p in interpreter_paths():
        _bind(p, root / p.lstrip("/"), read_only=True)
    # nodev, nosuid: the apps' empty volumes are bind mounts of pod-dir subdirs and
    # inherit these flags, so a device node an app makes there (CAP_MKNOD is in appc's
    # default set; podrun has no device cgroup) cannot be opened, nor a setuid file used.
    _bind(str(pod_dir), root / "opt/podrun/pod", read_only=False, recursive=False,
          extra=c.MS_NODEV | c.MS_NOSUID)
    for app in info["apps"].values():
        _bind(str(Path(app["tree"]) / "rootfs"),
              root / "opt/podrun/trees" / app["tree_key"] / "rootfs", read_only=True,
              recursive=False)
    for vol in manifest.get("volumes", []):
        if vol["kind"] == "host":
            # A directory volume is nodev,nosuid: device nodes or setuid files an app
            # (or anyone) puts there give nothing; a single device file stays usable.
            extra = c.MS_NODEV | c.MS_NOSUID if os.path.isdir(vol["source"]) else 0
            _bind(vol["source"], root / "opt/podrun/volumes" / vol["name"],
                  read_only=bool(vol.get("readOnly")),
                  recursive=vol.get("recursive", True) is not False, extra=extra)
    dev = root / "dev"
    _mkdirs(dev)
    mount("tmpfs", dev, "tmpfs", c.MS_NOSUID | c.MS_NOEXEC, "mode=0755,size=64k")
    for name in DEVICES:
        _bind(f"/dev/{name}", dev / name, read_only=False, recursive=False)
    _mkdirs(root / "proc")
    mount("proc", root / "proc", "proc", c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC)
    old = root / ".stage0"
    _mkdirs(old)
    pivot_root(root, old)
    os.chdir("/")
    umount2("/.stage0", c.MNT_DETACH)
    os.rmdir("/.stage0")

"""Test images built from Debian's busybox-static: rootfs dirs and image manifests.

``busybox_rootfs(dir)`` lays out a minimal rootfs (``/bin/busybox`` plus applet
symlinks, ``/etc/passwd``, ``/etc/group``, ``/tmp``); ``image_dir(...)`` writes a
``manifest`` next to it, ready for ``podrun image build``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "true", "false", "echo", "cat", "ls", "sleep", "id", "env", "mkdir",
           "touch", "rm", "chown", "mknod", "grep", "head", "wc", "stat", "kill", "ps",
           "hostname", "mount", "dd", "test", "[", "printf", "pwd", "readlink", "sha256sum",
           "ln", "chmod", "cp", "mv", "uname", "find", "tail", "seq", "nc", "ip", "ping")


def busybox_rootfs(rootfs: Path) -> Path:
    """Create a minimal busybox rootfs at ``rootfs`` (created if absent)."""
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        link = rootfs / "bin" / applet
        if not link.exists():
            os.symlink("busybox", link)
    etc = rootfs / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "daemon:x:1:1:daemon:/:/bin/false\n"
        "user:x:1000:1000:user:/home/user:/bin/sh\n"
    )
    (etc / "group").write_text("root:x:0:\ndaemon:x:1:\nusers:x:100:user\nuser:x:1000:\n")
    for d in ("tmp", "root", "home/user", "var", "dev", "proc", "sys"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    return rootfs


def manifest(name: str, version: str = "1.0.0", exec_: list[str] | None = None,
             **extra: Any) -> dict[str, Any]:
    """An appc image manifest for a busybox app (``extra`` merges top-level keys)."""
    m: dict[str, Any] = {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": name,
        "labels": [
            {"name": "version", "value": version},
            {"name": "os", "value": "linux"},
            {"name": "arch", "value": "amd64"},
        ],
    }
    if exec_ is not None:
        m["app"] = {"exec": exec_, "user": "0", "group": "0"}
    m.update(extra)
    return m


def image_dir(root: Path, name: str, version: str = "1.0.0",
              exec_: list[str] | None = None, **extra: Any) -> Path:
    """A build directory (``manifest`` + busybox ``rootfs/``) for ``podrun image build``."""
    root.mkdir(parents=True, exist_ok=True)
    busybox_rootfs(root / "rootfs")
    (root / "manifest").write_text(json.dumps(manifest(name, version, exec_, **extra), indent=2))
    return root


def actool_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """Run Debian's ``actool validate`` on a manifest or ACI file."""
    return subprocess.run(["actool", "validate", str(path)], capture_output=True, text=True)


def tiny_aci(root: Path, name: str, version: str = "1.0.0", *,
             files: dict[str, bytes] | None = None, busybox: bool = False,
             exec_: list[str] | None = None, compress: bool = True,
             **extra: Any) -> Path:
    """Build ``root/<name-version>.aci`` with ``podrun.appc.aci.build_aci``.

    ``files`` maps rootfs-relative paths to contents; ``busybox`` adds a busybox rootfs.
    """
    from podrun.appc.aci import build_aci

    safe = name.replace("/", "_")
    src = root / f"{safe}-{version}.src"
    rootfs = src / "rootfs"
    rootfs.mkdir(parents=True, exist_ok=True)
    if busybox:
        busybox_rootfs(rootfs)
    for rel, data in (files or {}).items():
        p = rootfs / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (src / "manifest").write_text(json.dumps(manifest(name, version, exec_, **extra)))
    out = root / f"{safe}-{version}.aci"
    build_aci(src, out, compress=compress, overwrite=True)
    return out

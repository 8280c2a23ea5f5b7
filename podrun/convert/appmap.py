"""Docker/OCI image config → appc image manifest (name, labels, app, annotations).

* name: from the reference (see :mod:`podrun.convert.reference`), labels
  ``version`` = tag (absent for a digest-only reference), ``os``, ``arch`` (Docker
  names mapped to appc's: arm64 → aarch64, arm/v7 → armv7l, 386 → i386…);
* app.exec = Entrypoint + Cmd (no app.exec when both are empty);
* app.user/group from ``User``: ``name``, ``uid``, ``name:group``, ``uid:gid``.
  A user without a group gets the primary group from the image's own
  ``/etc/passwd`` (numeric), else ``0``; names stay names (resolved in the image
  at run time). No ``User`` → ``0``/``0``;
* environment from ``Env`` (later duplicates win); workingDirectory from ``WorkingDir``;
* ports from ``ExposedPorts``: ``80/tcp`` → ``{"name": "80-tcp", "protocol": "tcp",
  "port": 80}``; mountPoints from ``Volumes``: ``/var/lib/data`` →
  ``{"name": "volume-var-lib-data", "path": "/var/lib/data"}``;
* Docker ``Labels`` → image annotations (names lower-cased and made AC
  identifiers; a label actool would reject as an annotation, e.g. ``homepage``
  that is not a URL, is left out); ``created`` from the config;
* annotations ``appc.io/docker/registryurl``, ``repository``, ``tag``, ``imageid``
  (config digest), ``manifesthash`` (manifest digest), ``entrypoint`` and ``cmd``
  (JSON), ``parentimageid`` (layered mode: the image ID of the top layer ACI),
  ``originalname`` (the reference as given).

Nothing here depends on time or the host, so the same input gives the same manifest.
"""

from __future__ import annotations

import json
import re
from typing import Any

from podrun.convert.sources import Image
from podrun.errors import ManifestError

AC_VERSION = "0.8.11"
_ARCH = {("amd64", ""): "amd64", ("386", ""): "i386", ("arm64", ""): "aarch64",
         ("arm64", "v8"): "aarch64", ("arm", "v6"): "armv6l", ("arm", "v7"): "armv7l",
         ("arm", ""): "armv7l", ("ppc64le", ""): "ppc64le", ("ppc64", ""): "ppc64",
         ("s390x", ""): "s390x"}


def appc_arch(arch: str, variant: str = "") -> str | None:
    return _ARCH.get((arch, variant)) or _ARCH.get((arch, ""))


def _ac_name(text: str) -> str:
    """An ACName (``[a-z0-9]+(-[a-z0-9]+)*``) from free text."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _ac_identifier(text: str) -> str:
    name = re.sub(r"[^a-z0-9._~/-]", "-", text.lower())
    name = re.sub(r"([-._~/])[-._~/]+", r"\1", name)
    return name.strip("-._~/")


def _passwd_gid(passwd: bytes | None, user: str) -> str | None:
    if not passwd:
        return None
    for line in passwd.decode("utf-8", "replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and (parts[0] == user or (user.isdigit() and parts[2] == user)):
            return parts[3]
    return None


def user_group(spec: str, passwd: bytes | None) -> tuple[str, str]:
    spec = (spec or "").strip()
    if not spec:
        return "0", "0"
    user, _, group = spec.partition(":")
    if group:
        return user, group
    return user, _passwd_gid(passwd, user) or "0"


def _annotation_ok(name: str, value: str) -> bool:
    from podrun.appc.manifest import parse_annotations

    try:
        parse_annotations([{"name": name, "value": value}])
    except ManifestError:
        return False
    return True


def image_manifest(image: Image, *, passwd: bytes | None = None,
                   dependencies: list[dict[str, Any]] | None = None,
                   parent_image_id: str | None = None) -> dict[str, Any]:
    """The appc image manifest (a dict) for ``image`` (see module doc)."""
    cfg = image.config.get("config") or image.config.get("container_config") or {}
    n = image.naming
    labels = []
    if n.version:
        labels.append({"name": "version", "value": n.version})
    os_ = image.config.get("os") or "linux"
    labels.append({"name": "os", "value": os_})
    arch = appc_arch(image.config.get("architecture", ""), image.config.get("variant", ""))
    if arch:
        labels.append({"name": "arch", "value": arch})
    m: dict[str, Any] = {"acKind": "ImageManifest", "acVersion": AC_VERSION, "name": n.name,
                         "labels": labels}
    app = _app(cfg, passwd)
    if app:
        m["app"] = app
    m["annotations"] = _annotations(image, cfg, parent_image_id)
    if dependencies:
        m["dependencies"] = dependencies
    return m


def _app(cfg: dict[str, Any], passwd: bytes | None) -> dict[str, Any]:
    entrypoint = list(cfg.get("Entrypoint") or [])
    cmd = list(cfg.get("Cmd") or [])
    user, group = user_group(cfg.get("User") or "", passwd)
    app: dict[str, Any] = {}
    if entrypoint or cmd:
        app["exec"] = entrypoint + cmd
    app["user"], app["group"] = user, group
    env: dict[str, str] = {}
    for item in cfg.get("Env") or []:
        k, _, v = str(item).partition("=")
        if k:
            env[k] = v
    if env:
        app["environment"] = [{"name": k, "value": v} for k, v in env.items()]
    if cfg.get("WorkingDir"):
        app["workingDirectory"] = cfg["WorkingDir"]
    ports = []
    for key in sorted(cfg.get("ExposedPorts") or {}):
        port, _, proto = key.partition("/")
        proto = proto or "tcp"
        if port.isdigit():
            ports.append({"name": f"{port}-{proto}", "protocol": proto, "port": int(port)})
    if ports:
        app["ports"] = ports
    mounts, seen = [], set()
    for path in sorted(cfg.get("Volumes") or {}):
        base = "volume-" + (_ac_name(path) or "root")
        name, i = base, 1
        while name in seen:
            i += 1
            name = f"{base}-{i}"
        seen.add(name)
        mounts.append({"name": name, "path": path})
    if mounts:
        app["mountPoints"] = mounts
    return app


def _annotations(image: Image, cfg: dict[str, Any],
                 parent_image_id: str | None) -> list[dict[str, str]]:
    out: dict[str, str] = {}
    for key, value in sorted((cfg.get("Labels") or {}).items()):
        name = _ac_identifier(str(key))
        if name and _annotation_ok(name, str(value)):
            out[name] = str(value)
    created = image.config.get("created")
    if created and _annotation_ok("created", created):
        out["created"] = created
    n = image.naming
    docker = {
        "registryurl": n.registry,
        "repository": n.repository,
        "tag": n.tag,
        "imageid": image.config_digest,
        "manifesthash": image.manifest_digest,
        "entrypoint": json.dumps(cfg["Entrypoint"]) if cfg.get("Entrypoint") else None,
        "cmd": json.dumps(cfg["Cmd"]) if cfg.get("Cmd") else None,
        "parentimageid": parent_image_id,
        "originalname": n.original,
    }
    for key, value in docker.items():
        if value:
            out[f"appc.io/docker/{key}"] = value
    return [{"name": k, "value": v} for k, v in out.items()]

"""Registry credentials: where a user name and password for a registry host come from.

Looked up in this order, the first match wins:

1. podrun's auth.d (rkt's format) in the local then the system config dir,
   ``auth.d/*.json`` files of kind ``dockerAuth``::

       {"rktKind": "dockerAuth", "rktVersion": "v1",
        "registries": ["registry.example.com", "127.0.0.1:5000"],
        "credentials": {"user": "alice", "password": "secret"}}

   (``podrunKind`` is accepted in place of ``rktKind``; files of other kinds,
   e.g. rkt's ``auth`` for discovery, are ignored here);
2. a docker-style ``config.json``: ``$DOCKER_CONFIG/config.json``, else
   ``~/.docker/config.json``; its ``auths`` map keys (``host``, ``https://host/…``,
   docker.io's ``https://index.docker.io/v1/``) to ``{"auth": base64("user:pw")}``
   or ``{"username": …, "password": …}``. Credential helpers are not run.

The credentials are used for HTTP basic auth and to ask a token service for a
Bearer token (see :mod:`podrun.convert.registry`).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from podrun.errors import FetchError

_DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    origin: str  # the file they came from, for messages


def _host_of(key: str) -> str:
    key = key.strip()
    for prefix in ("https://", "http://"):
        key = key.removeprefix(prefix)
    return key.split("/", 1)[0].lower()


def _same_registry(key: str, host: str) -> bool:
    k, h = _host_of(key), host.lower()
    if k == h:
        return True
    return k in _DOCKER_HUB_KEYS and h in _DOCKER_HUB_KEYS


def from_auth_d(host: str, config_dirs: list[Path]) -> Credentials | None:
    for cfg in config_dirs:
        d = cfg / "auth.d"
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.json")):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise FetchError(f"{path}: cannot read auth config: {err}") from None
            if not isinstance(doc, dict):
                continue
            kind = doc.get("podrunKind") or doc.get("rktKind")
            if kind != "dockerAuth":
                continue
            regs = doc.get("registries") or []
            cred = doc.get("credentials") or {}
            if any(_same_registry(str(r), host) for r in regs):
                if not cred.get("user"):
                    raise FetchError(f"{path}: dockerAuth credentials need a user")
                return Credentials(str(cred["user"]), str(cred.get("password", "")), str(path))
    return None


def docker_config_path() -> Path:
    d = os.environ.get("DOCKER_CONFIG")
    if d:
        return Path(d) / "config.json"
    return Path.home() / ".docker" / "config.json"


def from_docker_config(host: str, path: Path | None = None) -> Credentials | None:
    path = path or docker_config_path()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise FetchError(f"{path}: cannot read docker config: {err}") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if not isinstance(entry, dict) or not _same_registry(key, host):
            continue
        if entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise FetchError(f"{path}: auths[{key!r}].auth is not base64 of "
                                 "user:password") from None
            return Credentials(user, pw, str(path))
        if entry.get("username"):
            return Credentials(str(entry["username"]), str(entry.get("password", "")), str(path))
    return None


def lookup(host: str, config_dirs: list[Path]) -> Credentials | None:
    """Credentials for registry ``host`` (``name[:port]``), or None (see module doc)."""
    return from_auth_d(host, config_dirs) or from_docker_config(host)

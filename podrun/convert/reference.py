"""Docker image references and how they map to appc names.

``[REGISTRY[:PORT]/]REPO[:TAG][@sha256:DIGEST]`` with Docker's defaults: no
registry → ``docker.io``; a one-component repository on docker.io gets
``library/``; no tag and no digest → tag ``latest``. The first component is a
registry when it contains a ``.`` or a ``:`` or is ``localhost`` (Docker's rule).

Name mapping (an appc name is an AC Identifier: lower-case ``[a-z0-9]`` runs
joined by one of ``-._~/``):

* ``docker://busybox`` → ``docker.io/library/busybox``, label ``version=latest``;
* ``docker://127.0.0.1:5000/x/y:1.0`` → ``127.0.0.1-5000/x/y``, ``version=1.0``
  (``:`` is not allowed in a name, so the port is joined with ``-``);
* characters an AC Identifier does not allow become ``-`` and runs of separators
  collapse to their first (``my__app`` → ``my_app``); the exact reference is kept in
  the ``appc.io/docker/originalname`` annotation;
* a digest-only reference (``@sha256:…``) gets no version label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from podrun.errors import UsageError

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"

_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST_RE = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$")


@dataclass(frozen=True)
class DockerRef:
    """A parsed docker reference (``registry`` as given, e.g. ``127.0.0.1:5000``)."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None
    original: str

    @property
    def api_host(self) -> str:
        """The host serving the registry API (docker.io's is registry-1.docker.io)."""
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def reference(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def url(self) -> str:
        """The canonical ``docker://`` form (used as the store's source URL)."""
        return "docker://" + str(self)

    def appc_name(self) -> str:
        return appc_name(f"{self.registry}/{self.repository}")


def parse(text: str) -> DockerRef:
    """Parse ``docker://…`` (the scheme is optional); UsageError naming a bad part."""
    original = text
    ref = text.removeprefix("docker://")
    if not ref:
        raise UsageError(f"bad docker reference {original!r}: empty")
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise UsageError(f"bad docker reference {original!r}: digest {digest!r} is not "
                             "sha256:<64 hex digits>")
    tag = None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref, tag = ref.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise UsageError(f"bad docker reference {original!r}: bad tag {tag!r}")
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, parts = parts[0], parts[1:]
        if not _HOST_RE.match(registry):
            raise UsageError(f"bad docker reference {original!r}: bad registry {registry!r}")
    else:
        registry = DEFAULT_REGISTRY
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and len(parts) == 1:
        parts = ["library", *parts]
    for comp in parts:
        if not _REPO_COMPONENT_RE.match(comp):
            raise UsageError(f"bad docker reference {original!r}: repository component "
                             f"{comp!r} (lower-case letters, digits and . _ - only)")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return DockerRef(registry, "/".join(parts), tag, digest, original)


def appc_name(text: str) -> str:
    """Turn a registry/repository string into a valid AC Identifier (see module doc)."""
    name = text.lower().replace(":", "-")
    name = re.sub(r"[^a-z0-9._~/-]", "-", name)
    name = re.sub(r"([-._~/])[-._~/]+", r"\1", name)
    name = name.strip("-._~/")
    return name or "image"

"""appc image and pod manifests: dataclasses, validation and lossless JSON.

Owns the ImageManifest/PodManifest model (aci.md, pods.md) and the rules
``actool validate`` (Debian appc-spec 0.8.11, the reference we test against)
applies beyond the JSON Schema: duplicate names, os/arch labels, SemVer,
isolator values and multiplicity, port ranges, volume kinds, annotation dates
and URLs. Validation runs in two passes: the schema (:mod:`podrun.appc.validate`,
structure and types) then the rules here; the first problem raises
``ManifestError(path, message, kind="image manifest"|"pod manifest")`` with the
JSON path of the bad field.

Where actool 0.8.11 is more lenient than the spec's prose we agree with actool,
and say so here, so that what actool accepts podrun accepts too:

* ``exec[0]`` and event handler ``exec`` may be relative (later appc releases
  require an absolute ``exec[0]``); mount point ``path``, ``pathWhitelist``
  entries and pod ``mounts[].path`` are not checked to be absolute.
* Pod ``mounts[].volume`` need not name a declared volume, pods may lack
  ``acVersion``/``apps``, runtime apps may lack a ``name`` or ``image.id``:
  the executor rejects such pods when it runs them, not the validator.
* Port ``protocol`` is free text; capabilities and syscall names are not checked.
* App-level isolators must be ones actool knows ("invalid isolator" otherwise);
  pod-level isolators may be unknown and repeat, but known ones must have a
  valid value.
* ``null`` for an optional array, object or string means absent (Go semantics).

``check_runnable()`` on either manifest adds the rules an executor needs on top
(absolute ``exec[0]`` and mount paths, mounts naming declared volumes, octal
volume modes, tcp/udp ports…); call it before running a user-supplied manifest.

Go-only quirks we do not copy: case-insensitive key matching, ``null`` elements
inside arrays (Go reads them as zero values, we reject them), and panics on a
known isolator without a value (we report an error).

``from_json(..., trusted=True)`` skips the schema pass (and the ``jsonschema``
import) for documents podrun wrote itself after validating them.

Round trip: ``from_json(x).to_dict() == x`` for every valid ``x``. Each object keeps
the JSON object it came from in ``raw`` (compare=False): ``to_dict`` starts from
it, so key order, unknown keys and explicit ``null``/``[]``/``false`` survive,
and only fields whose values changed are rewritten.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from podrun.appc import types as t
from podrun.errors import ManifestError

IMAGE_KIND = "image manifest"
POD_KIND = "pod manifest"

EVENT_HANDLER_NAMES = ("pre-start", "post-stop")

# --- isolators actool 0.8.11 knows --------------------------------------------

RESOURCE_ISOLATORS_DEFAULT_FALSE = ("resource/cpu", "resource/memory")
RESOURCE_ISOLATORS_DEFAULT_TRUE = ("resource/block-bandwidth", "resource/block-iops",
                                   "resource/network-bandwidth")
CAPS_RETAIN = "os/linux/capabilities-retain-set"
CAPS_REMOVE = "os/linux/capabilities-remove-set"
SECCOMP_RETAIN = "os/linux/seccomp-retain-set"
SECCOMP_REMOVE = "os/linux/seccomp-remove-set"
NO_NEW_PRIVILEGES = "os/linux/no-new-privileges"
OOM_SCORE_ADJ = "os/linux/oom-score-adj"
CPU_SHARES = "os/linux/cpu-shares"
SELINUX_CONTEXT = "os/linux/selinux-context"
SYSCTL = "os/unix/sysctl"

# Isolators that may appear more than once in one app (actool's multipleAllowed).
MULTIPLE_ALLOWED = frozenset(RESOURCE_ISOLATORS_DEFAULT_FALSE + RESOURCE_ISOLATORS_DEFAULT_TRUE
                             + (CAPS_RETAIN, CAPS_REMOVE, NO_NEW_PRIVILEGES))
SINGLE_ONLY = frozenset((SECCOMP_RETAIN, SECCOMP_REMOVE, OOM_SCORE_ADJ, CPU_SHARES,
                         SELINUX_CONTEXT, SYSCTL))
KNOWN_ISOLATORS = MULTIPLE_ALLOWED | SINGLE_ONLY
CONFLICTS = {SECCOMP_RETAIN: SECCOMP_REMOVE, SECCOMP_REMOVE: SECCOMP_RETAIN}


# --- serialization helpers -------------------------------------------------------

def _blank(value: Any) -> bool:
    return value is None or value is False or value in ("", [], {})


def _emit(raw: dict[str, Any], fields: Iterable[tuple[str, Any, bool]]) -> dict[str, Any]:
    """Rebuild a JSON object from ``raw`` and the current field values.

    ``fields`` is ``(key, json_value, required)``; a blank value (None, "", [], {},
    False) is omitted unless required or unless ``raw`` already held a blank there
    (an explicit ``null``/``[]``/``false`` is kept). Keys of ``raw`` we do not model
    are kept in place; new keys go at the end.
    """
    out = dict(raw)
    for key, value, required in fields:
        if _blank(value):
            if key in raw and _blank(raw[key]):
                continue
            if required and (not raw or key in raw):
                out[key] = value
            else:
                out.pop(key, None)
        else:
            out[key] = value
    return out


def _dicts(items: Iterable[Any]) -> list[dict[str, Any]]:
    return [item.to_dict() for item in items]


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --- small value types ------------------------------------------------------------------

@dataclass
class Label:
    """A ``{"name", "value"}`` label (name is an AC Identifier)."""

    name: str
    value: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _emit(self.raw, [("name", self.name, True), ("value", self.value, True)])


@dataclass
class Annotation(Label):
    """A ``{"name", "value"}`` annotation (name is an AC Identifier)."""


@dataclass
class EnvVar:
    """One ``app.environment`` entry."""

    name: str
    value: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _emit(self.raw, [("name", self.name, True), ("value", self.value, True)])


def _parse_labels(items: Any, path: str, kind: str, cls: type[Label] = Label) -> list[Label]:
    """Labels or annotations: valid names, no duplicates (``raw`` kept)."""
    out: list[Label] = []
    seen: set[str] = set()
    for i, obj in enumerate(_items(items)):
        p = f"{path}[{i}]"
        name = obj.get("name") or ""
        if "name" in obj:
            t.check_ac_identifier(obj["name"], f"{p}.name", kind=kind)
        if name in seen:
            raise ManifestError(f"{p}.name", f"duplicate name {name!r}", kind=kind)
        seen.add(name)
        out.append(cls(name, obj.get("value") or "", raw=obj))
    return out


def _check_label_rules(labels: list[Label], path: str, kind: str) -> None:
    values = {}
    for i, label in enumerate(labels):
        if label.name == "name":
            raise ManifestError(f"{path}[{i}].name", 'a label cannot be called "name"',
                                kind=kind)
        values[label.name] = (i, label.value)
    if "os" in values:
        i, os_name = values["os"]
        arch = values.get("arch")
        where = f"{path}[{arch[0]}].value" if arch and os_name in t.VALID_OS_ARCH else \
            f"{path}[{i}].value"
        t.check_os_arch(os_name, arch[1] if arch else None, where, kind=kind)


def parse_labels(items: Any, path: str = "labels", *, kind: str = "manifest") -> list[Label]:
    """Parse and check a ``labels`` array (names, duplicates, ``name``, os/arch)."""
    labels = _parse_labels(items, path, kind)
    _check_label_rules(labels, path, kind)
    return labels


def parse_annotations(items: Any, path: str = "annotations", *,
                      kind: str = "manifest") -> list[Annotation]:
    """Parse and check ``annotations`` (names, duplicates, created/homepage/documentation)."""
    anns: list[Annotation] = _parse_labels(items, path, kind, Annotation)  # type: ignore[assignment]
    for i, ann in enumerate(anns):
        p = f"{path}[{i}].value"
        if ann.name == "created":
            t.check_rfc3339(ann.value, p, kind=kind)
        elif ann.name in ("homepage", "documentation"):
            t.check_http_url(ann.value, p, kind=kind)
    return anns


# --- isolators ------------------------------------------------------------------------

@dataclass
class Isolator:
    """An isolator: AC Identifier name and its raw JSON value."""

    name: str
    value: Any = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = _emit(self.raw, [("name", self.name, True)])
        if self.value is not None or "value" in self.raw or not self.raw:
            out["value"] = self.value
        return out

    @property
    def known(self) -> bool:
        return self.name in KNOWN_ISOLATORS


def _check_quantity(value: Any, path: str, kind: str) -> None:
    if value is None:
        return
    try:
        t.quantity_value(value)
    except ValueError as err:
        raise ManifestError(path, str(err), kind=kind) from None


def _check_resource(name: str, value: dict[str, Any], path: str, kind: str) -> None:
    default = bool(value.get("default"))
    if name in RESOURCE_ISOLATORS_DEFAULT_FALSE and default:
        raise ManifestError(f"{path}.default", "default must be false", kind=kind)
    if name in RESOURCE_ISOLATORS_DEFAULT_TRUE:
        if not default:
            raise ManifestError(f"{path}.default", "default must be true", kind=kind)
        if value.get("request") is not None:
            raise ManifestError(f"{path}.request", "request is not supported by "
                                f"{name}, must be empty", kind=kind)
    for key in ("request", "limit"):
        _check_quantity(value.get(key), f"{path}.{key}", kind)


def _check_set(name: str, value: dict[str, Any], path: str, kind: str) -> None:
    if not value.get("set"):
        raise ManifestError(f"{path}.set", "set must be non-empty", kind=kind)
    errno = value.get("errno") or ""
    if name in (SECCOMP_RETAIN, SECCOMP_REMOVE) and errno and not t.is_upper_errno(errno):
        raise ManifestError(f"{path}.errno", f"errno {errno!r} must be 'E' followed by "
                            "upper case letters or digits", kind=kind)


def _check_selinux(value: dict[str, Any], path: str, kind: str) -> None:
    for key in ("user", "role", "type", "level"):
        part = value.get(key) or ""
        if not part or ":" in part:
            raise ManifestError(f"{path}.{key}", f"invalid SELinux {key} {part!r}", kind=kind)


def check_isolator_value(name: str, value: Any, path: str, *, kind: str = "manifest") -> None:
    """Check the value of a known isolator (the schema already checked its shape)."""
    if value is None:
        raise ManifestError(path, f"isolator {name} needs a value", kind=kind)
    if name in RESOURCE_ISOLATORS_DEFAULT_FALSE + RESOURCE_ISOLATORS_DEFAULT_TRUE:
        _check_resource(name, value, path, kind)
    elif name in (CAPS_RETAIN, CAPS_REMOVE, SECCOMP_RETAIN, SECCOMP_REMOVE):
        _check_set(name, value, path, kind)
    elif name == SELINUX_CONTEXT:
        _check_selinux(value, path, kind)


def parse_isolators(items: Any, path: str, *, kind: str = "manifest",
                    app_level: bool = True) -> list[Isolator]:
    """Parse isolators; values of known ones are checked.

    ``app_level`` adds actool's set rules for an app: every isolator must be known,
    single-instance ones appear once, seccomp retain and remove sets exclude each other.
    """
    out: list[Isolator] = []
    seen: set[str] = set()
    for i, obj in enumerate(_items(items)):
        p = f"{path}[{i}]"
        name = obj.get("name") or ""
        if name in KNOWN_ISOLATORS:
            check_isolator_value(name, obj.get("value"), f"{p}.value", kind=kind)
        if app_level:
            if name not in KNOWN_ISOLATORS:
                raise ManifestError(f"{p}.name", f"unknown isolator {name!r}", kind=kind)
            if name in seen and name in SINGLE_ONLY:
                raise ManifestError(p, f"isolator {name} may appear only once", kind=kind)
            if CONFLICTS.get(name) in seen:
                raise ManifestError(p, f"isolator {name} conflicts with {CONFLICTS[name]}",
                                    kind=kind)
            seen.add(name)
        out.append(Isolator(name, obj.get("value"), raw=obj))
    return out


# --- app ------------------------------------------------------------------------------

@dataclass
class EventHandler:
    """``pre-start`` or ``post-stop`` command."""

    name: str
    exec: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _emit(self.raw, [("exec", self.exec, True), ("name", self.name, True)])


@dataclass
class MountPoint:
    """A place in the app's filesystem where a volume may be mounted."""

    name: str
    path: str
    read_only: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _emit(self.raw, [("name", self.name, True), ("path", self.path, True),
                                ("readOnly", self.read_only, False)])


@dataclass
class Port:
    """A port the app listens on (``count`` consecutive ports from ``port``)."""

    name: str
    protocol: str
    port: int
    count: int = 1
    socket_activated: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        # actool reads count 0 (or absent) as 1; keep what the document said.
        count: Any = self.raw.get("count", 1) if self.count == 1 else self.count
        out = _emit(self.raw, [("name", self.name, True), ("protocol", self.protocol, True),
                               ("port", self.port, True),
                               ("socketActivated", self.socket_activated, False)])
        if "count" in self.raw or count != 1:
            out["count"] = count
        return out


@dataclass
class App:
    """What to run in an image (or in a pod's runtime app): exec, identity, isolation."""

    exec: list[str] = field(default_factory=list)
    user: str = ""
    group: str = ""
    supplementary_gids: list[int] = field(default_factory=list)
    event_handlers: list[EventHandler] = field(default_factory=list)
    working_directory: str | None = None
    environment: list[EnvVar] = field(default_factory=list)
    isolators: list[Isolator] = field(default_factory=list)
    mount_points: list[MountPoint] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def env_dict(self) -> dict[str, str]:
        return {e.name: e.value for e in self.environment}

    def event_handler(self, name: str) -> EventHandler | None:
        return next((h for h in self.event_handlers if h.name == name), None)

    def isolator(self, name: str) -> Isolator | None:
        """The last isolator called ``name`` (actool's GetByName), or None."""
        return next((i for i in reversed(self.isolators) if i.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return _emit(self.raw, [
            ("exec", list(self.exec), True),
            ("eventHandlers", _dicts(self.event_handlers), False),
            ("user", self.user, True), ("group", self.group, True),
            ("supplementaryGIDs", list(self.supplementary_gids), False),
            ("workingDirectory", self.working_directory, False),
            ("environment", _dicts(self.environment), False),
            ("mountPoints", _dicts(self.mount_points), False),
            ("ports", _dicts(self.ports), False),
            ("isolators", _dicts(self.isolators), False),
        ] + self._annotations_field())

    def _annotations_field(self) -> list[tuple[str, Any, bool]]:
        if not self.annotations and not _parse_app_annotations(self.raw.get("annotations")):
            return []  # absent, empty, or a shape we do not model: leave raw alone
        return [("annotations", _dicts(self.annotations), False)]


def _parse_event_handlers(items: Any, path: str, kind: str) -> list[EventHandler]:
    out: list[EventHandler] = []
    for i, obj in enumerate(_items(items)):
        p = f"{path}[{i}].name"
        name = obj.get("name") or ""
        if not name:
            raise ManifestError(p, "event handler name cannot be empty", kind=kind)
        if name not in EVENT_HANDLER_NAMES:
            raise ManifestError(p, f"bad event handler name {name!r} (must be one of: "
                                f"{', '.join(EVENT_HANDLER_NAMES)})", kind=kind)
        if any(h.name == name for h in out):
            raise ManifestError(p, f"only one {name!r} event handler allowed", kind=kind)
        out.append(EventHandler(name, list(_items(obj.get("exec"))), raw=obj))
    return out


def _parse_environment(items: Any, path: str, kind: str) -> list[EnvVar]:
    out: list[EnvVar] = []
    for i, obj in enumerate(_items(items)):
        p = f"{path}[{i}].name"
        name = t.check_env_name(obj.get("name") or "", p, kind=kind)
        if any(e.name == name for e in out):
            raise ManifestError(p, f"duplicate environment variable {name!r}", kind=kind)
        out.append(EnvVar(name, obj.get("value") or "", raw=obj))
    return out


def _parse_ports(items: Any, path: str, kind: str) -> list[Port]:
    out: list[Port] = []
    for i, obj in enumerate(_items(items)):
        p = f"{path}[{i}]"
        number, count = obj.get("port", 0), obj.get("count", 0)
        if not 1 <= number <= 65535:
            raise ManifestError(f"{p}.port", f"port {number} is not in 1-65535", kind=kind)
        if number + count > 65536:
            raise ManifestError(f"{p}.count", f"port range {number}+{count} ends past 65535",
                                kind=kind)
        out.append(Port(obj.get("name") or "", obj.get("protocol") or "", number,
                        count or 1, bool(obj.get("socketActivated")), raw=obj))
    return out


def _parse_mount_points(items: Any) -> list[MountPoint]:
    return [MountPoint(obj.get("name") or "", obj.get("path") or "",
                       bool(obj.get("readOnly")), raw=obj) for obj in _items(items)]


def _parse_app_annotations(items: Any) -> list[Annotation]:
    # Not an appc 0.8.11 App field (actool ignores it): kept, never judged.
    if not isinstance(items, list) or not all(isinstance(o, dict) for o in items):
        return []
    return [Annotation(str(o.get("name") or ""), str(o.get("value") or ""), raw=o)
            for o in items]


def parse_app(obj: dict[str, Any], path: str, *, kind: str = "manifest") -> App:
    """Parse and check an ``app`` object."""
    for key in ("user", "group"):
        if not obj.get(key):
            raise ManifestError(f"{path}.{key}", f"{key} is required", kind=kind)
    wd = obj.get("workingDirectory") or None
    if wd is not None and not wd.startswith("/"):
        raise ManifestError(f"{path}.workingDirectory",
                            f"workingDirectory {wd!r} must be an absolute path", kind=kind)
    return App(
        exec=list(_items(obj.get("exec"))),
        user=obj["user"], group=obj["group"],
        supplementary_gids=list(_items(obj.get("supplementaryGIDs"))),
        event_handlers=_parse_event_handlers(obj.get("eventHandlers"),
                                             f"{path}.eventHandlers", kind),
        working_directory=wd,
        environment=_parse_environment(obj.get("environment"), f"{path}.environment", kind),
        isolators=parse_isolators(obj.get("isolators"), f"{path}.isolators", kind=kind),
        mount_points=_parse_mount_points(obj.get("mountPoints")),
        ports=_parse_ports(obj.get("ports"), f"{path}.ports", kind),
        annotations=_parse_app_annotations(obj.get("annotations")),
        raw=obj,
    )


def _check_abs(value: str, path: str, what: str, kind: str) -> None:
    if not value.startswith("/"):
        raise ManifestError(path, f"{what} {value!r} must be an absolute path", kind=kind)


def check_app_runnable(app: App, path: str, *, kind: str = "manifest") -> None:
    """What an executor needs of an app beyond actool's rules (see ``check_runnable``)."""
    if not app.exec:
        raise ManifestError(f"{path}.exec", "exec is empty: nothing to run", kind=kind)
    _check_abs(app.exec[0], f"{path}.exec[0]", "exec[0]", kind)
    for i, handler in enumerate(app.event_handlers):
        if not handler.exec:
            raise ManifestError(f"{path}.eventHandlers[{i}].exec", "exec is empty", kind=kind)
        _check_abs(handler.exec[0], f"{path}.eventHandlers[{i}].exec[0]", "exec[0]", kind)
    for i, mp in enumerate(app.mount_points):
        if not mp.name:
            raise ManifestError(f"{path}.mountPoints[{i}].name", "name is required", kind=kind)
        _check_abs(mp.path, f"{path}.mountPoints[{i}].path", "mount point path", kind)
    for i, port in enumerate(app.ports):
        if not port.name:
            raise ManifestError(f"{path}.ports[{i}].name", "name is required", kind=kind)
        if port.protocol not in ("tcp", "udp"):
            raise ManifestError(f"{path}.ports[{i}].protocol", f"protocol {port.protocol!r} "
                                "must be tcp or udp", kind=kind)
    for i, iso in enumerate(app.isolators):
        if iso.name in ("resource/memory", "resource/cpu") and isinstance(iso.value, dict):
            limit = iso.value.get("limit")
            if limit is not None and t.quantity_value(limit) <= 0:
                raise ManifestError(f"{path}.isolators[{i}].value.limit",
                                    f"limit {limit!r} must be more than zero", kind=kind)


# --- image manifest -------------------------------------------------------------------

@dataclass
class Dependency:
    """An image this image's rootfs is laid over."""

    image_name: str
    image_id: str | None = None
    labels: list[Label] = field(default_factory=list)
    size: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _emit(self.raw, [("imageName", self.image_name, True),
                                ("imageID", self.image_id, False),
                                ("labels", _dicts(self.labels), False),
                                ("size", self.size, False)])


def _parse_dependencies(items: Any, kind: str) -> list[Dependency]:
    out = []
    for i, obj in enumerate(_items(items)):
        p = f"dependencies[{i}]"
        if not obj.get("imageName"):
            raise ManifestError(f"{p}.imageName", "imageName cannot be empty", kind=kind)
        image_id = obj.get("imageID")
        if image_id is not None:
            t.parse_image_id(image_id, f"{p}.imageID", kind=kind)
        out.append(Dependency(obj["imageName"], image_id,
                              parse_labels(obj.get("labels"), f"{p}.labels", kind=kind),
                              obj.get("size"), raw=obj))
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load(data: bytes | str | dict[str, Any], kind: str) -> dict[str, Any]:
    if isinstance(data, dict):
        return copy.deepcopy(data)
    try:
        doc = json.loads(data, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise ManifestError("", f"not valid JSON: {err}", kind=kind) from None
    if not isinstance(doc, dict):
        raise ManifestError("", "must be a JSON object", kind=kind)
    return doc


@dataclass
class ImageManifest:
    """An appc image manifest (the ``manifest`` file of an ACI)."""

    ac_kind: str = "ImageManifest"
    ac_version: str = ""
    name: str = ""
    labels: list[Label] = field(default_factory=list)
    app: App | None = None
    annotations: list[Annotation] = field(default_factory=list)
    dependencies: list[Dependency] = field(default_factory=list)
    path_whitelist: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any], *,
                  trusted: bool = False) -> ImageManifest:
        """Parse and validate (schema, then actool's rules); raises ``ManifestError``.

        ``trusted=True`` skips the JSON Schema pass (and the ``jsonschema`` import,
        ~80 ms the first time): only for documents podrun validated itself before
        writing them, e.g. a pod's own manifest. The rules here still run.
        """
        doc = _load(data, IMAGE_KIND)
        if not trusted:
            from podrun.appc.validate import check_schema

            check_schema("image-manifest.json", doc, kind=IMAGE_KIND)
        return cls._from_doc(doc)

    @classmethod
    def _from_doc(cls, doc: dict[str, Any]) -> ImageManifest:
        kind = IMAGE_KIND
        t.check_semver(doc["acVersion"], "acVersion", kind=kind)
        app = doc.get("app")
        return cls(
            ac_kind=doc["acKind"], ac_version=doc["acVersion"], name=doc["name"],
            labels=parse_labels(doc.get("labels"), kind=kind),
            app=parse_app(app, "app", kind=kind) if app is not None else None,
            annotations=parse_annotations(doc.get("annotations"), kind=kind),
            dependencies=_parse_dependencies(doc.get("dependencies"), kind),
            path_whitelist=list(_items(doc.get("pathWhitelist"))),
            raw=doc,
        )

    def to_dict(self) -> dict[str, Any]:
        return _emit(self.raw, [
            ("acKind", self.ac_kind, True), ("acVersion", self.ac_version, True),
            ("name", self.name, True), ("labels", _dicts(self.labels), False),
            ("app", self.app.to_dict() if self.app is not None else None, False),
            ("annotations", _dicts(self.annotations), False),
            ("dependencies", _dicts(self.dependencies), False),
            ("pathWhitelist", list(self.path_whitelist), False),
        ])

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    def check_runnable(self) -> None:
        """Stricter than actool: the app (if any) can really be run.

        exec present with an absolute ``exec[0]`` (as later appc releases require),
        absolute mount point and event handler paths, named ports over tcp/udp,
        absolute ``pathWhitelist`` entries. Raises ``ManifestError``.
        """
        if self.app is not None:
            check_app_runnable(self.app, "app", kind=IMAGE_KIND)
        for i, entry in enumerate(self.path_whitelist):
            _check_abs(entry, f"pathWhitelist[{i}]", "pathWhitelist entry", IMAGE_KIND)

    def label(self, name: str) -> str | None:
        return next((lb.value for lb in self.labels if lb.name == name), None)

    @property
    def labels_dict(self) -> dict[str, str]:
        return {lb.name: lb.value for lb in self.labels}

    def annotation(self, name: str) -> str | None:
        return next((a.value for a in self.annotations if a.name == name), None)


# --- pod manifest ---------------------------------------------------------------------

@dataclass
class Volume:
    """A pod volume: ``host`` (bind ``source``) or ``empty`` (fresh dir, mode/uid/gid)."""

    name: str
    kind: str
    source: str | None = None
    read_only: bool | None = None
    recursive: bool | None = None
    mode: str | None = None
    uid: int | None = None
    gid: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = _emit(self.raw, [("name", self.name, True), ("kind", self.kind, True),
                               ("source", self.source, False)])
        for key, value in (("readOnly", self.read_only), ("recursive", self.recursive),
                           ("mode", self.mode), ("uid", self.uid), ("gid", self.gid)):
            if value is not None:
                out[key] = value
            elif self.raw.get(key) is not None:
                out.pop(key)
        return out


def parse_volume(obj: dict[str, Any], path: str, *, kind: str = POD_KIND) -> Volume:
    """Check one volume as actool does (kind, host source, empty-only settings)."""
    vkind, source = obj["kind"], obj.get("source") or ""
    if vkind == "empty" and source:
        raise ManifestError(f"{path}.source", "source for empty volume must be empty",
                            kind=kind)
    if vkind == "host":
        if not source:
            raise ManifestError(f"{path}.source", "source for host volume cannot be empty",
                                kind=kind)
        if not source.startswith("/"):
            raise ManifestError(f"{path}.source", f"source {source!r} for host volume must "
                                "be an absolute path", kind=kind)
        for key in ("mode", "uid", "gid"):
            if obj.get(key) is not None:
                raise ManifestError(f"{path}.{key}", f"{key} for host volume cannot be set",
                                    kind=kind)
    return Volume(obj["name"], vkind, obj.get("source"), obj.get("readOnly"),
                  obj.get("recursive"), obj.get("mode"), obj.get("uid"), obj.get("gid"),
                  raw=obj)


def _check_volume_runnable(vol: Volume, path: str, kind: str) -> None:
    if vol.mode is not None and not re.fullmatch(r"0?[0-7]{1,4}", vol.mode):
        raise ManifestError(f"{path}.mode", f"mode {vol.mode!r} is not an octal file mode",
                            kind=kind)
    for key, value in (("uid", vol.uid), ("gid", vol.gid)):
        if value is not None and not 0 <= value < 2**32 - 1:
            raise ManifestError(f"{path}.{key}", f"{key} {value} is out of range", kind=kind)


@dataclass
class RuntimeImage:
    """The image a runtime app runs: its ID (and the name/labels it was resolved from)."""

    name: str | None = None
    id: str = ""
    labels: list[Label] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _emit(self.raw, [("name", self.name, False), ("id", self.id, True),
                                ("labels", _dicts(self.labels), False)])


@dataclass
class Mount:
    """Mount pod volume ``volume`` at ``path`` in one app (``app_volume`` overrides)."""

    volume: str
    path: str
    app_volume: Volume | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        av = self.app_volume.to_dict() if self.app_volume is not None else None
        return _emit(self.raw, [("volume", self.volume, True), ("path", self.path, True),
                                ("appVolume", av, False)])


@dataclass
class RuntimeApp:
    """One app of a pod: name, image, optional app override, mounts."""

    name: str
    image: RuntimeImage = field(default_factory=RuntimeImage)
    app: App | None = None
    read_only_root_fs: bool = False
    mounts: list[Mount] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        img = self.image.to_dict()
        if self.raw.get("image") is None and img == {"id": ""} and not self.image.raw:
            img = None  # the document had no image (or null)
        return _emit(self.raw, [
            ("name", self.name, True), ("image", img, True),
            ("app", self.app.to_dict() if self.app is not None else None, False),
            ("readOnlyRootFS", self.read_only_root_fs, False),
            ("mounts", _dicts(self.mounts), False),
            ("annotations", _dicts(self.annotations), False),
        ])


@dataclass
class ExposedPort:
    """A pod port forwarded from the host (``hostIP`` is a podrun/rkt extension)."""

    name: str
    host_port: int
    host_ip: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _emit(self.raw, [("name", self.name, True), ("hostPort", self.host_port, True),
                                ("hostIP", self.host_ip, False)])


def _parse_runtime_image(obj: dict[str, Any] | None, path: str, kind: str) -> RuntimeImage:
    if obj is None:
        return RuntimeImage()
    if "id" in obj:
        t.parse_image_id(obj["id"], f"{path}.id", kind=kind)
    return RuntimeImage(obj.get("name"), obj.get("id", ""),
                        parse_labels(obj.get("labels"), f"{path}.labels", kind=kind), raw=obj)


def _parse_mounts(items: Any, path: str, kind: str) -> list[Mount]:
    out = []
    for i, obj in enumerate(_items(items)):
        av = obj.get("appVolume")
        out.append(Mount(obj.get("volume") or "", obj.get("path") or "",
                         parse_volume(av, f"{path}[{i}].appVolume", kind=kind)
                         if av is not None else None, raw=obj))
    return out


def _parse_runtime_apps(items: Any, kind: str) -> list[RuntimeApp]:
    out: list[RuntimeApp] = []
    for i, obj in enumerate(_items(items)):
        p = f"apps[{i}]"
        name = obj.get("name") or ""
        if any(a.name == name for a in out):
            raise ManifestError(f"{p}.name", f"duplicate app name {name!r}", kind=kind)
        app = obj.get("app")
        out.append(RuntimeApp(
            name, _parse_runtime_image(obj.get("image"), f"{p}.image", kind),
            parse_app(app, f"{p}.app", kind=kind) if app is not None else None,
            bool(obj.get("readOnlyRootFS")),
            _parse_mounts(obj.get("mounts"), f"{p}.mounts", kind),
            parse_annotations(obj.get("annotations"), f"{p}.annotations", kind=kind),
            raw=obj))
    return out


def _parse_volumes(items: Any, kind: str) -> list[Volume]:
    out: list[Volume] = []
    for i, obj in enumerate(_items(items)):
        vol = parse_volume(obj, f"volumes[{i}]", kind=kind)
        if any(v.name == vol.name for v in out):
            raise ManifestError(f"volumes[{i}].name", f"duplicate volume name {vol.name!r}",
                                kind=kind)
        out.append(vol)
    return out


def _parse_exposed_ports(items: Any, kind: str) -> list[ExposedPort]:
    out = []
    for i, obj in enumerate(_items(items)):
        host_ip = obj.get("hostIP")
        if host_ip is not None:
            t.check_ip(host_ip, f"ports[{i}].hostIP", kind=kind)
        out.append(ExposedPort(obj.get("name") or "", obj.get("hostPort", 0), host_ip, raw=obj))
    return out


@dataclass
class PodManifest:
    """An appc pod manifest: the apps of a pod, its volumes, isolators and ports."""

    ac_version: str = ""
    ac_kind: str = "PodManifest"
    apps: list[RuntimeApp] = field(default_factory=list)
    volumes: list[Volume] = field(default_factory=list)
    isolators: list[Isolator] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    ports: list[ExposedPort] = field(default_factory=list)
    user_annotations: dict[str, str] = field(default_factory=dict)
    user_labels: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any], *,
                  trusted: bool = False) -> PodManifest:
        """Parse and validate (schema, then actool's rules); raises ``ManifestError``.

        ``trusted=True`` skips the JSON Schema pass (and the ``jsonschema`` import,
        ~80 ms the first time): only for documents podrun validated itself before
        writing them, e.g. a pod's own manifest. The rules here still run.
        """
        doc = _load(data, POD_KIND)
        if not trusted:
            from podrun.appc.validate import check_schema

            check_schema("pod-manifest.json", doc, kind=POD_KIND)
        return cls._from_doc(doc)

    @classmethod
    def _from_doc(cls, doc: dict[str, Any]) -> PodManifest:
        kind = POD_KIND
        if "acVersion" in doc:
            t.check_semver(doc["acVersion"], "acVersion", kind=kind)
        return cls(
            ac_version=doc.get("acVersion", ""), ac_kind=doc["acKind"],
            apps=_parse_runtime_apps(doc.get("apps"), kind),
            volumes=_parse_volumes(doc.get("volumes"), kind),
            isolators=parse_isolators(doc.get("isolators"), "isolators", kind=kind,
                                      app_level=False),
            annotations=parse_annotations(doc.get("annotations"), kind=kind),
            ports=_parse_exposed_ports(doc.get("ports"), kind),
            user_annotations=dict(doc.get("userAnnotations") or {}),
            user_labels=dict(doc.get("userLabels") or {}),
            raw=doc,
        )

    def to_dict(self) -> dict[str, Any]:
        return _emit(self.raw, [
            ("acVersion", self.ac_version, True), ("acKind", self.ac_kind, True),
            ("apps", _dicts(self.apps), True), ("volumes", _dicts(self.volumes), False),
            ("isolators", _dicts(self.isolators), False),
            ("annotations", _dicts(self.annotations), False),
            ("ports", _dicts(self.ports), False),
            ("userAnnotations", dict(self.user_annotations), False),
            ("userLabels", dict(self.user_labels), False),
        ])

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    def check_runnable(self) -> None:
        """Stricter than actool: what an executor needs before it can run this pod.

        Every app has a name and an image (ID or name); each mount names a declared
        volume (or carries an ``appVolume``) at an absolute path; ``empty`` volumes
        have an octal ``mode`` and non-negative uid/gid; an app given in full passes
        :func:`check_app_runnable`; exposed ports are in 1-65535. ``actool validate``
        accepts all of these broken, so ``from_json`` does too. Raises ``ManifestError``.
        """
        kind = POD_KIND
        for i, vol in enumerate(self.volumes):
            _check_volume_runnable(vol, f"volumes[{i}]", kind)
        declared = {v.name for v in self.volumes}
        for i, rapp in enumerate(self.apps):
            p = f"apps[{i}]"
            if not rapp.name:
                raise ManifestError(f"{p}.name", "app name is required", kind=kind)
            if not rapp.image.id and not rapp.image.name:
                raise ManifestError(f"{p}.image", "image needs an id or a name", kind=kind)
            if rapp.app is not None:
                check_app_runnable(rapp.app, f"{p}.app", kind=kind)
            for j, mount in enumerate(rapp.mounts):
                mp = f"{p}.mounts[{j}]"
                if mount.app_volume is not None:
                    _check_volume_runnable(mount.app_volume, f"{mp}.appVolume", kind)
                elif mount.volume not in declared:
                    raise ManifestError(f"{mp}.volume", f"no volume named {mount.volume!r} "
                                        "in the pod", kind=kind)
                _check_abs(mount.path, f"{mp}.path", "mount path", kind)
        for i, port in enumerate(self.ports):
            if not 1 <= port.host_port <= 65535:
                raise ManifestError(f"ports[{i}].hostPort", f"host port {port.host_port} is "
                                    "not in 1-65535", kind=kind)

    def app(self, name: str) -> RuntimeApp | None:
        return next((a for a in self.apps if a.name == name), None)

    def volume(self, name: str) -> Volume | None:
        return next((v for v in self.volumes if v.name == name), None)


# --- entry points ---------------------------------------------------------------------

def validate_image_manifest(data: bytes | str | dict[str, Any]) -> ImageManifest:
    """Parse and validate an image manifest; raises ``ManifestError``."""
    return ImageManifest.from_json(data)


def validate_pod_manifest(data: bytes | str | dict[str, Any]) -> PodManifest:
    """Parse and validate a pod manifest; raises ``ManifestError``."""
    return PodManifest.from_json(data)


def validate_manifest(data: bytes | str | dict[str, Any]) -> ImageManifest | PodManifest:
    """Validate a manifest of either kind, chosen by its ``acKind`` (as ``actool validate``)."""
    doc = _load(data, "manifest")
    ac_kind = doc.get("acKind")
    if ac_kind == "ImageManifest":
        return ImageManifest.from_json(doc)
    if ac_kind == "PodManifest":
        return PodManifest.from_json(doc)
    shown = "missing" if ac_kind is None else repr(ac_kind)
    raise ManifestError("acKind", f"acKind is {shown}, want ImageManifest or PodManifest")

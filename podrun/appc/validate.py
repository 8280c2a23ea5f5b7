"""JSON Schema enforcement for appc manifests.

Owns loading ``podrun/appc/schemas/*.json`` (package data, read lazily through
``importlib.resources``), compiling one ``jsonschema`` validator per schema
(cached), and turning the first schema violation into a one-line
:class:`ManifestError` whose ``path`` is the JSON path (``app.exec[0]``,
``labels[2].name``). ``jsonschema`` is imported only when a manifest is first
validated, never at import time.

The schemas state structure and types. ``integer`` means a JSON integer literal
(``1.0`` is not one, as Go's ``encoding/json`` refuses it for int fields). Rules
between fields live in :mod:`podrun.appc.manifest`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any

from podrun.errors import ManifestError

SCHEMA_BASE = "https://podrun.io/schemas/appc/"
SCHEMA_FILES = ("image-manifest.json", "pod-manifest.json")


def load_schema(filename: str) -> dict[str, Any]:
    """The parsed JSON Schema ``filename`` from the package's ``schemas/``."""
    text = resources.files("podrun.appc").joinpath("schemas", filename).read_text("utf-8")
    return json.loads(text)


@functools.cache
def _validator(filename: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource

    registry: Registry = Registry()
    for name in SCHEMA_FILES:
        registry = registry.with_resource(SCHEMA_BASE + name,
                                          Resource.from_contents(load_schema(name)))
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
    cls = jsonschema.validators.extend(base, type_checker=checker)
    # The schemas themselves are checked by the test suite (test_manifest.py), not on
    # every run: checking a schema costs more than validating a manifest with it.
    return cls(load_schema(filename), registry=registry)


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def json_path(parts: Iterable[str | int]) -> str:
    """``["app", "exec", 0]`` → ``"app.exec[0]"``; odd keys are quoted: ``value["a.b"]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
        else:
            out += f".{part}" if out else part
    return out


_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"), (type(None), "null"))


def json_type(value: Any) -> str:
    """The JSON type name of a Python value from ``json.loads``."""
    for py, name in _JSON_TYPES:
        if isinstance(value, py):
            return name
    return type(value).__name__


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: Any) -> tuple[list[str | int], str]:
    """(path parts, one-line message) for one ``jsonschema.ValidationError``."""
    path = list(error.absolute_path)
    kw, want, got = error.validator, error.validator_value, error.instance
    if kw == "required":
        missing = next((p for p in want if p not in got), want[0])
        return path + [missing], "is required"
    if kw == "type":
        wanted = " or ".join(want) if isinstance(want, list) else want
        return path, f"must be {wanted}, not {json_type(got)}"
    if kw == "pattern":
        title = error.schema.get("title", "value")
        return path, f"{_short(got)} is not a valid {title}"
    if kw == "const":
        return path, f"must be {_short(want)}, not {_short(got)}"
    if kw == "enum":
        return path, f"{_short(got)} is not one of {', '.join(map(_short, want))}"
    if kw in ("minimum", "maximum"):
        return path, f"{got} is out of range ({error.message.split(' is ', 1)[-1]})"
    return path, " ".join(error.message.split())


def check_schema(filename: str, document: Any, *, kind: str) -> None:
    """Raise ``ManifestError`` for the most relevant schema violation of ``document``."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(filename).iter_errors(document))
    if error is None:
        return
    # A oneOf/anyOf failure ("null or X"): report why the value is not an X.
    while error.context:
        causes = [e for e in error.context
                  if not (e.validator == "type" and e.validator_value == "null")]
        error = jsonschema.exceptions.best_match(causes or error.context)
    parts, message = _describe(error)
    raise ManifestError(json_path(parts), message, kind=kind)

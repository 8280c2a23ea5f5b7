"""Choosing and importing the stage1 image of a pod.

A stage1 is an ACI whose annotations name its entrypoints (see docs/stage1.md).
podrun's own flavors live as ACI sources in ``stage1-images/<flavor>/`` (manifest +
rootfs); on first use podrun builds the flavor (reproducibly, owners root) and
imports it into the store under the name ``podrun.io/stage1-<flavor>``, labelled
with podrun's version and a digest of the source, so an edited flavor is rebuilt.

``--stage1-flavor NAME`` picks a built-in flavor; ``--stage1-path FILE.aci`` and
``--stage1-name NAME|URL`` fetch a third-party stage1 like any image (signature rules
included). The default is the ``default`` flavor.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podrun import __version__
from podrun.errors import ImageError, UsageError

if TYPE_CHECKING:
    from podrun.stage0.context import Context
    from podrun.stage0.fetch import Fetcher
    from podrun.store.store import Store

ANN = "podrun.io/stage1/"
ENTRYPOINTS = ("run", "enter", "stop", "gc")
INTERFACE_VERSION = "1"
BUILTIN_FLAVORS = ("default", "fly")


@dataclass
class Stage1:
    image_id: str
    name: str
    flavor: str                    # the built-in flavor name, or "external"
    entrypoints: dict[str, str]    # kind → path inside the stage1 rootfs
    builtin: bool                  # may be entered in-process (fast path)

    def to_json(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "name": self.name, "flavor": self.flavor,
                "entrypoints": self.entrypoints, "builtin": self.builtin}


def images_dir() -> Path:
    """Where the flavor sources are: $PODRUN_STAGE1_IMAGES, the source tree, or share/."""
    env = os.environ.get("PODRUN_STAGE1_IMAGES")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "stage1-images",
                   Path(sys.prefix) / "share" / "podrun" / "stage1-images"]
    for c in candidates:
        if (c / "default" / "manifest").is_file():
            return c
    raise ImageError("stage1 images not found (looked in "
                     + ", ".join(map(str, candidates)) + "; set PODRUN_STAGE1_IMAGES)")


def source_digest(src: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames
                                        if os.path.islink(os.path.join(dirpath, d))]):
            p = os.path.join(dirpath, name)
            h.update(os.path.relpath(p, src).encode() + b"\0")
            if os.path.islink(p):
                h.update(b"L" + os.readlink(p).encode())
                if name.endswith(".c") and os.path.isfile(p):  # a shared source (fly → default)
                    h.update(Path(p).read_bytes())
            else:
                st = os.stat(p)
                h.update(f"{st.st_mode:o}".encode())
                h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def builtin_image(ctx: Context, store: Store, flavor: str) -> str:
    """The store ID of a built-in flavor, building and importing it when needed."""
    from podrun.appc.aci import build_aci

    if flavor not in BUILTIN_FLAVORS:
        raise UsageError(f"--stage1-flavor {flavor!r}: unknown flavor (choose from "
                         f"{', '.join(BUILTIN_FLAVORS)})")
    src = images_dir() / flavor
    digest = source_digest(src)
    name = f"podrun.io/stage1-{flavor}"
    for rec in store.find(name, {"version": __version__}):
        if rec.manifest.get("annotations") and any(
                a["name"] == ANN + "source-digest" and a["value"] == digest
                for a in rec.manifest["annotations"]):
            return rec.id
    tmp = store._tmp_path("stage1").with_suffix(".aci")
    work = store._tmp_path("stage1-src")
    try:
        _with_digest(src, work, digest)
        compile_native(ctx, src, work)
        build_aci(work, tmp, compress=False, owner_root=True, overwrite=True)
        image_id = store.import_aci(tmp)
        ctx.log(f"imported stage1 flavor {flavor} as {image_id[:39]}")
        return image_id
    finally:
        tmp.unlink(missing_ok=True)
        from podrun.fsutil import rmtree

        rmtree(work)


def compile_native(ctx: Context, flavor_dir: Path, work: Path) -> None:
    """Build a flavor's C helpers (``src/*.c`` → ``rootfs/podrun/<name>``) if it has any.

    Sources are read from the flavor's own directory (``fly`` links the default
    flavor's ``idle.c``); the binaries go into the copy being built.

    The default flavor's ``idle`` loop keeps long-running pods small (see its source);
    without a C compiler the flavor still works, its Python loops simply stay resident.
    """
    import shutil
    import subprocess

    src_dir = flavor_dir / "src"
    sources = sorted(p.resolve() for p in src_dir.glob("*.c")) if src_dir.is_dir() else []
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    for source in sources:
        out = work / "rootfs" / "podrun" / source.stem
        if cc is None:
            ctx.log(f"no C compiler: {source.name} not built, Python loops stay resident")
            return
        proc = subprocess.run([cc, "-O2", "-s", "-Wall", "-o", str(out), str(source)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            ctx.warn(f"building {source.name} failed ({proc.stderr.strip()[:200]}); "
                     "pods keep their Python loops")
            out.unlink(missing_ok=True)


def _with_digest(src: Path, work: Path, digest: str) -> None:
    """Copy the flavor source, stamping version and source digest into its manifest."""
    import json
    import shutil

    shutil.copytree(src, work, symlinks=True)
    m = json.loads((src / "manifest").read_text())
    labels = [lab for lab in m.get("labels", []) if lab["name"] != "version"]
    m["labels"] = [{"name": "version", "value": __version__}, *labels]
    anns = [a for a in m.get("annotations", []) if a["name"] != ANN + "source-digest"]
    m["annotations"] = [*anns, {"name": ANN + "source-digest", "value": digest}]
    (work / "manifest").write_text(json.dumps(m, indent=2))


def describe(store: Store, image_id: str) -> Stage1:
    rec = store.get(image_id)
    anns = {a["name"]: a["value"] for a in rec.manifest.get("annotations", [])}
    version = anns.get(ANN + "interface-version")
    if version != INTERFACE_VERSION:
        raise ImageError(f"image {rec.name} is not a podrun stage1 (annotation "
                         f"{ANN}interface-version is {version!r}, want {INTERFACE_VERSION})")
    eps = {k: anns[ANN + k] for k in ENTRYPOINTS if ANN + k in anns}
    if "run" not in eps:
        raise ImageError(f"stage1 {rec.name} has no {ANN}run entrypoint")
    builtin = anns.get(ANN + "builtin")
    flavor = builtin if builtin in BUILTIN_FLAVORS and rec.name == f"podrun.io/stage1-{builtin}" \
        else "external"
    return Stage1(image_id, rec.name, flavor, eps, flavor != "external")


def resolve_stage1(ctx: Context, store: Store, fetcher: Fetcher,
                   choice: dict[str, str | None]) -> Stage1:
    if choice.get("path"):
        image_id = fetcher.fetch_file(Path(choice["path"] or ""))
    elif choice.get("name"):
        image_id = fetcher.fetch(choice["name"] or "")
    else:
        flavor = choice.get("flavor") or os.environ.get("PODRUN_STAGE1_FLAVOR") or "default"
        image_id = builtin_image(ctx, store, flavor)
    return describe(store, image_id)

"""Fetch + convert + render of a Docker image from a loopback registry, against skopeo+umoci.

The image: busybox-static (umoci) plus a layer holding a copy of /usr/lib/python3.11
(~17 MB compressed, ~55 MB and ~1,800 files uncompressed), pushed with skopeo to
Debian's docker-registry on 127.0.0.1. Alternated, each run from a cold cache:

* podrun:  ``podrun fetch docker://…`` (download, verify, convert, import) + ``Store.render``;
* skopeo+umoci: ``skopeo copy docker://… oci:DIR:TAG`` + ``umoci unpack``;
* floor:   ``gzip -dc BLOB | tar -x`` of the same layer blobs, one after the other.

Goal (issue 4): podrun ≤ 0.75× skopeo+umoci. Run as root from the repo root:
``.venv/bin/python bench/convert.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchutil import machine, median, paired_ratio, require_root, table  # noqa: E402
from tests.registry import Registry, busybox_fill, push, run, umoci_image  # noqa: E402

PY_LIB = Path("/usr/lib/python3.11")


def build(root: Path) -> Path:
    layout = root / "layout"
    umoci_image(layout, "bench", root, busybox_fill)
    run("umoci", "insert", "--image", f"{layout}:bench", PY_LIB, "/usr/lib/python3.11")
    return layout


def layer_blobs(layout: Path) -> list[Path]:
    index = json.loads((layout / "index.json").read_text())
    desc = index["manifests"][-1]
    blobs = layout / "blobs/sha256"
    manifest = json.loads((blobs / desc["digest"].split(":")[1]).read_bytes())
    return [blobs / d["digest"].split(":")[1] for d in manifest["layers"]]


def podrun_once(ref: str, work: Path) -> float:
    data = work / "data"
    env = dict(os.environ, PODRUN_DIR=str(data), PODRUN_LOCAL_CONFIG=str(work / "etc"),
               PODRUN_SYSTEM_CONFIG=str(work / "lib"))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "podrun", "--insecure-options=image,http",
                          "fetch", ref], env=env, capture_output=True, text=True, check=True)
    from podrun.store.store import Store

    store = Store(data)
    store.render(out.stdout.strip())
    store.close()
    return time.perf_counter() - t0


def skopeo_umoci_once(ref: str, work: Path) -> float:
    t0 = time.perf_counter()
    run("skopeo", "copy", "--quiet", "--src-tls-verify=false", ref, f"oci:{work / 'oci'}:x")
    run("umoci", "unpack", "--image", f"{work / 'oci'}:x", work / "bundle")
    return time.perf_counter() - t0


def floor_once(blobs: list[Path], work: Path) -> float:
    dest = work / "floor"
    dest.mkdir()
    t0 = time.perf_counter()
    for blob in blobs:
        # umoci insert leaves the last body unpadded: GNU tar extracts it all, then exits 2
        # ("Unexpected EOF in archive"); that is not a failure here.
        proc = subprocess.run(f"gzip -dc {blob} | tar -x --same-owner -C {dest}", shell=True,
                              capture_output=True, text=True)
        if proc.returncode not in (0, 2) or (proc.returncode == 2
                                             and "Unexpected EOF" not in proc.stderr):
            raise RuntimeError(f"floor extraction failed: {proc.stderr.strip()}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    require_root()
    root = Path(tempfile.mkdtemp(prefix="podrun-bench-convert-"))
    reg = None
    try:
        layout = build(root)
        blobs = layer_blobs(layout)
        size = sum(b.stat().st_size for b in blobs)
        reg = Registry(root / "registry").start()
        push(layout, "bench", reg, "bench/python", dest_tag="v1")
        ref = f"docker://{reg.host}/bench/python:v1"
        if os.environ.get("BENCH_HOLD"):  # keep the registry up for profiling by hand
            print(ref, flush=True)
            time.sleep(float(os.environ["BENCH_HOLD"]))
        times: dict[str, list[float]] = {"podrun": [], "skopeo+umoci": [], "floor": []}
        for i in range(args.runs):
            for name, fn in (("podrun", lambda w: podrun_once(ref, w)),
                             ("skopeo+umoci", lambda w: skopeo_umoci_once(ref, w)),
                             ("floor", lambda w: floor_once(blobs, w))):
                work = root / f"run-{name}-{i}"
                work.mkdir()
                try:
                    times[name].append(fn(work))
                finally:
                    shutil.rmtree(work, ignore_errors=True)
        print(machine())
        print(f"image: {len(blobs)} layers, {size / 1e6:.1f} MB compressed; runs: {args.runs}")
        print(table(["what", "median s", "× skopeo+umoci"], [
            (n, f"{median(t):.3f}", f"{paired_ratio(t, times['skopeo+umoci']):.2f}")
            for n, t in times.items()]))
        return 0
    finally:
        if reg is not None:
            reg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Image benchmark: build, import and render a ~50 MB ACI against plain ``tar``.

The image is a copy of the host's Python standard library (``/usr/lib/python3.11``,
or the running interpreter's stdlib dir when that is missing). Each run, in fresh
directories (nothing cached in a store), alternates each podrun step with its floor:

- ``podrun image build DIR OUT.aci`` (gzip)         vs ``tar -czf``
- ``podrun image build --no-compression``           vs ``tar -cf``
- ``podrun fetch --insecure-options=image X.aci``    vs ``tar -xzf`` / ``tar -xf`` of it
  (import: decompress, sha512, write + fsync the blob, check layout, index row)
- ``Store.render(id)`` in a fresh process            vs ``tar -xf`` of the plain tar
  (what the first ``podrun run`` of an image pays: re-hash the blob, contained
  extraction in a chrooted child, hash the tree)
- import + render of the gzip ACI                    vs ``tar -xzf``

MB/s is the uncompressed tar size over the step's seconds; ``ratio`` is the median of
the per-run ratios podrun/floor. The page cache is warm (the source tree is read on
every run), so this measures CPU and write cost, not a cold disk.

Usage (root, from the repo root): ``.venv/bin/python bench/images.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from benchutil import (
    PODRUN,
    VENV_PY,
    machine,
    median,
    paired_ratio,
    require_root,
    table,
    timed,
    timed_out,
    unmount_all_under,
)

RENDER = ("import sys; from pathlib import Path; from podrun.store.store import Store; "
          "s = Store(Path(sys.argv[1])); s.render(sys.argv[2]); s.close()")


def stdlib_dir() -> Path:
    p = Path("/usr/lib/python3.11")
    return p if p.is_dir() else Path(sysconfig.get_paths()["stdlib"])


def make_source(tmp: Path, src_lib: Path) -> Path:
    """``tmp/src``: an ACI build dir whose rootfs holds a copy of ``src_lib``."""
    src = tmp / "src"
    dest = src / "rootfs" / src_lib.relative_to("/")
    shutil.copytree(src_lib, dest, symlinks=True)
    manifest = {
        "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/pystdlib",
        "labels": [{"name": "version", "value": "1.0.0"}, {"name": "os", "value": "linux"},
                   {"name": "arch", "value": "amd64"}],
    }
    (src / "manifest").write_text(json.dumps(manifest))
    return src


def podrun_env(data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PODRUN_DIR=str(data), PODRUN_LOCAL_CONFIG=str(data / "etc"),
               PODRUN_SYSTEM_CONFIG=str(data / "lib"))
    env.pop("PODRUN_INSECURE_OPTIONS", None)
    return env


def fetch(data: Path, aci: Path) -> tuple[float, str]:
    """Import ``aci`` into the store at ``data``; seconds and the image ID."""
    dt, out = timed_out([PODRUN, "--insecure-options=image", "fetch", aci], env=podrun_env(data))
    return dt, out.strip()


def one_run(tmp: Path, src: Path, i: int) -> dict[str, float]:
    """One round of every step and its floor, alternated; returns seconds per step."""
    d = tmp / f"run{i}"
    d.mkdir()
    t: dict[str, float] = {}
    gz, plain = d / "img.aci", d / "img.tar.aci"
    t["build gzip"] = timed([PODRUN, "image", "build", src, gz])
    t["tar -czf"] = timed(["tar", "-czf", d / "floor.tgz", "-C", src, "."])
    t["build plain"] = timed([PODRUN, "image", "build", "--no-compression", src, plain])
    t["tar -cf"] = timed(["tar", "-cf", d / "floor.tar", "-C", src, "."])
    for name in ("floor.tgz", "floor.tar"):
        (d / name).unlink()
    data_gz, data_plain = d / "data-gz", d / "data-plain"
    for dd in (data_gz, data_plain):
        for sub in ("", "etc", "lib"):
            (dd / sub).mkdir(exist_ok=True)
    t["import gzip"], image_id = fetch(data_gz, gz)
    (d / "xz").mkdir()
    t["tar -xzf"] = timed(["tar", "-xzf", gz, "-C", d / "xz"])
    t["import plain"], _ = fetch(data_plain, plain)
    (d / "x").mkdir()
    t["tar -xf"] = timed(["tar", "-xf", plain, "-C", d / "x"])
    t["render"] = timed([VENV_PY, "-c", RENDER, data_gz, image_id], cwd=tmp)
    t["import+render gzip"] = t["import gzip"] + t["render"]
    unmount_all_under(d)  # the store mounts nothing; this is a safety net
    shutil.rmtree(d)
    return t


ROWS = (  # (podrun step, its floor)
    ("build gzip", "tar -czf"),
    ("build plain", "tar -cf"),
    ("import gzip", "tar -xzf"),
    ("import plain", "tar -xf"),
    ("render", "tar -xf"),
    ("import+render gzip", "tar -xzf"),
)


def report(runs: list[dict[str, float]], tar_mb: float, gz_mb: float, lib: Path) -> str:
    rows = []
    for step, floor in ROWS:
        a = [r[step] for r in runs]
        b = [r[floor] for r in runs]
        rows.append([step, f"{median(a):.3f}", f"{tar_mb / median(a):.1f}",
                     floor, f"{median(b):.3f}", f"{tar_mb / median(b):.1f}",
                     f"{paired_ratio(a, b):.2f}x"])
    head = (f"images: {lib} copied as the rootfs; tar {tar_mb:.1f} MB uncompressed, "
            f"{gz_mb:.1f} MB gzip; medians of {len(runs)} runs\n{machine()}\n")
    return head + table(["podrun step", "s", "MB/s", "floor", "s", "MB/s", "ratio"], rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    require_root()
    lib = stdlib_dir()
    tmp = Path(tempfile.mkdtemp(prefix="podrun-bench-images-"))
    try:
        src = make_source(tmp, lib)
        timed([PODRUN, "image", "build", src, tmp / "size.aci"])
        timed([PODRUN, "image", "build", "--no-compression", src, tmp / "size.tar"])
        tar_mb = (tmp / "size.tar").stat().st_size / 1e6
        gz_mb = (tmp / "size.aci").stat().st_size / 1e6
        runs = []
        for i in range(args.runs):
            runs.append(one_run(tmp, src, i))
            print(f"run {i + 1}/{args.runs}: " + ", ".join(
                f"{k} {v:.2f}s" for k, v in runs[-1].items()), file=sys.stderr)
        print(report(runs, tar_mb, gz_mb, lib))
    finally:
        unmount_all_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``podrun convert SOURCE -o OUT.aci``: Docker/OCI images as standalone ACI files.

SOURCE is ``docker://REF``, ``oci:PATH[:REF]`` or ``docker-archive:FILE[:REPO:TAG]``.
The layer cache of the data dir is used (and filled), the image store is not.

* default: OUT.aci holds the squashed image;
* ``--no-squash``: OUT.aci is the image ACI (app manifest, empty rootfs) and its
  layers are written beside it as ``OUT-layer00.aci``, ``OUT-layer01.aci``… (bottom
  first), each depending on the one before by image ID; fetch them together (or
  put them in a store in that order);
* ``--sign KEYID``: every written ACI gets a detached ASCII-armoured signature
  ``FILE.asc`` made by ``gpg --local-user KEYID`` (the user's own gpg keyring;
  ``GNUPGHOME`` is honoured), so ``podrun fetch OUT.aci`` works on hosts that
  trust the key.

Prints the image ID of each written file, layers first, as ``ID PATH``.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podrun.stage0.context import Context


def register(sub: argparse._SubParsersAction) -> None:
    from podrun.stage0.cli import add_command

    p = add_command(sub, "convert", "convert a Docker/OCI image to ACI file(s)", func=run,
                    epilog="SOURCE: docker://[REGISTRY/]REPO[:TAG|@sha256:DIGEST], "
                           "oci:PATH[:REF] (a layout dir or tar) or docker-archive:FILE. "
                           "With --no-squash the layers go to OUT-layerNN.aci beside OUT.")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.aci")
    p.add_argument("--no-squash", action="store_true",
                   help="one ACI per layer, chained by dependencies")
    p.add_argument("--sign", metavar="KEYID", help="sign each ACI with gpg (writes FILE.asc)")
    p.add_argument("--os", metavar="OS", help="platform OS to pick from a multi-platform image")
    p.add_argument("--arch", metavar="ARCH",
                   help="platform architecture (e.g. amd64, arm64, arm/v7)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.convert.cache import LayerCache
    from podrun.convert.convert import convert, ensure_layers, resolve
    from podrun.convert.sources import host_platform
    from podrun.errors import ImageError, UsageError

    out: Path = args.output
    if out.is_dir():
        raise UsageError(f"{out}: is a directory")
    if out.exists() and not args.overwrite:
        raise ImageError(f"{out}: already exists (use --overwrite to replace it)")
    want = host_platform(args.os, args.arch)
    image = resolve(args.source, ctx, want)
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    cache = LayerCache(ctx.data_dir / "cas", verify=not ctx.insecure.ondisk)
    paths = ensure_layers(image, cache, ctx.log)
    built = convert(image, paths, out, squash=not args.no_squash, compress=True)
    for b in built:
        if args.sign:
            sign(b.path, args.sign)
        print(f"{b.image_id} {b.path}", flush=True)
    return 0


def sign(path: Path, keyid: str) -> Path:
    """Write ``PATH.asc``, a detached armoured signature by ``keyid`` (gpg)."""
    from podrun.errors import SignatureError

    asc = Path(str(path) + ".asc")
    proc = subprocess.run(["gpg", "--batch", "--yes", "--armor", "--local-user", keyid,
                           "--output", str(asc), "--detach-sign", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["gpg failed"])[-1]
        raise SignatureError(f"signing {path} with key {keyid} failed: {last}")
    return asc

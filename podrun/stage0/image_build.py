"""``podrun image build DIR OUT.aci``: build an ACI from a directory.

DIR holds ``manifest`` and ``rootfs/``. The build is reproducible (same DIR, same
image ID: see :mod:`podrun.appc.aci` for the normalisation) and atomic (a temp file
next to OUT, fsynced, then renamed). On success the image ID is the only thing
printed on stdout, so scripts can capture it; errors are one line on stderr, exit 254.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "build an ACI from a directory holding manifest and rootfs/"
DESCRIPTION = (
    "Build the ACI OUT from DIR (a 'manifest' file and a 'rootfs/' directory). "
    "The manifest is validated first; nothing is written when it is invalid. "
    "Entries are sorted, mtimes set to SOURCE_DATE_EPOCH (or 0) and user/group names "
    "dropped, so the same DIR always gives the same image ID. "
    "Prints the image ID (sha512-...) on stdout and nothing else."
)


def register_build(image_sub: argparse._SubParsersAction) -> None:
    """Add ``build`` to the ``podrun image`` subcommand group."""
    from podrun.stage0.cli import add_command

    p = add_command(image_sub, "build", HELP, func=run, description=DESCRIPTION)
    p.add_argument("dir", metavar="DIR", help="directory with manifest and rootfs/")
    p.add_argument("out", metavar="OUT.aci", help="ACI file to write")
    p.add_argument("--no-compression", action="store_true",
                   help="write a plain tar instead of gzip")
    p.add_argument("--owner-root", action="store_true",
                   help="store every file as owned by uid 0, gid 0")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it exists (default: refuse)")


def run(ctx: Any, args: argparse.Namespace) -> int:
    from podrun.appc.aci import build_aci

    image_id = build_aci(Path(args.dir), Path(args.out), compress=not args.no_compression,
                         owner_root=args.owner_root, overwrite=args.overwrite)
    print(image_id)
    return 0

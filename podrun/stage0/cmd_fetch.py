"""``podrun fetch IMAGE…``: get images into the store and print their IDs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podrun.stage0.context import Context


def add_fetch_flags(p: argparse.ArgumentParser) -> None:
    """Flags of ``podrun fetch``."""
    p.add_argument("--pull-policy", default="new", choices=("new", "update", "never"),
                   help="new: use a stored copy when there is one (default); update: ask the "
                        "server again once its max-age ran out (ETag); never: store only")
    p.add_argument("--os", help="Docker/OCI images: the platform's OS (default: the host's)")
    p.add_argument("--arch", help="Docker/OCI images: the platform's architecture "
                                  "(default: the host's)")
    p.add_argument("--no-squash", action="store_true",
                   help="Docker/OCI images: one ACI per layer, chained by dependencies")


def register(sub: argparse._SubParsersAction) -> None:
    from podrun.stage0.cli import add_command

    p = add_command(sub, "fetch", "fetch images into the store and print their image IDs",
                    func=run,
                    epilog="IMAGE: a file (./x.aci, file:///…/x.aci), an https:// URL, an "
                           "image ID, a docker:// reference, or NAME[:VERSION][,LABEL=VALUE…] "
                           "(from the store, else found by appc discovery). The signature is "
                           "looked for beside the image (IMAGE.asc).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--signature", type=Path, metavar="FILE",
                   help="detached signature to verify the (single) image with")
    add_fetch_flags(p)
    p.add_argument("--full", action="store_true", help="accepted for rkt compatibility; "
                   "image IDs are always printed in full")


def run(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.errors import UsageError
    from podrun.stage0.fetch import Fetcher, FetchOptions
    from podrun.store.store import Store

    if args.signature and len(args.images) > 1:
        raise UsageError("--signature applies to one image; give one IMAGE")
    store = Store(ctx.data_dir, verify_on_render=not ctx.insecure.ondisk)
    fetcher = Fetcher(ctx, store, FetchOptions(signature=args.signature,
                                               pull_policy=args.pull_policy, os=args.os,
                                               arch=args.arch, no_squash=args.no_squash))
    for ref in args.images:
        print(fetcher.fetch(ref), flush=True)
    return 0

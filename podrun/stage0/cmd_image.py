"""``podrun image …``: build, list, inspect, export, extract, render, verify, rm and gc images.

IMAGE arguments take an image ID (full or a unique prefix, ``sha512-…``) or an image
string ``NAME[:VERSION][,LABEL=VALUE…]`` naming a stored image (newest import wins).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podrun.stage0.context import Context
    from podrun.store.store import Store


def _store(ctx: Context) -> Store:
    from podrun.store.store import Store

    return Store(ctx.data_dir, verify_on_render=not ctx.insecure.ondisk)


def register(sub: argparse._SubParsersAction) -> None:
    from podrun.stage0.cli import Parser, add_command

    img = add_command(sub, "image", "operate on images in the store")
    isub = img.add_subparsers(dest="image_command", metavar="SUBCOMMAND", parser_class=Parser)

    try:
        from podrun.stage0.image_build import register_build
    except ImportError:  # pragma: no cover - during bootstrap only
        register_build = None
    if register_build is not None:
        register_build(isub)

    p = add_command(isub, "list", "list stored images", func=cmd_list)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--no-legend", action="store_true", help="omit the header line")
    p.add_argument("--full", action="store_true", help="full image IDs and absolute times")

    p = add_command(isub, "cat-manifest", "print an image's manifest", func=cmd_cat_manifest)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--pretty-print", action="store_true", default=True,
                   help="indent the JSON (default)")
    p.add_argument("--compact", dest="pretty_print", action="store_false",
                   help="print the manifest as stored, on one line")

    p = add_command(isub, "export", "write a stored image to an ACI file (gzip)",
                    func=cmd_export)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("output", metavar="OUT.aci", type=Path)
    p.add_argument("--overwrite", action="store_true", help="replace OUT.aci if it exists")

    for name, render, text in (
        ("extract", False, "write the image alone (no dependencies) to DIR"),
        ("render", True, "write the image rendered with its dependencies to DIR"),
    ):
        p = add_command(isub, name, text + " (DIR/manifest + DIR/rootfs)",
                        func=cmd_extract)
        p.set_defaults(render=render)
        p.add_argument("image", metavar="IMAGE")
        p.add_argument("dest", metavar="DIR", type=Path)
        p.add_argument("--rootfs-only", action="store_true",
                       help="write only the rootfs, into DIR itself")
        p.add_argument("--overwrite", action="store_true",
                       help="empty DIR first if it is not empty")

    p = add_command(isub, "verify", "re-hash an image's blob and its rendered tree",
                    func=cmd_verify)
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = add_command(isub, "rm", "remove images from the store", func=cmd_rm)
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = add_command(isub, "gc", "remove images unused for the grace period, and leftovers",
                    func=cmd_gc)
    p.add_argument("--grace-period", default="24h",
                   help="remove images not used for this long (default 24h)")


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.stage0.table import print_json, print_table
    from podrun.store.store import short_id
    from podrun.timeutil import format_age, format_size, format_time

    recs = _store(ctx).images()
    if args.format == "json":
        print_json([r.to_json() for r in recs])
        return 0
    rows = []
    for r in recs:
        ver = r.labels.get("version")
        name = f"{r.name}:{ver}" if ver else r.name
        rows.append([
            r.id if args.full else short_id(r.id), name,
            str(r.size) if args.full else format_size(r.size),
            format_time(r.import_time) if args.full else format_age(r.import_time),
            format_time(r.last_used) if args.full else format_age(r.last_used),
        ])
    print_table(["ID", "NAME", "SIZE", "IMPORT TIME", "LAST USED"], rows,
                legend=not args.no_legend)
    return 0


def cmd_cat_manifest(ctx: Context, args: argparse.Namespace) -> int:
    store = _store(ctx)
    rec = store.get(store.resolve(args.image))
    if args.pretty_print:
        print(json.dumps(rec.manifest, indent=2))
    else:
        print(json.dumps(rec.manifest, separators=(",", ":")))
    return 0


def cmd_export(ctx: Context, args: argparse.Namespace) -> int:
    import gzip

    from podrun.errors import PodrunError
    from podrun.fsutil import atomic_file

    store = _store(ctx)
    image_id = store.resolve(args.image)
    out: Path = args.output
    if out.exists() and not args.overwrite:
        raise PodrunError(f"{out} already exists (use --overwrite)")
    if not ctx.insecure.ondisk:
        store.verify_blob(image_id)
    with atomic_file(out, 0o644) as raw, store.open_blob(image_id) as blob:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            while chunk := blob.read(1 << 20):
                gz.write(chunk)
    return 0


def cmd_extract(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.errors import PodrunError
    from podrun.fsutil import rmtree

    store = _store(ctx)
    image_id = store.resolve(args.image)
    dest: Path = args.dest
    if dest.exists() and not dest.is_dir():
        raise PodrunError(f"{dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()):
        if not args.overwrite:
            raise PodrunError(f"{dest} is not empty (use --overwrite)")
        for entry in dest.iterdir():
            rmtree(entry)
    store.extract(image_id, dest, rootfs_only=args.rootfs_only, render=args.render)
    return 0


def cmd_verify(ctx: Context, args: argparse.Namespace) -> int:
    store = _store(ctx)
    for ref in args.images:
        image_id = store.resolve(ref)
        store.verify_blob(image_id)
        tree = store.render(image_id)
        store.verify_tree(image_id)
        print(f"{image_id}: ok (tree {tree.path})")
    return 0


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.errors import PodrunError

    store = _store(ctx)
    failed = 0
    for ref in args.images:
        try:
            image_id = store.resolve(ref)
            store.remove_image(image_id)
            print(f"removed image {image_id}")
        except PodrunError as err:
            print(f"podrun: {err}", file=sys.stderr)
            failed += 1
    return 254 if failed else 0


def cmd_gc(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.timeutil import parse_duration

    grace = parse_duration(args.grace_period, "--grace-period")
    store = _store(ctx)
    for image_id in store.gc(grace, in_use=trees_in_use(ctx), log=ctx.log):
        print(f"removed image {image_id}")
    return 0


def trees_in_use(ctx: Context) -> set[str]:
    """Tree keys of every pod that is not garbage (prepared pods included)."""
    from podrun.stage0.pods import PodStore

    keys: set[str] = set()
    for pod in PodStore(ctx.data_dir).list():
        if pod.dir_state in ("garbage", "exited-garbage"):
            continue
        try:
            info = pod.info()
        except Exception:  # noqa: BLE001 - a pod without pod.json references nothing
            continue
        keys.update(a.get("tree_key", "") for a in info.get("apps", {}).values())
        keys.add((info.get("stage1") or {}).get("tree_key", ""))
    keys.discard("")
    return keys

"""``podrun trust``: add, list and remove keys trusted to sign images.

Forms (one parser; the first positional picks the action)::

    podrun trust --prefix PREFIX [--skip-fingerprint-review] KEYFILE...
    podrun trust --root [--skip-fingerprint-review] KEYFILE...
    podrun trust list [--format table|json]
    podrun trust rm FINGERPRINT [--prefix PREFIX | --root]

``list`` and ``rm`` are actions unless a file of that name exists in the current
directory (write ``./list`` to mean the file). Sub-subparsers would force an
``add`` word on rkt's own spelling (``rkt trust --prefix P KEY``), so we dispatch
on the word instead.

Adding follows rkt: each key's fingerprint and user ids are shown on stderr; when
stdin is a terminal and ``--skip-fingerprint-review`` is not given the user is
asked to confirm, otherwise the key is trusted without asking. The stored paths
are printed on stdout, one a line. :func:`add_keys` is the reusable core; with
``--prefix`` and no KEYFILE the keys are found by appc discovery
(``ac-discovery-pubkeys``, see docs/discovery.md) and reviewed the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING, TextIO

from podrun.errors import TrustError, UsageError

if TYPE_CHECKING:
    from podrun.stage0.context import Context
    from podrun.stage0.trust import TrustedKey

ACTIONS = ("list", "rm")

# A key to add: a file, or (label, bytes) for a key fetched from somewhere.
KeySource = Path | tuple[str, bytes]

EPILOG = """\
forms:
  podrun trust --prefix PREFIX [--skip-fingerprint-review] [KEYFILE...]
      trust the keys for image names under PREFIX (an AC identifier, e.g.
      example.com/app; matched at '/' boundaries); without KEYFILE the keys
      are discovered from https://PREFIX?ac-discovery=1 (ac-discovery-pubkeys)
  podrun trust --root [--skip-fingerprint-review] KEYFILE...
      trust the keys for every image name
  podrun trust list [--format table|json]
      list trusted keys (local config dir and system config dir)
  podrun trust rm FINGERPRINT [--prefix PREFIX | --root]
      stop trusting a key (everywhere, or only for PREFIX / root); a key from
      the system config dir is masked by an empty file in the local config dir

Keys are stored under <local-config>/trustedkeys/{root.d,prefix.d/<PREFIX>}/<fingerprint>.
Fingerprints are confirmed interactively only when stdin is a terminal.
'list' and 'rm' are actions unless a file of that name exists here (use ./list).
"""


def register(sub: argparse._SubParsersAction) -> None:
    from podrun.stage0.cli import add_command

    p = add_command(sub, "trust", help="trust keys for image signature verification; list, rm",
                    func=run, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                    usage="podrun trust [--prefix PREFIX | --root] [options] KEYFILE... | "
                          "list | rm FINGERPRINT")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--prefix", metavar="PREFIX", help="image name prefix the keys are trusted for")
    scope.add_argument("--root", action="store_true", help="trust the keys for all image names")
    p.add_argument("--skip-fingerprint-review", action="store_true",
                   help="do not ask to confirm each key's fingerprint")
    p.add_argument("--format", choices=("table", "json"), default=None,
                   help="output format of 'trust list' (default table)")
    p.add_argument("args", nargs="*", metavar="KEYFILE", help="public key files (or list / rm FP)")


def run(ctx: Context, args: argparse.Namespace) -> int:
    words: list[str] = list(args.args)
    action = words[0] if words and words[0] in ACTIONS and not Path(words[0]).exists() else "add"
    if args.format is not None and action != "list":
        raise UsageError("trust: --format applies to 'podrun trust list' only")
    if action == "list":
        return _list(ctx, args, words[1:])
    if action == "rm":
        return _rm(ctx, args, words[1:])
    return _add(ctx, args, words)


# --------------------------------------------------------------------------- add


def _add(ctx: Context, args: argparse.Namespace, files: list[str]) -> int:
    if not args.root and args.prefix is None:
        raise UsageError("trust: give --prefix PREFIX or --root (see podrun trust --help)")
    if not files:
        if args.root:
            raise UsageError("trust: --root needs KEYFILE arguments (root keys are never discovered)")
        return _add_discovered(ctx, args.prefix, args.skip_fingerprint_review)
    prefix = None if args.root else args.prefix
    add_keys(ctx, prefix, [Path(f) for f in files], skip_review=args.skip_fingerprint_review)
    return 0


def _add_discovered(ctx: Context, prefix: str, skip_review: bool) -> int:
    """``--prefix`` without KEYFILE: the keys named by the prefix's
    ``ac-discovery-pubkeys`` meta tags (appc discovery, podrun.discovery.fetch),
    reviewed like key files."""
    from podrun.discovery.fetch import discover_keys
    from podrun.stage0.trust import check_prefix

    check_prefix(prefix)
    add_keys(ctx, prefix, discover_keys(ctx, prefix), skip_review=skip_review)
    return 0


def add_keys(ctx: Context, prefix: str | None, files: Sequence[KeySource], *,
             skip_review: bool = False, stdin: TextIO | None = None,
             out: TextIO | None = None, err: TextIO | None = None) -> list[TrustedKey]:
    """Review and store keys for ``prefix`` (None = root); returns what was stored.

    Every source is read and checked before anything is stored, so one bad file
    stores nothing. Confirmation is asked only when ``stdin`` is a terminal and
    ``skip_review`` is false; a declined key is skipped (rkt). Stored paths go to
    ``out`` (stdout), the review text to ``err`` (stderr).
    """
    from podrun.stage0.trust import TrustStore, check_prefix

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    err = err or sys.stderr
    store = TrustStore(ctx.local_config, ctx.system_config)
    if prefix is not None:
        check_prefix(prefix)
    loaded = [_read_source(src) for src in files]
    interactive = not skip_review and _isatty(stdin)
    stored: list[TrustedKey] = []
    for label, data, keys in loaded:
        _show_review(err, prefix, label, keys)
        if interactive and not _confirm(stdin, err, prefix):
            print(f"podrun: not trusting {label}", file=err)
            continue
        for key in store.add(data, prefix):
            ctx.log(f"trusted key {key.fingerprint} for {key.scope} at {key.path}")
            print(key.path, file=out)
            stored.append(key)
    return stored


def _read_source(src: KeySource) -> tuple[str, bytes, list[tuple[str, list[str]]]]:
    from podrun.stage0.trust import fingerprint_of

    if isinstance(src, tuple):
        label, data = src
    else:
        label = str(src)
        try:
            data = Path(src).read_bytes()
        except OSError as e:
            raise TrustError(f"cannot read key file {src}: {e.strerror}") from None
    return label, data, fingerprint_of(data, source=f"key file {label}")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _spaced(fp: str) -> str:
    up = fp.upper()
    return " ".join(up[i:i + 4] for i in range(0, len(up), 4))


def _show_review(err: TextIO, prefix: str | None, label: str,
                 keys: list[tuple[str, list[str]]]) -> None:
    print(f'Prefix: "{prefix}"' if prefix is not None else "Root: all image names", file=err)
    print(f'Key: "{label}"', file=err)
    for fp, uids in keys:
        print(f"GPG key fingerprint is: {_spaced(fp)}", file=err)
        for uid in uids:
            print(f"\t{uid}", file=err)


def _confirm(stdin: TextIO, err: TextIO, prefix: str | None) -> bool:
    scope = f'"{prefix}"' if prefix is not None else "all image names (root)"
    print(f"Trust this key for {scope}? (y/N) ", end="", file=err, flush=True)
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


# --------------------------------------------------------------------------- list / rm


def _list(ctx: Context, args: argparse.Namespace, extra: list[str]) -> int:
    from podrun.stage0.trust import TrustStore

    if extra:
        raise UsageError(f"trust list: unexpected argument {extra[0]!r}")
    if args.prefix is not None or args.root:
        raise UsageError("trust list: --prefix/--root apply to adding and rm only")
    keys = TrustStore(ctx.local_config, ctx.system_config).list()
    if args.format == "json":
        json.dump([k.to_json() for k in keys], sys.stdout, indent=2)
        print()
        return 0
    rows = [("PREFIX", "FINGERPRINT", "ORIGIN", "UID")]
    rows += [(k.scope, k.fingerprint, k.origin, k.uids[0] if k.uids else "") for k in keys]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    return 0


def _rm(ctx: Context, args: argparse.Namespace, extra: list[str]) -> int:
    from podrun.stage0.trust import TrustStore

    if len(extra) != 1:
        raise UsageError("trust rm: give exactly one FINGERPRINT")
    store = TrustStore(ctx.local_config, ctx.system_config)
    prefix: str | None | EllipsisType = ...
    if args.root:
        prefix = None
    elif args.prefix is not None:
        prefix = args.prefix
    for path in store.remove(extra[0], prefix):
        print(path)
    return 0

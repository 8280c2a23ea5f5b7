"""The ``podrun`` command line: global flags, subcommand dispatch, error reporting.

Each command lives in its own module ``podrun.stage0.cmd_<name>`` exposing
``register(sub)``, which adds its parser with :func:`add_command` and sets
``func(ctx, args) -> int``. Command modules import heavy libraries (requests,
jsonschema, gnupg, pyroute2) inside the code path that needs them, so that
``podrun image list`` or ``podrun run`` of a cached image does not pay for them.

Errors: any :class:`podrun.errors.PodrunError` becomes one line on stderr
(``podrun: <message>``) and its exit code (254 for podrun's own errors, as rkt);
bad flags are reported the same way and also exit 254.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from podrun.errors import EXIT_ERROR, PodrunError

# Modules that contribute subcommands, in --help order.
COMMAND_MODULES: tuple[str, ...] = (
    "podrun.stage0.cmd_version",
    "podrun.stage0.cmd_fetch",
    "podrun.stage0.cmd_image",
    "podrun.stage0.cmd_trust",
    "podrun.stage0.cmd_run",
    "podrun.stage0.cmd_pods",
    "podrun.stage0.cmd_convert",
)

# Commands whose arguments podrun parses itself (rkt's position-sensitive app flags):
# argparse sees only what comes before the command word; the rest goes to ``args.rest``.
RAW_COMMANDS = ("run", "prepare")
RAW_MODULES = ("podrun.stage0.cmd_run",)
_GLOBAL_VALUE_FLAGS = ("--dir", "--local-config", "--system-config", "--insecure-options")

CommandFunc = Callable[[Any, argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse with podrun's error convention: one line, exit 254."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("podrun").strip()
        print(f"podrun: {where + ': ' if where else ''}{message}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def _global_flags(defaults_suppressed: bool) -> argparse.ArgumentParser:
    """Global flags, accepted before and after the subcommand name."""
    d = argparse.SUPPRESS if defaults_suppressed else None
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global options")
    g.add_argument("--dir", default=d, metavar="DIR",
                   help="data directory (env PODRUN_DIR; default /var/lib/podrun)")
    g.add_argument("--local-config", default=d, metavar="DIR",
                   help="local configuration directory (env PODRUN_LOCAL_CONFIG; default /etc/podrun)")
    g.add_argument("--system-config", default=d, metavar="DIR",
                   help="system configuration directory (env PODRUN_SYSTEM_CONFIG; default /usr/lib/podrun)")
    g.add_argument("--debug", action="store_true", default=d if defaults_suppressed else False,
                   help="print debug messages on stderr (env PODRUN_DEBUG=1)")
    g.add_argument("--insecure-options", default=d, metavar="OPTS",
                   help="comma-separated security checks to skip: none,image,tls,http,pubkey,ondisk,all "
                        "(env PODRUN_INSECURE_OPTIONS)")
    g.add_argument("--trust-keys-from-https", action="store_true",
                   default=d if defaults_suppressed else False,
                   help="trust keys discovered over HTTPS at fetch time")
    return p


_SUB_GLOBALS = _global_flags(True)


def add_command(sub: argparse._SubParsersAction, name: str, help: str,
                func: CommandFunc | None = None, **kwargs: Any) -> argparse.ArgumentParser:
    """Add a subcommand parser that also accepts the global flags."""
    p = sub.add_parser(name, help=help, description=kwargs.pop("description", help),
                       parents=[_SUB_GLOBALS], **kwargs)
    if func is not None:
        p.set_defaults(func=func)
    return p


def build_parser(modules: tuple[str, ...] = COMMAND_MODULES) -> Parser:
    parser = Parser(
        prog="podrun",
        description="podrun: a daemonless pod runtime (appc/rkt tradition). "
                    "podrun's own errors exit 254 with one line on stderr.",
        parents=[_global_flags(False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for modname in modules:
        importlib.import_module(modname).register(sub)
    return parser


def split_raw(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Split ``argv`` after a raw command word (see RAW_COMMANDS)."""
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in _GLOBAL_VALUE_FLAGS:
            i += 2
            continue
        if tok.startswith("-"):
            i += 1
            continue
        if tok in RAW_COMMANDS:
            rest = argv[i + 1:]
            if any(t in ("-h", "--help") for t in rest[:1]):
                return argv, None
            return argv[: i + 1], rest
        return argv, None
    return argv, None


def main(argv: Sequence[str] | None = None) -> int:
    from podrun.stage0.context import Context

    argv = list(sys.argv[1:] if argv is None else argv)
    head, rest = split_raw(argv)
    # run/prepare only need their own parser: building every command's costs ~15 ms.
    parser = build_parser(RAW_MODULES if rest is not None else COMMAND_MODULES)
    args = parser.parse_args(head)
    if rest is not None:
        args.rest = rest
    if not getattr(args, "func", None):
        if getattr(args, "command", None):
            # A command group (e.g. ``podrun image``) given without its subcommand.
            parser.parse_args([*argv, "--help"])
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        ctx = Context.from_args(args)
        return int(args.func(ctx, args) or 0)
    except PodrunError as err:
        print(f"podrun: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("podrun: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except Exception as err:  # a bug: still one line unless --debug
        if getattr(args, "debug", False):
            raise
        print(f"podrun: internal error: {type(err).__name__}: {err} (rerun with --debug)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

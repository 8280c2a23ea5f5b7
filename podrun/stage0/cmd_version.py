"""``podrun version``: the podrun, appc spec and stage1 interface versions."""

from __future__ import annotations

import argparse
import platform

from podrun import APPC_VERSION, __version__


def register(sub: argparse._SubParsersAction) -> None:
    from podrun.stage0.cli import add_command

    add_command(sub, "version", "print podrun's version", func=run)


def run(ctx: object, args: argparse.Namespace) -> int:
    print(f"podrun Version: {__version__}")
    print(f"appc Version: {APPC_VERSION}")
    print(f"Python Version: {platform.python_version()}")
    return 0

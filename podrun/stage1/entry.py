"""The built-in stage1 flavors' entrypoints: ``python -m podrun.stage1.entry FLAVOR KIND ARGS``.

The flavor ACIs in ``stage1-images/`` carry tiny scripts that exec this module, so a
flavor can be started exactly as a third-party stage1 is (by exec), while stage0 may
call :func:`main` in-process for podrun's own flavors (the fast path).
"""

from __future__ import annotations

import sys

from podrun.errors import PodrunError


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m podrun.stage1.entry FLAVOR run|enter|stop|gc ARGS…",
              file=sys.stderr)
        return 254
    flavor, kind, args = argv[0], argv[1], argv[2:]
    try:
        if kind == "run":
            if flavor == "fly":
                from podrun.stage1.fly import run as run_fly

                return run_fly(args)
            from podrun.stage1.run import run

            return run(args)
        if kind == "enter":
            from podrun.stage1.enter import enter

            return enter(args)
        if kind == "stop":
            from podrun.stage1.stop import main as stop_main

            return stop_main(args)
        if kind == "gc":
            from podrun.stage1.gc import main as gc_main

            return gc_main(args)
    except PodrunError as err:
        print(f"podrun: {err}", file=sys.stderr)
        return err.exit_code
    print(f"podrun: stage1: unknown entrypoint {kind!r}", file=sys.stderr)
    return 254


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

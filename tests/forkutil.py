"""Run a function in a forked child and bring back its JSON-able result or its error.

Tests of process-wide, irreversible kernel state (capabilities, seccomp filters,
namespaces, prctl flags) change only the child, never the test process.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from typing import Any


def fork_run(fn: Callable[[], Any],
             before: Callable[[], None] | None = None) -> tuple[int, Any]:
    """Fork; in the child run ``before`` then ``fn``. Returns (wait status, fn's result
    or None). An exception in the child is re-raised here as an AssertionError."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            try:
                if before is not None:
                    before()
                out = {"ok": fn()}
            except BaseException as e:
                out = {"err": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()}
            os.write(w, json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    res = json.loads(data) if data else None
    if res and "err" in res:
        raise AssertionError(f"child failed: {res['err']}\n{res['tb']}")
    return status, (res or {}).get("ok")


def in_child(fn: Callable[[], Any], before: Callable[[], None] | None = None) -> Any:
    """Like :func:`fork_run`, and the child must exit normally."""
    status, res = fork_run(fn, before)
    assert os.waitstatus_to_exitcode(status) == 0, f"child died: {status}"
    return res

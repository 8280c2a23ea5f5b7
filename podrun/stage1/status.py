"""Per-app exit status files and the pod's exit code rule (stage1 writes, stage0 reads).

``apps/<name>/status.json``: ``{"exit_code": N, "signal": S|null, "oom_killed": bool,
"started": t, "finished": t}``. The pod's exit code, which ``podrun run`` returns:
one app → its own code (128+N when signal N killed it, as shells report); several
apps → the first non-zero in pod-manifest order, else 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def status_path(app_dir: Path | str) -> Path:
    return Path(app_dir) / "status.json"


def write_status(app_dir: Path | str, status: dict[str, Any]) -> None:
    """Atomically (temp + rename) write an app's status."""
    path = status_path(app_dir)
    tmp = path.with_name(f".status.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(status, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def read_status(app_dir: Path | str) -> dict[str, Any] | None:
    try:
        return json.loads(status_path(app_dir).read_text())
    except (OSError, ValueError):
        return None


def from_wait_status(wstatus: int) -> tuple[int, int | None]:
    """(exit code, signal) from a waitpid status; a signal death reads as 128+N."""
    if os.WIFSIGNALED(wstatus):
        sig = os.WTERMSIG(wstatus)
        return 128 + sig, sig
    return os.WEXITSTATUS(wstatus), None


def app_exit_code(status: dict[str, Any]) -> int:
    if status.get("signal"):
        return 128 + int(status["signal"])
    return int(status.get("exit_code") or 0)


def pod_exit_code(statuses: list[dict[str, Any] | None]) -> int | None:
    """The rule above; None while some app has no status."""
    if any(s is None for s in statuses):
        return None
    codes = [app_exit_code(s) for s in statuses if s is not None]
    if len(codes) == 1:
        return codes[0]
    return next((c for c in codes if c != 0), 0)

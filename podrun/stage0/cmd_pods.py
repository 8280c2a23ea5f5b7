"""``podrun list|status|cat-manifest|rm|gc|stop``: read and manage pods.

The lifecycle itself lives in :mod:`podrun.stage0.pods`; this module only parses
flags, resolves UUID arguments (full or a unique prefix) and prints.

Output conventions (rkt's):
- ``list``: a table (UUID, APP, IMAGE NAME, STATE, CREATED, STARTED), a pod's extra
  apps on their own lines under it; ``--format json`` prints an array.
- ``status``: ``key=value`` lines (state, created, started, finished, pid, exited,
  ``app-<name>=<exit code>``, ``app-<name>-signal=<N>``,
  ``app-<name>-oom-killed=true``) or one JSON object. Times are absolute.
- ``rm``/``stop``: one line per pod done (its UUID); each failure is one
  ``podrun: …`` line on stderr, the others are still tried, and the exit code is 254
  if any failed.
- ``gc``: what it marks and removes on stderr (``podrun: gc: …``); a pod it cannot
  tear down is a warning and stays for the next gc; gc itself exits 0, as rkt's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from podrun.stage0.context import Context
    from podrun.stage0.pods import Pod, PodStore

WAIT_FOREVER = "true"


def register(sub: argparse._SubParsersAction) -> None:
    from podrun.stage0.cli import add_command

    p = add_command(sub, "list", "list pods", func=cmd_list)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--full", action="store_true", help="full UUIDs and absolute times")
    p.add_argument("--no-legend", action="store_true", help="omit the header line")

    p = add_command(sub, "status", "print a pod's state and its apps' exit codes",
                    func=cmd_status)
    p.add_argument("uuid", nargs="?", metavar="UUID")
    _uuid_file(p)
    p.add_argument("--wait", nargs="?", const=WAIT_FOREVER, default=None, metavar="DURATION",
                   help="wait until the pod has exited (at most DURATION, e.g. 10s)")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = add_command(sub, "cat-manifest", "print a pod's manifest", func=cmd_cat_manifest)
    p.add_argument("uuid", nargs="?", metavar="UUID")
    _uuid_file(p)
    p.add_argument("--pretty-print", action="store_true", help="indent the JSON")

    p = add_command(sub, "rm", "remove exited, prepared or garbage pods", func=cmd_rm)
    p.add_argument("uuids", nargs="*", metavar="UUID")
    _uuid_file(p)

    p = add_command(sub, "gc", "mark exited pods as garbage and remove old garbage",
                    func=cmd_gc)
    p.add_argument("--grace-period", default="30m", metavar="DURATION",
                   help="how long exited pods stay marked before removal (default 30m)")
    p.add_argument("--expire-prepared", default="24h", metavar="DURATION",
                   help="remove prepared pods unused for this long (default 24h)")
    p.add_argument("--mark-only", action="store_true",
                   help="only move exited/aborted pods to the garbage dirs")

    p = add_command(sub, "stop", "stop running pods", func=cmd_stop)
    p.add_argument("uuids", nargs="*", metavar="UUID")
    _uuid_file(p)
    p.add_argument("--force", action="store_true",
                   help="kill the pod's init with SIGKILL instead of a graceful stop")


def _uuid_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--uuid-file", metavar="FILE",
                   help="read the pod UUID from FILE (as written by --uuid-file-save)")


def _refs(args: argparse.Namespace, *, many: bool) -> list[str]:
    """The pod references given as arguments and/or through ``--uuid-file``."""
    from pathlib import Path

    from podrun.errors import UsageError

    refs = list(args.uuids if many else [args.uuid] if args.uuid else [])
    if getattr(args, "uuid_file", None):
        try:
            refs.append(Path(args.uuid_file).read_text().strip())
        except OSError as e:
            raise UsageError(f"--uuid-file {args.uuid_file}: {e.strerror}") from None
    if not refs or (not many and len(refs) != 1):
        raise UsageError("give one pod UUID" if not many else "give at least one pod UUID")
    return refs


def _store(ctx: Context) -> PodStore:
    from podrun.stage0.pods import PodStore

    return PodStore(ctx.data_dir)


def _err(message: object) -> None:
    print(f"podrun: {message}", file=sys.stderr)


# -- list -------------------------------------------------------------------------


def _image_display(app: dict[str, Any]) -> str:
    name = app.get("image_name") or app.get("image_id", "")[:19]
    ver = app.get("image_version")
    return f"{name}:{ver}" if ver else name


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.errors import NotFoundError
    from podrun.stage0.table import print_json, print_table
    from podrun.timeutil import format_age, format_time

    pods = []
    for pod in _store(ctx).list():
        try:
            pods.append(pod.describe())
        except NotFoundError:  # removed while we listed
            continue
    if args.format == "json":
        keys = ("name", "image_name", "image_id", "exit_code", "signal")
        print_json([{
            "uuid": d["uuid"], "state": d["state"],
            "apps": [{k: a[k] for k in keys if k in a} for a in d["apps"]],
            "created": d["created"], "started": d["started"], "pid": d["pid"],
        } for d in pods])
        return 0
    when = format_time if args.full else format_age
    rows = []
    for d in pods:
        apps = d["apps"] or [{"name": "-"}]
        uuid = d["uuid"] if args.full else d["uuid"][:8]
        rows.append([uuid, apps[0]["name"], _image_display(apps[0]) or "-", d["state"],
                     when(d["created"]), when(d["started"])])
        rows += [["", a["name"], _image_display(a), "", "", ""] for a in apps[1:]]
    print_table(["UUID", "APP", "IMAGE NAME", "STATE", "CREATED", "STARTED"], rows,
                legend=not args.no_legend)
    return 0


# -- status -----------------------------------------------------------------------


def _wait_timeout(value: str | None) -> float | None:
    """None = do not wait; inf = wait forever; else seconds."""
    from podrun.timeutil import parse_duration

    if value is None or value.lower() == "false":
        return None
    if value.lower() == WAIT_FOREVER:
        return float("inf")
    return parse_duration(value, "--wait")


def wait_exited(pod: Pod, timeout: float) -> None:
    """Block until *pod* has exited (lock free in ``run/``, or gone to the garbage dirs).

    Waits forever with a blocking flock when *timeout* is infinite; otherwise polls
    with LOCK_NB until the deadline, then raises PodError.
    """
    from podrun.errors import PodError
    from podrun.stage0.pods import ABORTED_PREPARE, EXITED, EXITED_GARBAGE, GARBAGE, RUNNING

    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        state = pod.state()
        if state in (EXITED, EXITED_GARBAGE, GARBAGE, ABORTED_PREPARE):
            return
        if state == RUNNING and timeout == float("inf"):
            pod.lock(blocking=True)  # granted once stage1 and the pod init are gone
            pod.unlock()
            continue
        if time.monotonic() >= deadline:
            raise PodError(f"timed out waiting for pod {pod.uuid} to exit (state {state})")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.25)


def status_lines(d: dict[str, Any]) -> list[str]:
    """rkt's ``key=value`` status lines for a :meth:`Pod.describe` summary."""
    from podrun.timeutil import format_time

    lines = [f"state={d['state']}"]
    for key in ("created", "started", "finished"):
        if d.get(key):
            lines.append(f"{key}={format_time(d[key])}")
    lines += [f"pid={d['pid']}", f"exited={'true' if d['exited'] else 'false'}"]
    if d.get("network"):
        lines.append(f"networks={d['network']}")
    for app in d["apps"]:
        if "exit_code" not in app:
            continue
        lines.append(f"app-{app['name']}={app['exit_code']}")
        if app.get("signal"):
            lines.append(f"app-{app['name']}-signal={app['signal']}")
        if app.get("oom_killed"):
            lines.append(f"app-{app['name']}-oom-killed=true")
    return lines


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.errors import UsageError
    from podrun.stage0.table import print_json

    if args.uuid is None and not args.uuid_file:
        if args.wait in (None, WAIT_FOREVER):
            raise UsageError("status: a pod UUID is required")
        args.uuid, args.wait = args.wait, WAIT_FOREVER  # ``--wait UUID``
    args.uuid = _refs(args, many=False)[0]
    timeout = _wait_timeout(args.wait)
    pod = _store(ctx).get(args.uuid)
    if timeout is not None:
        wait_exited(pod, timeout)
    d = pod.describe()
    if args.format == "json":
        print_json(d)
    else:
        sys.stdout.write("".join(line + "\n" for line in status_lines(d)))
    return 0


# -- cat-manifest -----------------------------------------------------------------


def cmd_cat_manifest(ctx: Context, args: argparse.Namespace) -> int:
    pod = _store(ctx).get(_refs(args, many=False)[0])
    data = pod.manifest_bytes()
    if args.pretty_print:
        print(json.dumps(json.loads(data), indent=2))
    else:
        sys.stdout.write(data.decode() if data.endswith(b"\n") else data.decode() + "\n")
    return 0


# -- rm / stop / gc ---------------------------------------------------------------


def _each(ctx: Context, refs: list[str], action: Any) -> int:
    from podrun.errors import EXIT_ERROR, PodrunError

    store = _store(ctx)
    failed = False
    for ref in refs:
        try:
            pod = store.get(ref)
            action(store, pod)
        except PodrunError as e:
            _err(e)
            failed = True
            continue
        print(pod.uuid, flush=True)
    return EXIT_ERROR if failed else 0


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    return _each(ctx, _refs(args, many=True),
                 lambda store, pod: store.remove(pod, log=ctx.log))


def cmd_stop(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.errors import PodError
    from podrun.stage0.pods import RUNNING

    def stop(store: PodStore, pod: Pod) -> None:
        from podrun.stage0.launch import call_entrypoint

        state = pod.state()
        if state != RUNNING:
            raise PodError(f"pod {pod.uuid} is not running (state {state})")
        try:
            call_entrypoint(pod.path, "stop", [*(["--force"] if args.force else []), pod.uuid])
        except FileNotFoundError:
            raise PodError(f"pod {pod.uuid} is not running") from None

    return _each(ctx, _refs(args, many=True), stop)


def cmd_gc(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.timeutil import parse_duration

    grace = parse_duration(args.grace_period, "--grace-period")
    expire = parse_duration(args.expire_prepared, "--expire-prepared")
    failures: list[str] = []
    _store(ctx).gc(grace, expire, mark_only=args.mark_only,
                   log=lambda s: _err(f"gc: {s}"),
                   on_error=lambda uuid, msg: failures.append(uuid))
    if failures:
        ctx.warn(f"gc left {len(failures)} pod(s) for the next run: {', '.join(failures)}")
    return 0

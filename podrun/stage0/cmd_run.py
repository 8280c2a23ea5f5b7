"""``podrun run``, ``prepare``, ``run-prepared`` and ``enter``: making and starting pods.

``run`` and ``prepare`` take rkt's position-sensitive arguments (see runargs.py);
argparse only sees what comes before the command word. ``run`` keeps its PID: after
preparing, stage0 execs (or, for built-in flavors, enters in-process) the stage1
run entrypoint, which stays in the foreground until the pod exits and returns the
pod's exit code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from podrun.stage0.context import Context

RUN_EPILOG = """\
usage: podrun run [POD FLAGS] IMAGE [APP FLAGS] [-- ARG… ---] [IMAGE [APP FLAGS] …]
       podrun run [POD FLAGS] --pod-manifest FILE

IMAGE: a file, https:// URL, image ID or NAME[:VERSION] in the store.

app flags (apply to the image they follow):
  --name NAME  --exec PATH  --environment NAME=VALUE  --user U  --group G
  --supplementary-gids N,N  --working-dir DIR  --readonly-rootfs[=true|false]
  --mount volume=V,target=/PATH  --memory 256M  --cpu 500m  --cpu-shares N
  --caps-retain CAP,…  --caps-remove CAP,…  --seccomp mode=retain|remove[,errno=E],SYSCALL,…
  --oom-score-adj N  --pids-limit N  --annotation K=V  --user-annotation K=V
  --user-label K=V  --signature FILE

pod flags:
  --volume NAME,kind=host,source=/PATH[,readOnly=true][,recursive=false]
  --volume NAME,kind=empty[,mode=0755,uid=N,gid=N]
  --hostname NAME  --set-env NAME=VALUE  --set-env-file FILE  --interactive
  --no-overlay  --net=none|host  --stage1-flavor default|fly  --stage1-path FILE.aci
  --stage1-name NAME  --cgroup-parent /PATH  --stop-timeout 10s  --sysctl K=V
  --pod-manifest FILE (alias --pod)  --uuid-file-save FILE  --pull-policy new|update|never

exit code: the app's own for one app (128+N if signal N killed it); for several apps
the first non-zero in pod-manifest order, else 0; 254 when podrun itself fails.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from podrun.stage0.cli import add_command

    fmt = argparse.RawDescriptionHelpFormatter
    add_command(sub, "run", "prepare and run a pod in the foreground", func=cmd_run,
                epilog=RUN_EPILOG, formatter_class=fmt)
    add_command(sub, "prepare", "prepare a pod and print its UUID", func=cmd_prepare,
                epilog=RUN_EPILOG + "\nprepare also takes --quiet (print only the UUID).",
                formatter_class=fmt)
    p = add_command(sub, "run-prepared", "run a prepared pod in the foreground",
                    func=cmd_run_prepared)
    p.add_argument("uuid", nargs="?", metavar="UUID")
    p.add_argument("--uuid-file", type=Path, help="read the UUID from this file")
    p.add_argument("--interactive", action="store_true", help="pass stdin and tty through")
    p.add_argument("--net", help="override the network chosen at prepare time")
    p = add_command(sub, "enter", "run a command inside a running pod's app",
                    func=cmd_enter)
    p.add_argument("--app", help="the app to enter (needed when the pod has several)")
    p.add_argument("uuid", metavar="UUID")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD",
                   help="command and arguments (default /bin/sh)")


def quick_exit(code: int) -> NoReturn:
    """Leave as soon as the pod is done: nothing is left to tear down in-process, and
    unwinding the interpreter would only delay the exit code a service manager waits for."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _parse(ctx: Context, args: argparse.Namespace) -> tuple[Context, object]:
    from podrun.stage0.context import Context as Ctx
    from podrun.stage0.runargs import parse

    ra = parse(getattr(args, "rest", None) or [])
    if ra.globals:
        for flag, vals in ra.globals.items():
            attr = flag.lstrip("-").replace("-", "_")
            val: object = vals[-1]
            if flag in ("--debug", "--trust-keys-from-https"):
                val = val == "true"
            setattr(args, attr, val)
        ctx = Ctx.from_args(args)
    return ctx, ra


def _save_uuid(ra: object, uuid: str) -> None:
    from podrun.fsutil import atomic_write

    path = ra.get("--uuid-file-save")  # type: ignore[attr-defined]
    if path:
        atomic_write(Path(path), uuid.encode() + b"\n")


def cmd_prepare(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.stage0.prepare import prepare

    ctx, ra = _parse(ctx, args)
    pod = prepare(ctx, ra)  # type: ignore[arg-type]
    pod.unlock()
    _save_uuid(ra, pod.uuid)
    print(pod.uuid)
    return 0


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.stage0.launch import start_pod
    from podrun.stage0.prepare import prepare

    ctx, ra = _parse(ctx, args)
    pod = prepare(ctx, ra)  # type: ignore[arg-type]
    _save_uuid(ra, pod.uuid)
    quick_exit(start_pod(ctx, pod))


def cmd_run_prepared(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.errors import PodError, UsageError
    from podrun.stage0.launch import start_pod
    from podrun.stage0.pods import PodStore

    ref = args.uuid
    if args.uuid_file:
        ref = args.uuid_file.read_text().strip()
    if not ref:
        raise UsageError("run-prepared: give a UUID or --uuid-file")
    pod = PodStore(ctx.data_dir).get(ref)
    if pod.dir_state != "prepared":
        raise PodError(f"pod {pod.uuid} is {pod.state()}, not prepared")
    if not pod.lock(blocking=False):
        raise PodError(f"pod {pod.uuid} is being started by another podrun")
    if pod.dir_state != "prepared":  # gc may have moved it before we got the lock
        pod.unlock()
        raise PodError(f"pod {pod.uuid} is {pod.state()}, not prepared")
    overrides = {}
    if args.interactive:
        overrides["interactive"] = True
    if args.net:
        overrides["net"] = args.net
    quick_exit(start_pod(ctx, pod, overrides))


def cmd_enter(ctx: Context, args: argparse.Namespace) -> int:
    from podrun.stage0.launch import enter_pod
    from podrun.stage0.pods import PodStore

    pod = PodStore(ctx.data_dir).get(args.uuid)
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    return enter_pod(ctx, pod, args.app, cmd or ["/bin/sh"])



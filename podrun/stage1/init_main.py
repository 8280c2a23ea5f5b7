"""The first moments of the pod init, between fork and the supervision loop (init.py).

In order: die with the supervisor (PDEATHSIG), new mount/uts/ipc (and net, unless
``--net=host``) namespaces, hostname, loopback, sysctls, everything that needs the
host view (cgroup fds, app specs with their seccomp filters, libraries), then into
the init's own root (sandbox.py), non-dumpable; then wait for the supervisor's go
(it moved us into our cgroup in the meantime) and run the loop. Any failure: one line on stderr and exit 254.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn


def loopback_up() -> None:
    """Bring ``lo`` up with one ioctl (no netlink library needed for this)."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s.fileno(), siocgifflags, req))[1]
        fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def hide_command_line() -> None:
    """The apps can read PID 1's /proc/1/cmdline (dumpability does not guard it), which
    would name host paths (the interpreter, podrun's own arguments): retitle it."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # optional: then the title stays podrun's own command line
        return
    setproctitle("podrun-init")


def init_main(pod_dir: Path, manifest: dict[str, Any], info: dict[str, Any], opts: Any,
              hostname: str, etc_files: dict[str, str], sync_r: int,
              cgroup_procs: dict[str, list[str]]) -> NoReturn:
    try:
        from podrun.linux import constants as c
        from podrun.linux.calls import set_dumpable, set_pdeathsig, sethostname, unshare

        set_pdeathsig(signal.SIGKILL)
        hide_command_line()
        flags = c.CLONE_NEWNS | c.CLONE_NEWUTS | c.CLONE_NEWIPC
        if opts.net != "host":
            flags |= c.CLONE_NEWNET
        unshare(flags)
        sethostname(hostname)
        if opts.net != "host":
            loopback_up()
        from podrun.stage1 import specs

        for name, value in specs.sysctls(manifest).items():
            with open("/proc/sys/" + name.replace(".", "/"), "w") as f:
                f.write(value)
        app_specs = specs.app_specs(manifest, info, etc_files=etc_files)
        for spec in app_specs:
            spec.cgroup_procs_fds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC)
                                     for p in cgroup_procs.get(spec.name, [])]
        if any(spec.seccomp is not None for spec in app_specs):
            from podrun.linux._ffi import libseccomp

            libseccomp()  # dlopen it now, from the host's view; filters are built per app
        import podrun.stage2.launch  # noqa: F401 - imported before the pivot
        from podrun.stage1 import sandbox
        from podrun.stage1.init import AppRun, Init

        sandbox.enter(pod_dir, info, manifest)
        set_dumpable(False)
        # The supervisor put us in our cgroup meanwhile (in parallel with the work
        # above); no app starts before it says so, or if it died.
        if os.read(sync_r, 2) != b"go":
            os._exit(254)
        os.close(sync_r)
        runs = []
        for rapp, spec in zip(manifest["apps"], app_specs, strict=True):
            handlers = {h["name"]: h["exec"] for h in rapp["app"].get("eventHandlers", [])}
            runs.append(AppRun(spec, handlers.get("pre-start"), handlers.get("post-stop")))
        init = Init(runs, stop_timeout=opts.stop_timeout, interactive=opts.interactive,
                    debug=opts.debug)
        if not opts.interactive:
            os.setsid()
        code = init.run()
    except BaseException as err:  # noqa: BLE001 - one line, then out
        msg = str(err) or type(err).__name__
        print(f"podrun: pod init: {msg}", file=sys.stderr, flush=True)
        os._exit(254)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

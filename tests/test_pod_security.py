"""The security invariants of DESIGN.md, each proved against real pods (root).

- The pod init hands nothing of the host to the apps: ``/proc/1/{root,cwd,exe,fd}``
  reach no host file (the init pivoted into its own stage1 root and is non-dumpable),
  CAP_SYS_PTRACE is not in an app's default set, and even an app that is granted
  CAP_SYS_PTRACE finds only the stage1 root behind ``/proc/1/root`` and cannot open
  the init's executable for writing (runc CVE-2019-5736).
- No fd of podrun's reaches an app, a second app, an event handler or ``enter``
  (runc CVE-2024-21626).
- Mount targets are resolved inside the app's rootfs: an image symlink pointing out
  of it does not move a volume mount onto the host (runc CVE-2021-30465).
- Image content gives nothing the isolators did not grant: setuid files do not raise
  an app's privileges, device nodes shipped in an image cannot be opened, and device
  nodes an app makes with CAP_MKNOD cannot be opened anywhere it can write.
- The app sees its own rootfs only: ``ls /`` and ``/proc/mounts`` show no host path.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PodrunEnv
from tests.images import tiny_aci
from tests.podutil import INSECURE, pod_dirs, read_uuid, spawn, wait_for

pytestmark = pytest.mark.root

CAP_SYS_PTRACE = 19
CAP_LINES = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
BUSYBOX_TOP = {"bin", "etc", "tmp", "root", "home", "var", "dev", "proc", "sys"}


def run(env: PodrunEnv, *args: str | Path, **kw: object):  # type: ignore[no-untyped-def]
    return env.run(INSECURE, "run", *args, **kw)  # type: ignore[arg-type]


def custom_aci(root: Path, name: str, tweak: Callable[[Path], None],
               exec_: list[str] | None = None) -> Path:
    """A busybox ACI whose rootfs ``tweak(rootfs)`` changed before the final build."""
    from podrun.appc.aci import build_aci

    aci = tiny_aci(root, name, busybox=True, exec_=exec_ or ["/bin/sh"])
    src = root / f"{name.replace('/', '_')}-1.0.0.src"
    tweak(src / "rootfs")
    build_aci(src, aci, overwrite=True)
    return aci


def sh(env: PodrunEnv, aci: Path, script: str, *pod_flags: str, app_flags: tuple[str, ...] = (),
       code: int | None = 0):  # type: ignore[no-untyped-def]
    r = run(env, *pod_flags, aci, *app_flags, "--exec", "/bin/sh", "--", "-c", script)
    if code is not None:
        assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    return r


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A host file no app may read: its content is a random token."""
    p = tmp_path / f"host-sentinel-{secrets.token_hex(4)}"
    p.write_text(f"HOST-SECRET-{secrets.token_hex(8)}\n")
    return p


@pytest.fixture
def aci(tmp_path: Path) -> Path:
    return tiny_aci(tmp_path, "example.com/sec", busybox=True, exec_=["/bin/sh"])


# -- /proc/1: the pod init ---------------------------------------------------------

def test_proc1_links_reach_nothing_of_the_host(pods: PodrunEnv, aci: Path,
                                                sentinel: Path) -> None:
    secret = sentinel.read_text().strip()
    script = f"""
        id -u
        cat /proc/1/root{sentinel} 2>/dev/null && echo LEAK-root-sentinel
        cat /proc/1/root/etc/hostname 2>/dev/null && echo LEAK-root-hostname
        cat /proc/1/cwd{sentinel} 2>/dev/null && echo LEAK-cwd-sentinel
        ls /proc/1/cwd/ 2>/dev/null && echo LEAK-cwd-listed
        ls -a /proc/1/root/ 2>/dev/null && echo LEAK-root-listed
        for f in /proc/1/fd/* /proc/1/fd/0 /proc/1/fd/3; do
            readlink $f 2>/dev/null && echo LEAK-fd-link-$f
            head -c1 $f >/dev/null 2>&1 && echo LEAK-fd-read-$f
            echo >> $f 2>/dev/null && echo LEAK-fd-written-$f
            ls $f/ >/dev/null 2>&1 && echo LEAK-fd-dir-$f
        done
        cat /proc/1/environ >/dev/null 2>&1 && echo LEAK-environ
        echo x 2>/dev/null >> /proc/1/exe && echo LEAK-exe-written
        echo done
    """
    r = sh(pods, aci, script)
    # (the kernel lets a root app list the init's fd *numbers*, never follow them)
    assert r.stdout.splitlines()[0] == "0"  # really root inside the pod
    assert "LEAK" not in r.stdout, r.stdout
    assert secret not in r.stdout
    assert r.stdout.splitlines()[-1] == "done"


def test_ptrace_capability_is_not_in_the_default_set(pods: PodrunEnv, aci: Path) -> None:
    r = sh(pods, aci, "grep ^Cap /proc/self/status", app_flags=())
    caps = {line.split(":")[0]: int(line.split()[1], 16) for line in r.stdout.splitlines()}
    assert set(CAP_LINES) <= set(caps), r.stdout
    for name in CAP_LINES:
        assert not caps[name] >> CAP_SYS_PTRACE & 1, (name, hex(caps[name]))
    assert caps["CapEff"] != 0  # the app does hold its default set
    # a non-root app: the same, ambient included
    r = sh(pods, aci, "grep ^Cap /proc/self/status", app_flags=("--user=1000",))
    for line in r.stdout.splitlines():
        assert not int(line.split()[1], 16) >> CAP_SYS_PTRACE & 1, line


def test_init_root_is_the_stage1_root_even_with_ptrace(pods: PodrunEnv, aci: Path,
                                                       sentinel: Path) -> None:
    """Granted CAP_SYS_PTRACE, an app reaches /proc/1/root: it must be the stage1 root,
    with no host file behind it, and the init's executable must not be writable."""
    secret = sentinel.read_text().strip()
    script = f"""
        grep ^CapEff /proc/self/status
        echo ---
        ls -a /proc/1/root/
        echo ---
        cat /proc/1/root{sentinel} 2>/dev/null && echo LEAK-sentinel
        cat /proc/1/cwd{sentinel} 2>/dev/null && echo LEAK-cwd-sentinel
        ls -d /proc/1/root/home /proc/1/root/var /proc/1/root/srv 2>/dev/null && echo LEAK-dirs
        echo x 2>/dev/null >> /proc/1/exe && echo LEAK-exe-written
        echo done
    """
    r = sh(pods, aci, script, app_flags=("--caps-retain=CAP_SYS_PTRACE,CAP_DAC_OVERRIDE",))
    eff, listing, rest = r.stdout.split("---\n")
    assert int(eff.split()[1], 16) >> CAP_SYS_PTRACE & 1  # the grant took effect
    entries = set(listing.split()) - {".", ".."}
    assert entries, "with CAP_SYS_PTRACE /proc/1/root must be listable"
    # The stage1 rootfs (see stage1-images/default/rootfs) plus the top-level dirs of
    # what the init's interpreter needs: nothing else of the host.
    from podrun.stage0.stage1img import images_dir
    from podrun.stage1.sandbox import interpreter_paths

    allowed = {p.name for p in (images_dir() / "default/rootfs").iterdir()}
    allowed |= {p.strip("/").split("/")[0] for p in interpreter_paths()}
    assert entries <= allowed, entries - allowed
    assert "LEAK" not in rest and secret not in rest, rest
    assert rest.splitlines()[-1] == "done"


def test_init_is_not_dumpable(pods: PodrunEnv, aci: Path, tmp_path: Path) -> None:
    """A root app can read the environ of a dumpable root process of the pod (its
    sibling app), but not the init's: the init is non-dumpable. From the host: the
    init's root is not the host's, and it is PID 1 of its own pid namespace."""
    out = tmp_path / "out"
    out.mkdir()
    uf = tmp_path / "uuid"
    prober = ("sleep 0.3; "
              "cat /proc/1/environ >/dev/null 2>&1 && echo init-environ-readable "
              "|| echo init-environ-denied; "
              "for p in /proc/[0-9]*; do [ $p = /proc/1 ] && continue; grep -q sleep $p/cmdline 2>/dev/null || continue; "
              "tr '\\0' '\\n' < $p/environ | grep -x AC_APP_NAME=waiter; done; "
              "echo done")
    p = spawn(pods, INSECURE, "run", f"--uuid-file-save={uf}",
              f"--volume=out,kind=host,source={out}", aci, "--name=waiter",
              "--exec", "/bin/sleep", "--", "60", "---",
              aci, "--name=prober", "--mount=volume=out,target=/out", "--exec", "/bin/sh",
              "--", "-c", f"{{ {prober}; }} > /out/result 2>&1; sleep 60")
    try:
        wait_for(lambda: "done" in (out / "result").read_text()
                 if (out / "result").exists() else False, what="prober done")
        pod = next(d for d in pod_dirs(pods) if d.name == read_uuid(uf))
        init = json.loads((pod / "runtime.json").read_text())["init_pid"]
        host_root, init_root = os.stat("/"), os.stat(f"/proc/{init}/root/")
        assert (init_root.st_dev, init_root.st_ino) != (host_root.st_dev, host_root.st_ino)
        assert not os.path.exists(f"/proc/{init}/root{tmp_path}")
        status = Path(f"/proc/{init}/status").read_text().splitlines()
        assert next(x for x in status if x.startswith("NSpid:")).split()[-1] == "1"
    finally:
        pods.run("stop", read_uuid(uf))
        p.communicate(timeout=30)
    lines = (out / "result").read_text().splitlines()
    assert lines == ["init-environ-denied", "AC_APP_NAME=waiter", "done"], lines


# -- file descriptors ----------------------------------------------------------------

def fd_listing(out: str) -> dict[int, str]:
    """``ls -l /proc/X/fd`` → {fd: link target}."""
    fds = {}
    for line in out.splitlines():
        if " -> " in line:
            left, target = line.split(" -> ", 1)
            fds[int(left.split()[-1])] = target
    return fds


def assert_only_std_fds(listing: str, what: str) -> None:
    """``ls -l /proc/self/fd`` by an exec'd busybox ls: 0, 1, 2 and fd 3, the directory
    ls itself reads (it has closed it again when it reads the link: no target)."""
    fds = fd_listing(listing)
    numbers = {int(line.split()[-1]) for line in listing.splitlines()
               if line.startswith("l") and " -> " not in line}
    assert set(fds) | numbers == {0, 1, 2, 3}, (what, listing)
    assert 3 not in fds or fds[3].endswith("/fd"), (what, listing)


def test_no_podrun_fd_reaches_an_app(pods: PodrunEnv, tmp_path: Path) -> None:
    """Two apps, a host and an empty volume, pre-start and post-stop handlers: each
    process sees exactly 0, 1, 2 (+ the fd ls opens itself)."""
    host = tmp_path / "hostvol"
    host.mkdir()
    show = "exec /bin/ls -l /proc/self/fd > /h/fds.$AC_APP_NAME.$1"
    aci = tiny_aci(tmp_path, "example.com/fds", busybox=True, exec_=["/bin/sh"],
                   files={"show.sh": show.encode()})
    m = json.loads((tmp_path / "example.com_fds-1.0.0.src/manifest").read_text())
    m["app"]["eventHandlers"] = [
        {"name": "pre-start", "exec": ["/bin/sh", "/show.sh", "pre"]},
        {"name": "post-stop", "exec": ["/bin/sh", "/show.sh", "post"]}]
    (tmp_path / "example.com_fds-1.0.0.src/manifest").write_text(json.dumps(m))
    from podrun.appc.aci import build_aci

    build_aci(tmp_path / "example.com_fds-1.0.0.src", aci, overwrite=True)
    app = "exec > /h/sh.$AC_APP_NAME; ls -l /proc/$$/fd; exec /bin/sh /show.sh app"
    r = run(pods, f"--volume=h,kind=host,source={host}", "--volume=e,kind=empty",
            aci, "--mount=volume=h,target=/h", "--mount=volume=e,target=/e",
            "--", "-c", app, "---",
            aci, "--name=second", "--mount=volume=h,target=/h", "--mount=volume=e,target=/e",
            "--", "-c", app)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in host.iterdir())
    assert names == sorted([f"fds.{a}.{h}" for a in ("fds", "second")
                            for h in ("app", "post", "pre")] + ["sh.fds", "sh.second"])
    for name in names:
        text = (host / name).read_text()
        if name.startswith("sh."):  # the app's own shell, listed from outside
            fds = fd_listing(text)
            assert set(fds) == {0, 1, 2}, (name, text)
            assert fds[0] == "/dev/null", text  # stdin is /dev/null without --interactive
        else:
            assert_only_std_fds(text, name)


def test_no_podrun_fd_reaches_an_entered_command(pods: PodrunEnv, aci: Path,
                                                 tmp_path: Path) -> None:
    uf = tmp_path / "uuid"
    p = spawn(pods, INSECURE, "run", f"--uuid-file-save={uf}", aci, "--exec", "/bin/sleep",
              "--", "60")
    try:
        wait_for(lambda: any((d / "apps/sec/pid").exists() for d in pod_dirs(pods)),
                 what="app up")
        r = pods.run("enter", read_uuid(uf), "/bin/ls", "-l", "/proc/self/fd", check=True)
        assert_only_std_fds(r.stdout, "enter")
    finally:
        pods.run("stop", read_uuid(uf))
        p.communicate(timeout=30)


# -- mount targets -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["absolute", "relative", "nested"])
def test_symlinked_mount_target_stays_in_the_rootfs(pods: PodrunEnv, tmp_path: Path,
                                                    kind: str) -> None:
    escape = Path(f"/tmp/host-escape-{secrets.token_hex(6)}")
    link = {"absolute": str(escape), "relative": f"../../../../..{escape}",
            "nested": "sub"}[kind]

    def tweak(rootfs: Path) -> None:
        os.symlink(link, rootfs / "data")
        if kind == "nested":  # /data -> sub, /sub -> /tmp/host-escape-…
            os.symlink(str(escape), rootfs / "sub")

    aci = custom_aci(tmp_path, "example.com/escape", tweak)
    src = tmp_path / "volsrc"
    src.mkdir()
    (src / "in.txt").write_text("from the volume\n")
    try:
        r = run(pods, f"--volume=v,kind=host,source={src}", "--volume=e,kind=empty", aci,
                "--mount=volume=v,target=/data/x", "--mount=volume=e,target=/data/y",
                "--", "-c", f"cat /data/x/in.txt; cat {escape}/x/in.txt; "
                "echo made > /data/y/f; readlink /data")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[:2] == ["from the volume"] * 2
        assert not escape.exists() and not escape.is_symlink(), "mount escaped the rootfs"
        assert [p.name for p in src.iterdir()] == ["in.txt"]
    finally:
        if escape.exists():
            subprocess.run(["umount", "-R", str(escape / "x")], capture_output=True)
            shutil.rmtree(escape, ignore_errors=True)


# -- image content: setuid files, device nodes ---------------------------------------

def add_suid_busybox(rootfs: Path) -> None:
    shutil.copy2("/bin/busybox", rootfs / "bin/busybox-suid")
    os.chown(rootfs / "bin/busybox-suid", 0, 0)
    os.chmod(rootfs / "bin/busybox-suid", 0o4755)
    (rootfs / "rootonly").write_text("root-owned\n")
    os.chmod(rootfs / "rootonly", 0o600)


# busybox drops a setuid euid before most applets run; ``su`` (BB_SUID_REQUIRE) keeps
# it and says "must be suid to work properly" when the exec did not make euid 0.
SUID_PROBE = ("id -u; ls -ln /bin/busybox-suid; /bin/busybox-suid su -c true root </dev/null "
              "2>&1; echo; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")


@pytest.mark.parametrize("caps", ["--caps-retain=CAP_NET_BIND_SERVICE",
                                  "--caps-remove=CAP_SETUID,CAP_SETGID"])
def test_setuid_file_in_image_gives_nothing(pods: PodrunEnv, tmp_path: Path, caps: str) -> None:
    """An app that may not change its ids does not become root through a setuid-root
    file of its image."""
    aci = custom_aci(tmp_path, "example.com/suid", add_suid_busybox)
    r = sh(pods, aci, SUID_PROBE, app_flags=("--user=1000", "--group=1000", caps), code=None)
    lines = r.stdout.splitlines()
    assert lines[0] == "1000", r.stdout
    assert lines[1].startswith("-rwsr-xr-x"), r.stdout  # the image kept its setuid bit
    assert "must be suid to work properly" in r.stdout, r.stdout
    assert "incorrect password" not in r.stdout


def test_setuid_file_with_default_caps_grants_nothing_new(pods: PodrunEnv,
                                                          tmp_path: Path) -> None:
    """With appc's default set an app holds CAP_SETUID and CAP_SETGID (it may switch ids
    itself), so setuid files work as in Docker and rkt: no no_new_privs is forced."""
    aci = custom_aci(tmp_path, "example.com/suid", add_suid_busybox)
    r = sh(pods, aci, SUID_PROBE, app_flags=("--user=1000", "--group=1000"), code=None)
    caps = dict(line.split(":") for line in r.stdout.splitlines() if line.startswith(("Cap", "No")))
    assert int(caps["CapEff"], 16) & 0b11000000 == 0b11000000, r.stdout  # SETUID, SETGID
    assert caps["NoNewPrivs"].strip() == "0"
    assert "incorrect password" in r.stdout  # su ran as euid 0


def add_devices(rootfs: Path) -> None:
    for name, minor in (("null-dev", 3), ("zero-dev", 5)):
        os.mknod(rootfs / name, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        os.chmod(rootfs / name, 0o666)


@pytest.mark.parametrize("overlay", [True, False], ids=["overlay", "copy"])
def test_device_node_in_image_is_inert(pods: PodrunEnv, tmp_path: Path, overlay: bool) -> None:
    aci = custom_aci(tmp_path, "example.com/devs", add_devices)
    script = ("ls -l /null-dev /zero-dev; "
              "echo x > /null-dev && echo null-writable; "
              "head -c 4 /zero-dev | wc -c; "
              "head -c 4 /dev/zero | wc -c")
    r = sh(pods, aci, script, *([] if overlay else ["--no-overlay"]), code=None)
    out = r.stdout.splitlines()
    assert out[0].startswith("crw-rw-rw-") and "1,   3" in out[0], r.stdout  # present…
    assert out[1].startswith("crw-rw-rw-"), r.stdout
    assert "null-writable" not in r.stdout                                   # …but inert
    assert out[-2:] == ["0", "4"], r.stdout  # the image's zero gives nothing; /dev/zero works
    assert "Permission denied" in r.stderr




@pytest.mark.parametrize("place", [
    "/", "/tmp", "/dev/shm", "/e",
    "/dev",
    "/h",
])
def test_device_nodes_an_app_makes_are_inert(pods: PodrunEnv, tmp_path: Path, aci: Path,
                                             place: str) -> None:
    """CAP_MKNOD is in appc's default set, and podrun has no device cgroup: a node
    the app makes must be unusable wherever it can write (rootfs, /dev, /dev/shm,
    empty and host volumes), else ``mknod /x b <host disk>`` opens the host's disk.
    Probed with char 1,5 (/dev/zero): harmless if it does open."""
    host = tmp_path / "hostvol"
    host.mkdir()
    node = f"{place.rstrip('/')}/z"
    script = (f"mknod {node} c 1 5 && echo made; "
              f"[ $(head -c 4 {node} 2>/dev/null | wc -c) = 4 ] && echo OPENED; echo done")
    r = sh(pods, aci, script, f"--volume=h,kind=host,source={host}", "--volume=e,kind=empty",
           app_flags=("--mount=volume=h,target=/h", "--mount=volume=e,target=/e"))
    assert r.stdout.splitlines() == ["made", "done"], r.stdout + r.stderr


# -- what the app sees ---------------------------------------------------------------

def test_app_sees_no_host_path(pods: PodrunEnv, aci: Path, tmp_path: Path) -> None:
    host = tmp_path / "hostvol"
    host.mkdir()
    r = sh(pods, aci, "ls -a /; echo ===; cat /proc/mounts",
           f"--volume=h,kind=host,source={host}", "--volume=e,kind=empty",
           app_flags=("--mount=volume=h,target=/h", "--mount=volume=e,target=/e"))
    top, _, mounts = r.stdout.partition("===\n")
    assert set(top.split()) - {".", ".."} == BUSYBOX_TOP | {"h", "e"}, top
    for needle in (str(tmp_path), str(pods.data_dir), " /work", "=/work", "/tmp/pytest",
                   "/usr/lib", sys.prefix):
        assert needle not in mounts, (needle, mounts)
    targets = {line.split()[1] for line in mounts.splitlines()}
    assert {"/", "/proc", "/dev", "/sys", "/h", "/e"} <= targets, mounts


def test_init_command_line_names_no_host_path(pods: PodrunEnv, aci: Path) -> None:
    """/proc/1/cmdline is readable by every app (dumpability does not guard it): the
    pod init retitles itself instead of showing podrun's interpreter and arguments —
    in its Python phase and after its hand-over to the native idle loop."""
    script = ("tr '\\0' ' ' </proc/1/cmdline; echo; sleep 1.6; "
              "tr '\\0' ' ' </proc/1/cmdline; echo")
    r = sh(pods, aci, script)
    early, late = r.stdout.splitlines()
    assert early.strip() == "podrun-init", early
    assert late.startswith("/podrun/idle init --apps-dir /opt/podrun/pod/apps"), late
    for line in (early, late):
        assert sys.executable not in line and sys.prefix not in line
        assert str(pods.data_dir) not in line

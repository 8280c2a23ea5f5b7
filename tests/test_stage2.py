"""stage2 on the real kernel: a busybox app launched through ``launch`` by
tests/stage2_driver.py (new pid/uts/ipc namespaces; launch makes its own mount
namespace). Each test checks what the app sees from inside, and that the host's
mount table is unchanged afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from podrun.stage2.app import AppSpec, MountSpec, to_json
from podrun.stage2.caps import CAP_NUMBERS, DEFAULT_CAPS
from tests.conftest import REPO
from tests.images import busybox_rootfs

pytestmark = pytest.mark.root

APPUSER_UID, APPGRP_GID, EXTRA_GID = 4242, 4343, 4444


@pytest.fixture(scope="module")
def hostdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host directory an image symlink points at; must never be written."""
    d = tmp_path_factory.mktemp("hostdir")
    (d / "keep").write_text("host\n")
    return d


@pytest.fixture(scope="module")
def lower(tmp_path_factory: pytest.TempPathFactory, hostdir: Path) -> Path:
    """The image tree: busybox plus a user the host lacks, seed data, an escaping
    symlink and a non-executable file."""
    root = busybox_rootfs(tmp_path_factory.mktemp("image") / "rootfs")
    with open(root / "etc" / "passwd", "a") as f:
        f.write(f"appuser:x:{APPUSER_UID}:{APPGRP_GID}:app:/home/appuser:/bin/sh\n")
    with open(root / "etc" / "group", "a") as f:
        f.write(f"appgrp:x:{APPGRP_GID}:\nextra:x:{EXTRA_GID}:appuser,user\n")
    (root / "home" / "appuser").mkdir()
    os.chown(root / "home" / "appuser", APPUSER_UID, APPGRP_GID)
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "seed.txt").write_text("from the image\n")
    os.chown(data / "seed.txt", APPUSER_UID, APPGRP_GID)
    os.chmod(data / "seed.txt", 0o640)
    os.chown(data, APPUSER_UID, APPGRP_GID)
    os.chmod(data, 0o750)
    os.symlink(str(hostdir), root / "evil")
    (root / "bin" / "noexec").write_text("#!/bin/sh\necho no\n")
    os.chmod(root / "bin" / "noexec", 0o644)
    return root


@pytest.fixture(autouse=True)
def no_mount_leak() -> Any:
    def table() -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return [" ".join(line.split()[4:]) for line in f]
    before = table()
    yield
    assert table() == before, "stage2 left mounts behind in the host namespace"


def run_app(tmp_path: Path, lower: Path, script: str, *, env: dict[str, str] | None = None,
            driver: dict[str, Any] | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ``sh -c script`` as an app over *lower*; app dir ``tmp_path/app``."""
    exec_ = kw.pop("exec", ["/bin/sh", "-c", script])
    spec = AppSpec(name="t", lower=str(lower), app_dir=str(tmp_path / "app"), exec=exec_,
                   env=env or {}, **kw)
    cfg = {"spec": to_json(spec), **(driver or {})}
    return subprocess.run([sys.executable, "-m", "tests.stage2_driver", json.dumps(cfg)],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p.stdout


# --- rootfs, /proc, /sys, /dev ------------------------------------------------------

def test_app_sees_only_its_rootfs_and_its_pid_ns(tmp_path: Path, lower: Path) -> None:
    out = ok(run_app(tmp_path, lower, "ls /; echo pid=$$; ls /proc | grep -c '^[0-9]'"))
    lines = out.split()
    assert set(lines[:-2]) == {p.name for p in lower.iterdir()}
    assert lines[-2] == "pid=1"
    assert int(lines[-1]) <= 3           # sh and ls (and grep): the pod's pid ns only


def test_exit_code_passes_through(tmp_path: Path, lower: Path) -> None:
    assert run_app(tmp_path, lower, "exit 7").returncode == 7


def test_proc_masked_and_readonly_paths(tmp_path: Path, lower: Path) -> None:
    script = ("ls /proc/acpi | wc -l; wc -c < /proc/keys; wc -c < /proc/timer_list;"
              "echo 1 > /proc/sys/kernel/ns_last_pid && echo WROTE-SYS;"
              "grep -E ' /proc/(sys|bus|fs|irq) ' /proc/self/mountinfo | cut -d' ' -f6 | sort -u")
    p = run_app(tmp_path, lower, script)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split()
    if Path("/proc/acpi").is_dir():
        assert lines[0] == "0"
    assert lines[1:3] == ["0", "0"]
    assert "WROTE-SYS" not in p.stdout
    assert all(opts.startswith("ro,") for opts in lines[3:]) and len(lines) > 3


def test_sys_read_only(tmp_path: Path, lower: Path) -> None:
    p = run_app(tmp_path, lower,
                "ls /sys/kernel >/dev/null && echo listed; touch /sys/x && echo TOUCHED;"
                "ls /sys/firmware | wc -l")
    assert "listed" in p.stdout and "TOUCHED" not in p.stdout
    assert p.stdout.split()[-1] == "0"
    assert "Read-only file system" in p.stderr


def test_dev_nodes_devpts_shm(tmp_path: Path, lower: Path) -> None:
    script = ("ls /dev; echo x > /dev/null && echo null-ok; head -c 5 /dev/zero | wc -c;"
              "head -c 5 /dev/urandom | wc -c; stat -c '%t:%T %a' /dev/null;"
              "stat -c '%t:%T' /dev/pts/ptmx; readlink /dev/ptmx;"
              "touch /dev/shm/s && echo shm-ok; grep ' /dev/pts ' /proc/self/mountinfo")
    out = ok(run_app(tmp_path, lower, script))
    names = set(out.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
            "mqueue", "fd", "stdin", "stdout", "stderr"} <= names
    assert "null-ok" in out and "shm-ok" in out
    assert "1:3 666" in out and "5:2" in out and "pts/ptmx" in out
    assert "ptmxmode=666" in out and "gid=5" in out          # our own devpts instance
    assert "null-ok\n5\n5\n" in out


def test_image_device_nodes_are_inert(tmp_path: Path, lower: Path) -> None:
    # a device node smuggled into the image (here: written to the upper layer by a
    # first run as root with CAP_MKNOD) gives nothing: the rootfs is mounted nodev
    p = run_app(tmp_path, lower, "mknod /mem c 1 1 && head -c 1 /mem | wc -c")
    assert p.stdout.split() == ["0"] and "/mem: Permission denied" in p.stderr


# --- volumes, etc files, symlink escapes ----------------------------------------------

def test_host_volume_bind_read_only(tmp_path: Path, lower: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "hello").write_text("hi from host\n")
    rw = tmp_path / "rw"
    rw.mkdir()
    p = run_app(tmp_path, lower,
                "cat /mnt/ro/hello; touch /mnt/ro/new && echo WROTE; echo w > /srv/rw/out",
                mounts=[MountSpec("/mnt/ro", str(vol), "bind", read_only=True),
                        MountSpec("/srv/rw", str(rw), "bind")])
    assert p.returncode == 0, p.stderr
    assert "hi from host" in p.stdout and "WROTE" not in p.stdout
    assert "Read-only file system" in p.stderr
    assert not (vol / "new").exists()
    assert (rw / "out").read_text() == "w\n"


def test_read_only_volume_is_read_only_below_too(tmp_path: Path, lower: Path) -> None:
    vol = tmp_path / "vol"
    (vol / "sub").mkdir(parents=True)
    spec = AppSpec(name="t", lower=str(lower), app_dir=str(tmp_path / "app"),
                   exec=["/bin/sh", "-c", "touch /v/sub/x && echo WROTE-SUB;"
                         "touch /v/x && echo WROTE-TOP; grep -c ' /v' /proc/self/mountinfo"],
                   env={}, mounts=[MountSpec("/v", str(vol), "bind", read_only=True)])
    # a submount in the volume (made in a private namespace around the driver)
    cmd = (f"mount -t tmpfs sub {vol}/sub && exec {sys.executable} -m tests.stage2_driver "
           + shlex.quote(json.dumps({"spec": to_json(spec)})))
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "WROTE" not in p.stdout and p.stdout.split() == ["2"]
    assert p.stderr.count("Read-only file system") == 2


def test_empty_volume_seeded_from_image(tmp_path: Path, lower: Path) -> None:
    vol = tmp_path / "volumes" / "data"
    vol.mkdir(parents=True)
    out = ok(run_app(tmp_path, lower, "cat /data/seed.txt; echo more > /data/new",
                     mounts=[MountSpec("/data", str(vol), "bind", seed_from_image=True)]))
    assert out == "from the image\n"
    st = (vol / "seed.txt").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (APPUSER_UID, APPGRP_GID, 0o640)
    vst = vol.stat()
    assert (vst.st_uid, stat.S_IMODE(vst.st_mode)) == (APPUSER_UID, 0o750)
    assert (vol / "sub").is_dir() and (vol / "new").read_text() == "more\n"
    # a second start does not seed again over the volume's own content
    (vol / "seed.txt").write_text("changed\n")
    assert ok(run_app(tmp_path, lower, "cat /data/seed.txt",
                      mounts=[MountSpec("/data", str(vol), "bind", seed_from_image=True)])
              ) == "changed\n"


def test_empty_volume_mode_owner_and_tmpfs(tmp_path: Path, lower: Path) -> None:
    vol = tmp_path / "v"
    vol.mkdir()
    out = ok(run_app(tmp_path, lower, "stat -c '%u %g %a' /v; stat -c '%a' /scratch;"
                     "grep ' /scratch ' /proc/self/mountinfo",
                     mounts=[MountSpec("/v", str(vol), "bind", mode=0o770, uid=12, gid=34),
                             MountSpec("/scratch", None, "tmpfs", mode=0o1777)]))
    assert out.splitlines()[:2] == ["12 34 770", "1777"]
    assert " - tmpfs " in out


def test_etc_file_binds(tmp_path: Path, lower: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.1.2.3 podhost\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.9.9.9\n")
    out = ok(run_app(tmp_path, lower, "cat /etc/hosts /etc/resolv.conf; ls /nodir 2>&1; true",
                     etc_files={"/etc/hosts": str(hosts), "/etc/resolv.conf": str(resolv),
                                "/nodir/x": str(hosts)}))
    assert "10.1.2.3 podhost" in out and "nameserver 10.9.9.9" in out
    assert "No such file" in out              # no /nodir in the image: skipped


def test_etc_file_symlinked_into_proc_refused(tmp_path: Path, lower: Path) -> None:
    image = tmp_path / "image"
    subprocess.run(["cp", "-a", str(lower), str(image)], check=True)
    os.symlink("/proc/sys/kernel/core_pattern", image / "etc" / "resolv.conf")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.9.9.9\n")
    p = run_app(tmp_path, image, "true", etc_files={"/etc/resolv.conf": str(resolv)})
    assert p.returncode == 125
    assert p.stderr.strip() == ("podrun: app t: etc files: bind /etc/resolv.conf: refusing "
                                "to mount over /proc/sys/kernel/core_pattern, inside /proc")


def test_mount_target_symlink_stays_in_rootfs(tmp_path: Path, lower: Path,
                                              hostdir: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "marker").write_text("vol\n")
    before = sorted(os.listdir(hostdir))
    out = ok(run_app(tmp_path, lower, "cat /evil/x/marker; ls /evil",
                     mounts=[MountSpec("/evil/x", str(vol), "bind"),
                             MountSpec("/evil/" + "../" * 12 + "evil/t", None, "tmpfs")]))
    assert "vol" in out
    assert sorted(os.listdir(hostdir)) == before       # the host dir was not touched
    # the mount points were created inside the app's rootfs (overlay upper)
    inside = tmp_path / "app" / "upper" / str(hostdir).lstrip("/")
    assert (inside / "x").is_dir() and (inside / "t").is_dir()


def test_volume_over_proc_refused(tmp_path: Path, lower: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    p = run_app(tmp_path, lower, "true", mounts=[MountSpec("/proc/sys", str(vol), "bind")])
    assert p.returncode == 125
    assert p.stderr.strip() == ("podrun: app t: volumes: mount /proc/sys: refusing to mount "
                                "over /proc/sys, inside /proc")
    # also when an image symlink leads there
    p = run_app(tmp_path, lower, "true", mounts=[MountSpec("/evil/" + "../" * 12 + "proc/sys/kernel",
                                                           None, "tmpfs")])
    assert p.returncode == 125 and "inside /proc" in p.stderr


def test_proc_symlink_in_image_refused(tmp_path: Path, lower: Path) -> None:
    evil = tmp_path / "evil-image"
    subprocess.run(["cp", "-a", str(lower), str(evil)], check=True)
    os.rmdir(evil / "proc")
    os.symlink("/tmp", evil / "proc")
    p = run_app(tmp_path, evil, "true")
    assert p.returncode == 125
    assert p.stderr.strip() == ("podrun: app t: mount /proc: /proc in the image is not a "
                                "directory (symlinks are refused)")


# --- user, groups, cwd, env -------------------------------------------------------------

def test_user_from_image_passwd(tmp_path: Path, lower: Path) -> None:
    with pytest.raises(KeyError):
        pwd.getpwnam("appuser")                        # the host has no such user
    out = ok(run_app(tmp_path, lower, "id; echo $HOME; pwd", user="appuser", group="",
                     supplementary_gids=[777], working_dir="/home/appuser"))
    uid_line, home, cwd = out.splitlines()
    assert uid_line.startswith(f"uid={APPUSER_UID}(appuser) gid={APPGRP_GID}(appgrp)")
    assert f"{EXTRA_GID}(extra)" in uid_line and "777" in uid_line
    assert home == "/home/appuser" and cwd == "/home/appuser"


def test_named_group_and_numeric_user(tmp_path: Path, lower: Path) -> None:
    out = ok(run_app(tmp_path, lower, "id", user="5000", group="extra"))
    assert out.startswith(f"uid=5000 gid={EXTRA_GID}(extra)")


def test_unknown_user_fails_clearly(tmp_path: Path, lower: Path) -> None:
    p = run_app(tmp_path, lower, "true", user="nobody-here")
    assert p.returncode == 125
    assert p.stderr.strip() == ("podrun: app t: user: user 'nobody-here' not found in "
                                "the image's /etc/passwd")


def test_workdir_created_and_env(tmp_path: Path, lower: Path) -> None:
    out = ok(run_app(tmp_path, lower, "pwd; env | sort", working_dir="/srv/work",
                     env={"FOO": "bar baz", "PATH": "/bin"}))
    lines = out.splitlines()
    assert lines[0] == "/srv/work"
    assert "FOO=bar baz" in lines and "PATH=/bin" in lines and "HOME=/root" in lines
    assert "AC_APP_NAME=t" in lines and "container=podrun" in lines


# --- rootfs writes ------------------------------------------------------------------------

def test_overlay_upper_gets_writes_lower_unchanged(tmp_path: Path, lower: Path) -> None:
    ok(run_app(tmp_path, lower, "echo new > /newfile; rm /bin/noexec"))
    upper = tmp_path / "app" / "upper"
    assert (upper / "newfile").read_text() == "new\n"
    assert not (lower / "newfile").exists() and (lower / "bin" / "noexec").exists()
    # a restart sees its own earlier writes
    assert ok(run_app(tmp_path, lower, "cat /newfile; ls /bin/noexec 2>&1; true")).startswith("new\n")


def test_read_only_rootfs(tmp_path: Path, lower: Path) -> None:
    p = run_app(tmp_path, lower, "touch /x && echo WROTE; touch /tmp/y && echo WROTE;"
                "touch /dev/shm/z && echo shm-ok", read_only_rootfs=True)
    assert "WROTE" not in p.stdout and "shm-ok" in p.stdout
    assert "Read-only file system" in p.stderr
    assert not (tmp_path / "app" / "upper" / "x").exists()


def test_no_overlay_copy(tmp_path: Path, lower: Path) -> None:
    out = ok(run_app(tmp_path, lower, "stat -c '%u %a' /data/seed.txt; echo c > /copied",
                     overlay=False))
    assert out == f"{APPUSER_UID} 640\n"
    rootfs = tmp_path / "app" / "rootfs"
    assert (rootfs / "copied").read_text() == "c\n"
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    assert not (lower / "copied").exists()
    assert (tmp_path / "app" / "rootfs.copied").exists()
    # a restart reuses the copy (and its writes)
    assert ok(run_app(tmp_path, lower, "cat /copied", overlay=False)) == "c\n"


def test_overlay_refused_falls_back_to_copy(tmp_path: Path, lower: Path) -> None:
    # overlay refuses (EINVAL) an upper and a work dir on different filesystems
    shm = Path("/dev/shm") / f"podrun-test-{uuid.uuid4().hex[:8]}"
    shm.mkdir()
    try:
        (tmp_path / "app").mkdir()
        os.symlink(shm, tmp_path / "app" / "work")
        ok(run_app(tmp_path, lower, "echo c > /copied"))
        assert (tmp_path / "app" / "rootfs.copied").exists()
        assert (tmp_path / "app" / "rootfs" / "copied").read_text() == "c\n"
    finally:
        import shutil

        shutil.rmtree(shm)


# --- fds, exec ----------------------------------------------------------------------------

def test_no_fd_leaks_but_keep_fds(tmp_path: Path, lower: Path) -> None:
    kept = tmp_path / "kept"
    kept.write_text("passed on\n")
    out = ok(run_app(tmp_path, lower, "ls /proc/$$/fd; cat <&3",
                     driver={"leak": [str(REPO / "pyproject.toml"), "/etc/hostname"],
                             "keep": [str(kept)]}))
    *fds, content = out.splitlines()
    assert sorted(fds) == ["0", "1", "2", "3"]
    assert content == "passed on"


def test_no_fds_without_keep(tmp_path: Path, lower: Path) -> None:
    out = ok(run_app(tmp_path, lower, "ls /proc/$$/fd; true",
                     driver={"leak": ["/etc/hostname"]}))
    assert out.split() == ["0", "1", "2"]


def test_exec_not_found_127(tmp_path: Path, lower: Path) -> None:
    p = run_app(tmp_path, lower, "", exec=["no-such-cmd", "x"])
    assert p.returncode == 127
    assert p.stderr.startswith("podrun: app t: exec no-such-cmd: not found in PATH")
    p = run_app(tmp_path, lower, "", exec=["/bin/missing"])
    assert p.returncode == 127


def test_exec_not_executable_126(tmp_path: Path, lower: Path) -> None:
    p = run_app(tmp_path, lower, "", exec=["noexec"])
    assert p.returncode == 126
    assert p.stderr.strip() == "podrun: app t: exec noexec: /bin/noexec is not executable"


def test_exec_resolved_in_app_path(tmp_path: Path, lower: Path) -> None:
    assert ok(run_app(tmp_path, lower, "", exec=["echo", "hi"], env={"PATH": "/bin"})) == "hi\n"


# --- isolators ----------------------------------------------------------------------------

def _status(out: str, key: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith(key + ":"))


def test_default_caps_and_no_new_privs(tmp_path: Path, lower: Path) -> None:
    out = ok(run_app(tmp_path, lower, "cat /proc/self/status", user="appuser",
                     no_new_privs=True))
    want = sum(1 << CAP_NUMBERS[c] for c in DEFAULT_CAPS)
    assert int(_status(out, "CapBnd"), 16) == want
    assert int(_status(out, "CapEff"), 16) == want      # via ambient, as a non-root uid
    assert _status(out, "NoNewPrivs") == "1"
    assert _status(out, "Uid").split()[0] == str(APPUSER_UID)


def test_retained_caps_root(tmp_path: Path, lower: Path) -> None:
    caps = {CAP_NUMBERS["CAP_CHOWN"], CAP_NUMBERS["CAP_KILL"]}
    out = ok(run_app(tmp_path, lower, "cat /proc/self/status; chown 1 /tmp && echo chowned;"
                     "touch /root/f && chmod 000 /root/f && cat /root/f && echo READ; true",
                     caps=caps))
    assert int(_status(out, "CapBnd"), 16) == (1 << 0) | (1 << 5)
    assert _status(out, "NoNewPrivs") == "0"
    assert "chowned" in out and "READ" not in out        # no CAP_DAC_OVERRIDE


def test_seccomp_remove_set(tmp_path: Path, lower: Path) -> None:
    p = run_app(tmp_path, lower, "mkdir /d && echo MADE; echo still-running",
                driver={"seccomp": {"mode": "remove", "syscalls": ["mkdir", "mkdirat"],
                                    "errno": "EPERM"}})
    assert p.returncode == 0, p.stderr
    assert "MADE" not in p.stdout and "still-running" in p.stdout
    assert "Operation not permitted" in p.stderr


def test_seccomp_retain_set_implies_nnp(tmp_path: Path, lower: Path) -> None:
    from podrun.stage2.seccomp import DOCKER_DEFAULT_WHITELIST

    allowed = [s for s in DOCKER_DEFAULT_WHITELIST if s not in ("mkdir", "mkdirat")]
    p = run_app(tmp_path, lower, "grep NoNewPrivs /proc/self/status; mkdir /d && echo MADE",
                user="appuser",
                driver={"seccomp": {"mode": "retain", "syscalls": allowed, "errno": "EPERM"}})
    assert "NoNewPrivs:\t1" in p.stdout, p.stderr
    assert "MADE" not in p.stdout


def test_seccomp_remove_set_blocking_setup_calls(tmp_path: Path, lower: Path) -> None:
    # the filter forbids changing ids: it must hold for the app, yet stage2's own
    # id switch must still happen (the filter is then loaded last, with NNP)
    p = run_app(tmp_path, lower, "id -u; grep NoNewPrivs /proc/self/status",
                user="appuser",
                driver={"seccomp": {"mode": "remove",
                                    "syscalls": ["setresuid", "setuid", "setgroups"],
                                    "errno": "EPERM"}})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(APPUSER_UID), "NoNewPrivs:", "1"]


def test_default_profile_keeps_setuid_semantics(tmp_path: Path, lower: Path) -> None:
    # a remove-set that spares the setup calls is loaded early: no NNP implied
    p = run_app(tmp_path, lower, "grep NoNewPrivs /proc/self/status; "
                "mkdir /tmp/d && echo MADE; true", user="appuser",
                driver={"seccomp": {"mode": "remove", "syscalls": ["@podrun/default-blacklist",
                                                                   "mkdir", "mkdirat"],
                                    "errno": "EPERM"}})
    assert p.returncode == 0, p.stderr
    assert "NoNewPrivs:\t0" in p.stdout and "MADE" not in p.stdout
    assert "Operation not permitted" in p.stderr


def test_oom_score_adj_rlimits_umask(tmp_path: Path, lower: Path) -> None:
    import resource

    out = ok(run_app(tmp_path, lower, "cat /proc/self/oom_score_adj; ulimit -n; umask",
                     oom_score_adj=500, rlimits={resource.RLIMIT_NOFILE: (77, 88)}))
    assert out.split() == ["500", "77", "0022"]


def test_join_cgroup(tmp_path: Path, lower: Path) -> None:
    base = Path("/sys/fs/cgroup/pids")
    if not (base / "cgroup.procs").exists():
        pytest.skip("no cgroup v1 pids hierarchy here")
    cg = base / f"podrun-test-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    try:
        out = ok(run_app(tmp_path, lower, "cat /proc/self/cgroup",
                         driver={"cgroups": [str(cg / "cgroup.procs")]}))
        assert any(line.endswith(f":pids:/{cg.name}") for line in out.splitlines()), out
    finally:
        cg.rmdir()


def test_dev_console_is_the_pod_terminal(tmp_path: Path, lower: Path) -> None:
    spec = AppSpec(name="t", lower=str(lower), app_dir=str(tmp_path / "app"),
                   exec=["/bin/sh", "-c", "stat -L -c %t:%T /dev/console /proc/self/fd/1"],
                   env={})
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tests.stage2_driver",
                                 json.dumps({"spec": to_json(spec)})], cwd=REPO,
                                stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:                   # EIO: every slave end is closed
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        os.close(master)
    console, stdout = bytes(b"".join(chunks)).decode().split()
    assert console == stdout and console.startswith("88:")      # a pts device (136)


def test_arrange_fds_renumbers_overlapping_fds(tmp_path: Path) -> None:
    from podrun.stage2.launch import arrange_fds

    for i in range(3):
        (tmp_path / f"f{i}").write_text(f"content {i}")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fds = [os.open(tmp_path / f"f{i}", os.O_RDONLY | os.O_CLOEXEC) for i in range(3)]
            os.open(tmp_path / "f0", os.O_RDONLY)                   # not kept: must close
            keep = [fds[2], fds[0], fds[1]]                         # 3 lands on a kept fd
            arrange_fds(keep)
            now = sorted(int(f) for f in os.listdir("/proc/self/fd"))
            texts = [os.pread(fd, 100, 0).decode() for fd in (3, 4, 5)]
            inheritable = all(os.get_inheritable(fd) for fd in (3, 4, 5))
            ok_ = (now[:6] == [0, 1, 2, 3, 4, 5] and len(now) == 7   # +1: listdir's own fd
                   and texts == ["content 2", "content 0", "content 1"] and inheritable)
            code = 0 if ok_ else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

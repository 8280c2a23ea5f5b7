"""``podrun run`` end to end: real pods as root, busybox images, real namespaces and cgroups."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import PodrunEnv
from tests.images import tiny_aci
from tests.podutil import INSECURE, fetch, pod_dirs, read_uuid, spawn, status, wait_for

pytestmark = pytest.mark.root


def run(env: PodrunEnv, *args: str | Path, **kw: object):  # type: ignore[no-untyped-def]
    return env.run(INSECURE, "run", *args, **kw)  # type: ignore[arg-type]


def test_exit_code_and_output(pods: PodrunEnv, busybox_aci: Path) -> None:
    r = run(pods, busybox_aci, "--exec", "/bin/sh", "--", "-c", "echo out; echo err >&2; exit 7")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "out\n"
    assert "err" in r.stderr
    listing = json.loads(pods.run("list", "--format=json", check=True).stdout)
    assert len(listing) == 1 and listing[0]["state"] == "exited"
    st = status(pods, listing[0]["uuid"])
    assert st["state"] == "exited"
    assert st["apps"][0]["name"] == "busybox" and st["apps"][0]["exit_code"] == 7


def test_signal_death_reads_as_128_plus_n(pods: PodrunEnv, busybox_aci: Path) -> None:
    r = run(pods, busybox_aci, "--exec", "/bin/sh", "--", "-c", "kill -USR1 $$")
    assert r.returncode == 128 + signal.SIGUSR1


def test_environment_and_identity(pods: PodrunEnv, busybox_aci: Path) -> None:
    r = run(pods, "--set-env=POD_WIDE=1", "--hostname=myhost", busybox_aci,
            "--environment=APP_ONLY=2", "--exec", "/bin/sh", "--",
            "-c", "echo $AC_APP_NAME $container $PATH $POD_WIDE $APP_ONLY; hostname; "
            "cat /etc/hostname; grep myhost /etc/hosts; echo pid=$$; ls /", check=True)
    lines = r.stdout.splitlines()
    assert lines[0] == ("busybox podrun /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                        "/sbin:/bin 1 2")
    assert lines[1] == lines[2] == "myhost"
    assert "myhost" in lines[3]
    assert lines[4] in ("pid=2", "pid=3")  # the init is 1
    assert "opt" not in lines[5:]  # the app sees its own rootfs only


def test_several_apps_share_namespaces(pods: PodrunEnv, tmp_path: Path) -> None:
    a = tiny_aci(tmp_path, "example.com/a", busybox=True, exec_=["/bin/sh"])
    b = tiny_aci(tmp_path, "example.com/b", busybox=True, exec_=["/bin/sh"])
    server = ("echo ready > /dev/shm/x 2>/dev/null; nc -l -p 5555 > /tmp/got & "
              "sleep 3; cat /tmp/got; ps | grep -cx ' *[0-9]* root *sleep 31'; exit 0")
    client = ("sleep 1; echo over-loopback | nc 127.0.0.1 5555; sleep 31 & "
              "sleep 2.5; exit 4")
    r = run(pods, a, "--", "-c", server, "---", b, "--", "-c", client)
    assert r.returncode == 4, r.stderr  # first non-zero in manifest order
    assert "over-loopback" in r.stdout
    assert "1" in r.stdout.splitlines()  # a sees b's sleep: one pid namespace


def test_app_names_and_duplicates(pods: PodrunEnv, busybox_aci: Path) -> None:
    r = run(pods, busybox_aci, busybox_aci)
    assert r.returncode == 254 and "two apps are called 'busybox'" in r.stderr
    assert pod_dirs(pods) == []
    r = run(pods, busybox_aci, busybox_aci, "--name=second", check=True)
    assert r.stdout == "hello\nhello\n"


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown flag --bogus"),
    (["IMG", "--mount", "volume=nope,target=/x"], "no volume named 'nope'"),
    (["IMG", "--user=nobody-here"], "nobody-here"),
    (["--pull-policy=never", "example.com/not-there"], "not found"),
    (["--net=nowhere", "IMG"], "--net=nowhere"),
    (["--stage1-flavor=fly", "--stage1-path=/x.aci", "IMG"], "conflict"),
    (["--pod-manifest=/nonexistent.json"], "/nonexistent.json"),
    (["IMG", "--memory=lots"], "memory"),
])
def test_bad_input_one_line_254_nothing_left(pods: PodrunEnv, busybox_aci: Path,
                                             args: list[str], message: str) -> None:
    fetch(pods, busybox_aci)
    argv = ["example.com/busybox" if a == "IMG" else a for a in args]
    r = pods.run("run", *argv)
    assert r.returncode == 254, r
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert pod_dirs(pods) == []


def test_user_names_from_the_image(pods: PodrunEnv, tmp_path: Path) -> None:
    aci = tiny_aci(tmp_path, "example.com/users", busybox=True, exec_=["/bin/id"],
                   files={"etc/passwd": b"root:x:0:0::/root:/bin/sh\nappuser:x:4242:4343::/:/bin/sh\n",
                          "etc/group": b"root:x:0:\nappgroup:x:4343:\nextra:x:5000:appuser\n"})
    r = run(pods, aci, "--user=appuser", "--group=appgroup", "--supplementary-gids=7,8",
            check=True)
    assert r.stdout.startswith("uid=4242(appuser) gid=4343(appgroup)")
    assert "7" in r.stdout and "8" in r.stdout


def test_volumes_host_empty_and_implicit(pods: PodrunEnv, tmp_path: Path) -> None:
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "in.txt").write_text("from host\n")
    aci = tiny_aci(tmp_path, "example.com/vols", busybox=True, exec_=["/bin/sh"],
                   files={"seeded/content.txt": b"image content\n"})
    m = json.loads((tmp_path / "example.com_vols-1.0.0.src/manifest").read_text())
    m["app"]["mountPoints"] = [{"name": "seed", "path": "/seeded"}]
    (tmp_path / "example.com_vols-1.0.0.src/manifest").write_text(json.dumps(m))
    from podrun.appc.aci import build_aci

    build_aci(tmp_path / "example.com_vols-1.0.0.src", aci, overwrite=True)
    writer = ("cat /h/in.txt; touch /h/x 2>/dev/null && echo host-writable || echo host-ro; "
              "echo shared > /e/f; cat /seeded/content.txt; echo app-write > /seeded/new")
    reader = "sleep 1; cat /e/f"
    r = run(pods, f"--volume=h,kind=host,source={host},readOnly=true", "--volume=e,kind=empty",
            aci, "--mount", "volume=h,target=/h", "--mount", "volume=e,target=/e",
            "--", "-c", writer, "---",
            aci, "--name=reader", "--mount", "volume=e,target=/e", "--", "-c", reader)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["from host", "host-ro", "image content", "shared"]
    assert not (host / "x").exists()


def test_readonly_rootfs_and_no_overlay(pods: PodrunEnv, busybox_aci: Path) -> None:
    r = run(pods, busybox_aci, "--readonly-rootfs", "--exec", "/bin/sh", "--", "-c",
            "touch /t 2>/dev/null && echo rw || echo ro")
    assert r.stdout == "ro\n"
    r = run(pods, "--no-overlay", busybox_aci, "--exec", "/bin/sh", "--", "-c",
            "touch /t && echo rw; grep -c ' / overlay ' /proc/mounts")
    assert r.stdout.splitlines() == ["rw", "0"]


def test_isolators_caps_seccomp_nnp_oom(pods: PodrunEnv, tmp_path: Path) -> None:
    aci = tiny_aci(tmp_path, "example.com/iso", busybox=True, exec_=["/bin/sh"])
    r = run(pods, aci, "--caps-remove=CAP_CHOWN,CAP_MKNOD", "--", "-c",
            "chown 1 /tmp && echo chown-ok; mknod /tmp/n c 1 3 && echo mknod-ok; "
            "grep NoNewPrivs /proc/self/status")
    assert "chown-ok" not in r.stdout and "mknod-ok" not in r.stdout
    r = run(pods, aci, "--caps-retain=CAP_CHOWN", "--", "-c", "chown 1 /tmp && echo chown-ok")
    assert "chown-ok" in r.stdout
    r = run(pods, aci, "--seccomp=mode=remove,errno=ENOTSUP,mkdir,mkdirat", "--", "-c",
            "mkdir /tmp/d")
    assert r.returncode != 0 and "not supported" in r.stderr.lower()
    r = run(pods, aci, "--memory=20M", "--", "-c",
            "dd if=/dev/zero bs=1M count=200 | sha256sum >/dev/null & wait; "
            "x=$(head -c 60000000 /dev/zero | tr '\\0' 'a'); echo survived")
    assert r.returncode == 137, (r.returncode, r.stderr)
    uuid = json.loads(pods.run("list", "--format=json", check=True).stdout)[-1]["uuid"]
    st = status(pods, uuid)
    assert st["apps"][0]["oom_killed"] is True


def test_pids_limit(pods: PodrunEnv, busybox_aci: Path) -> None:
    script = "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait; echo done"
    r = run(pods, busybox_aci, "--pids-limit=5", "--exec", "/bin/sh", "--", "-c", script)
    assert "can't fork" in r.stderr or "Resource temporarily unavailable" in r.stderr
    r = run(pods, busybox_aci, "--exec", "/bin/sh", "--", "-c", script)
    assert r.returncode == 0 and r.stdout == "done\n" and "fork" not in r.stderr


def test_sigterm_to_podrun_stops_the_pod(pods: PodrunEnv, busybox_aci: Path,
                                         tmp_path: Path) -> None:
    uf = tmp_path / "uuid"
    p = spawn(pods, INSECURE, "run", f"--uuid-file-save={uf}", busybox_aci, "--exec",
              "/bin/sh", "--", "-c", "trap 'echo got-term; exit 3' TERM; sleep 60 & wait")
    wait_for(lambda: read_uuid(uf) and status(pods, read_uuid(uf))["state"] == "running"
             and any((d / "apps/busybox/pid").exists() for d in pod_dirs(pods)), what="pod up")
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 3, err
    assert "got-term" in out


def test_stop_timeout_kills(pods: PodrunEnv, busybox_aci: Path, tmp_path: Path) -> None:
    uf = tmp_path / "uuid"
    p = spawn(pods, INSECURE, "run", f"--uuid-file-save={uf}", "--stop-timeout=1s",
              busybox_aci, "--exec", "/bin/sh", "--", "-c", "trap '' TERM; sleep 60")
    wait_for(lambda: any((d / "apps/busybox/pid").exists() for d in pod_dirs(pods)),
             what="app up")
    t0 = time.monotonic()
    pods.run("stop", read_uuid(uf), check=True)
    p.communicate(timeout=30)
    assert p.returncode == 137
    assert time.monotonic() - t0 < 10


def test_stop_force_and_kill9_of_init_then_gc(pods: PodrunEnv, busybox_aci: Path,
                                              tmp_path: Path, test_parent: str) -> None:
    from tests.cgrouputil import leftovers

    procs = []
    uuids = []
    for i in range(2):
        uf = tmp_path / f"uuid{i}"
        procs.append(spawn(pods, INSECURE, "run", f"--uuid-file-save={uf}", busybox_aci,
                           "--exec", "/bin/sleep", "--", "60"))
        wait_for(lambda uf=uf: read_uuid(uf) != "" and status(pods, read_uuid(uf))["state"]
                 == "running", what="pod running")
        uuids.append(read_uuid(uf))
    wait_for(lambda: all(any((d / "apps/busybox/pid").exists() for d in pod_dirs(pods)
                             if d.name == u) for u in uuids), what="apps up")
    pods.run("stop", "--force", uuids[0], check=True)
    rt = json.loads(next(d for d in pod_dirs(pods) if d.name == uuids[1])
                    .joinpath("runtime.json").read_text())
    os.kill(rt["init_pid"], signal.SIGKILL)
    for p in procs:
        p.communicate(timeout=30)
    for u in uuids:
        assert status(pods, u)["state"] == "exited"
    pods.run("gc", "--grace-period=0s", check=True)
    assert pod_dirs(pods) == []
    assert leftovers(test_parent.strip("/")) == []


def test_enter(pods: PodrunEnv, busybox_aci: Path, tmp_path: Path) -> None:
    uf = tmp_path / "uuid"
    p = spawn(pods, INSECURE, "run", f"--uuid-file-save={uf}", busybox_aci, "--exec",
              "/bin/sh", "--", "-c", "echo marker > /tmp/m; sleep 60")
    wait_for(lambda: any((d / "apps/busybox/pid").exists() for d in pod_dirs(pods)),
             what="app up")
    time.sleep(0.3)
    r = pods.run("enter", read_uuid(uf), "/bin/sh", "-c", "cat /tmp/m; echo $AC_APP_NAME",
                 check=True)
    assert r.stdout.splitlines() == ["marker", "busybox"]
    r = pods.run("enter", read_uuid(uf), "/bin/sh", "-c", "exit 9")
    assert r.returncode == 9
    pods.run("stop", read_uuid(uf), check=True)
    p.communicate(timeout=30)


def test_twenty_pods_at_once(pods: PodrunEnv, busybox_aci: Path) -> None:
    fetch(pods, busybox_aci)
    pods.run("run", "example.com/busybox", check=True)  # stage1 imported once
    procs = [spawn(pods, "run", "example.com/busybox", "--exec", "/bin/sh", "--", "-c",
                   f"exit {i % 3}") for i in range(20)]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [i % 3 for i in range(20)], [p.stderr.read() for p in procs if p.stderr]


def test_interactive_passes_stdin(pods: PodrunEnv, busybox_aci: Path) -> None:
    r = pods.run(INSECURE, "run", "--interactive", busybox_aci, "--exec", "/bin/cat",
                 input="typed\n")
    assert r.returncode == 0 and r.stdout == "typed\n"
    r = run(pods, busybox_aci, "--exec", "/bin/cat")
    assert r.returncode == 0 and r.stdout == ""  # stdin is /dev/null


def test_fly_flavor(pods: PodrunEnv, busybox_aci: Path) -> None:
    r = run(pods, "--stage1-flavor=fly", busybox_aci, "--exec", "/bin/sh", "--", "-c",
            "hostname; ls /proc | grep -c '^[0-9]'; exit 6")
    assert r.returncode == 6
    host, nprocs = r.stdout.split()
    assert host == os.uname().nodename and int(nprocs) > 5  # the host's pid namespace


def test_image_gc_keeps_what_pods_use(pods: PodrunEnv, busybox_aci: Path,
                                      tmp_path: Path) -> None:
    image_id = fetch(pods, busybox_aci)
    prepared = pods.run("prepare", "--quiet", image_id, check=True).stdout.strip()
    uf = tmp_path / "uuid"
    p = spawn(pods, "run", f"--uuid-file-save={uf}", image_id, "--exec", "/bin/sleep",
              "--", "60")
    wait_for(lambda: any((d / "apps/busybox/pid").exists() for d in pod_dirs(pods)),
             what="app up")
    pods.run("image", "gc", "--grace-period=0s", check=True)
    listing = json.loads(pods.run("image", "list", "--format=json", check=True).stdout)
    assert image_id in [i["id"] for i in listing]
    trees = list((pods.data_dir / "cas/trees").iterdir())
    assert len(trees) == 2  # the app's and stage1's
    pods.run("stop", read_uuid(uf), check=True)
    p.communicate(timeout=30)
    pods.run("rm", prepared, check=True)
    pods.run("gc", "--grace-period=0s", check=True)
    pods.run("image", "gc", "--grace-period=0s", check=True)
    assert json.loads(pods.run("image", "list", "--format=json", check=True).stdout) == []
    assert list((pods.data_dir / "cas/trees").iterdir()) == []


def test_kill9_of_podrun_kills_the_pod(pods: PodrunEnv, busybox_aci: Path, tmp_path: Path,
                                       test_parent: str) -> None:
    from tests.cgrouputil import leftovers

    uf = tmp_path / "uuid"
    p = spawn(pods, INSECURE, "run", f"--uuid-file-save={uf}", busybox_aci, "--exec",
              "/bin/sleep", "--", "60")
    wait_for(lambda: any((d / "apps/busybox/pid").exists() for d in pod_dirs(pods)),
             what="app up")
    rt = json.loads(next(iter(pod_dirs(pods))).joinpath("runtime.json").read_text())
    p.kill()
    p.wait(10)
    wait_for(lambda: not os.path.exists(f"/proc/{rt['init_pid']}"), what="init gone")
    assert status(pods, read_uuid(uf))["state"] == "exited"
    pods.run("gc", "--grace-period=0s", check=True)
    assert pod_dirs(pods) == []
    assert leftovers(test_parent.strip("/")) == []


def test_no_new_privileges_isolator(pods: PodrunEnv, tmp_path: Path) -> None:
    nnp = tiny_aci(tmp_path, "example.com/nnp", busybox=True,
                   exec_=["/bin/sh", "-c", "grep NoNewPrivs /proc/self/status"])
    m = json.loads((tmp_path / "example.com_nnp-1.0.0.src/manifest").read_text())
    m["app"]["isolators"] = [{"name": "os/linux/no-new-privileges", "value": True}]
    (tmp_path / "example.com_nnp-1.0.0.src/manifest").write_text(json.dumps(m))
    from podrun.appc.aci import build_aci

    build_aci(tmp_path / "example.com_nnp-1.0.0.src", nnp, overwrite=True)
    assert run(pods, nnp, check=True).stdout.split() == ["NoNewPrivs:", "1"]
    plain = tiny_aci(tmp_path, "example.com/plain", busybox=True,
                     exec_=["/bin/sh", "-c", "grep NoNewPrivs /proc/self/status"])
    assert run(pods, plain, check=True).stdout.split() == ["NoNewPrivs:", "0"]


def test_uuid_files(pods: PodrunEnv, busybox_aci: Path, tmp_path: Path) -> None:
    uf = tmp_path / "uuid"
    fetch(pods, busybox_aci)
    pods.run("prepare", f"--uuid-file-save={uf}", "example.com/busybox", check=True)
    assert status(pods, read_uuid(uf))["state"] == "prepared"
    r = pods.run("run-prepared", f"--uuid-file={uf}", check=True)
    assert r.stdout == "hello\n"
    r = pods.run("status", f"--uuid-file={uf}", check=True)
    assert "state=exited" in r.stdout and "app-busybox=0" in r.stdout
    assert json.loads(pods.run("cat-manifest", f"--uuid-file={uf}", check=True).stdout)
    pods.run("rm", f"--uuid-file={uf}", check=True)
    assert pod_dirs(pods) == []
    r = pods.run("stop", f"--uuid-file={tmp_path / 'missing'}")
    assert r.returncode == 254 and "missing" in r.stderr


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


@pytest.mark.parametrize("trap, expected", [("trap 'exit 3' TERM; sleep 60 & wait", 3),
                                            ("trap '' TERM; sleep 60", 137)])
def test_idle_pod_stops_like_a_busy_one(pods: PodrunEnv, busybox_aci: Path, tmp_path: Path,
                                        trap: str, expected: int) -> None:
    """After a second the supervisor and the init exec into the native idle loop; SIGTERM
    to `podrun run`, the stop timeout and the exit code behave exactly as before."""
    uf = tmp_path / "uuid"
    p = spawn(pods, INSECURE, "run", f"--uuid-file-save={uf}", "--stop-timeout=1s",
              busybox_aci, "--exec", "/bin/sh", "--", "-c", trap)
    wait_for(lambda: any((d / "apps/busybox/pid").exists() for d in pod_dirs(pods)),
             what="app up")
    rt_path = next(iter(pod_dirs(pods))) / "runtime.json"
    wait_for(lambda: "init_pid" in json.loads(rt_path.read_text()), what="runtime.json")
    rt = json.loads(rt_path.read_text())
    wait_for(lambda: _comm(rt["pid"]) == "idle" and _comm(rt["init_pid"]) == "idle",
             what="both processes idle")
    assert rt["pid"] == p.pid
    r = pods.run("enter", read_uuid(uf), "/bin/sh", "-c", "echo $AC_APP_NAME", check=True)
    assert r.stdout == "busybox\n"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == expected, err
    st = status(pods, read_uuid(uf))
    assert st["state"] == "exited" and st["apps"][0]["exit_code"] == expected


@pytest.mark.parametrize("trap, expected", [("trap 'exit 5' TERM; sleep 60 & wait", 5),
                                            ("trap '' TERM; sleep 60", 137)])
def test_idle_fly_pod(pods: PodrunEnv, busybox_aci: Path, tmp_path: Path, trap: str,
                      expected: int) -> None:
    """A fly pod (a long-running service) hands its supervisor over to the native loop
    too; the stop timeout and the app's exit code still hold."""
    uf = tmp_path / "uuid"
    p = spawn(pods, INSECURE, "run", "--stage1-flavor=fly", f"--uuid-file-save={uf}",
              "--stop-timeout=1s", busybox_aci, "--exec", "/bin/sh", "--", "-c", trap)
    wait_for(lambda: read_uuid(uf) != "" and pod_dirs(pods) != [], what="pod")
    wait_for(lambda: _comm(p.pid) == "idle", what="supervisor idle")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == expected, err
    st = status(pods, read_uuid(uf))
    assert st["state"] == "exited" and st["apps"][0]["exit_code"] == expected


@pytest.mark.parametrize("flag, message", [
    ("--caps-retain=CAP_BOGUS", "CAP_BOGUS"),
    ("--seccomp=mode=remove,nosuchcall", "nosuchcall"),
    ("--seccomp=mode=remove,errno=EBOGUS,mkdir", "EBOGUS"),
])
def test_unknown_isolator_names_leave_no_pod(pods: PodrunEnv, busybox_aci: Path, flag: str,
                                              message: str) -> None:
    fetch(pods, busybox_aci)
    r = pods.run("run", "example.com/busybox", flag)
    assert r.returncode == 254 and r.stderr.count("\n") == 1 and message in r.stderr
    assert pod_dirs(pods) == []


def test_init_failure_is_reported_and_cleaned_up(pods: PodrunEnv, busybox_aci: Path,
                                                 tmp_path: Path, test_parent: str) -> None:
    """A pod whose init cannot start (its host volume vanished after prepare) ends with
    one line and 254, and leaves no cgroup or mount behind."""
    from tests.cgrouputil import leftovers

    vol = tmp_path / "vol"
    vol.mkdir()
    fetch(pods, busybox_aci)
    uuid = pods.run("prepare", f"--volume=v,kind=host,source={vol}", "example.com/busybox",
                    "--mount=volume=v,target=/v", check=True).stdout.strip()
    vol.rmdir()
    r = pods.run("run-prepared", uuid)
    assert r.returncode == 254 and "pod init" in r.stderr, r.stderr
    assert status(pods, uuid)["state"] == "exited"
    assert leftovers(test_parent.strip("/")) == []

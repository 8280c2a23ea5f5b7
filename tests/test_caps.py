"""podrun.stage2.caps: name tables, appc resolution, and applying sets to real
(forked) processes, checked through /proc/self/status and failing syscalls."""

from __future__ import annotations

import errno
import os
import stat
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from podrun.stage2 import caps
from tests.forkutil import in_child


def exec_in_child(prepare: Callable[[], None], argv: list[str]) -> tuple[int, str]:
    """Fork, run *prepare*, exec *argv* with stdout to a pipe; return (exit code, output)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.dup2(w, 1)
            prepare()
            os.execv(argv[0], argv)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(127)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def proc_caps(text: str) -> dict[str, set[int]]:
    out = {}
    for line in text.splitlines():
        if line.startswith("Cap"):
            key, val = line.split(":")
            out[key] = caps.from_mask(int(val, 16))
    return out


def own_status() -> dict[str, set[int]]:
    with open("/proc/self/status") as f:
        return proc_caps(f.read())


def test_names_and_numbers() -> None:
    assert caps.cap_number("CAP_CHOWN") == 0
    assert caps.cap_number("net_bind_service") == 10
    assert caps.cap_number("CAP_CHECKPOINT_RESTORE") == 40
    assert caps.cap_name(21) == "CAP_SYS_ADMIN"
    assert caps.cap_name(99) == "CAP_99"
    with pytest.raises(ValueError, match="CAP_NOPE"):
        caps.cap_number("CAP_NOPE")


def test_table_covers_kernel() -> None:
    assert caps.last_cap() <= len(caps.CAP_NAMES) - 1


def test_default_set_is_appc_14() -> None:
    assert len(caps.DEFAULT_CAPS) == 14
    got = caps.resolve(None, None)
    assert got == caps.numbers(caps.DEFAULT_CAPS)
    assert caps.cap_number("CAP_SYS_PTRACE") not in got
    assert caps.cap_number("CAP_SYS_ADMIN") not in got


def test_resolve_retain_and_remove() -> None:
    assert caps.resolve(["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"], None) == {12, 10}
    removed = caps.resolve(None, ["CAP_CHOWN", "CAP_SYS_ADMIN"])
    assert removed == caps.numbers(caps.DEFAULT_CAPS) - {0}
    with pytest.raises(ValueError, match="exclusive"):
        caps.resolve(["CAP_CHOWN"], ["CAP_KILL"])
    with pytest.raises(ValueError, match="CAP_BOGUS"):
        caps.resolve(["CAP_BOGUS"], None)


@pytest.mark.root
def test_apply_as_root_sets_every_set() -> None:
    want = caps.resolve(None, None)

    def child() -> dict[str, list[int]]:
        caps.apply(want, keep_for_uid_change=False)
        return {k: sorted(v) for k, v in own_status().items()}

    got = in_child(child)
    for key in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert set(got[key]) == want, key


@pytest.mark.root
def test_chown_fails_without_cap_chown(tmp_path: Any) -> None:
    target = tmp_path / "f"
    target.write_text("x")

    def child(remove: list[str]) -> Callable[[], Any]:
        def run() -> Any:
            caps.apply(caps.resolve(None, remove), keep_for_uid_change=False)
            try:
                os.chown(target, 1234, 1234)
                return "ok"
            except OSError as e:
                return e.errno
        return run

    assert in_child(child(["CAP_CHOWN"])) == errno.EPERM
    assert os.stat(target).st_uid == 0
    assert in_child(child([])) == "ok"
    assert os.stat(target).st_uid == 1234


@pytest.mark.root
def test_mknod_fails_without_cap_mknod(tmp_path: Any) -> None:
    node = tmp_path / "null"

    def child(remove: list[str]) -> Callable[[], Any]:
        def run() -> Any:
            caps.apply(caps.resolve(None, remove), keep_for_uid_change=False)
            try:
                os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 3))
                return "ok"
            except OSError as e:
                return e.errno
        return run

    assert in_child(child(["CAP_MKNOD"])) == errno.EPERM
    assert not node.exists()
    assert in_child(child([])) == "ok"
    assert stat.S_ISCHR(node.stat().st_mode)


@pytest.mark.root
def test_caps_survive_uid_change_and_exec() -> None:
    want = caps.resolve(["CAP_NET_BIND_SERVICE", "CAP_KILL"], None)
    code, out = exec_in_child(lambda: caps.apply_as_user(want, 65534, 65534, []),
                              ["/bin/busybox", "sh", "-c", "id -u; cat /proc/self/status"])
    assert code == 0, out
    assert out.splitlines()[0] == "65534"
    got = proc_caps(out)
    for key in ("CapEff", "CapPrm", "CapAmb", "CapBnd"):
        assert got[key] == want, key


@pytest.mark.root
def test_uid_change_without_caps_drops_everything() -> None:
    code, out = exec_in_child(lambda: caps.apply_as_user(set(), 65534, 65534, []),
                              ["/bin/busybox", "cat", "/proc/self/status"])
    assert code == 0, out
    got = proc_caps(out)
    assert got["CapEff"] == got["CapPrm"] == got["CapBnd"] == got["CapAmb"] == set()


@pytest.mark.root
def test_root_exec_gets_bounding_set() -> None:
    want = caps.resolve(None, ["CAP_NET_RAW"])
    code, out = exec_in_child(lambda: caps.apply(want, keep_for_uid_change=False),
                              ["/bin/busybox", "cat", "/proc/self/status"])
    assert code == 0, out
    got = proc_caps(out)
    assert got["CapEff"] == got["CapBnd"] == want
    assert caps.cap_number("CAP_NET_RAW") not in got["CapEff"]

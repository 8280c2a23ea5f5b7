"""Concurrency and crash safety of the store, with real processes and real SIGKILLs.

Each crash test stops a ``podrun`` process at a named checkpoint (see
podrun/testpoint.py), kills it with SIGKILL, and checks that no half entry is
visible, that the next run succeeds, and that gc sweeps what the dead one left.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podrun.store.store import Store
from tests.images import tiny_aci

INSECURE = "--insecure-options=image"


def spawn(podrun, *args: str | Path, stop_at: str | None = None) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    env = podrun.env
    if stop_at:
        env["PODRUN_TEST_STOP_AT"] = stop_at
    return subprocess.Popen([sys.executable, "-m", "podrun", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def wait_stopped(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode} before its checkpoint: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        with open(f"/proc/{proc.pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.01)
    raise AssertionError("checkpoint never reached")


def kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def assert_consistent(data: Path) -> list[str]:
    """Every indexed image has a blob with the right hash; every tree row has its dir."""
    store = Store(data)
    ids = []
    for rec in store.images():
        blob = store.blob_path(rec.id)
        assert blob.is_file(), rec.id
        assert "sha512-" + hashlib.sha512(blob.read_bytes()).hexdigest() == rec.id
        ids.append(rec.id)
    for tree in store.index.trees():
        assert (store.trees_dir / tree.key / "rootfs").is_dir()
        assert (store.trees_dir / tree.key / "manifest").is_file()
    store.close()
    return ids


@pytest.fixture
def big_aci(tmp_path: Path) -> Path:
    rnd = random.Random(7)
    files = {f"data/f{i}": rnd.randbytes(64 * 1024) for i in range(64)}  # 4 MiB
    return tiny_aci(tmp_path, "example.com/big", files=files)


@pytest.mark.parametrize("point", ["import:written", "import:renamed"])
def test_kill9_during_fetch(podrun, big_aci: Path, point: str) -> None:  # type: ignore[no-untyped-def]
    proc = spawn(podrun, INSECURE, "fetch", big_aci, stop_at=point)
    wait_stopped(proc)
    kill9(proc)
    assert assert_consistent(podrun.data_dir) == []
    listing = podrun.run("image", "list", "--format=json", check=True).stdout
    assert json.loads(listing) == []
    r = podrun.run(INSECURE, "fetch", big_aci, check=True)
    image_id = r.stdout.strip()
    assert assert_consistent(podrun.data_dir) == [image_id]
    podrun.run("image", "gc", "--grace-period=24h", check=True)
    store = Store(podrun.data_dir)
    assert list(store.tmp.iterdir()) == []
    assert [p.name for p in store.blobs.glob("*/*")] == [image_id.removeprefix("sha512-")]


@pytest.mark.parametrize("point", ["render:rendered", "render:renamed"])
def test_kill9_during_render(podrun, big_aci: Path, tmp_path: Path, point: str) -> None:  # type: ignore[no-untyped-def]
    image_id = podrun.run(INSECURE, "fetch", big_aci, check=True).stdout.strip()
    proc = spawn(podrun, "image", "render", image_id, tmp_path / "r1", stop_at=point)
    wait_stopped(proc)
    kill9(proc)
    assert_consistent(podrun.data_dir)
    podrun.run("image", "render", image_id, tmp_path / "r2", "--overwrite", check=True)
    assert (tmp_path / "r2/rootfs/data/f63").stat().st_size == 64 * 1024
    assert_consistent(podrun.data_dir)
    podrun.run("image", "verify", image_id, check=True)
    podrun.run("image", "gc", "--grace-period=24h", check=True)
    store = Store(podrun.data_dir)
    assert list(store.tmp.iterdir()) == []
    assert len(list(store.trees_dir.iterdir())) == 1


def test_kill9_at_random_moments(podrun, big_aci: Path) -> None:  # type: ignore[no-untyped-def]
    rnd = random.Random(11)
    for _ in range(8):
        proc = spawn(podrun, INSECURE, "fetch", big_aci)
        time.sleep(rnd.uniform(0.05, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        ids = assert_consistent(podrun.data_dir)
        assert len(ids) <= 1
        if ids:
            podrun.run("image", "rm", ids[0], check=True)
    image_id = podrun.run(INSECURE, "fetch", big_aci, check=True).stdout.strip()
    assert assert_consistent(podrun.data_dir) == [image_id]


def test_concurrent_fetches_of_one_image(podrun, big_aci: Path) -> None:  # type: ignore[no-untyped-def]
    procs = [spawn(podrun, INSECURE, "fetch", big_aci) for _ in range(4)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.strip())
    assert len(set(outs)) == 1
    store = Store(podrun.data_dir)
    assert [r.id for r in store.images()] == [outs[0]]
    assert len(list(store.blobs.glob("*/*"))) == 1
    assert list(store.tmp.iterdir()) == []


def test_concurrent_renders_make_one_tree(podrun, big_aci: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image_id = podrun.run(INSECURE, "fetch", big_aci, check=True).stdout.strip()
    procs = [spawn(podrun, "image", "render", image_id, tmp_path / f"out{i}") for i in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    store = Store(podrun.data_dir)
    assert len(store.index.trees()) == 1
    assert len(list(store.trees_dir.iterdir())) == 1
    assert os.path.getsize(tmp_path / "out2/rootfs/data/f0") == 64 * 1024

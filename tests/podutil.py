"""Fixtures for tests that run real pods: isolated dirs, a test cgroup parent, images.

``pods`` is a :class:`tests.conftest.PodrunEnv` whose runs get ``--cgroup-parent`` (via
``PODRUN_CGROUP_PARENT``) pointing at a cgroup the test made, so no pod ever creates
anything below the cgroup this test process sits in. After the test it asserts that
the pods left no mounts behind and removes the cgroup parent (failing if busy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PodrunEnv
from tests.images import tiny_aci

INSECURE = "--insecure-options=image"


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


@pytest.fixture
def pods(podrun: PodrunEnv, test_parent: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PodrunEnv]:
    monkeypatch.setenv("PODRUN_CGROUP_PARENT", test_parent)
    yield podrun
    # Every pod of the test must be gone from the host's mount table.
    assert mounts_under(podrun.data_dir) == []


@pytest.fixture(scope="session")
def busybox_aci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_aci(tmp_path_factory.mktemp("img"), "example.com/busybox", busybox=True,
                    exec_=["/bin/sh", "-c", "echo hello"])


def fetch(env: PodrunEnv, aci: Path) -> str:
    return env.run(INSECURE, "fetch", aci, check=True).stdout.strip()


def spawn(env: PodrunEnv, *args: str | Path, stdin: int | None = subprocess.DEVNULL,
          **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "podrun", *map(str, args)], env=env.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=stdin, **kw)  # type: ignore[call-overload]


def wait_for(pred, timeout: float = 20, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status(env: PodrunEnv, uuid: str) -> dict:  # type: ignore[type-arg]
    return json.loads(env.run("status", "--format=json", uuid, check=True).stdout)


def pod_dirs(env: PodrunEnv) -> list[Path]:
    return [p for p in (env.data_dir / "pods").glob("*/*")]


def app_running(env: PodrunEnv, uuid: str, app: str) -> bool:
    return any((p / "apps" / app / "pid").exists() for p in pod_dirs(env) if p.name == uuid)


def read_uuid(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def exists(path: str) -> bool:
    return os.path.exists(path)

"""Shared test fixtures: isolated podrun dirs, a CLI runner, root detection.

Every test gets its own data/local-config/system-config dirs through the
PODRUN_* environment variables, so no test touches /var/lib/podrun or /etc/podrun.
Tests that need root are marked ``root`` and skip only when not root (CI is root).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ("tests.gpgutil", "tests.cgrouputil", "tests.podutil")

IS_ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class PodrunEnv:
    """Isolated podrun directories and a way to run the real CLI in them."""

    data_dir: Path
    local_config: Path
    system_config: Path
    tmp: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PODRUN_DIR=str(self.data_dir),
            PODRUN_LOCAL_CONFIG=str(self.local_config),
            PODRUN_SYSTEM_CONFIG=str(self.system_config),
        )
        env.pop("PODRUN_INSECURE_OPTIONS", None)
        return env

    def run(self, *args: str | os.PathLike[str], input: str | None = None,
            check: bool = False, timeout: float = 120) -> Result:
        """Run ``python -m podrun ARGS`` as a real subprocess."""
        proc = subprocess.run(
            [sys.executable, "-m", "podrun", *map(str, args)],
            env=self.env, input=input, capture_output=True, text=True, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podrun {' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr}"
            )
        return res


@pytest.fixture
def podrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PodrunEnv:
    pe = PodrunEnv(tmp_path / "data", tmp_path / "etc", tmp_path / "lib", tmp_path)
    for d in (pe.data_dir, pe.local_config, pe.system_config):
        d.mkdir()
    for k, v in pe.env.items():
        if k.startswith("PODRUN_"):
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("PODRUN_INSECURE_OPTIONS", raising=False)
    return pe

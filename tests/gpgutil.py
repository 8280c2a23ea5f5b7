"""Real-gpg helpers for tests: make signing keys, sign files, stop the agents.

Keys are made with the real gpg (``--quick-gen-key UID ed25519 sign never``, no
passphrase), each in its own GNUPGHOME, so a test can sign with one key while
podrun trusts another. Signing needs gpg-agent; every agent started here is
stopped with ``gpgconf --homedir H --kill all`` (never by name).

Fixtures (use them with ``pytest_plugins = ("tests.gpgutil",)`` in a test module,
or add that line to tests/conftest.py):

- ``gpg_keys`` (session): ``dict[str, GpgKey]`` with keys ``alice``, ``bob``, ``carol``.
- ``gpg_key_factory`` (function): ``make(uid) -> GpgKey`` for extra keys, agents
  stopped at teardown.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

OUT_OF_TREE_PREFIX = "podrun-test-gpg-"
GPG = ("gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", "")

SESSION_KEYS = {
    "alice": "Alice Signer <alice@example.com>",
    "bob": "Bob Signer <bob@example.com>",
    "carol": "Carol Signer <carol@example.com>",
}


@dataclass(frozen=True)
class GpgKey:
    """A generated key pair: its GNUPGHOME holds the secret key."""

    home: Path
    uid: str
    fingerprint: str  # lowercase hex, as the trust store names files
    public_armored: bytes
    pubkey_path: Path  # the armored public key, written next to ``home``

    @property
    def keyid(self) -> str:
        return self.fingerprint[-16:]


def _gpg(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([*GPG, "--homedir", str(home), *args], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc


def _new_home(tmpdir: Path, uid: str) -> Path:
    """A fresh 0700 GNUPGHOME in ``tmpdir``, short enough for gpg-agent's sockets.

    Unix socket paths are limited to 107 bytes; when ``tmpdir`` is too deep the
    home goes to a short temporary dir instead (removed by :func:`discard_key`).
    """
    slug = re.sub(r"[^a-z0-9]+", "-", uid.lower()).strip("-")[:8] or "key"
    tmpdir.mkdir(parents=True, exist_ok=True)
    if len(str(tmpdir)) + len(slug) + 40 > 107:
        return Path(tempfile.mkdtemp(prefix=f"{OUT_OF_TREE_PREFIX}{slug}-"))
    n = 1
    home = tmpdir / f"k-{slug}"
    while home.exists():
        n += 1
        home = tmpdir / f"k-{slug}-{n}"
    home.mkdir(mode=0o700)
    return home


def make_key(tmpdir: Path, uid: str) -> GpgKey:
    """Generate an ed25519 signing key for ``uid`` in a new home under ``tmpdir``."""
    home = _new_home(Path(tmpdir), uid)
    try:
        _gpg(home, "--quick-gen-key", uid, "ed25519", "sign", "never")
        listing = _gpg(home, "--with-colons", "--list-keys", uid).stdout.decode()
        fpr = next(line.split(":")[9] for line in listing.splitlines()
                   if line.startswith("fpr:"))
        armored = _gpg(home, "--armor", "--export", fpr).stdout
    except BaseException:
        stop_agent(home)
        if home.name.startswith(OUT_OF_TREE_PREFIX):
            shutil.rmtree(home, ignore_errors=True)
        raise
    pub = Path(tmpdir) / f"{home.name}.pub.asc"
    pub.write_bytes(armored)
    return GpgKey(home, uid, fpr.lower(), armored, pub)


def sign(key: GpgKey, file: Path, *, armor: bool = True, output: Path | None = None) -> Path:
    """A detached signature of ``file`` by ``key`` (default ``file.asc``, armored)."""
    file = Path(file)
    out = output or file.with_name(file.name + (".asc" if armor else ".sig"))
    args = ["--local-user", key.fingerprint.upper(), "--detach-sign", "--output", str(out)]
    if armor:
        args.insert(0, "--armor")
    out.unlink(missing_ok=True)
    _gpg(key.home, *args, str(file))
    return out


def stop_agent(home: Path) -> None:
    """Stop the gpg-agent serving ``home``, if one was started."""
    if any(Path(home).glob("S.*")):
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],
                       capture_output=True, timeout=30, check=False)


def discard_key(key: GpgKey) -> None:
    """Stop the key's agent; remove its home if it lives outside the test's tmpdir."""
    stop_agent(key.home)
    if key.home.name.startswith(OUT_OF_TREE_PREFIX):
        shutil.rmtree(key.home, ignore_errors=True)


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GpgKey]]:
    """Three signing keys shared by the whole session."""
    base = tmp_path_factory.mktemp("gpg")
    keys: dict[str, GpgKey] = {}
    try:
        for name, uid in SESSION_KEYS.items():
            keys[name] = make_key(base, uid)
        yield keys
    finally:
        for key in keys.values():
            discard_key(key)


@pytest.fixture
def gpg_key_factory(tmp_path: Path) -> Iterator[Callable[[str], GpgKey]]:
    """Make extra keys for one test; their agents are stopped afterwards."""
    made: list[GpgKey] = []

    def make(uid: str) -> GpgKey:
        key = make_key(tmp_path, uid)
        made.append(key)
        return key

    yield make
    for key in made:
        discard_key(key)

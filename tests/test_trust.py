"""The trust store and ``podrun trust``, with real gpg keys.

Covers the rkt layout (root.d, prefix.d/<prefix>/<fingerprint>), prefix
validation, the system config dir, masking by empty local files, element-boundary
prefix matching, rejection of files that are not public keys, and the CLI
(non-TTY adds without asking, a TTY asks, list table/json, rm).
"""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from podrun.errors import NotFoundError, TrustError, UsageError
from podrun.stage0.trust import TrustStore, fingerprint_of
from tests.gpgutil import GpgKey, sign


@pytest.fixture
def store(tmp_path: Path) -> TrustStore:
    return TrustStore(tmp_path / "etc", tmp_path / "lib")


def _install_system(tmp_path: Path, key: GpgKey, prefix: str | None) -> Path:
    """Put a key in the system config dir, as a distribution package would."""
    base = tmp_path / "lib" / "trustedkeys"
    d = base / "root.d" if prefix is None else base / "prefix.d" / prefix
    d.mkdir(parents=True, exist_ok=True)
    path = d / key.fingerprint
    path.write_bytes(key.public_armored)
    return path


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# --------------------------------------------------------------------------- API


def test_fingerprint_of_reads_real_key(gpg_keys: dict[str, GpgKey]) -> None:
    alice = gpg_keys["alice"]
    assert fingerprint_of(alice.public_armored) == [(alice.fingerprint, [alice.uid])]


def test_add_prefix_key_layout_and_modes(store: TrustStore, tmp_path: Path,
                                         gpg_keys: dict[str, GpgKey]) -> None:
    alice = gpg_keys["alice"]
    old = os.umask(0o077)  # modes must not depend on the caller's umask
    try:
        [key] = store.add(alice.pubkey_path, "example.com/app")
    finally:
        os.umask(old)
    want = tmp_path / "etc/trustedkeys/prefix.d/example.com/app" / alice.fingerprint
    assert key.path == want and want.is_file()
    assert (key.fingerprint, key.prefix, key.uids, key.origin) == (
        alice.fingerprint, "example.com/app", [alice.uid], "local")
    assert _mode(want) == 0o644
    for d in (want.parent, want.parent.parent, tmp_path / "etc/trustedkeys/prefix.d",
              tmp_path / "etc/trustedkeys"):
        assert _mode(d) == 0o755, d
    assert fingerprint_of(want.read_bytes())[0][0] == alice.fingerprint
    assert want.read_bytes().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert sorted(os.listdir(want.parent)) == [alice.fingerprint]  # no temp file left


def test_add_root_and_list(store: TrustStore, tmp_path: Path,
                           gpg_keys: dict[str, GpgKey]) -> None:
    alice, bob = gpg_keys["alice"], gpg_keys["bob"]
    [root] = store.add(bob.public_armored, None)
    assert root.path == tmp_path / "etc/trustedkeys/root.d" / bob.fingerprint
    store.add(alice.pubkey_path, "example.com")
    listed = [(k.prefix, k.fingerprint, k.origin, k.uids) for k in store.list()]
    assert listed == [(None, bob.fingerprint, "local", [bob.uid]),
                      ("example.com", alice.fingerprint, "local", [alice.uid])]


def test_file_with_several_keys_stores_each(store: TrustStore, tmp_path: Path,
                                            gpg_keys: dict[str, GpgKey]) -> None:
    alice, bob = gpg_keys["alice"], gpg_keys["bob"]
    both = tmp_path / "both.asc"
    both.write_bytes(alice.public_armored + bob.public_armored)
    keys = store.add(both, "example.org")
    assert sorted(k.fingerprint for k in keys) == sorted([alice.fingerprint, bob.fingerprint])
    for k in keys:
        # each file holds exactly its own key
        assert [fp for fp, _ in fingerprint_of(k.path.read_bytes())] == [k.fingerprint]


@pytest.mark.parametrize("prefix", ["../evil", "/abs", "Example.com", "a//b", "a/", "",
                                    "a/./b", "a/../../x", "a b"])
def test_invalid_prefix_rejected(store: TrustStore, tmp_path: Path, prefix: str,
                                 gpg_keys: dict[str, GpgKey]) -> None:
    with pytest.raises(UsageError, match="invalid trust prefix"):
        store.add(gpg_keys["alice"].pubkey_path, prefix)
    assert not (tmp_path / "etc").exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "x").exists()


def test_prefix_is_nested_directories_as_rkt(store: TrustStore, tmp_path: Path,
                                            gpg_keys: dict[str, GpgKey]) -> None:
    [k] = store.add(gpg_keys["alice"].pubkey_path, "coreos.com/etcd~x/v-1_a")
    rel = k.path.relative_to(tmp_path / "etc/trustedkeys/prefix.d")
    assert rel.parts == ("coreos.com", "etcd~x", "v-1_a", gpg_keys["alice"].fingerprint)


def test_invalid_key_files_rejected(store: TrustStore, tmp_path: Path,
                                    gpg_keys: dict[str, GpgKey]) -> None:
    alice = gpg_keys["alice"]
    junk = tmp_path / "junk.asc"
    junk.write_bytes(b"this is not a key\n")
    with pytest.raises(TrustError, match=r"junk.asc is not an OpenPGP public key"):
        store.add(junk, "example.com")
    data = tmp_path / "data"
    data.write_bytes(b"payload")
    with pytest.raises(TrustError, match="not an OpenPGP public key"):
        store.add(sign(alice, data), "example.com")  # a signature is no key
    secret = subprocess.run(
        ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--homedir",
         str(alice.home), "--armor", "--export-secret-keys", alice.fingerprint],
        capture_output=True, check=True).stdout
    with pytest.raises(TrustError, match="secret key"):
        store.add(secret, "example.com")
    with pytest.raises(TrustError, match="cannot read key file"):
        store.add(tmp_path / "missing.asc", "example.com")
    assert not (tmp_path / "etc/trustedkeys").exists()


def test_system_dir_is_read(store: TrustStore, tmp_path: Path,
                            gpg_keys: dict[str, GpgKey]) -> None:
    carol = gpg_keys["carol"]
    path = _install_system(tmp_path, carol, "example.com")
    [k] = store.list()
    assert (k.fingerprint, k.prefix, k.origin, k.path) == (
        carol.fingerprint, "example.com", "system", path)
    assert [x.fingerprint for x in store.keys_for("example.com/app")] == [carol.fingerprint]


def test_local_empty_file_masks_system_key(store: TrustStore, tmp_path: Path,
                                           gpg_keys: dict[str, GpgKey]) -> None:
    carol, bob = gpg_keys["carol"], gpg_keys["bob"]
    _install_system(tmp_path, carol, "example.com")
    sys_root = _install_system(tmp_path, bob, None)
    mask = tmp_path / "etc/trustedkeys/prefix.d/example.com" / carol.fingerprint
    mask.parent.mkdir(parents=True)
    mask.write_bytes(b"")
    assert [k.fingerprint for k in store.list()] == [bob.fingerprint]
    assert [k.fingerprint for k in store.keys_for("example.com/app")] == [bob.fingerprint]
    # remove() of a system key writes the mask and leaves the system dir alone
    [written] = store.remove(bob.fingerprint)
    assert written == tmp_path / "etc/trustedkeys/root.d" / bob.fingerprint
    assert written.stat().st_size == 0 and sys_root.stat().st_size > 0
    assert store.list() == [] and store.keys_for("example.com/app") == []
    # trusting it again replaces the mask
    store.add(bob.public_armored, None)
    assert [k.origin for k in store.list()] == ["local"]


def test_keys_for_matches_prefix_at_element_boundary(store: TrustStore,
                                                     gpg_keys: dict[str, GpgKey]) -> None:
    alice, bob = gpg_keys["alice"], gpg_keys["bob"]
    store.add(alice.pubkey_path, "example.com/app")
    store.add(bob.pubkey_path, None)

    def fps(name: str) -> list[str]:
        return [k.fingerprint for k in store.keys_for(name)]

    assert fps("example.com/app") == [alice.fingerprint, bob.fingerprint]  # specific first
    assert fps("example.com/app/worker") == [alice.fingerprint, bob.fingerprint]
    assert fps("example.com/apple") == [bob.fingerprint]
    assert fps("example.com") == [bob.fingerprint]
    assert fps("example.co") == [bob.fingerprint]
    assert fps("../../etc") == [bob.fingerprint]


def test_remove_local_key_prunes_dirs(store: TrustStore, tmp_path: Path,
                                      gpg_keys: dict[str, GpgKey]) -> None:
    alice = gpg_keys["alice"]
    [k] = store.add(alice.pubkey_path, "example.com/app")
    assert store.remove(alice.fingerprint.upper(), "example.com/app") == [k.path]
    assert not k.path.exists()
    assert os.listdir(tmp_path / "etc/trustedkeys/prefix.d") == []
    with pytest.raises(NotFoundError, match=alice.fingerprint):
        store.remove(alice.fingerprint)


def test_remove_scoped_and_by_key_id(store: TrustStore, gpg_keys: dict[str, GpgKey]) -> None:
    alice = gpg_keys["alice"]
    [root] = store.add(alice.pubkey_path, None)
    [pre] = store.add(alice.pubkey_path, "example.com")
    assert store.remove(alice.keyid, None) == [root.path]
    assert [k.prefix for k in store.list()] == ["example.com"]
    with pytest.raises(NotFoundError):
        store.remove(alice.fingerprint, "other.org")
    with pytest.raises(UsageError, match="too short"):
        store.remove(alice.fingerprint[-8:])
    assert store.remove(alice.fingerprint) == [pre.path]


def test_key_file_not_matching_its_name_is_an_error(store: TrustStore, tmp_path: Path,
                                                    gpg_keys: dict[str, GpgKey]) -> None:
    alice, bob = gpg_keys["alice"], gpg_keys["bob"]
    d = tmp_path / "etc/trustedkeys/root.d"
    d.mkdir(parents=True)
    (d / alice.fingerprint).write_bytes(bob.public_armored)
    with pytest.raises(TrustError, match="not the key its name says"):
        store.keys_for("example.com")


# --------------------------------------------------------------------------- CLI


def test_cli_add_non_tty_does_not_prompt(podrun, gpg_keys: dict[str, GpgKey]) -> None:
    alice = gpg_keys["alice"]
    res = podrun.run("trust", "--prefix", "example.com/app", alice.pubkey_path)
    assert res.returncode == 0, res.stderr
    want = podrun.local_config / "trustedkeys/prefix.d/example.com/app" / alice.fingerprint
    assert res.stdout.splitlines() == [str(want)]
    assert want.is_file()
    spaced = " ".join(alice.fingerprint.upper()[i:i + 4] for i in range(0, 40, 4))
    assert spaced in res.stderr and alice.uid in res.stderr
    assert "Trust this key" not in res.stderr


def test_cli_invalid_key_file_one_line_254(podrun, tmp_path: Path) -> None:
    junk = tmp_path / "junk.asc"
    junk.write_text("garbage\n")
    res = podrun.run("trust", "--root", junk)
    assert res.returncode == 254
    assert res.stderr.startswith("podrun: key file ") and "not an OpenPGP public key" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (podrun.local_config / "trustedkeys").exists()


def test_cli_one_bad_file_stores_nothing(podrun, tmp_path: Path,
                                         gpg_keys: dict[str, GpgKey]) -> None:
    junk = tmp_path / "junk.asc"
    junk.write_text("garbage\n")
    res = podrun.run("trust", "--root", gpg_keys["alice"].pubkey_path, junk)
    assert res.returncode == 254 and "junk.asc" in res.stderr
    assert not (podrun.local_config / "trustedkeys").exists()


def test_cli_usage_errors(podrun, gpg_keys: dict[str, GpgKey]) -> None:
    key = gpg_keys["alice"].pubkey_path
    res = podrun.run("trust", key)
    assert res.returncode == 254 and "--prefix PREFIX or --root" in res.stderr
    res = podrun.run("trust", "--root", "--prefix", "example.com", key)
    assert res.returncode == 254 and "not allowed with" in res.stderr
    res = podrun.run("trust", "--prefix", "Bad/Prefix", key)
    assert res.returncode == 254 and "invalid trust prefix" in res.stderr
    # Without a key file the prefix's keys are discovered (tests/test_discovery.py);
    # a bad prefix is refused before any network traffic.
    res = podrun.run("trust", "--prefix", "Bad/Prefix")
    assert res.returncode == 254 and "invalid trust prefix" in res.stderr
    for res in (podrun.run("trust", "--prefix", "Bad/Prefix"), podrun.run("trust", "--root")):
        assert len(res.stderr.strip().splitlines()) == 1


def test_cli_list_json_table_and_rm(podrun, tmp_path: Path,
                                    gpg_keys: dict[str, GpgKey]) -> None:
    alice, carol = gpg_keys["alice"], gpg_keys["carol"]
    podrun.run("trust", "--prefix", "example.com", alice.pubkey_path, check=True)
    _install_system(tmp_path, carol, None)  # podrun fixture: system config is tmp/lib
    res = podrun.run("trust", "list", "--format", "json", check=True)
    listed = json.loads(res.stdout)
    assert [(k["prefix"], k["fingerprint"], k["origin"], k["uids"]) for k in listed] == [
        (None, carol.fingerprint, "system", [carol.uid]),
        ("example.com", alice.fingerprint, "local", [alice.uid])]
    table = podrun.run("trust", "list", check=True).stdout.splitlines()
    assert table[0].split() == ["PREFIX", "FINGERPRINT", "ORIGIN", "UID"]
    assert table[1].split()[:3] == ["(root)", carol.fingerprint, "system"]
    assert table[2].split()[:3] == ["example.com", alice.fingerprint, "local"]
    assert table[2].endswith(alice.uid)

    res = podrun.run("trust", "rm", carol.fingerprint, check=True)
    assert res.stdout.splitlines() == [
        str(podrun.local_config / "trustedkeys/root.d" / carol.fingerprint)]
    res = podrun.run("trust", "rm", alice.fingerprint, "--prefix", "example.com", check=True)
    assert json.loads(podrun.run("trust", "list", "--format", "json", check=True).stdout) == []
    res = podrun.run("trust", "rm", alice.fingerprint)
    assert res.returncode == 254 and f"no trusted key {alice.fingerprint}" in res.stderr


def _run_with_tty_stdin(podrun, answer: bytes, *args: object) -> subprocess.CompletedProcess:
    master, slave = pty.openpty()
    try:
        os.write(master, answer)
        return subprocess.run([sys.executable, "-m", "podrun", *map(str, args)],
                              env=podrun.env, stdin=slave, capture_output=True, text=True,
                              timeout=60)
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.parametrize("answer,stored", [(b"n\n", False), (b"y\n", True)])
def test_cli_tty_asks(podrun, gpg_keys: dict[str, GpgKey], answer: bytes, stored: bool) -> None:
    alice = gpg_keys["alice"]
    res = _run_with_tty_stdin(podrun, answer, "trust", "--prefix", "example.com",
                              alice.pubkey_path)
    assert res.returncode == 0, res.stderr
    assert 'Trust this key for "example.com"? (y/N)' in res.stderr
    path = podrun.local_config / "trustedkeys/prefix.d/example.com" / alice.fingerprint
    assert path.exists() is stored
    assert (res.stdout.strip() == str(path)) is stored


def test_cli_tty_skip_review_does_not_ask(podrun, gpg_keys: dict[str, GpgKey]) -> None:
    res = _run_with_tty_stdin(podrun, b"n\n", "trust", "--root", "--skip-fingerprint-review",
                              gpg_keys["bob"].pubkey_path)
    assert res.returncode == 0 and "Trust this key" not in res.stderr
    assert (podrun.local_config / "trustedkeys/root.d" / gpg_keys["bob"].fingerprint).is_file()

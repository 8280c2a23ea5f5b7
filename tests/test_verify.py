"""Signature verification against the trust store, with real gpg keys and signatures.

alice is trusted for the prefix example.com/app, bob at root (in the tests that
want a root key), carol nowhere. The signed file stands for an ACI as fetched
(arbitrary, possibly compressed bytes).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from podrun.errors import SignatureError
from podrun.stage0.trust import TrustStore
from podrun.stage0.verify import verify_signature
from tests.gpgutil import GpgKey, sign


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Route tempfile to a dir of our own so the test can see what is left behind."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


@pytest.fixture
def store(tmp_path: Path, gpg_keys: dict[str, GpgKey]) -> TrustStore:
    s = TrustStore(tmp_path / "etc", tmp_path / "lib")
    s.add(gpg_keys["alice"].pubkey_path, "example.com/app")
    return s


@pytest.fixture
def aci(tmp_path: Path) -> Path:
    path = tmp_path / "app.aci"
    path.write_bytes(gzip.compress(os.urandom(4096) + b"rootfs/bin/app"))
    return path


def test_good_signature_by_prefix_key(store: TrustStore, aci: Path, private_tmp: Path,
                                      gpg_keys: dict[str, GpgKey]) -> None:
    alice = gpg_keys["alice"]
    sig = sign(alice, aci)
    key = verify_signature(store, "example.com/app", aci, sig)
    assert (key.fingerprint, key.prefix) == (alice.fingerprint, "example.com/app")
    # deeper names under the prefix are covered too
    assert verify_signature(store, "example.com/app/worker", aci, sig).fingerprint == \
        alice.fingerprint
    assert os.listdir(private_tmp) == []  # the temporary GNUPGHOME is gone


def test_good_binary_signature(store: TrustStore, aci: Path,
                               gpg_keys: dict[str, GpgKey]) -> None:
    sig = sign(gpg_keys["alice"], aci, armor=False)
    assert not sig.read_bytes().startswith(b"-----BEGIN")
    assert verify_signature(store, "example.com/app", aci, sig).fingerprint == \
        gpg_keys["alice"].fingerprint


def test_good_signature_by_root_key(store: TrustStore, aci: Path,
                                    gpg_keys: dict[str, GpgKey]) -> None:
    bob = gpg_keys["bob"]
    store.add(bob.pubkey_path, None)
    sig = sign(bob, aci)
    for name in ("example.com/app", "other.org/thing"):
        key = verify_signature(store, name, aci, sig)
        assert (key.fingerprint, key.prefix) == (bob.fingerprint, None)


def test_no_signature_file(store: TrustStore, aci: Path, tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match=r"^signature file not found: .*app\.aci\.asc$"):
        verify_signature(store, "example.com/app", aci, tmp_path / "app.aci.asc")


@pytest.mark.parametrize("content", [b"", b"<html>not found</html>\n"])
def test_not_a_signature(store: TrustStore, aci: Path, tmp_path: Path, content: bytes) -> None:
    bogus = tmp_path / "bogus.asc"
    bogus.write_bytes(content)
    with pytest.raises(SignatureError, match=r"^not a signature: .*bogus\.asc"):
        verify_signature(store, "example.com/app", aci, bogus)


def test_corrupted_data_is_bad_signature(store: TrustStore, aci: Path,
                                         gpg_keys: dict[str, GpgKey]) -> None:
    sig = sign(gpg_keys["alice"], aci)
    data = bytearray(aci.read_bytes())
    data[100] ^= 0x01
    aci.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match=r"^bad signature for .*app\.aci") as err:
        verify_signature(store, "example.com/app", aci, sig)
    assert gpg_keys["alice"].keyid in str(err.value)


def test_untrusted_signer_is_named(store: TrustStore, aci: Path,
                                   gpg_keys: dict[str, GpgKey]) -> None:
    carol = gpg_keys["carol"]
    sig = sign(carol, aci)
    with pytest.raises(SignatureError, match="signed by untrusted key") as err:
        verify_signature(store, "example.com/app", aci, sig)
    assert carol.keyid in str(err.value)
    assert "\n" not in str(err.value)


def test_no_trusted_keys_for_name(store: TrustStore, aci: Path,
                                  gpg_keys: dict[str, GpgKey]) -> None:
    sig = sign(gpg_keys["alice"], aci)
    with pytest.raises(SignatureError) as err:
        verify_signature(store, "other.org/app", aci, sig)
    assert str(err.value) == ("no trusted keys for other.org/app "
                              "(hint: podrun trust --prefix other.org/app)")


def test_key_trusted_for_other_prefix_is_refused(store: TrustStore, aci: Path,
                                                 gpg_keys: dict[str, GpgKey]) -> None:
    alice, bob = gpg_keys["alice"], gpg_keys["bob"]
    store.add(bob.pubkey_path, "other.org")  # so other.org/app has some trusted key
    sig = sign(alice, aci)
    with pytest.raises(SignatureError, match="signed by untrusted key") as err:
        verify_signature(store, "other.org/app", aci, sig)
    assert alice.keyid in str(err.value)


def test_prefix_matches_only_at_element_boundary(store: TrustStore, aci: Path,
                                                 gpg_keys: dict[str, GpgKey]) -> None:
    alice, bob = gpg_keys["alice"], gpg_keys["bob"]
    sig = sign(alice, aci)
    with pytest.raises(SignatureError, match="no trusted keys for example.com/apple"):
        verify_signature(store, "example.com/apple", aci, sig)
    store.add(bob.pubkey_path, None)  # with a root key present: refused as untrusted
    for name in ("example.com/apple", "example.com", "example.com/ap"):
        with pytest.raises(SignatureError, match="signed by untrusted key"):
            verify_signature(store, name, aci, sig)


def test_masked_system_key_is_refused(tmp_path: Path, aci: Path,
                                      gpg_keys: dict[str, GpgKey]) -> None:
    carol = gpg_keys["carol"]
    store = TrustStore(tmp_path / "etc", tmp_path / "lib")
    sysdir = tmp_path / "lib/trustedkeys/prefix.d/example.com"
    sysdir.mkdir(parents=True)
    (sysdir / carol.fingerprint).write_bytes(carol.public_armored)
    sig = sign(carol, aci)
    key = verify_signature(store, "example.com/app", aci, sig)
    assert (key.origin, key.prefix) == ("system", "example.com")
    store.remove(carol.fingerprint)  # writes the local mask
    with pytest.raises(SignatureError, match="no trusted keys for example.com/app"):
        verify_signature(store, "example.com/app", aci, sig)


def test_revoked_signing_key_is_refused(tmp_path: Path, aci: Path,
                                        gpg_key_factory) -> None:
    dave = gpg_key_factory("Dave Revoked <dave@example.com>")
    sig = sign(dave, aci)
    # Revoke with the certificate gpg made at generation (its armor line is ':'-guarded).
    cert = dave.home / "openpgp-revocs.d" / f"{dave.fingerprint.upper()}.rev"
    text = cert.read_text().replace(":-----BEGIN", "-----BEGIN")
    revoked = subprocess.run(
        ["gpg", "--batch", "--homedir", str(dave.home), "--import"], input=text.encode(),
        capture_output=True, check=True)
    assert revoked.returncode == 0
    public = subprocess.run(["gpg", "--batch", "--homedir", str(dave.home), "--armor",
                             "--export", dave.fingerprint], capture_output=True,
                            check=True).stdout
    store = TrustStore(tmp_path / "etc", tmp_path / "lib")
    store.add(public, "example.com")
    with pytest.raises(SignatureError, match="not accepted: signing key was revoked") as err:
        verify_signature(store, "example.com/app", aci, sig)
    assert dave.keyid in str(err.value).lower()

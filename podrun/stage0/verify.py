"""Detached OpenPGP signature verification of fetched images against the trust store.

:func:`verify_signature` checks a detached signature (armored or binary) over the
bytes of a file exactly as fetched (an ACI, possibly compressed). It uses the real
gpg through python-gnupg, in a private temporary GNUPGHOME (0700, removed after)
into which *only* the keys the trust store holds for the image name are imported
(root.d plus the prefixes covering the name), so a key trusted for another prefix,
or sitting in some user's keyring, can never vouch for this image. gpg runs with
``--batch --no-autostart``: neither import nor verify needs gpg-agent.

Every failure is a :class:`SignatureError` with one line saying which of these it
is: no trusted keys for the name, signature file missing or not a signature, bad
signature (the data was changed), signed by a key not trusted for the name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrun.errors import SignatureError
from podrun.stage0.trust import TrustedKey, TrustStore, gpg_home

GPG_OPTIONS = ["--no-options", "--no-autostart", "--no-auto-key-retrieve", "--no-greeting"]


def verify_signature(store: TrustStore, name: str, signed: Path, signature: Path) -> TrustedKey:
    """Check ``signature`` over ``signed`` with the keys trusted for ``name``.

    Returns the trusted key that made the signature (the most specific entry
    when the key is trusted at several places); raises SignatureError otherwise.
    """
    signed, signature = Path(signed), Path(signature)
    if not signature.is_file():
        raise SignatureError(f"signature file not found: {signature}")
    if not signed.is_file():
        raise SignatureError(f"signed file not found: {signed}")
    keys = store.keys_for(name)
    if not keys:
        raise SignatureError(
            f"no trusted keys for {name} (hint: podrun trust --prefix {name})"
        )
    result = _gpg_verify(keys, signed, signature)
    return _interpret(result, keys, name, signed, signature)


def _gpg_verify(keys: list[TrustedKey], signed: Path, signature: Path) -> Any:
    """Import ``keys`` into a fresh GNUPGHOME and run gpg --verify there."""
    import gnupg  # heavy: only on the verification path

    key_data = b"".join(_read_key(k) for k in keys)
    with gpg_home() as home:
        gpg = gnupg.GPG(gnupghome=str(home), options=list(GPG_OPTIONS))
        imported = gpg.import_keys(key_data)
        if not imported.fingerprints:
            raise SignatureError(
                f"gpg could not import the trusted keys ({imported.stderr.strip().splitlines()[-1:]})"
            )
        with open(signature, "rb") as sig:
            return gpg.verify_file(sig, data_filename=str(signed), close_file=False)


def _read_key(key: TrustedKey) -> bytes:
    try:
        return key.path.read_bytes() + b"\n"
    except OSError as err:
        raise SignatureError(f"cannot read trusted key {key.path}: {err.strerror}") from None


def _interpret(result: Any, keys: list[TrustedKey], name: str, signed: Path,
               signature: Path) -> TrustedKey:
    """Map python-gnupg's verify result to the signer or a one-line error."""
    key_id = (result.key_id or "").lower()
    signer_fp = (getattr(result, "pubkey_fingerprint", None) or result.fingerprint or "").lower()
    if result.valid:
        for key in keys:  # most specific first
            if key.fingerprint == signer_fp:
                return key
        raise SignatureError(
            f"{signature} is signed by untrusted key {signer_fp or key_id} (not trusted for {name})"
        )
    status = result.status or ""
    if status == "no public key":
        who = (result.fingerprint or key_id).lower()
        raise SignatureError(
            f"{signature} is signed by untrusted key {who} (not trusted for {name}; "
            f"trusted: {', '.join(k.fingerprint for k in keys)})"
        )
    if status == "signature bad":
        raise SignatureError(
            f"bad signature for {signed}: the signature by key {key_id} does not match the data"
        )
    if not key_id:
        raise SignatureError(f"not a signature: {signature} holds no OpenPGP signature")
    # Expired or revoked signing key, expired signature: gpg's own reason.
    reason = getattr(result, "key_status", None) or status or "gpg refused it"
    raise SignatureError(f"signature {signature} by key {key_id} not accepted: {reason}")

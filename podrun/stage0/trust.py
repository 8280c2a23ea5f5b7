"""The trust store: which OpenPGP public keys may sign which images.

Layout (rkt's, see rkt ``pkg/keystore/keystore.go``), under both the local config
dir (``/etc/podrun``, written by ``podrun trust``) and the system config dir
(``/usr/lib/podrun``, shipped by packages, never written by podrun)::

    trustedkeys/root.d/<fingerprint>                 trusted for every image name
    trustedkeys/prefix.d/<prefix>/<fingerprint>      trusted for names under <prefix>

``<fingerprint>`` is the primary key's fingerprint in lowercase hex; each file holds
one armored public key. rkt does not escape the prefix: it is an AC identifier
(``[a-z0-9]+([-._~/][a-z0-9]+)*``) used as nested directories
(``prefix.d/coreos.com/etcd/<fp>``). That grammar cannot spell ``..``, an empty
element, an absolute path or an upper-case letter, so it is path safe as it
stands; we validate it and keep rkt's layout so an rkt tree can be reused as is.

Which keys apply to an image name (:meth:`TrustStore.keys_for`): every key in
root.d, plus the keys of every prefix the name starts with *at an element
boundary* (``example.com/app`` is covered by ``example.com`` and
``example.com/app``, never by ``example.com/ap``; rkt's walk compared plain
strings there, which we deliberately do not copy). Sources are read in rkt's
order: system root.d, local root.d, system prefixes (shortest first), local
prefixes (shortest first). An empty file withdraws trust in that fingerprint
from everything read before it, so an empty local file masks a system key
(``podrun trust rm`` of a system key writes one); a key file read later for the
same fingerprint restores it (the most specific scope wins).

gpg runs with ``--batch --no-autostart`` in a private temporary GNUPGHOME (mode
0700) that is removed afterwards; nothing here needs gpg-agent, and should one
appear anyway it is stopped with ``gpgconf --homedir H --kill all``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType

from podrun.errors import AmbiguousError, NotFoundError, TrustError, UsageError

TRUSTED_KEYS_DIR = "trustedkeys"
ROOT_DIR = "root.d"
PREFIX_DIR = "prefix.d"

AC_IDENTIFIER_RE = re.compile(r"^[a-z0-9]+(?:[-._~/][a-z0-9]+)*$")
FINGERPRINT_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
MIN_KEYID_HEX = 16  # shortest fingerprint suffix accepted by remove()

GPG_BASE = ("gpg", "--batch", "--no-tty", "--no-options", "--no-autostart",
            "--no-auto-key-retrieve", "--no-greeting")


@dataclass
class TrustedKey:
    """One trusted key as stored: ``prefix`` None means root (all names)."""

    fingerprint: str
    prefix: str | None
    path: Path
    uids: list[str] = field(default_factory=list)
    origin: str = "local"  # "local" | "system"

    @property
    def scope(self) -> str:
        """Human form of the prefix: the prefix, or ``(root)``."""
        return self.prefix if self.prefix is not None else "(root)"

    def to_json(self) -> dict[str, object]:
        return {"prefix": self.prefix, "fingerprint": self.fingerprint, "uids": self.uids,
                "origin": self.origin, "path": str(self.path)}


# --------------------------------------------------------------------------- gpg


def _stop_agent(home: Path) -> None:
    """Stop a gpg-agent (or dirmngr) that was started for ``home``, if any."""
    if any(home.glob("S.*")):
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False, timeout=30)


@contextlib.contextmanager
def gpg_home() -> Iterator[Path]:
    """A private, empty GNUPGHOME (0700), removed with any agent it spawned."""
    home = Path(tempfile.mkdtemp(prefix="podrun-gpg-"))
    try:
        os.chmod(home, 0o700)
        yield home
    finally:
        try:
            _stop_agent(home)
        finally:
            shutil.rmtree(home, ignore_errors=True)


def run_gpg(home: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run gpg with ``home`` as GNUPGHOME; never raises on gpg's exit status."""
    try:
        return subprocess.run([*GPG_BASE, "--homedir", str(home), *args], input=input,
                              capture_output=True, check=False, timeout=60,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError as err:
        raise TrustError("gpg is not installed (install the gnupg package)") from err


def _unescape_colons(text: str) -> str:
    """Undo gpg's ``\\xNN`` escaping in ``--with-colons`` fields."""
    raw = re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                 text.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "replace")


def parse_colons(listing: str) -> list[tuple[str, list[str]]]:
    """Primary fingerprints and user ids from ``gpg --with-colons`` output.

    Raises TrustError if the listing holds a secret key: a trust store takes
    public keys only.
    """
    keys: list[tuple[str, list[str]]] = []
    want_fpr = False
    for line in listing.splitlines():
        rec = line.split(":")
        kind = rec[0]
        if kind in ("sec", "ssb"):
            raise TrustError("holds a secret key; give the public key (gpg --armor --export)")
        if kind == "pub":
            keys.append(("", []))
            want_fpr = True
        elif kind == "sub":
            want_fpr = False
        elif kind == "fpr" and want_fpr and keys and len(rec) > 9:
            keys[-1] = (rec[9].lower(), keys[-1][1])
            want_fpr = False
        elif kind == "uid" and keys and len(rec) > 9:
            keys[-1][1].append(_unescape_colons(rec[9]))
    return [(fp, uids) for fp, uids in keys if fp]


def fingerprint_of(key_data: bytes, source: str = "key data") -> list[tuple[str, list[str]]]:
    """The (lowercase fingerprint, uids) of each public key in ``key_data``.

    Armored or binary. Raises TrustError naming ``source`` if it holds no
    OpenPGP public key, or holds a secret key.
    """
    with gpg_home() as home:
        keyfile = home / "key"
        keyfile.write_bytes(key_data)
        proc = run_gpg(home, "--with-colons", "--fixed-list-mode", "--show-keys", str(keyfile))
    try:
        keys = parse_colons(proc.stdout.decode("utf-8", "replace"))
    except TrustError as err:
        raise TrustError(f"{source} {err.message}") from None
    if proc.returncode != 0 or not keys:
        raise TrustError(f"{source} is not an OpenPGP public key{_gpg_reason(proc)}")
    return keys


def _gpg_reason(proc: subprocess.CompletedProcess[bytes]) -> str:
    """gpg's last complaint, as a short suffix for an error line."""
    for line in reversed(proc.stderr.decode("utf-8", "replace").splitlines()):
        line = line.strip()
        if line.startswith("gpg: ") and "[GNUPG:]" not in line:
            return f" (gpg: {line[5:]})"
    return ""


def export_armored(key_data: bytes, fingerprints: list[str]) -> dict[str, bytes]:
    """Each key of ``key_data`` exported alone, armored, keyed by fingerprint."""
    out: dict[str, bytes] = {}
    with gpg_home() as home:
        keyfile = home / "key"
        keyfile.write_bytes(key_data)
        proc = run_gpg(home, "--import", str(keyfile))
        if proc.returncode != 0:
            raise TrustError(f"gpg could not import the key{_gpg_reason(proc)}")
        for fp in fingerprints:
            exp = run_gpg(home, "--armor", "--export", fp.upper())
            if exp.returncode != 0 or not exp.stdout:
                raise TrustError(f"gpg could not export key {fp}{_gpg_reason(exp)}")
            out[fp] = exp.stdout
    return out


# --------------------------------------------------------------------------- names


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is a valid AC identifier (rkt requires one), else UsageError."""
    if not AC_IDENTIFIER_RE.match(prefix):
        raise UsageError(
            f"invalid trust prefix {prefix!r}: must be an AC identifier "
            "(lowercase letters, digits and -._~/ between them, e.g. example.com/app)"
        )
    return prefix


def normalize_fingerprint(text: str) -> str:
    """Lowercase hex without blanks (accepts ``DE13 6309 …`` and ``0x…``)."""
    fp = "".join(text.split()).lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]+", fp):
        raise UsageError(f"invalid key fingerprint {text!r}: expected hexadecimal digits")
    return fp


def covering_prefixes(name: str) -> list[str]:
    """The prefixes that cover ``name`` at element boundaries, shortest first."""
    parts = name.split("/")
    out = []
    for i in range(1, len(parts) + 1):
        cand = "/".join(parts[:i])
        if AC_IDENTIFIER_RE.match(cand):
            out.append(cand)
    return out


# --------------------------------------------------------------------------- store


@dataclass(frozen=True)
class _Entry:
    prefix: str | None
    fingerprint: str
    path: Path
    origin: str
    empty: bool


class TrustStore:
    """Trusted keys in a local (writable) and a system (read-only) config dir."""

    def __init__(self, local_config: Path, system_config: Path) -> None:
        self.local = Path(local_config) / TRUSTED_KEYS_DIR
        self.system = Path(system_config) / TRUSTED_KEYS_DIR

    # ---- layout

    def _base(self, origin: str) -> Path:
        return self.local if origin == "local" else self.system

    def key_dir(self, prefix: str | None, origin: str = "local") -> Path:
        """The directory holding the keys for ``prefix`` (None = root)."""
        base = self._base(origin)
        if prefix is None:
            return base / ROOT_DIR
        return base / PREFIX_DIR / check_prefix(prefix)

    def key_path(self, fingerprint: str, prefix: str | None, origin: str = "local") -> Path:
        return self.key_dir(prefix, origin) / fingerprint

    def _entries_in(self, directory: Path, prefix: str | None, origin: str) -> list[_Entry]:
        """Fingerprint-named files directly in ``directory`` (others are ignored)."""
        out = []
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as err:
            raise TrustError(f"cannot read trust store dir {directory}: {err.strerror}") from None
        for name in names:
            if not FINGERPRINT_RE.match(name):
                continue
            path = directory / name
            try:
                st = path.stat()
            except OSError:
                continue
            if not os.path.isdir(path):
                out.append(_Entry(prefix, name, path, origin, st.st_size == 0))
        return out

    def _scan(self, origin: str) -> list[_Entry]:
        """Every entry (keys and masks) of one config dir."""
        base = self._base(origin)
        entries = self._entries_in(base / ROOT_DIR, None, origin)
        pdir = base / PREFIX_DIR
        for dirpath, dirnames, _files in os.walk(pdir):
            dirnames.sort()
            rel = os.path.relpath(dirpath, pdir)
            if rel != "." and AC_IDENTIFIER_RE.match(rel):
                entries += self._entries_in(Path(dirpath), rel, origin)
        return entries

    def _load(self, entry: _Entry) -> TrustedKey:
        """Read and check one key file: it must hold the key its name says."""
        try:
            data = entry.path.read_bytes()
        except OSError as err:
            raise TrustError(f"cannot read trusted key {entry.path}: {err.strerror}") from None
        keys = fingerprint_of(data, source=f"trusted key file {entry.path}")
        for fp, uids in keys:
            if fp == entry.fingerprint:
                return TrustedKey(fp, entry.prefix, entry.path, uids, entry.origin)
        raise TrustError(
            f"trusted key file {entry.path} holds key {keys[0][0]}, not the key its name says"
        )

    # ---- queries

    def list(self) -> list[TrustedKey]:
        """All keys in effect at their own location: local wins, masked ones excluded."""
        by_loc: dict[tuple[str | None, str], _Entry] = {}
        for origin in ("system", "local"):
            for e in self._scan(origin):
                by_loc[(e.prefix, e.fingerprint)] = e
        live = [e for e in by_loc.values() if not e.empty]
        live.sort(key=lambda e: (e.prefix is not None, e.prefix or "", e.fingerprint))
        return [self._load(e) for e in live]

    def keys_for(self, name: str) -> list[TrustedKey]:
        """Keys trusted for image ``name``: root.d plus every covering prefix.

        Most specific first. See the module docstring for masking order.
        """
        prefixes = covering_prefixes(name)
        sources: list[tuple[str | None, str]] = [(None, "system"), (None, "local")]
        sources += [(p, "system") for p in prefixes] + [(p, "local") for p in prefixes]
        chosen: dict[str, _Entry] = {}
        for prefix, origin in sources:
            for e in self._entries_in(self.key_dir(prefix, origin), prefix, origin):
                chosen.pop(e.fingerprint, None)
                if not e.empty:
                    chosen[e.fingerprint] = e
        keys = [self._load(e) for e in chosen.values()]
        keys.sort(key=lambda k: -len(k.prefix) if k.prefix is not None else 1)
        return keys

    # ---- changes

    def add(self, keyfile: Path | bytes, prefix: str | None) -> list[TrustedKey]:
        """Trust every public key in ``keyfile`` for ``prefix`` (None = root).

        Each key is stored alone, armored, at ``<local>/trustedkeys/…/<fingerprint>``
        (mode 0644, written to a temp file then renamed). Replaces a masking file.
        """
        if prefix is not None:
            check_prefix(prefix)
        if isinstance(keyfile, bytes):
            data, source = keyfile, "key data"
        else:
            source = f"key file {keyfile}"
            try:
                data = Path(keyfile).read_bytes()
            except OSError as err:
                raise TrustError(f"cannot read key file {keyfile}: {err.strerror}") from None
        keys = fingerprint_of(data, source=source)
        armored = export_armored(data, [fp for fp, _ in keys])
        out = []
        for fp, uids in keys:
            path = self.key_path(fp, prefix)
            _atomic_write(path, armored[fp])
            out.append(TrustedKey(fp, prefix, path, uids, "local"))
        return out

    def remove(self, fingerprint: str,
               prefix: str | None | EllipsisType = ...) -> list[Path]:
        """Withdraw trust in a key; returns the local paths removed or written.

        ``prefix``: a prefix, None for root, or ``...`` (default) for every place
        the key is trusted. A local key file is deleted; a system key is masked by
        an empty local file of the same name.
        """
        fp = self._resolve_fingerprint(fingerprint)
        locations: list[str | None]
        if prefix is ...:
            locations = sorted({e.prefix for o in ("system", "local") for e in self._scan(o)
                                if e.fingerprint == fp and not e.empty},
                               key=lambda p: (p is not None, p or ""))
        else:
            locations = [prefix]
        touched: list[Path] = []
        for loc in locations:
            touched += self._remove_at(fp, loc)
        if not touched:
            where = "" if prefix is ... else (" for root" if prefix is None
                                              else f" for prefix {prefix}")
            raise NotFoundError(f"no trusted key {fp}{where}")
        return touched

    def _remove_at(self, fp: str, prefix: str | None) -> list[Path]:
        local = self.key_path(fp, prefix, "local")
        system = self.key_path(fp, prefix, "system")
        touched = []
        local_is_key = local.is_file() and local.stat().st_size > 0
        if local_is_key:
            local.unlink()
            touched.append(local)
        if system.is_file() and system.stat().st_size > 0:
            if not local.exists():
                _atomic_write(local, b"")
                if local not in touched:
                    touched.append(local)
        elif local_is_key:
            _prune_empty_dirs(local.parent, self.local)
        return touched

    def _resolve_fingerprint(self, text: str) -> str:
        fp = normalize_fingerprint(text)
        if FINGERPRINT_RE.match(fp):
            return fp
        if len(fp) < MIN_KEYID_HEX:
            raise UsageError(
                f"key id {text!r} is too short: give the fingerprint or its last "
                f"{MIN_KEYID_HEX} hex digits"
            )
        found = sorted({e.fingerprint for o in ("system", "local") for e in self._scan(o)
                        if e.fingerprint.endswith(fp)})
        if not found:
            raise NotFoundError(f"no trusted key matches {text}")
        if len(found) > 1:
            raise AmbiguousError(f"key id {text} matches several keys: {', '.join(found)}")
        return found[0]


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0644) via a temp file and rename; dirs 0755."""
    from podrun.fsutil import atomic_write

    _makedirs(path.parent)
    try:
        atomic_write(path, data, 0o644)
    except OSError as err:
        raise TrustError(f"cannot write trusted key {path}: {err.strerror}") from None


def _makedirs(path: Path) -> None:
    """``mkdir -p`` with mode 0755 regardless of the umask."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise TrustError(f"cannot create trust store dir {d}: {err.strerror}") from None
        os.chmod(d, 0o755)


def _prune_empty_dirs(directory: Path, stop: Path) -> None:
    """Remove now-empty prefix directories up to (not including) ``prefix.d``."""
    top = stop / PREFIX_DIR
    d = directory
    while d != top and top in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent

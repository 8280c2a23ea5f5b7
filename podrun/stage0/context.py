"""Global options shared by every podrun command: directories, debug, insecure options.

Each directory has a flag and an environment override so tests never touch the
real system dirs: ``--dir``/``PODRUN_DIR`` (data, default ``/var/lib/podrun``),
``--local-config``/``PODRUN_LOCAL_CONFIG`` (``/etc/podrun``),
``--system-config``/``PODRUN_SYSTEM_CONFIG`` (``/usr/lib/podrun``). The flag wins
over the environment, the environment over the default.

``--insecure-options`` takes rkt's comma-separated set: none, image (skip
signature verification), tls (skip TLS certificate verification), http (allow
plain HTTP), pubkey (trust keys fetched over plain HTTP), ondisk (skip re-hashing
of store content on use), all.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from podrun.errors import UsageError

DEFAULT_DATA_DIR = "/var/lib/podrun"
DEFAULT_LOCAL_CONFIG = "/etc/podrun"
DEFAULT_SYSTEM_CONFIG = "/usr/lib/podrun"

INSECURE_CHOICES = ("none", "image", "tls", "http", "pubkey", "ondisk", "all")


@dataclass(frozen=True)
class InsecureOptions:
    """Which security checks the user has switched off (rkt's ``--insecure-options``)."""

    image: bool = False
    tls: bool = False
    http: bool = False
    pubkey: bool = False
    ondisk: bool = False

    @classmethod
    def parse(cls, text: str | None) -> InsecureOptions:
        if not text:
            return cls()
        chosen: set[str] = set()
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if part not in INSECURE_CHOICES:
                raise UsageError(
                    f"--insecure-options: unknown option {part!r} "
                    f"(choose from {', '.join(INSECURE_CHOICES)})"
                )
            chosen.add(part)
        if "all" in chosen:
            return cls(True, True, True, True, True)
        return cls(
            image="image" in chosen,
            tls="tls" in chosen,
            http="http" in chosen,
            pubkey="pubkey" in chosen,
            ondisk="ondisk" in chosen,
        )

    def __str__(self) -> str:
        on = [n for n in ("image", "tls", "http", "pubkey", "ondisk") if getattr(self, n)]
        return ",".join(on) or "none"


@dataclass
class Context:
    """What every command gets: resolved directories and global switches."""

    data_dir: Path = field(default_factory=lambda: Path(DEFAULT_DATA_DIR))
    local_config: Path = field(default_factory=lambda: Path(DEFAULT_LOCAL_CONFIG))
    system_config: Path = field(default_factory=lambda: Path(DEFAULT_SYSTEM_CONFIG))
    debug: bool = False
    insecure: InsecureOptions = field(default_factory=InsecureOptions)
    trust_keys_from_https: bool = False

    @classmethod
    def from_args(cls, args: object) -> Context:
        def pick(attr: str, env: str, default: str) -> str:
            val = getattr(args, attr, None)
            if val:
                return str(val)
            return os.environ.get(env) or default

        debug = bool(getattr(args, "debug", False)) or os.environ.get("PODRUN_DEBUG", "") not in (
            "",
            "0",
            "false",
        )
        insecure_text = getattr(args, "insecure_options", None) or os.environ.get(
            "PODRUN_INSECURE_OPTIONS"
        )
        return cls(
            data_dir=Path(pick("dir", "PODRUN_DIR", DEFAULT_DATA_DIR)).absolute(),
            local_config=Path(
                pick("local_config", "PODRUN_LOCAL_CONFIG", DEFAULT_LOCAL_CONFIG)
            ).absolute(),
            system_config=Path(
                pick("system_config", "PODRUN_SYSTEM_CONFIG", DEFAULT_SYSTEM_CONFIG)
            ).absolute(),
            debug=debug,
            insecure=InsecureOptions.parse(insecure_text),
            trust_keys_from_https=bool(getattr(args, "trust_keys_from_https", False)),
        )

    def warn(self, message: str) -> None:
        """A one-line warning on stderr (never on stdout, which carries results)."""
        print(f"podrun: warning: {message}", file=sys.stderr)

    def log(self, message: str) -> None:
        """A debug line on stderr, shown only with ``--debug``."""
        if self.debug:
            print(f"podrun: {message}", file=sys.stderr)

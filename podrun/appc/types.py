"""appc's shared value types: AC Identifier/Name, image IDs, SemVer, OS/arch, quantities.

This module owns the scalar rules of appc ``types.md`` as the reference validator
(Debian's ``actool`` 0.8.11, appc/spec ``schema/types``) enforces them. Where the
Go code is more lenient or stricter than the prose of the spec, we follow the Go
code, because ``actool validate`` is the oracle our tests agree with; each such
place says so. Every ``check_*`` function raises :class:`ManifestError` naming the
JSON path of the bad value and returns the value when it is fine.

Pure functions, stdlib only: cheap to import on the ``podrun run`` path.
"""

from __future__ import annotations

import os
import re
import string
from fractions import Fraction

from podrun.errors import ManifestError

# --- AC Identifier / AC Name (types.md) -------------------------------------

# types.md gives ^[a-z0-9]+([-._~/][a-z0-9]+)*$ and ^[a-z0-9]+([-][a-z0-9]+)*$, but
# actool 0.8.11 only checks the character set and that the first and last
# characters are alphanumeric: "a..b", "example.com/~user/app" and "a--b" pass.
# We agree with actool, so these are the regexes in force everywhere in podrun.
ACI_ID_RE = re.compile(r"^[a-z0-9]([-._~/a-z0-9]*[a-z0-9])?$")
AC_ID_RE = ACI_ID_RE
AC_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SPEC_ACI_ID_RE = re.compile(r"^[a-z0-9]+([-._~/][a-z0-9]+)*$")
SPEC_AC_NAME_RE = re.compile(r"^[a-z0-9]+([-][a-z0-9]+)*$")

_ACID_CHARS = re.compile(r"^[a-z0-9\-._~/]+$")
_ACNAME_CHARS = re.compile(r"^[a-z0-9\-]+$")


def is_ac_identifier(value: object) -> bool:
    """True when ``value`` is a string matching the AC Identifier grammar."""
    return isinstance(value, str) and ACI_ID_RE.fullmatch(value) is not None


def is_ac_name(value: object) -> bool:
    """True when ``value`` is a string matching the AC Name grammar."""
    return isinstance(value, str) and AC_NAME_RE.fullmatch(value) is not None


def check_ac_identifier(value: str, path: str, *, kind: str = "manifest") -> str:
    """Return ``value`` if it is an AC Identifier, else raise ``ManifestError(path, …)``."""
    if not isinstance(value, str):
        raise ManifestError(path, "AC Identifier must be a string", kind=kind)
    if value == "":
        raise ManifestError(path, "AC Identifier cannot be empty", kind=kind)
    if ACI_ID_RE.fullmatch(value):
        return value
    if not _ACID_CHARS.fullmatch(value):
        why = 'must contain only lower case alphanumeric characters plus "-._~/"'
    else:
        why = "must start and end with a lower case alphanumeric character"
    raise ManifestError(path, f"AC Identifier {value!r} {why}", kind=kind)


def check_ac_name(value: str, path: str, *, kind: str = "manifest") -> str:
    """Return ``value`` if it is an AC Name, else raise ``ManifestError(path, …)``."""
    if not isinstance(value, str):
        raise ManifestError(path, "AC Name must be a string", kind=kind)
    if value == "":
        raise ManifestError(path, "AC Name cannot be empty", kind=kind)
    if AC_NAME_RE.fullmatch(value):
        return value
    if not _ACNAME_CHARS.fullmatch(value):
        why = 'must contain only lower case alphanumeric characters plus "-"'
    else:
        why = "must start and end with a lower case alphanumeric character"
    raise ManifestError(path, f"AC Name {value!r} {why}", kind=kind)


# --- Image ID ----------------------------------------------------------------

IMAGE_ID_ALGORITHMS = ("sha512",)


def parse_image_id(value: str, path: str = "", *, kind: str = "manifest") -> tuple[str, str]:
    """Split ``"sha512-<hex>"`` into ``("sha512", "<hex>")``.

    Same rule as actool (``types.Hash``): exactly one ``-``, algorithm ``sha512``,
    non-empty value. actool does not check the value is hex (``sha512-...`` in
    the spec's own example passes), so neither do we; the store checks real IDs.
    """
    if not isinstance(value, str):
        raise ManifestError(path, "image ID must be a string", kind=kind)
    parts = value.split("-")
    if len(parts) != 2:
        raise ManifestError(path, f"badly formatted image ID {value!r} (want sha512-<hex>)",
                            kind=kind)
    algo, digest = parts
    if algo not in IMAGE_ID_ALGORITHMS:
        shown = algo or "empty"
        raise ManifestError(path, f"unrecognized hash type {shown!r} in image ID {value!r}",
                            kind=kind)
    if not digest:
        raise ManifestError(path, f"empty hash value in image ID {value!r}", kind=kind)
    return algo, digest


# --- AC Version (SemVer, as coreos/go-semver parses it) ------------------------

_SEMVER_IDENT = re.compile(r"^[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*$")
_SEMVER_NUM = re.compile(r"^[0-9]+$")


def parse_semver(value: str) -> tuple[int, int, int, str, str]:
    """Parse ``major.minor.patch[-pre][+meta]`` the way actool's go-semver does.

    Lenient like Go: leading zeros are fine (``0.08.11``) and an empty pre-release
    after ``-`` is accepted. ``0.0.0`` is rejected ("SemVer cannot be zero").
    Raises ``ValueError``.
    """
    if not isinstance(value, str):
        raise ValueError("version must be a string")
    rest, _, meta = value.partition("+")
    rest, _, pre = rest.partition("-")
    parts = rest.split(".", 2)
    if len(parts) != 3:
        raise ValueError(f"{value!r} is not a semantic version (major.minor.patch)")
    for ident in (pre, meta):
        if ident and not _SEMVER_IDENT.fullmatch(ident):
            raise ValueError(f"{value!r} has a bad pre-release or build part {ident!r}")
    nums = []
    for part in parts:
        if not _SEMVER_NUM.fullmatch(part) or int(part) >= 2**63:
            raise ValueError(f"{value!r} is not a semantic version (major.minor.patch)")
        nums.append(int(part))
    if nums == [0, 0, 0] and not pre and not meta:
        raise ValueError("version cannot be zero (0.0.0)")
    return nums[0], nums[1], nums[2], pre, meta


def check_semver(value: str, path: str, *, kind: str = "manifest") -> str:
    """Return ``value`` if it is an acceptable AC Version, else raise ``ManifestError``."""
    try:
        parse_semver(value)
    except ValueError as err:
        raise ManifestError(path, str(err), kind=kind) from None
    return value


# --- OS / arch labels (types.ValidOSArch in actool 0.8.11) --------------------

VALID_OS_ARCH: dict[str, tuple[str, ...]] = {
    "linux": ("amd64", "i386", "aarch64", "aarch64_be", "armv6l", "armv7l", "armv7b",
              "ppc64", "ppc64le", "s390x"),
    "freebsd": ("amd64", "i386", "arm"),
    "darwin": ("x86_64", "i386"),
}

# uname -m → appc arch label (rkt's mapping of GOARCH to appc names, by machine).
_MACHINE_TO_ARCH = {
    "x86_64": "amd64", "amd64": "amd64",
    "i386": "i386", "i486": "i386", "i586": "i386", "i686": "i386",
    "aarch64": "aarch64", "arm64": "aarch64", "aarch64_be": "aarch64_be",
    "armv6l": "armv6l", "armv7l": "armv7l", "armv8l": "armv7l", "armv7b": "armv7b",
    "ppc64": "ppc64", "ppc64le": "ppc64le", "s390x": "s390x",
}


def host_os() -> str:
    """The appc ``os`` label of this host (``linux``, ``freebsd``, ``darwin``)."""
    return os.uname().sysname.lower()


def host_arch() -> str:
    """The appc ``arch`` label of this host: ``x86_64``→``amd64``, ``i686``→``i386``,
    ``aarch64``→``aarch64``, ``armv7l``→``armv7l``… (unknown machines pass through)."""
    machine = os.uname().machine
    if host_os() == "darwin":
        return {"x86_64": "x86_64", "i386": "i386"}.get(machine, machine)
    return _MACHINE_TO_ARCH.get(machine, machine)


def check_os_arch(os_name: str | None, arch: str | None, path: str,
                  *, kind: str = "manifest") -> None:
    """actool's label rule: a known ``os``; if ``arch`` is given too, one valid for it.

    ``arch`` without ``os`` is not checked (as in actool).
    """
    if os_name is None:
        return
    archs = VALID_OS_ARCH.get(os_name)
    if archs is None:
        raise ManifestError(path, f"bad os {os_name!r} (must be one of: "
                            f"{', '.join(sorted(VALID_OS_ARCH))})", kind=kind)
    if arch is not None and arch not in archs:
        raise ManifestError(path, f"bad arch {arch!r} for {os_name} (must be one of: "
                            f"{', '.join(archs)})", kind=kind)


# --- environment variable names ----------------------------------------------

# actool 0.8.11 accepts '.' and '-' after the first character (later appc
# releases narrowed this to [A-Za-z_0-9]); we agree with the shipped actool.
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z_0-9.\-]*$")


def check_env_name(value: str, path: str, *, kind: str = "manifest") -> str:
    """Return ``value`` if it is an acceptable environment variable name."""
    if not value:
        raise ManifestError(path, "environment variable name must not be empty", kind=kind)
    if not ENV_NAME_RE.fullmatch(value):
        raise ManifestError(path, f"environment variable name {value!r} is not a valid "
                            "identifier", kind=kind)
    return value


# --- timestamps and URLs (annotations "created", "homepage", "documentation") -

_RFC3339_RE = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(Z|[+-]([0-9]{2}):([0-9]{2}))$")


def check_rfc3339(value: str, path: str, *, kind: str = "manifest") -> str:
    """An RFC 3339 ``date-time`` as Go's ``time.Parse(time.RFC3339, …)`` accepts it."""
    import datetime

    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        raise ManifestError(path, f"bad date {value!r} (want RFC 3339, "
                            "e.g. 2014-10-27T19:32:27Z)", kind=kind)
    year, month, day, hour, minute, sec = (int(g) for g in m.groups()[:6])
    try:
        datetime.datetime(year, month, day, hour, minute, sec)
        if m.group(9) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
            raise ValueError("time zone offset out of range")
    except ValueError as err:
        raise ManifestError(path, f"bad date {value!r}: {err}", kind=kind) from None
    return value


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST_OK = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:\[\]%@]*$")


def check_http_url(value: str, path: str, *, kind: str = "manifest") -> str:
    """An absolute ``http``/``https`` URL (actool's ``types.URL``)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
    except ValueError as err:
        raise ManifestError(path, f"bad URL {value!r}: {err}", kind=kind) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ManifestError(path, f"bad URL scheme in {value!r}, must be http/https", kind=kind)
    if not _HOST_OK.fullmatch(parts.netloc) or _BAD_ESCAPE.search(value.split("?", 1)[0]):
        raise ManifestError(path, f"bad URL {value!r}", kind=kind)
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ManifestError(path, f"bad URL {value!r}: control character", kind=kind)
    return value


def check_ip(value: str, path: str, *, kind: str = "manifest") -> str:
    """An IPv4 or IPv6 address; the empty string means unset (as in actool)."""
    import ipaddress

    if value == "":
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ManifestError(path, f"invalid IP address {value!r}", kind=kind) from None
    return value


# --- resource quantities (Kubernetes resource.Quantity, as actool vendors it) -

_QUANTITY_RE = re.compile(r"^([+-]?)([0-9]*)(?:\.([0-9]*))?([eEinumkKMGTP]*[-+]?[0-9]*)$")
_DECIMAL_SUFFIX = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12,
                   "P": 15, "E": 18}
_BINARY_SUFFIX = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_EXPONENT_RE = re.compile(r"^[eE]([+-]?[0-9]+)$")
_MAX_QUANTITY = Fraction(2**63 - 1)
_TINY = Fraction(1, 10**30)


def _scale(amount: Fraction, suffix: str, text: str) -> Fraction:
    if suffix in _DECIMAL_SUFFIX:
        return amount * Fraction(10) ** _DECIMAL_SUFFIX[suffix]
    if suffix in _BINARY_SUFFIX:
        return amount * 2 ** _BINARY_SUFFIX[suffix]
    m = _EXPONENT_RE.fullmatch(suffix)
    if m is None or len(m.group(1).lstrip("+-")) > 18:
        raise ValueError(f"bad quantity {text!r}: unknown suffix {suffix!r}")
    exponent = int(m.group(1))
    if amount == 0 or abs(exponent) <= 30:
        return amount * Fraction(10) ** exponent
    # Huge exponents: saturate instead of computing 10**exponent (actool hangs here).
    magnitude = _MAX_QUANTITY if exponent > 0 else _TINY
    return magnitude if amount > 0 else -magnitude


def quantity_value(text: str | int | float) -> Fraction:
    """Exact value of a quantity: ``"1G"``→10**9, ``"512Mi"``→512·2**20, ``"500m"``→1/2.

    Grammar as actool's vendored Kubernetes ``resource.ParseQuantity``: an optional
    sign, digits, an optional ``.`` and digits (all digits may be missing: ``"G"``
    and ``"+"`` are zero), then a suffix that is decimal SI (``n u m k M G T P E``),
    binary SI (``Ki Mi Gi Ti Pi Ei``) or an exponent (``e3``, ``E-3``). A JSON number
    is read as its decimal text; surrounding blanks are ignored. Values are capped
    at the int64 maximum, like Kubernetes. Raises ``ValueError``.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"quantity must be a string or a number, not {type(text).__name__}")
    s = str(text).strip()
    m = _QUANTITY_RE.fullmatch(s)
    if not s or m is None:
        raise ValueError(f"bad quantity {str(text)!r} (e.g. 512Mi, 1G, 500m)")
    sign, whole, frac, suffix = m.groups()
    amount = Fraction(int(whole or "0"))
    if frac:
        amount += Fraction(int(frac), 10 ** len(frac))
    if sign == "-":
        amount = -amount
    amount = _scale(amount, suffix, s)
    return max(min(amount, _MAX_QUANTITY), -_MAX_QUANTITY)


def _ceil(value: Fraction) -> int:
    return -((-value.numerator) // value.denominator)


def parse_quantity(text: str | int | float) -> int:
    """A quantity in base units, rounded up: bytes for memory, whole CPUs for cpu.

    ``"1G"``→1000000000, ``"512Mi"``→536870912, ``"1.5"``→2, ``"500m"``→1 (use
    :func:`parse_quantity_milli` for CPU: ``"500m"``→500). Rounding up follows
    Kubernetes' ``Quantity.Value()``: asking for a little gives at least one unit.
    """
    return _ceil(quantity_value(text))


def parse_quantity_milli(text: str | int | float) -> int:
    """A quantity in thousandths, rounded up: CPU millicores (``"500m"``→500, ``"2"``→2000)."""
    return _ceil(quantity_value(text) * 1000)


def is_upper_errno(value: str) -> bool:
    """actool's seccomp ``errno`` rule: ``E`` then upper case letters or digits."""
    return value.startswith("E") and all(
        c in string.ascii_uppercase or c in string.digits for c in value)

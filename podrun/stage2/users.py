"""Users and groups of an app, resolved in the IMAGE's own ``/etc/passwd`` and
``/etc/group`` (never the host's, never through NSS).

appc (aci.md, ``app.user``/``app.group``): a value is first looked up as a name in
the image's files; if no entry matches and it is all digits it is a numeric id; if
it starts with ``/`` the owner (group) of that file inside the rootfs is used. Files
are read with :func:`podrun.stage2.rootfs.read_in_root`, so a symlinked
``/etc/passwd`` in an image cannot make us read a host file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from podrun.stage2.rootfs import opened_in_root, read_in_root

PASSWD = "/etc/passwd"
GROUP = "/etc/group"


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _lines(rootfs: str, path: str) -> list[list[str]]:
    data = read_in_root(rootfs, path)
    if data is None:
        return []
    rows = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "+", "-")):
            rows.append(line.split(":"))
    return rows


def passwd(rootfs: str) -> list[PasswdEntry]:
    """Parseable entries of the image's /etc/passwd (malformed lines are skipped)."""
    out = []
    for f in _lines(rootfs, PASSWD):
        if len(f) >= 4 and f[2].isdigit() and f[3].isdigit():
            out.append(PasswdEntry(f[0], int(f[2]), int(f[3]), f[5] if len(f) > 5 else ""))
    return out


def groups(rootfs: str) -> list[GroupEntry]:
    """Parseable entries of the image's /etc/group."""
    out = []
    for f in _lines(rootfs, GROUP):
        if len(f) >= 3 and f[2].isdigit():
            members = tuple(m for m in (f[3].split(",") if len(f) > 3 else []) if m)
            out.append(GroupEntry(f[0], int(f[2]), members))
    return out


def _file_owner(rootfs: str, path: str) -> tuple[int, int]:
    try:
        with opened_in_root(rootfs, path) as (fd, _):
            st = os.fstat(fd)
    except (FileNotFoundError, NotADirectoryError):
        raise ValueError(f"file {path} (named as user/group) not found in the image") from None
    return st.st_uid, st.st_gid


def resolve_user(rootfs: str, user: str, group: str) -> tuple[int, int, str]:
    """``(uid, gid, home)`` for *user*/*group* in the image at *rootfs*.

    *group* ``""`` means the user's primary group (0 if the user has no passwd
    entry). *home* is the passwd home, or ``"/"`` when there is none. An unknown
    non-numeric name raises ValueError naming it and the file.
    """
    entries = passwd(rootfs)
    entry = next((e for e in entries if e.name == user), None)
    if entry is not None:
        uid = entry.uid
    elif user.startswith("/"):
        uid = _file_owner(rootfs, user)[0]
    elif user.isdigit():
        uid = int(user)
    else:
        raise ValueError(f"user {user!r} not found in the image's {PASSWD}")
    if entry is None:
        entry = next((e for e in entries if e.uid == uid), None)
    home = entry.home if entry is not None and entry.home else "/"
    if group == "":
        return uid, entry.gid if entry is not None else 0, home
    return uid, resolve_group(rootfs, group), home


def resolve_group(rootfs: str, group: str) -> int:
    """The gid of *group* (name, number or /path) in the image at *rootfs*."""
    g = next((e for e in groups(rootfs) if e.name == group), None)
    if g is not None:
        return g.gid
    if group.startswith("/"):
        return _file_owner(rootfs, group)[1]
    if group.isdigit():
        return int(group)
    raise ValueError(f"group {group!r} not found in the image's {GROUP}")


def user_name(rootfs: str, uid: int) -> str | None:
    """The image's name for *uid*, if its /etc/passwd has one."""
    return next((e.name for e in passwd(rootfs) if e.uid == uid), None)


def groups_of(rootfs: str, username: str) -> list[int]:
    """Supplementary gids of *username*: the image's groups listing it as a member."""
    seen: list[int] = []
    for g in groups(rootfs):
        if username in g.members and g.gid not in seen:
            seen.append(g.gid)
    return seen

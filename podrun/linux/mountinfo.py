"""Reading ``/proc/<pid>/mountinfo``: one parser for everything that looks at mounts.

Each line gives the mount ID, its root within the filesystem, its mount point, and
after the ``-`` separator the filesystem type, source and superblock options; paths
have space, tab, newline and backslash escaped as octal (``\\040``).
"""

from __future__ import annotations

from typing import NamedTuple


class MountEntry(NamedTuple):
    id: int
    root: str
    mount_point: str
    fstype: str
    source: str
    super_options: tuple[str, ...]


def unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` → space)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        fields, after = pre.split(), post.split()
        if not sep or len(fields) < 5 or not after:
            continue
        entries.append(MountEntry(
            int(fields[0]), unescape(fields[3]), unescape(fields[4]), after[0],
            unescape(after[1]) if len(after) > 1 else "",
            tuple(after[2].split(",")) if len(after) > 2 else ()))
    return entries


def read(pid: int | str = "self") -> list[MountEntry]:
    """The mounts process ``pid`` sees, in mount order."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return parse(f.read())

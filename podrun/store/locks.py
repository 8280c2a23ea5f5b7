"""File locks for the store and pods: ``flock(2)`` on small files, by key.

A lock is a file ``<dir>/<key>.lock`` (created on demand, never deleted while the
store exists, so two processes always lock the same inode). Locks are advisory
and released by the kernel when the holder dies — a ``kill -9`` never leaves a
lock behind. File descriptors are opened ``O_CLOEXEC`` so they never leak into
anything podrun execs.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class FileLock:
    """A flock on ``path``: shared or exclusive, blocking or not."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, *, shared: bool = False, blocking: bool = True) -> bool:
        if self.fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if not blocking:
            op |= fcntl.LOCK_NB
        try:
            fcntl.flock(self.fd, op)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[FileLock]:
    """Hold a blocking flock on ``path`` for the duration of the block."""
    lock = FileLock(path)
    lock.acquire(shared=shared)
    try:
        yield lock
    finally:
        lock.release()

"""The store's index: stdlib sqlite3 in WAL mode.

Tables:
- ``images``: one row per stored image — full ID, name, labels (JSON object), the
  manifest (JSON), import time, last use, size of the uncompressed tar, source URL,
  ETag, max-age and the time of the last remote check (for HTTP caching).
- ``trees``: one row per rendered tree — key (hash of the flattened dependency
  list), the top image ID, the ordered image IDs, the tree's content hash, times.

A row is inserted only after the blob or tree it describes is complete on disk
(renamed into place), so a reader never sees a half entry; a blob or tree without a
row is invisible garbage that ``image gc`` sweeps. Every connection sets a busy
timeout so concurrent podrun processes serialise on writes instead of failing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    manifest TEXT NOT NULL,
    import_time REAL NOT NULL,
    last_used REAL NOT NULL,
    size INTEGER NOT NULL,
    source_url TEXT,
    etag TEXT,
    max_age INTEGER,
    checked_time REAL
);
CREATE INDEX IF NOT EXISTS images_name ON images(name);
CREATE INDEX IF NOT EXISTS images_url ON images(source_url);
CREATE TABLE IF NOT EXISTS trees (
    key TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    image_ids TEXT NOT NULL,
    tree_hash TEXT NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
"""


@dataclass
class ImageRecord:
    """One image of the store as the index knows it."""

    id: str
    name: str
    labels: dict[str, str]
    manifest: dict[str, Any]
    import_time: float
    last_used: float
    size: int
    source_url: str | None = None
    etag: str | None = None
    max_age: int | None = None
    checked_time: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "labels": self.labels,
            "import_time": self.import_time,
            "last_used": self.last_used,
            "size": self.size,
            "source_url": self.source_url,
            "etag": self.etag,
            "max_age": self.max_age,
        }


@dataclass
class TreeRecord:
    key: str
    image_id: str
    image_ids: list[str]
    tree_hash: str
    created: float
    last_used: float


_IMAGE_COLS = ("id, name, labels, manifest, import_time, last_used, size, source_url, "
               "etag, max_age, checked_time")


def _image(row: tuple[Any, ...]) -> ImageRecord:
    return ImageRecord(row[0], row[1], json.loads(row[2]), json.loads(row[3]), *row[4:])


class Index:
    """A thin, typed layer over the sqlite database file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 60000")
        mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self.transaction():
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # images -------------------------------------------------------------
    def add_image(self, rec: ImageRecord) -> None:
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO images({_IMAGE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET last_used=excluded.last_used, "
                "source_url=COALESCE(excluded.source_url, source_url), "
                "etag=COALESCE(excluded.etag, etag), max_age=COALESCE(excluded.max_age, max_age), "
                "checked_time=COALESCE(excluded.checked_time, checked_time)",
                (rec.id, rec.name, json.dumps(rec.labels, sort_keys=True),
                 json.dumps(rec.manifest), rec.import_time, rec.last_used, rec.size,
                 rec.source_url, rec.etag, rec.max_age, rec.checked_time),
            )

    def get_image(self, image_id: str) -> ImageRecord | None:
        row = self._db.execute(f"SELECT {_IMAGE_COLS} FROM images WHERE id = ?",
                               (image_id,)).fetchone()
        return _image(row) if row else None

    def images(self) -> list[ImageRecord]:
        rows = self._db.execute(f"SELECT {_IMAGE_COLS} FROM images ORDER BY import_time")
        return [_image(r) for r in rows]

    def images_by_prefix(self, prefix: str) -> list[str]:
        # GLOB is case sensitive and uses the index; IDs are lower-case hex.
        rows = self._db.execute("SELECT id FROM images WHERE id GLOB ?",
                                (prefix.replace("[", "").replace("*", "") + "*",))
        return [r[0] for r in rows]

    def images_by_name(self, name: str) -> list[ImageRecord]:
        rows = self._db.execute(
            f"SELECT {_IMAGE_COLS} FROM images WHERE name = ? ORDER BY import_time", (name,))
        return [_image(r) for r in rows]

    def images_by_url(self, url: str) -> list[ImageRecord]:
        rows = self._db.execute(
            f"SELECT {_IMAGE_COLS} FROM images WHERE source_url = ? ORDER BY import_time DESC",
            (url,))
        return [_image(r) for r in rows]

    def touch_image(self, *image_ids: str, when: float | None = None) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE images SET last_used = ? WHERE id = ?",
                           [(when or time.time(), i) for i in image_ids])

    def set_remote(self, image_id: str, *, url: str, etag: str | None, max_age: int | None,
                   checked: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE images SET source_url=?, etag=?, max_age=?, checked_time=? "
                       "WHERE id = ?", (url, etag, max_age, checked, image_id))

    def remove_image(self, image_id: str) -> bool:
        with self.transaction() as db:
            cur = db.execute("DELETE FROM images WHERE id = ?", (image_id,))
            return cur.rowcount > 0

    # trees --------------------------------------------------------------
    def add_tree(self, rec: TreeRecord) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO trees(key, image_id, image_ids, tree_hash, created, "
                "last_used) VALUES (?,?,?,?,?,?)",
                (rec.key, rec.image_id, json.dumps(rec.image_ids), rec.tree_hash, rec.created,
                 rec.last_used),
            )

    def get_tree(self, key: str) -> TreeRecord | None:
        row = self._db.execute("SELECT key, image_id, image_ids, tree_hash, created, last_used "
                               "FROM trees WHERE key = ?", (key,)).fetchone()
        if not row:
            return None
        return TreeRecord(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])

    def trees(self) -> list[TreeRecord]:
        rows = self._db.execute("SELECT key, image_id, image_ids, tree_hash, created, last_used "
                                "FROM trees")
        return [TreeRecord(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    def touch_tree(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE trees SET last_used = ? WHERE key = ?", (time.time(), key))

    def remove_tree(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM trees WHERE key = ?", (key,))

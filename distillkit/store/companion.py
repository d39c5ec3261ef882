"""The embedded store's companion records: small JSON documents by (kind, key), in SQLite.

They live in ``records.sqlite`` beside the shard, in WAL mode, under their own lock: writing one
commits one row, and never waits for, or holds up, a search. What the records mean (the model
registry, jobs, shadow checks, stats) is :mod:`distillkit.state`'s business; this module only
keeps them. Folders written by older versions (``records.json``) are moved into SQLite on open.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from distillkit.errors import StoreError
from distillkit.store._payload import translate_errors

__all__ = ["CompanionRecords"]


class CompanionRecords:
    """The companion records of one embedded store folder; safe to share between threads.

    Args:
        folder: the store's collection folder; ``records.sqlite`` is created there (0o600) by
            :meth:`open`.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        #: Guards the database only: record reads and writes never take the store's engine lock.
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (or create) the database, moving a legacy ``records.json`` into it."""
        path = self.folder / "records.sqlite"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)  # private before SQLite opens it
        os.close(fd)
        db = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
                " PRIMARY KEY (kind, key))"
            )
            legacy = self.folder / "records.json"
            if legacy.exists():
                data = json.loads(legacy.read_text(encoding="utf-8"))
                rows = [
                    (str(kind), str(key), json.dumps(value))
                    for kind, entries in (data.items() if isinstance(data, dict) else [])
                    if isinstance(entries, dict)
                    for key, value in entries.items()
                ]
                with db:
                    db.execute("BEGIN")
                    db.executemany("INSERT OR IGNORE INTO records VALUES (?, ?, ?)", rows)
                legacy.unlink()
        except BaseException:
            db.close()
            raise
        with self._lock:
            self._db = db

    @contextlib.contextmanager
    def _connection(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock, translate_errors(action):
            db = self._db
            if db is None:
                raise StoreError(f"The store at {self.folder} is closed.")
            yield db

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """A companion record (a copy), or None."""
        with self._connection("read a companion record") as db:
            row = db.execute("SELECT value FROM records WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, kind: str, key: str, value: Mapping[str, Any]) -> None:
        """Create or replace a companion record; committed to disk before returning."""
        encoded = json.dumps(dict(value))  # fails early on non-JSON values
        with self._connection("write a companion record") as db:
            db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (kind, key, encoded))

    def delete(self, kind: str, key: str) -> None:
        """Remove a companion record; a missing one is not an error."""
        with self._connection("delete a companion record") as db:
            db.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))

    def list(self, kind: str) -> dict[str, dict[str, Any]]:
        """All records of one kind, by key (copies)."""
        with self._connection("list companion records") as db:
            rows = db.execute("SELECT key, value FROM records WHERE kind = ? ORDER BY key", (kind,)).fetchall()
        return {key: json.loads(value) for key, value in rows}

    def close(self) -> None:
        """Close the database; later calls fail with "closed". Idempotent."""
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def detach(self) -> sqlite3.Connection | None:
        """In a forked child: let go of the connection without closing it, and return it.

        Takes no lock: a thread of the parent may have held it at the fork, and never lets go here.
        """
        db, self._db = self._db, None
        return db

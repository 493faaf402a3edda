"""Durable key-value records for the cores' Persist effects (SQLite, fsync).

A core asks for a record to be persisted (:class:`~arcnet.mesh.core.Persist`);
the daemon writes it here, with ``synchronous=FULL`` in WAL mode so a commit
is on disk when :meth:`Disk.apply` returns, before the sends that depend on
it go out. On restart :meth:`Disk.load` hands every record back to the
cores. One SQLite file per peer, in its data directory.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable

from .core import Persist

__all__ = ["Disk"]


class Disk:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        self.writes = 0
        self.commits = 0

    def load(self) -> dict[str, bytes]:
        return {k: bytes(v) for k, v in self._db.execute("SELECT key, value FROM records ORDER BY key")}

    def apply(self, records: Iterable[Persist]) -> None:
        """Write a batch of Persist effects in one durable transaction."""
        batch = list(records)
        if not batch:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for r in batch:
                if r.value is None:
                    db.execute("DELETE FROM records WHERE key = ?", (r.key,))
                else:
                    db.execute("INSERT OR REPLACE INTO records (key, value) VALUES (?, ?)", (r.key, r.value))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.writes += len(batch)
        self.commits += 1

    def close(self) -> None:
        self._db.close()

    def statistics(self) -> dict[str, int]:
        return {"writes": self.writes, "commits": self.commits}

"""SQLite backend (the default): one file in WAL mode, so readers never block the writer."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fleet.store._sql import Dialect, SqlStore

__all__ = ["SqliteStore"]

_DIALECT = Dialect(name="sqlite", blob="BLOB", real="REAL",
                   serial_pk="INTEGER PRIMARY KEY AUTOINCREMENT", for_update="")


class SqliteStore(SqlStore):
    dialect = _DIALECT

    def __init__(self, path: Path, data_dir: Path | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a transaction takes the
        # write lock up front and two processes on one file never deadlock upgrading locks.
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        self.path = path
        super().__init__(conn, data_dir)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

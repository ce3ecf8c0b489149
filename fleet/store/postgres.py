"""PostgreSQL backend (psycopg 3) for fleets past one machine: several manager workers share it.

Same SQL as SQLite with ``%s`` placeholders; telemetry goes in with ``COPY`` (several times
faster than ``executemany``; see benchmarks/fleet_store.py), state reports lock the device row
(``FOR UPDATE``) so two workers never apply reports of one device out of order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edgeops.errors import ConfigError, TransportError
from fleet.store._sql import Dialect, SqlStore
from fleet.store.models import TelemetryRow

__all__ = ["PostgresStore"]

_DIALECT = Dialect(name="postgresql", blob="BYTEA", real="DOUBLE PRECISION",
                   serial_pk="BIGSERIAL PRIMARY KEY", for_update=" FOR UPDATE")
_MIGRATION_LOCK = 0x0ED6E095


class PostgresStore(SqlStore):
    dialect = _DIALECT

    def __init__(self, url: str, data_dir: Path | None = None, *, use_copy: bool = True) -> None:
        try:
            import psycopg
        except ImportError:     # an optional extra: say which
            raise ConfigError("a postgresql:// --db needs the PostgreSQL driver (psycopg)",
                              hint="install the extra: pip install 'edgeops[postgres]'") from None
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TransportError(f"cannot connect to PostgreSQL: {first}",
                                 hint="check --db (postgresql://user@host:port/db) and that the "
                                      "server is running") from None
        self.url = url
        self.use_copy = use_copy
        super().__init__(conn, data_dir)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _migration_lock(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            yield cur

    def insert_telemetry(self, rows: Sequence[TelemetryRow]) -> int:
        if not rows or not self.use_copy:
            return super().insert_telemetry(rows)
        with self._tx() as cur, cur.copy(
                "COPY telemetry (device_id, ts, kind, seq, deployment_id, n_count, n_errors, "
                "p95_ms, data) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(self._telemetry_tuple(r))
        return len(rows)

    def _write_telemetry(self, cur: Any, rows: Sequence[TelemetryRow]) -> None:
        if not rows or not self.use_copy:
            super()._write_telemetry(cur, rows)
            return
        with cur.copy("COPY telemetry (device_id, ts, kind, seq, deployment_id, n_count, "
                      "n_errors, p95_ms, data) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(self._telemetry_tuple(r))

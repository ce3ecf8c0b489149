"""The SQL store: the role mixins composed over one connection; backends supply the dialect.

Every public method is one short transaction under a lock (the API's thread pool, the MQTT
worker and the rollout loop share one store). SQL uses ``?`` placeholders and never a literal
``?`` or ``%``; the PostgreSQL backend rewrites placeholders for psycopg. Each role's SQL is in
its own module (:mod:`._devices`, :mod:`._telemetry`, :mod:`._repository`, :mod:`._deployments`,
:mod:`._access`, :mod:`._aliases`, :mod:`._aggregates`, :mod:`._captures`,
:mod:`._drift_alerts`); a new role is a new mixin listed here and a new Protocol in
:mod:`fleet.store.roles`. Artifact bytes are in the
:class:`fleet.store.blobs.BlobStore` under ``data_dir/blobs``, not in the database.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from edgeops.errors import ConfigError
from fleet.store._access import SettingRows, TokenRows
from fleet.store._aggregates import AggregateReads
from fleet.store._aliases import AliasRecords
from fleet.store._base import Dialect, SqlBase, StoreConflict
from fleet.store._captures import CaptureRecords
from fleet.store._deployments import DeploymentRows
from fleet.store._devices import DeviceRows
from fleet.store._drift_alerts import DriftAlertRecords
from fleet.store._repository import RepositoryRows
from fleet.store._telemetry import TelemetryRows
from fleet.store.blobs import BlobStore
from fleet.store.schema import MIGRATIONS

__all__ = ["Dialect", "SqlStore", "StoreConflict"]


class SqlStore(DeviceRows, TelemetryRows, RepositoryRows, DeploymentRows, TokenRows, SettingRows,
               AliasRecords, AggregateReads, CaptureRecords, DriftAlertRecords, SqlBase):
    """The :class:`fleet.store.Store` implementation shared by both backends."""

    def __init__(self, conn: Any, data_dir: Path | None) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.data_dir = data_dir
        self.blobs = BlobStore(data_dir / "blobs") if data_dir is not None else None
        self.migrate()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _migration_lock(self, cur: Any) -> None:
        """Serialise concurrent migrators (several workers starting at once)."""

    def migrate(self) -> int:
        with self._tx() as cur:
            self._migration_lock(cur)
            self._exec(cur, "CREATE TABLE IF NOT EXISTS schema_migrations "
                            f"(version INTEGER PRIMARY KEY, applied_at {self.dialect.real} NOT NULL)")
            self._exec(cur, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            current = int(cur.fetchone()[0])
            known = MIGRATIONS[-1][0]
            if current > known:
                raise ConfigError(f"the fleet database is at schema version {current}, newer than "
                                  f"this edgeops understands ({known})",
                                  hint="upgrade edgeops before pointing it at this database")
            for version, template in MIGRATIONS:
                if version <= current:
                    continue
                sql = template.format(blob=self.dialect.blob, real=self.dialect.real,
                                      serial_pk=self.dialect.serial_pk)
                for stmt in (s.strip() for s in sql.split(";")):
                    if stmt:
                        self._exec(cur, stmt)
                self._exec(cur, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                           (version, time.time()))
            return known

    def schema_version(self) -> int:
        with self._tx() as cur:
            self._exec(cur, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(cur.fetchone()[0])

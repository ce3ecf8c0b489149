"""The store's logic, written once in portable SQL; backends supply a connection and a dialect.

Every public method is one short transaction under a lock (the API's thread pool, the MQTT
worker and the rollout loop share one store). SQL uses ``?`` placeholders and never a literal
``?`` or ``%``; the PostgreSQL backend rewrites placeholders for psycopg.
"""

# ruff: noqa: S608 - SQL text is assembled only from constant fragments and "?" placeholders;
# every value is bound as a parameter.
from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.errors import ConfigError
from edgeops.protocol import StateReport
from fleet.states import apply_report
from fleet.store._aggregates import AggregateReads
from fleet.store._aliases import AliasRecords
from fleet.store._captures import CaptureRecords
from fleet.store.models import (
    Blessing,
    BundleRecord,
    Deployment,
    DeploymentDevice,
    Device,
    DeviceFilter,
    Page,
    TelemetryRow,
    TokenRecord,
)
from fleet.store.schema import MIGRATIONS

__all__ = ["Dialect", "SqlStore", "StoreConflict"]


class StoreConflict(ConfigError):
    """A write would contradict what is stored (same key, different content)."""

    default_hint = "pick a new name/version; published content is immutable"


@dataclass(frozen=True)
class Dialect:
    name: str
    blob: str
    real: str
    serial_pk: str
    for_update: str


_DEVICE_COLS = ("id, device_class, target, tags, agent_version, installed, active, online, "
                "status_ts, last_seen, enrolled_at, last_state_seq")
_DEP_COLS = ("id, bundle_name, bundle_version, selector, strategy, status, phase_index, "
             "phase_started_at, created_at, updated_at, reason, created_by")
_DD_COLS = ("deployment_id, device_id, wave, state, target, updated_at, notified_at, reason, "
            "previous, command")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


class SqlStore(AggregateReads, AliasRecords, CaptureRecords):
    """The :class:`fleet.store.Store` implementation shared by both backends (the aggregate
    reads for the console live in :mod:`fleet.store._aggregates`, aliases in
    :mod:`fleet.store._aliases`)."""

    dialect: Dialect

    def __init__(self, conn: Any, data_dir: Path | None) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.data_dir = data_dir
        self.migrate()

    # -- plumbing --------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        raise NotImplementedError

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def _blob(self, v: Any) -> bytes | None:
        return bytes(v) if v is not None else None

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

    # -- devices ---------------------------------------------------------------------------
    def _device(self, r: Sequence[Any]) -> Device:
        return Device(id=r[0], device_class=r[1], target=r[2], tags=json.loads(r[3]),
                      agent_version=r[4], installed=json.loads(r[5]),
                      active=json.loads(r[6]) if r[6] else None, online=bool(r[7]),
                      status_ts=float(r[8]), last_seen=_num(r[9]), enrolled_at=float(r[10]),
                      last_state_seq=int(r[11]))

    def upsert_device(self, device: Device) -> None:
        """Enrol or re-enrol: identity fields are replaced, runtime fields kept."""
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO devices (id, device_class, target, tags, agent_version, "
                            "enrolled_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                            "device_class = excluded.device_class, target = excluded.target, "
                            "tags = excluded.tags",
                       (device.id, device.device_class, device.target,
                        json.dumps(device.tags, sort_keys=True), device.agent_version,
                        device.enrolled_at or time.time()))
            self._exec(cur, "DELETE FROM device_tags WHERE device_id = ?", (device.id,))
            for k, v in sorted(device.tags.items()):
                self._exec(cur, "INSERT INTO device_tags (device_id, key, value) VALUES (?, ?, ?)",
                           (device.id, k, v))

    def get_device(self, device_id: str) -> Device | None:
        with self._tx() as cur:
            self._exec(cur, f"SELECT {_DEVICE_COLS} FROM devices WHERE id = ?", (device_id,))
            r = cur.fetchone()
            return self._device(r) if r else None

    def _where(self, f: DeviceFilter) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if f.device_class is not None:
            clauses.append("device_class = ?")
            params.append(f.device_class)
        if f.target is not None:
            clauses.append("target = ?")
            params.append(f.target)
        for k, v in sorted(f.tags.items()):
            clauses.append("EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = devices.id "
                           "AND t.key = ? AND t.value = ?)")
            params += [k, v]
        if f.version is not None:
            if "@" in f.version:
                name, _, ver = f.version.partition("@")
                clauses.append("active_name = ? AND active_version = ?")
                params += [name, ver]
            else:
                clauses.append("active_version = ?")
                params.append(f.version)
        if f.online is not None:
            clauses.append("online = ?")
            params.append(1 if f.online else 0)
        if f.search:
            pattern = "%" + f.search.lower().replace("\\", "").replace("%", "").replace("_", "") + "%"
            clauses.append("(LOWER(id) LIKE ? OR EXISTS (SELECT 1 FROM device_tags t WHERE "
                           "t.device_id = devices.id AND LOWER(t.value) LIKE ?))")
            params += [pattern, pattern]
        if f.ids is not None:
            if not f.ids:
                clauses.append("1 = 0")
            else:
                clauses.append(f"id IN ({', '.join('?' for _ in f.ids)})")
                params += list(f.ids)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list_devices(self, f: DeviceFilter | None = None, limit: int = 100,
                     cursor: str | None = None) -> Page:
        """Keyset pagination by device id: ``cursor`` is the last id of the previous page."""
        f = f or DeviceFilter()
        limit = max(1, min(limit, 1000))
        where, params = self._where(f)
        with self._tx() as cur:
            self._exec(cur, f"SELECT COUNT(*) FROM devices{where}", params)
            total = int(cur.fetchone()[0])
            page_where = where + (" AND " if where else " WHERE ") + "id > ?" if cursor else where
            page_params = [*params, cursor] if cursor else params
            self._exec(cur, f"SELECT {_DEVICE_COLS} FROM devices{page_where} ORDER BY id LIMIT ?",
                       [*page_params, limit + 1])
            rows = [self._device(r) for r in cur.fetchall()]
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, total, rows[-1].id if more and rows else None)

    def select_devices(self, f: DeviceFilter) -> list[Device]:
        where, params = self._where(f)
        with self._tx() as cur:
            self._exec(cur, f"SELECT {_DEVICE_COLS} FROM devices{where} ORDER BY id", params)
            return [self._device(r) for r in cur.fetchall()]

    def set_status(self, device_id: str, online: bool, ts: float, agent_version: str = ""
                   ) -> bool:
        """Apply a retained status / Last Will; False for unknown devices or stale messages."""
        with self._tx() as cur:
            self._exec(cur, "UPDATE devices SET online = ?, status_ts = ?, agent_version = "
                            "CASE WHEN ? = '' THEN agent_version ELSE ? END, last_seen = CASE WHEN "
                            "? = 1 THEN ? ELSE last_seen END WHERE id = ? AND status_ts <= ?",
                       (1 if online else 0, ts, agent_version, agent_version, 1 if online else 0,
                        ts, device_id, ts))
            return bool(cur.rowcount == 1)

    def mark_seen(self, seen: Mapping[str, float]) -> None:
        with self._tx() as cur:
            for device_id, ts in seen.items():
                self._exec(cur, "UPDATE devices SET last_seen = ? WHERE id = ? AND "
                                "(last_seen IS NULL OR last_seen < ?)", (ts, device_id, ts))

    def record_state(self, report: StateReport) -> bool:
        """Persist a state report; False (nothing changed) for unknown devices and stale seq."""
        with self._tx() as cur:
            self._exec(cur, f"SELECT last_state_seq FROM devices WHERE id = ?"
                            f"{self.dialect.for_update}", (report.device_id,))
            r = cur.fetchone()
            if r is None or report.seq <= int(r[0]):
                return False
            active = report.active
            self._exec(cur, "UPDATE devices SET last_state_seq = ?, last_seen = ?, installed = ?, "
                            "active = ?, active_name = ?, active_version = ? WHERE id = ?",
                       (report.seq, report.ts, json.dumps(report.slots, sort_keys=True),
                        json.dumps(active, sort_keys=True) if active else None,
                        str(active.get("name")) if active and active.get("name") else None,
                        str(active.get("version")) if active and active.get("version") else None,
                        report.device_id))
            if report.deployment_id and report.phase is not None:
                self._exec(cur, "SELECT state FROM deployment_devices WHERE deployment_id = ? AND "
                                "device_id = ?", (report.deployment_id, report.device_id))
                row = cur.fetchone()
                new = apply_report(row[0], report.phase) if row else None
                if new is not None:
                    self._exec(cur, "UPDATE deployment_devices SET state = ?, reason = ?, "
                                    "updated_at = ? WHERE deployment_id = ? AND device_id = ?",
                               (new, report.reason, report.ts, report.deployment_id,
                                report.device_id))
            return True

    # -- telemetry -------------------------------------------------------------------------
    def _telemetry_tuple(self, r: TelemetryRow) -> tuple[Any, ...]:
        d = r.data
        return (r.device_id, r.ts, r.kind, r.seq, r.deployment_id,
                int(d["count"]) if isinstance(d.get("count"), int) else None,
                int(d["errors"]) if isinstance(d.get("errors"), int) else None,
                _num(d.get("p95_ms")), json.dumps(d, sort_keys=True, default=str))

    def insert_telemetry(self, rows: Sequence[TelemetryRow]) -> int:
        """Batched insert in one transaction; returns how many rows were persisted."""
        if not rows:
            return 0
        with self._tx() as cur:
            cur.executemany(self._sql(
                "INSERT INTO telemetry (device_id, ts, kind, seq, deployment_id, n_count, "
                "n_errors, p95_ms, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                [self._telemetry_tuple(r) for r in rows])
        return len(rows)

    def insert_telemetry_once(self, rows: Sequence[TelemetryRow]) -> int:
        """Like :meth:`insert_telemetry`, but each (device, batch seq) is stored only once.

        Agents re-send a batch until a manager acknowledges it, so the same batch can reach
        two workers or a restarted one; whichever commits its key first stores the rows, the
        others drop theirs (on PostgreSQL the second insert of a key waits for the first
        transaction, then does nothing). Returns how many rows were persisted.
        """
        if not rows:
            return 0
        with self._tx() as cur:
            fresh = self._claim_batches(cur, rows)
            kept = [r for r in rows if (r.device_id, r.seq) in fresh]
            self._write_telemetry(cur, kept)
        return len(kept)

    def _claim_batches(self, cur: Any, rows: Sequence[TelemetryRow]) -> set[tuple[str, int]]:
        """Record the rows' (device, seq) keys; returns those that were new."""
        keys = sorted({(r.device_id, int(r.seq)) for r in rows})
        fresh: set[tuple[str, int]] = set()
        for i in range(0, len(keys), 400):          # SQLite: at most 999 parameters
            part = keys[i : i + 400]
            self._exec(cur, "INSERT INTO telemetry_batches (device_id, seq) VALUES "
                            + ", ".join("(?, ?)" for _ in part)
                            + " ON CONFLICT DO NOTHING RETURNING device_id, seq",
                       tuple(v for k in part for v in k))
            fresh.update((str(d), int(q)) for d, q in cur.fetchall())
        return fresh

    def _write_telemetry(self, cur: Any, rows: Sequence[TelemetryRow]) -> None:
        if rows:
            cur.executemany(self._sql(
                "INSERT INTO telemetry (device_id, ts, kind, seq, deployment_id, n_count, "
                "n_errors, p95_ms, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                [self._telemetry_tuple(r) for r in rows])

    def query_telemetry(self, device_id: str, kind: str | None = None,
                        since: float | None = None, until: float | None = None,
                        limit: int = 1000) -> list[TelemetryRow]:
        sql = "SELECT device_id, ts, kind, seq, deployment_id, data FROM telemetry WHERE device_id = ?"
        params: list[Any] = [device_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        if since is not None:
            sql += " AND ts >= ?"
            params.append(since)
        if until is not None:
            sql += " AND ts < ?"
            params.append(until)
        sql += " ORDER BY ts DESC, id DESC LIMIT ?"
        params.append(max(1, min(limit, 10_000)))
        with self._tx() as cur:
            self._exec(cur, sql, params)
            return [TelemetryRow(r[0], float(r[1]), r[2], json.loads(r[5]), int(r[3]), r[4])
                    for r in cur.fetchall()]

    def count_telemetry(self, device_id: str | None = None) -> int:
        with self._tx() as cur:
            if device_id is None:
                self._exec(cur, "SELECT COUNT(*) FROM telemetry")
            else:
                self._exec(cur, "SELECT COUNT(*) FROM telemetry WHERE device_id = ?", (device_id,))
            return int(cur.fetchone()[0])

    def _aggregate(self, join: str, where: str, params: Sequence[Any]) -> dict[str, Any]:
        with self._tx() as cur:
            self._exec(cur, "SELECT COUNT(*), COUNT(DISTINCT telemetry.device_id), "
                            "SUM(n_count), SUM(n_errors), MAX(p95_ms), AVG(p95_ms) "
                            f"FROM telemetry{join} WHERE kind = 'inference'{where}", params)
            n, devices, count, errors, p95_max, p95_avg = cur.fetchone()
            self._exec(cur, f"SELECT COUNT(*) FROM telemetry{join} WHERE 1 = 1{where}", params)
            records = int(cur.fetchone()[0])
        count = int(count or 0)
        errors = int(errors or 0)
        return {"records": records, "inference_records": int(n), "devices": int(devices),
                "inferences": count, "errors": errors,
                "error_rate": (errors / count) if count else None,
                "p95_ms_max": _num(p95_max), "p95_ms_mean": _num(p95_avg)}

    def aggregate_telemetry(self, device_ids: Sequence[str] | None = None,
                            since: float | None = None) -> dict[str, Any]:
        """Inference totals, error rate and p95 latency over a group of devices (None = all)."""
        where, params = "", list[Any]()
        if device_ids is not None:
            if not device_ids:
                return self._aggregate("", " AND 1 = 0", [])
            where += f" AND telemetry.device_id IN ({', '.join('?' for _ in device_ids)})"
            params += list(device_ids)
        if since is not None:
            where += " AND telemetry.ts >= ?"
            params.append(since)
        return self._aggregate("", where, params)

    def aggregate_deployment(self, deployment_id: str, since: float | None = None,
                             states: Sequence[str] | None = None) -> dict[str, Any]:
        """Telemetry of the devices in a deployment (optionally only those in ``states``)."""
        join = (" JOIN deployment_devices dd ON dd.device_id = telemetry.device_id "
                "AND dd.deployment_id = ?")
        where, params = "", list[Any]([deployment_id])
        if states:
            where += f" AND dd.state IN ({', '.join('?' for _ in states)})"
            params += list(states)
        if since is not None:
            where += " AND telemetry.ts >= ?"
            params.append(since)
        # the join parameter comes first in the SQL text
        return self._aggregate(join, where, params)

    # -- bundles and blobs -----------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        if self.data_dir is None:
            raise ConfigError("this store has no data directory for artifacts",
                              hint="open the store with a data_dir (fleet serve --data DIR)")
        return self.data_dir / "blobs" / sha256[:2] / sha256

    def add_blob(self, sha256: str, size: int) -> None:
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO blobs (sha256, size, added_at) VALUES (?, ?, ?) "
                            "ON CONFLICT (sha256) DO NOTHING", (sha256, size, time.time()))

    def artifact_path(self, sha256: str) -> Path | None:
        """Where the blob with this digest lives, if the store knows it and it is on disk."""
        if self.data_dir is None or len(sha256) != 64:
            return None
        with self._tx() as cur:
            self._exec(cur, "SELECT size FROM blobs WHERE sha256 = ?", (sha256,))
            if cur.fetchone() is None:
                return None
        p = self.blob_path(sha256)
        return p if p.is_file() else None

    def put_bundle(self, record: BundleRecord) -> bool:
        """Store a bundle; False if this exact one exists; StoreConflict if it differs."""
        with self._tx() as cur:
            self._exec(cur, "SELECT manifest FROM bundles WHERE name = ? AND version = ?",
                       (record.name, record.version))
            r = cur.fetchone()
            if r is not None:
                if self._blob(r[0]) == record.manifest:
                    return False
                raise StoreConflict(f"bundle {record.name}@{record.version} is already published "
                                    "with different content")
            self._exec(cur, "INSERT INTO bundles (name, version, manifest, signatures, "
                            "published_at) VALUES (?, ?, ?, ?, ?)",
                       (record.name, record.version, record.manifest, record.signatures,
                        record.published_at))
            for path, (sha, size) in sorted(record.files.items()):
                self._exec(cur, "INSERT INTO bundle_files (name, version, path, sha256, size) "
                                "VALUES (?, ?, ?, ?, ?)", (record.name, record.version, path, sha,
                                                           size))
            return True

    def _bundle(self, cur: Any, r: Sequence[Any]) -> BundleRecord:
        self._exec(cur, "SELECT path, sha256, size FROM bundle_files WHERE name = ? AND "
                        "version = ? ORDER BY path", (r[0], r[1]))
        files = {p: (s, int(n)) for p, s, n in cur.fetchall()}
        return BundleRecord(r[0], r[1], self._blob(r[2]) or b"", self._blob(r[3]) or b"",
                            float(r[4]), files)

    def get_bundle(self, name: str, version: str) -> BundleRecord | None:
        with self._tx() as cur:
            self._exec(cur, "SELECT name, version, manifest, signatures, published_at FROM "
                            "bundles WHERE name = ? AND version = ?", (name, version))
            r = cur.fetchone()
            return self._bundle(cur, r) if r else None

    def list_bundles(self, name: str | None = None) -> list[BundleRecord]:
        with self._tx() as cur:
            if name is None:
                self._exec(cur, "SELECT name, version, manifest, signatures, published_at FROM "
                                "bundles ORDER BY name, published_at")
            else:
                self._exec(cur, "SELECT name, version, manifest, signatures, published_at FROM "
                                "bundles WHERE name = ? ORDER BY published_at", (name,))
            rows = cur.fetchall()
            return [self._bundle(cur, r) for r in rows]

    # -- deployments -----------------------------------------------------------------------
    def _deployment(self, r: Sequence[Any]) -> Deployment:
        return Deployment(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], int(r[6]), float(r[7]),
                          float(r[8]), float(r[9]), r[10], r[11])

    def _dd(self, r: Sequence[Any]) -> DeploymentDevice:
        return DeploymentDevice(r[0], r[1], int(r[2]), r[3], r[4], float(r[5]), _num(r[6]), r[7],
                                r[8], self._blob(r[9]))

    def create_deployment(self, dep: Deployment, devices: Sequence[DeploymentDevice]) -> None:
        """The deployment and every selected device's row, in one transaction."""
        with self._tx() as cur:
            self._exec(cur, f"INSERT INTO deployments ({_DEP_COLS}) VALUES "
                            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (dep.id, dep.bundle_name, dep.bundle_version, dep.selector,
                        json.dumps(dep.strategy, sort_keys=True), dep.status, dep.phase_index,
                        dep.phase_started_at, dep.created_at, dep.updated_at, dep.reason,
                        dep.created_by))
            cur.executemany(self._sql(f"INSERT INTO deployment_devices ({_DD_COLS}) VALUES "
                                      "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                            [(d.deployment_id, d.device_id, d.wave, d.state, d.target,
                              d.updated_at, d.notified_at, d.reason, d.previous, d.command)
                             for d in devices])

    def get_deployment(self, deployment_id: str) -> Deployment | None:
        with self._tx() as cur:
            self._exec(cur, f"SELECT {_DEP_COLS} FROM deployments WHERE id = ?", (deployment_id,))
            r = cur.fetchone()
            return self._deployment(r) if r else None

    def list_deployments(self, status: Sequence[str] | None = None, limit: int = 100
                         ) -> list[Deployment]:
        sql = f"SELECT {_DEP_COLS} FROM deployments"
        params: list[Any] = []
        if status:
            sql += f" WHERE status IN ({', '.join('?' for _ in status)})"
            params += list(status)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(max(1, min(limit, 1000)))
        with self._tx() as cur:
            self._exec(cur, sql, params)
            return [self._deployment(r) for r in cur.fetchall()]

    def update_deployment(self, deployment_id: str, *, now: float, status: str | None = None,
                          expect_status: Sequence[str] | None = None,
                          phase_index: int | None = None, phase_started_at: float | None = None,
                          reason: str | None = None) -> bool:
        """Change a deployment; with ``expect_status`` only if it is currently in one of them."""
        sets: list[str] = ["updated_at = ?"]
        params: list[Any] = [now]
        for col, val in (("status", status), ("phase_index", phase_index),
                         ("phase_started_at", phase_started_at), ("reason", reason)):
            if val is not None:
                sets.append(f"{col} = ?")
                params.append(val)
        sql = f"UPDATE deployments SET {', '.join(sets)} WHERE id = ?"
        params.append(deployment_id)
        if expect_status:
            sql += f" AND status IN ({', '.join('?' for _ in expect_status)})"
            params += list(expect_status)
        with self._tx() as cur:
            self._exec(cur, sql, params)
            return bool(cur.rowcount == 1)

    def deployment_devices(self, deployment_id: str, states: Sequence[str] | None = None
                           ) -> list[DeploymentDevice]:
        sql = f"SELECT {_DD_COLS} FROM deployment_devices WHERE deployment_id = ?"
        params: list[Any] = [deployment_id]
        if states:
            sql += f" AND state IN ({', '.join('?' for _ in states)})"
            params += list(states)
        with self._tx() as cur:
            self._exec(cur, sql + " ORDER BY wave, device_id", params)
            return [self._dd(r) for r in cur.fetchall()]

    def device_deployments(self, device_id: str, statuses: Sequence[str] = ("running",)
                           ) -> list[DeploymentDevice]:
        """A device's rows in deployments whose status is one of ``statuses``."""
        cols = ", ".join(f"dd.{c.strip()}" for c in _DD_COLS.split(","))
        with self._tx() as cur:
            self._exec(cur, f"SELECT {cols} FROM deployment_devices dd JOIN deployments d ON "
                            "d.id = dd.deployment_id WHERE dd.device_id = ? AND d.status IN "
                            f"({', '.join('?' for _ in statuses)}) ORDER BY d.created_at",
                       [device_id, *statuses])
            return [self._dd(r) for r in cur.fetchall()]

    def deployment_counts(self, deployment_id: str) -> dict[str, int]:
        """Devices of a deployment per state (only states that have devices), by state name.

        Counted in the database: the primary key (deployment_id, device_id) bounds the scan to
        this deployment's rows and none is sent to Python.
        """
        with self._tx() as cur:
            self._exec(cur, "SELECT state, COUNT(*) FROM deployment_devices WHERE "
                            "deployment_id = ? GROUP BY state ORDER BY state", (deployment_id,))
            return {s: int(n) for s, n in cur.fetchall()}

    def transition_device(self, deployment_id: str, device_id: str, *, state: str, now: float,
                          expect: Sequence[str], reason: str | None = None,
                          command: bytes | None = None, notified: bool = False) -> bool:
        """Compare-and-set a device's deployment state: only from one of ``expect``.

        This is what makes a restarted or concurrent manager unable to notify or time out a
        device twice: the second attempt finds the state already moved and changes nothing.
        """
        sets = ["state = ?", "updated_at = ?", "reason = ?"]
        params: list[Any] = [state, now, reason]
        if command is not None:
            sets.append("command = ?")
            params.append(command)
        if notified:
            sets.append("notified_at = ?")
            params.append(now)
        params += [deployment_id, device_id, *expect]
        with self._tx() as cur:
            self._exec(cur, f"UPDATE deployment_devices SET {', '.join(sets)} WHERE "
                            "deployment_id = ? AND device_id = ? AND state IN "
                            f"({', '.join('?' for _ in expect)})", params)
            return bool(cur.rowcount == 1)

    def notify_devices(self, deployment_id: str, commands: Mapping[str, bytes], now: float
                       ) -> list[str]:
        """Batch of ``pending → notified`` compare-and-sets in one transaction.

        Returns the devices whose row moved (and whose command was stored); the others were
        already notified by someone else and must not be sent anything.
        """
        moved = []
        with self._tx() as cur:
            for device_id, command in commands.items():
                self._exec(cur, "UPDATE deployment_devices SET state = 'notified', updated_at = ?,"
                                " notified_at = ?, reason = NULL, command = ? WHERE "
                                "deployment_id = ? AND device_id = ? AND state = 'pending'",
                           (now, now, command, deployment_id, device_id))
                if cur.rowcount == 1:
                    moved.append(device_id)
        return moved

    def waiting_offline(self, deployment_id: str) -> int:
        """Notified devices of a deployment that are offline (pending, not failed)."""
        with self._tx() as cur:
            self._exec(cur, "SELECT COUNT(*) FROM deployment_devices dd JOIN devices d ON "
                            "d.id = dd.device_id WHERE dd.deployment_id = ? AND dd.state = "
                            "'notified' AND d.online = 0", (deployment_id,))
            return int(cur.fetchone()[0])

    def set_device_command(self, deployment_id: str, device_id: str, command: bytes) -> None:
        with self._tx() as cur:
            self._exec(cur, "UPDATE deployment_devices SET command = ? WHERE deployment_id = ? "
                            "AND device_id = ?", (command, deployment_id, device_id))

    # -- tokens ----------------------------------------------------------------------------
    def add_token(self, token_hash: str, role: str, name: str, now: float) -> TokenRecord:
        rec = TokenRecord(token_hash[:16], role, name, now)
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO tokens (token_hash, token_id, role, name, created_at) "
                            "VALUES (?, ?, ?, ?, ?)", (token_hash, rec.token_id, role, name, now))
        return rec

    def get_token(self, token_hash: str) -> TokenRecord | None:
        with self._tx() as cur:
            self._exec(cur, "SELECT token_id, role, name, created_at, revoked FROM tokens WHERE "
                            "token_hash = ?", (token_hash,))
            r = cur.fetchone()
            return TokenRecord(r[0], r[1], r[2], float(r[3]), bool(r[4])) if r else None

    def list_tokens(self) -> list[TokenRecord]:
        with self._tx() as cur:
            self._exec(cur, "SELECT token_id, role, name, created_at, revoked FROM tokens "
                            "ORDER BY created_at")
            return [TokenRecord(r[0], r[1], r[2], float(r[3]), bool(r[4]))
                    for r in cur.fetchall()]

    def revoke_token(self, token_id: str) -> bool:
        with self._tx() as cur:
            self._exec(cur, "UPDATE tokens SET revoked = 1 WHERE token_id = ?", (token_id,))
            return bool(cur.rowcount == 1)

    # -- blessings -------------------------------------------------------------------------
    def put_blessing(self, b: Blessing) -> None:
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO blessings (bundle_name, bundle_version, hardware, passed, "
                            "report, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                            "(bundle_name, bundle_version, hardware) DO UPDATE SET passed = "
                            "excluded.passed, report = excluded.report, created_at = "
                            "excluded.created_at",
                       (b.bundle_name, b.bundle_version, b.hardware, 1 if b.passed else 0,
                        json.dumps(b.report, sort_keys=True, default=str), b.created_at))

    def list_blessings(self, name: str, version: str) -> list[Blessing]:
        with self._tx() as cur:
            self._exec(cur, "SELECT bundle_name, bundle_version, hardware, passed, report, "
                            "created_at FROM blessings WHERE bundle_name = ? AND bundle_version = ? "
                            "ORDER BY hardware", (name, version))
            return [Blessing(r[0], r[1], r[2], bool(r[3]), json.loads(r[4]), float(r[5]))
                    for r in cur.fetchall()]

    def has_blessing(self, name: str, version: str, hardware: str) -> bool:
        return any(b.passed and b.hardware == hardware for b in self.list_blessings(name, version))

    # -- TUF metadata ----------------------------------------------------------------------
    def put_metadata(self, items: Sequence[tuple[str, str, int, bytes]]) -> None:
        """(filename, role, version, bytes) rows, all or nothing; same filename is replaced."""
        with self._tx() as cur:
            for filename, role, version, data in items:
                self._exec(cur, "INSERT INTO tuf_metadata (filename, role, version, data, "
                                "created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (filename) DO "
                                "UPDATE SET role = excluded.role, version = excluded.version, "
                                "data = excluded.data, created_at = excluded.created_at",
                           (filename, role, version, data, time.time()))

    def get_metadata(self, filename: str) -> bytes | None:
        with self._tx() as cur:
            self._exec(cur, "SELECT data FROM tuf_metadata WHERE filename = ?", (filename,))
            r = cur.fetchone()
            return self._blob(r[0]) if r else None

    def latest_metadata(self, role: str) -> tuple[int, bytes] | None:
        with self._tx() as cur:
            self._exec(cur, "SELECT version, data FROM tuf_metadata WHERE role = ? ORDER BY "
                            "version DESC LIMIT 1", (role,))
            r = cur.fetchone()
            return (int(r[0]), self._blob(r[1]) or b"") if r else None

    # -- per-device command sequence, settings ---------------------------------------------
    def next_command_seq(self, device_id: str) -> int:
        """Atomically allocate the next command seq for a device (persisted, never reused)."""
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO command_seq (device_id, seq) VALUES (?, 1) ON CONFLICT "
                            "(device_id) DO UPDATE SET seq = command_seq.seq + 1", (device_id,))
            self._exec(cur, "SELECT seq FROM command_seq WHERE device_id = ?", (device_id,))
            return int(cur.fetchone()[0])

    def next_command_seqs(self, device_ids: Sequence[str]) -> dict[str, int]:
        """:meth:`next_command_seq` for many devices in one transaction."""
        out = {}
        with self._tx() as cur:
            for device_id in device_ids:
                self._exec(cur, "INSERT INTO command_seq (device_id, seq) VALUES (?, 1) ON "
                                "CONFLICT (device_id) DO UPDATE SET seq = command_seq.seq + 1",
                           (device_id,))
                self._exec(cur, "SELECT seq FROM command_seq WHERE device_id = ?", (device_id,))
                out[device_id] = int(cur.fetchone()[0])
        return out

    def get_setting(self, key: str) -> str | None:
        with self._tx() as cur:
            self._exec(cur, "SELECT value FROM settings WHERE key = ?", (key,))
            r = cur.fetchone()
            return str(r[0]) if r else None

    def set_setting(self, key: str, value: str) -> None:
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) "
                            "DO UPDATE SET value = excluded.value", (key, value))

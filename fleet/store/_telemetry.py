"""Telemetry in SQL: batched inserts (exactly once per device batch on request), reads,
aggregates over devices or a deployment. The PostgreSQL backend overrides the writes with COPY.
"""

# ruff: noqa: S608 - SQL text is assembled only from constant fragments and "?" placeholders;
# every value is bound as a parameter.
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fleet.store._base import SqlBase, num_or_none
from fleet.store.models import TelemetryRow

__all__ = ["TelemetryRows"]


class TelemetryRows(SqlBase):
    """The :class:`fleet.store.roles.TelemetryStore` role."""

    def _telemetry_tuple(self, r: TelemetryRow) -> tuple[Any, ...]:
        d = r.data
        return (r.device_id, r.ts, r.kind, r.seq, r.deployment_id,
                int(d["count"]) if isinstance(d.get("count"), int) else None,
                int(d["errors"]) if isinstance(d.get("errors"), int) else None,
                num_or_none(d.get("p95_ms")), json.dumps(d, sort_keys=True, default=str))

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
                "p95_ms_max": num_or_none(p95_max), "p95_ms_mean": num_or_none(p95_avg)}

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

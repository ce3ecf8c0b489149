"""Grouped, bounded reads of the fleet store for the console and ``/metrics``.

Why: the console draws charts over 10,000 devices and ``/metrics`` sums every inference record;
counting in SQL (GROUP BY, ``LIMIT``, primary-key ranges) keeps both from loading rows into
Python. These are public :class:`fleet.store.Store` methods, written once in the same portable
``?`` SQL as :mod:`fleet.store._sql` (which mixes this class in), and they only read.
"""

# ruff: noqa: S608 - SQL text is assembled only from constant fragments and "?" placeholders;
# every value is bound as a parameter.
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from edgeops.errors import UsageError
from fleet.store._base import SqlBase
from fleet.store._deployments import deployment_device_from_row, deployment_from_row
from fleet.store.models import (
    Deployment,
    DeploymentDevice,
    OnlineCount,
    TagCount,
    TelemetryDigestRow,
    ValueCount,
)

__all__ = ["AggregateReads", "DeviceField"]

DeviceField = Literal["class", "target", "version"]

_FIELD_SQL: dict[str, tuple[str, str]] = {   # field → (value expression, WHERE)
    "class": ("device_class", ""),
    "target": ("target", ""),
    "version": ("active_name || '@' || active_version",
                " WHERE active_name IS NOT NULL AND active_version IS NOT NULL"),
}
_GROUP_SQL = {"class": "device_class", "target": "target",
              "version": "active_name, active_version"}


class AggregateReads(SqlBase):
    """The store's aggregate reads; the SQL store supplies the transaction plumbing."""

    # -- devices ---------------------------------------------------------------------------
    def device_online_counts(self, tag: str | None = None) -> list[OnlineCount]:
        """Devices per (class, online), or per (value of tag ``tag``, online) when given;
        devices without that tag count under ``""``. Ordered by the group's name."""
        if tag is None:
            rows = self._read("SELECT device_class, online, COUNT(*) FROM devices "
                              "GROUP BY device_class, online ORDER BY device_class, online")
        else:
            rows = self._read(
                "SELECT COALESCE(t.value, ''), d.online, COUNT(*) FROM devices d "
                "LEFT JOIN device_tags t ON t.device_id = d.id AND t.key = ? "
                "GROUP BY COALESCE(t.value, ''), d.online ORDER BY COALESCE(t.value, ''), "
                "d.online", (tag,))
        return [OnlineCount(str(k), bool(o), int(n)) for k, o, n in rows]

    def device_value_counts(self, field: DeviceField, limit: int) -> list[ValueCount]:
        """The ``limit`` most common values of a device field, most devices first."""
        if field not in _FIELD_SQL:
            raise UsageError(f"cannot count devices by {field!r}",
                             hint=f"use one of {', '.join(sorted(_FIELD_SQL))}")
        expr, where = _FIELD_SQL[field]
        rows = self._read(f"SELECT {expr}, COUNT(*) FROM devices{where} GROUP BY "
                          f"{_GROUP_SQL[field]} ORDER BY COUNT(*) DESC, {expr} LIMIT ?",
                          (max(1, limit),))
        return [ValueCount(str(v), int(n)) for v, n in rows]

    def deployed_versions(self, name: str, limit: int = 100) -> list[tuple[str, str, int]]:
        """(version, target, devices) of bundle ``name`` active on devices, most first.

        What ``edgeops publish`` makes deltas from (issue 20)."""
        rows = self._read("SELECT active_version, target, COUNT(*) FROM devices WHERE "
                          "active_name = ? AND active_version IS NOT NULL GROUP BY "
                          "active_version, target ORDER BY COUNT(*) DESC, active_version, "
                          "target LIMIT ?", (name, max(1, limit)))
        return [(str(v), str(t), int(n)) for v, t, n in rows]

    def deployment_deliveries(self, deployment_id: str,
                              since: float) -> list[tuple[str, float, str]]:
        """(device, ts, stored delivery record JSON) of a deployment's devices since ``since``,
        oldest first: the agents' ``delivery`` telemetry, read through the (device_id, ts)
        index."""
        return [(str(d), float(ts), str(data)) for d, ts, data in self._read(
            "SELECT device_id, ts, data FROM telemetry WHERE device_id IN (SELECT device_id FROM "
            "deployment_devices WHERE deployment_id = ?) AND ts >= ? AND kind = 'delivery' "
            "AND deployment_id = ? ORDER BY ts", (deployment_id, since, deployment_id))]

    def tag_value_counts(self, limit: int) -> list[TagCount]:
        """Devices per tag ``key=value``, by key then most devices first (``limit`` rows)."""
        rows = self._read("SELECT key, value, COUNT(*) FROM device_tags GROUP BY key, value "
                          "ORDER BY key, COUNT(*) DESC, value LIMIT ?", (max(1, limit),))
        return [TagCount(str(k), str(v), int(n)) for k, v, n in rows]

    # -- deployments -----------------------------------------------------------------------
    def deployment_wave_counts(self, deployment_id: str) -> dict[int, dict[str, int]]:
        """Per rollout wave: devices in each state (waves and states in order)."""
        out: dict[int, dict[str, int]] = {}
        for wave, state, n in self._read(
                "SELECT wave, state, COUNT(*) FROM deployment_devices WHERE deployment_id = ? "
                "GROUP BY wave, state ORDER BY wave, state", (deployment_id,)):
            out.setdefault(int(wave), {})[str(state)] = int(n)
        return out

    def deployment_devices_page(self, deployment_id: str, state: str | None, limit: int,
                                offset: int) -> tuple[int, list[DeploymentDevice]]:
        """``(total, rows)``: how many rows match, and ``limit`` of them from ``offset``
        (ordered by wave, device)."""
        where, params = " WHERE deployment_id = ?", [deployment_id]
        if state:
            where += " AND state = ?"
            params.append(state)
        total = int(self._read(f"SELECT COUNT(*) FROM deployment_devices{where}", params)[0][0])
        rows = self._read("SELECT deployment_id, device_id, wave, state, target, updated_at, "
                          "notified_at, reason, previous, command FROM deployment_devices"
                          f"{where} ORDER BY wave, device_id LIMIT ? OFFSET ?",
                          [*params, max(1, limit), max(0, offset)])
        return total, [deployment_device_from_row(r) for r in rows]

    def deployment_status_counts(self) -> dict[str, int]:
        """Deployments per status (only statuses that have one), by status name."""
        return {str(s): int(n) for s, n in self._read(
            "SELECT status, COUNT(*) FROM deployments GROUP BY status ORDER BY status")}

    def deployments_updated_since(self, since: float, statuses: Sequence[str],
                                  limit: int) -> list[Deployment]:
        """Deployments in one of ``statuses`` changed at or after ``since``, newest first."""
        if not statuses:
            return []
        rows = self._read(
            "SELECT id, bundle_name, bundle_version, selector, strategy, status, phase_index, "
            "phase_started_at, created_at, updated_at, reason, created_by FROM deployments "
            f"WHERE status IN ({', '.join('?' for _ in statuses)}) AND updated_at >= ? "
            "ORDER BY updated_at DESC, id LIMIT ?", [*statuses, since, max(1, limit)])
        return [deployment_from_row(r) for r in rows]

    # -- telemetry -------------------------------------------------------------------------
    def telemetry_max_id(self) -> int:
        """The highest telemetry id (ids only grow): rows ever inserted, from the primary key."""
        return int(self._read("SELECT COALESCE(MAX(id), 0) FROM telemetry")[0][0] or 0)

    def telemetry_digest_rows(self, after_id: int, kinds: Sequence[str], limit: int, *,
                              until_id: int | None = None,
                              data_for: Sequence[str] = ()) -> list[TelemetryDigestRow]:
        """Rows of ``kinds`` with ``after_id < id <= until_id``, oldest first, at most
        ``limit``; ``data`` only for rows whose kind is in ``data_for`` (else None)."""
        if not kinds:
            return []
        if data_for:
            data_sql = f"CASE WHEN kind IN ({', '.join('?' for _ in data_for)}) THEN data " \
                       "ELSE NULL END"
        else:
            data_sql = "NULL"
        sql = (f"SELECT id, device_id, ts, kind, n_count, n_errors, p95_ms, {data_sql} FROM "
               f"telemetry WHERE id > ? AND kind IN ({', '.join('?' for _ in kinds)})")
        params: list[Any] = [*data_for, after_id, *kinds]
        if until_id is not None:
            sql += " AND id <= ?"
            params.append(until_id)
        rows = self._read(sql + " ORDER BY id LIMIT ?", [*params, max(1, limit)])
        return [TelemetryDigestRow(int(r[0]), str(r[1]), float(r[2]), str(r[3]),
                                   None if r[4] is None else int(r[4]),
                                   None if r[5] is None else int(r[5]),
                                   None if r[6] is None else float(r[6]),
                                   None if r[7] is None else str(r[7])) for r in rows]

"""The device registry in SQL: enrolment, status (retained / Last Will), last state report.
"""

# ruff: noqa: S608 - SQL text is assembled only from constant fragments and "?" placeholders;
# every value is bound as a parameter.
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from edgeops.protocol import StateReport
from fleet.states import apply_report
from fleet.store._base import SqlBase, num_or_none
from fleet.store.models import Device, DeviceFilter, Page

__all__ = ["DeviceRows"]


_DEVICE_COLS = ("id, device_class, target, tags, agent_version, installed, active, online, "
                "status_ts, last_seen, enrolled_at, last_state_seq")


class DeviceRows(SqlBase):
    """The :class:`fleet.store.roles.DeviceStore` role."""

    def _device(self, r: Sequence[Any]) -> Device:
        return Device(id=r[0], device_class=r[1], target=r[2], tags=json.loads(r[3]),
                      agent_version=r[4], installed=json.loads(r[5]),
                      active=json.loads(r[6]) if r[6] else None, online=bool(r[7]),
                      status_ts=float(r[8]), last_seen=num_or_none(r[9]), enrolled_at=float(r[10]),
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

    def record_state(self, report: StateReport, received_at: float | None = None) -> bool:
        """Persist a state report; False (nothing changed) for unknown devices and stale seq.

        ``received_at`` (the manager's clock) dates the deployment row's change, which bake
        times are counted from; without it the report's own ``ts`` does, and a device whose
        clock runs ahead would hold its rollout's next phase back by that much."""
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
                               (new, report.reason,
                                report.ts if received_at is None else received_at,
                                report.deployment_id, report.device_id))
            return True

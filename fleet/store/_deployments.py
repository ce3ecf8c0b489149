"""Deployments in SQL: the deployment rows, each selected device's row (compare-and-set
transitions, so a restarted or second manager cannot act twice), per-device command seqs.
"""

# ruff: noqa: S608 - SQL text is assembled only from constant fragments and "?" placeholders;
# every value is bound as a parameter.
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fleet.store._base import SqlBase, bytes_or_none, num_or_none
from fleet.store.models import Deployment, DeploymentDevice

__all__ = ["DeploymentRows", "deployment_device_from_row", "deployment_from_row"]


_DEP_COLS = ("id, bundle_name, bundle_version, selector, strategy, status, phase_index, "
             "phase_started_at, created_at, updated_at, reason, created_by")
_DD_COLS = ("deployment_id, device_id, wave, state, target, updated_at, notified_at, reason, "
            "previous, command")


def deployment_from_row(r: Sequence[Any]) -> Deployment:
    return Deployment(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], int(r[6]), float(r[7]),
                      float(r[8]), float(r[9]), r[10], r[11])


def deployment_device_from_row(r: Sequence[Any]) -> DeploymentDevice:
    return DeploymentDevice(r[0], r[1], int(r[2]), r[3], r[4], float(r[5]), num_or_none(r[6]),
                            r[7], r[8], bytes_or_none(r[9]))


class DeploymentRows(SqlBase):
    """The :class:`fleet.store.roles.DeploymentStore` and ``CommandSeqStore`` roles."""

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
            return deployment_from_row(r) if r else None

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
            return [deployment_from_row(r) for r in cur.fetchall()]

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
            return [deployment_device_from_row(r) for r in cur.fetchall()]

    def device_deployments(self, device_id: str, statuses: Sequence[str] = ("running",)
                           ) -> list[DeploymentDevice]:
        """A device's rows in deployments whose status is one of ``statuses``."""
        cols = ", ".join(f"dd.{c.strip()}" for c in _DD_COLS.split(","))
        with self._tx() as cur:
            self._exec(cur, f"SELECT {cols} FROM deployment_devices dd JOIN deployments d ON "
                            "d.id = dd.deployment_id WHERE dd.device_id = ? AND d.status IN "
                            f"({', '.join('?' for _ in statuses)}) ORDER BY d.created_at",
                       [device_id, *statuses])
            return [deployment_device_from_row(r) for r in cur.fetchall()]

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

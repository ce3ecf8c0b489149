"""Stored drift monitors, their webhooks, alarm state and history, and the webhook delivery log.

Why in the store: an alarm transition and the deliveries it causes are written in one
transaction, guarded by the stored state (``drift_alarms``), so a transition seen by two
manager processes, or twice by one, is announced once; and pending deliveries outlive a manager
restart. Written once in the same portable ``?`` SQL as the other role modules
(fleet/store/_base.py); :mod:`fleet.store._sql` composes it. Its role protocols are
:mod:`fleet.store.roles`' ``MonitorStore``, ``AlarmStore`` and ``WebhookDeliveryStore``.
"""

# ruff: noqa: S608 - SQL text is assembled only from constant fragments and "?" placeholders.
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeops.errors import UsageError
from fleet.errors import ConflictError
from fleet.store._base import SqlBase

__all__ = ["AlarmEvent", "AlarmState", "DeliveryAttempt", "DeliveryJob", "DeliveryRecord",
           "DriftAlertRecords", "MonitorRecord", "OutgoingEvent",
           "WebhookRecord"]

DELIVERY_STATES = ("pending", "delivered", "failed")


@dataclass(frozen=True)
class WebhookRecord:
    id: str
    url: str
    secret: str
    created_at: float


@dataclass(frozen=True)
class MonitorRecord:
    name: str
    cohort: str                          # a tag selector (fleet/selector.py)
    policy: dict[str, Any]               # MonitorPolicy fields
    retrain: bool
    created_at: float
    created_by: str | None = None
    webhooks: tuple[WebhookRecord, ...] = ()


@dataclass(frozen=True)
class AlarmState:
    """The latest verdict of one monitor for one bundle and side, and whether it is in alarm."""

    monitor: str
    bundle: str
    side: str                            # "data" | "prediction" | "concept"
    in_alarm: bool | None                # written as None: keep the stored state
    since: float                         # when in_alarm last changed
    status: str                          # the monitor's status at the last evaluation
    drifting_windows: int
    features: list[dict[str, Any]]       # the latest window's per-feature results
    evaluated_at: float


@dataclass(frozen=True)
class AlarmEvent:
    id: int
    event_id: str
    monitor: str
    bundle: str
    side: str
    in_alarm: bool
    at: float
    detail: dict[str, Any]


@dataclass(frozen=True)
class OutgoingEvent:
    """One CloudEvent body to deliver to every webhook of the monitor."""

    event_id: str
    event_type: str
    body: bytes


@dataclass(frozen=True)
class DeliveryAttempt:
    attempt: int
    at: float
    status_code: int | None
    error: str | None
    duration_ms: float


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    webhook_id: str
    url: str
    monitor: str
    event_id: str
    event_type: str
    state: str                          # pending | delivered | failed
    attempts: int
    next_at: float
    created_at: float
    updated_at: float
    log: tuple[DeliveryAttempt, ...] = field(default=())


@dataclass(frozen=True)
class DeliveryJob:
    """A claimed delivery: what the sender needs to make the next attempt."""

    id: int
    url: str
    secret: str
    body: bytes
    attempts: int                       # attempts made before this one


_DCOLS = ("d.id, d.webhook_id, w.url, d.monitor, d.event_id, d.event_type, d.state, d.attempts, "
          "d.next_at, d.created_at, d.updated_at")
_ACOLS = ("monitor, bundle, side, in_alarm, since, status, drifting_windows, features, "
          "evaluated_at")


def _alarm(r: Sequence[Any]) -> AlarmState:
    return AlarmState(r[0], r[1], r[2], bool(r[3]), float(r[4]), r[5], int(r[6]),
                      json.loads(r[7]), float(r[8]))


class DriftAlertRecords(SqlBase):
    """Monitors, alarms and webhook deliveries (the SQL store composes this role)."""

    # -- monitors --------------------------------------------------------------------------
    def add_monitor(self, monitor: MonitorRecord) -> None:
        with self._tx() as cur:
            self._exec(cur, "SELECT 1 FROM drift_monitors WHERE name = ?", (monitor.name,))
            if cur.fetchone():
                raise ConflictError(f"a drift monitor named {monitor.name!r} exists",
                                    hint="remove it first (edgeops fleet monitor rm) or pick "
                                         "another name")
            self._exec(cur, "INSERT INTO drift_monitors (name, cohort, policy, retrain, "
                            "created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
                       (monitor.name, monitor.cohort, json.dumps(monitor.policy, sort_keys=True),
                        int(monitor.retrain), monitor.created_at, monitor.created_by))
            for w in monitor.webhooks:
                self._exec(cur, "INSERT INTO drift_webhooks (id, monitor, url, secret, "
                                "created_at) VALUES (?, ?, ?, ?, ?)",
                           (w.id, monitor.name, w.url, w.secret, w.created_at))

    def _monitors(self, cur: Any, name: str | None) -> list[MonitorRecord]:
        where, params = (" WHERE name = ?", (name,)) if name is not None else ("", ())
        self._exec(cur, "SELECT name, cohort, policy, retrain, created_at, created_by "
                        f"FROM drift_monitors{where} ORDER BY name", params)
        rows = cur.fetchall()
        hooks: dict[str, list[WebhookRecord]] = {}
        wwhere = " WHERE monitor = ?" if name is not None else ""
        self._exec(cur, "SELECT monitor, id, url, secret, created_at FROM drift_webhooks"
                        f"{wwhere} ORDER BY created_at, id", params)
        for m, i, u, s, c in cur.fetchall():
            hooks.setdefault(m, []).append(WebhookRecord(i, u, s, float(c)))
        return [MonitorRecord(r[0], r[1], json.loads(r[2]), bool(r[3]), float(r[4]), r[5],
                              tuple(hooks.get(r[0], ()))) for r in rows]

    def get_monitor(self, name: str) -> MonitorRecord | None:
        with self._tx() as cur:
            found = self._monitors(cur, name)
        return found[0] if found else None

    def list_monitors(self) -> list[MonitorRecord]:
        with self._tx() as cur:
            return self._monitors(cur, None)

    def remove_monitor(self, name: str) -> bool:
        """Remove a monitor with its webhooks, alarm state, history and deliveries."""
        with self._tx() as cur:
            self._exec(cur, "DELETE FROM drift_monitors WHERE name = ?", (name,))
            removed = bool(cur.rowcount)
            self._exec(cur, "DELETE FROM drift_alarm_events WHERE monitor = ?", (name,))
            return removed

    # -- alarms ----------------------------------------------------------------------------
    def update_alarm(self, state: AlarmState, events: Sequence[OutgoingEvent],
                     detail: dict[str, Any]) -> bool:
        """Store the latest verdict; when ``state.in_alarm`` (None: keep) differs from the
        stored one (a first verdict counts as "not in alarm" before), record the transition
        and queue ``events`` for every webhook of the monitor, in one transaction, decided on
        the stored state under a row lock, never on what the caller read earlier. True: a
        transition."""
        if state.side not in ("data", "prediction", "concept"):
            raise UsageError(f"drift side {state.side!r}")
        with self._tx() as cur:
            self._exec(cur, "SELECT 1 FROM drift_monitors WHERE name = ?"
                            f"{self.dialect.for_update}", (state.monitor,))
            if not cur.fetchone():
                return False                 # removed meanwhile
            self._exec(cur, f"INSERT INTO drift_alarms ({_ACOLS}) VALUES "
                            "(?, ?, ?, 0, ?, ?, ?, ?, ?) ON CONFLICT (monitor, bundle, side) "
                            "DO NOTHING",
                       (state.monitor, state.bundle, state.side, state.evaluated_at,
                        state.status, state.drifting_windows, "[]", state.evaluated_at))
            self._exec(cur, "SELECT in_alarm, since FROM drift_alarms WHERE monitor = ? AND "
                            f"bundle = ? AND side = ?{self.dialect.for_update}",
                       (state.monitor, state.bundle, state.side))
            was, since = cur.fetchone()
            now_in = bool(was) if state.in_alarm is None else state.in_alarm
            changed = bool(was) != now_in
            self._exec(cur, "UPDATE drift_alarms SET in_alarm = ?, since = ?, status = ?, "
                            "drifting_windows = ?, features = ?, evaluated_at = ? "
                            "WHERE monitor = ? AND bundle = ? AND side = ?",
                       (int(now_in), state.since if changed else float(since),
                        state.status, state.drifting_windows,
                        json.dumps(state.features, sort_keys=True), state.evaluated_at,
                        state.monitor, state.bundle, state.side))
            if not changed:
                return False
            self._exec(cur, "INSERT INTO drift_alarm_events (event_id, monitor, bundle, side, "
                            "in_alarm, at, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (events[0].event_id if events else "", state.monitor, state.bundle,
                        state.side, int(now_in), state.evaluated_at,
                        json.dumps(detail, sort_keys=True)))
            self._exec(cur, "SELECT id FROM drift_webhooks WHERE monitor = ? ORDER BY id",
                       (state.monitor,))
            hooks = [r[0] for r in cur.fetchall()]
            for ev in events:
                for hook in hooks:
                    self._exec(cur, "INSERT INTO webhook_deliveries (webhook_id, monitor, "
                                    "event_id, event_type, body, state, attempts, next_at, "
                                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', "
                                    "0, ?, ?, ?) ON CONFLICT (webhook_id, event_id) DO NOTHING",
                               (hook, state.monitor, ev.event_id, ev.event_type, ev.body,
                                state.evaluated_at, state.evaluated_at, state.evaluated_at))
            return True

    def alarm_states(self, monitor: str | None = None) -> list[AlarmState]:
        where, params = (" WHERE monitor = ?", (monitor,)) if monitor else ("", ())
        with self._tx() as cur:
            self._exec(cur, f"SELECT {_ACOLS} FROM drift_alarms{where} "
                            "ORDER BY monitor, bundle, side", params)
            return [_alarm(r) for r in cur.fetchall()]

    def alarm_history(self, monitor: str | None = None, limit: int = 100) -> list[AlarmEvent]:
        """Alarm starts and ends, newest first."""
        where, params = (" WHERE monitor = ?", (monitor,)) if monitor else ("", ())
        with self._tx() as cur:
            self._exec(cur, "SELECT id, event_id, monitor, bundle, side, in_alarm, at, detail "
                            f"FROM drift_alarm_events{where} ORDER BY id DESC LIMIT ?",
                       (*params, max(1, min(limit, 1000))))
            return [AlarmEvent(int(r[0]), r[1], r[2], r[3], r[4], bool(r[5]), float(r[6]),
                               json.loads(r[7])) for r in cur.fetchall()]

    # -- deliveries ------------------------------------------------------------------------
    def claim_deliveries(self, now: float, lease_s: float, limit: int) -> list[DeliveryJob]:
        """Pending deliveries that are due, claimed for ``lease_s`` (their ``next_at`` moves
        on, so another sender, or this one after a crash, takes them only once it expires)."""
        with self._tx() as cur:
            self._exec(cur, "SELECT d.id, w.url, w.secret, d.body, d.attempts "
                            "FROM webhook_deliveries d JOIN drift_webhooks w "
                            "ON w.id = d.webhook_id WHERE d.state = 'pending' AND "
                            f"d.next_at <= ? ORDER BY d.next_at, d.id LIMIT ?"
                            f"{self.dialect.for_update}", (now, limit))
            jobs = [DeliveryJob(int(r[0]), r[1], r[2], self._blob(r[3]) or b"", int(r[4]))
                    for r in cur.fetchall()]
            for j in jobs:
                self._exec(cur, "UPDATE webhook_deliveries SET next_at = ? WHERE id = ?",
                           (now + lease_s, j.id))
            return jobs

    def record_attempt(self, delivery_id: int, attempt: DeliveryAttempt, state: str,
                       next_at: float) -> None:
        if state not in DELIVERY_STATES:
            raise UsageError(f"delivery state {state!r}")
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO webhook_attempts (delivery_id, attempt, at, "
                            "status_code, error, duration_ms) VALUES (?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (delivery_id, attempt) DO NOTHING",
                       (delivery_id, attempt.attempt, attempt.at, attempt.status_code,
                        attempt.error, attempt.duration_ms))
            self._exec(cur, "UPDATE webhook_deliveries SET state = ?, attempts = ?, "
                            "next_at = ?, updated_at = ? WHERE id = ?",
                       (state, attempt.attempt, next_at, attempt.at, delivery_id))

    def list_deliveries(self, monitor: str | None = None, state: str | None = None,
                        limit: int = 100) -> list[DeliveryRecord]:
        """Deliveries with every attempt, newest first."""
        conds, params = [], []
        if monitor is not None:
            conds.append("d.monitor = ?")
            params.append(monitor)
        if state is not None:
            conds.append("d.state = ?")
            params.append(state)
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        with self._tx() as cur:
            self._exec(cur, f"SELECT {_DCOLS} FROM webhook_deliveries d JOIN drift_webhooks w "
                            f"ON w.id = d.webhook_id{where} ORDER BY d.id DESC LIMIT ?",
                       (*params, max(1, min(limit, 1000))))
            rows = cur.fetchall()
            log: dict[int, list[DeliveryAttempt]] = {}
            if rows:
                ids = [int(r[0]) for r in rows]
                marks = ", ".join("?" for _ in ids)
                self._exec(cur, "SELECT delivery_id, attempt, at, status_code, error, "
                                f"duration_ms FROM webhook_attempts WHERE delivery_id IN "
                                f"({marks}) ORDER BY delivery_id, attempt", ids)
                for d, a, at, code, err, ms in cur.fetchall():
                    log.setdefault(int(d), []).append(DeliveryAttempt(
                        int(a), float(at), None if code is None else int(code), err,
                        float(ms)))
        return [DeliveryRecord(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], int(r[7]),
                               float(r[8]), float(r[9]), float(r[10]),
                               tuple(log.get(int(r[0]), ()))) for r in rows]

"""Drift monitors, their alarms and the webhook delivery log over HTTP (fleet/drift/alerts.py).

Apart from fleet/api/drift_routes.py (the on-demand verdict) because these manage stored state:
operators create and remove monitors, viewers read alarms and every delivery attempt. The app
mounts them beside the core table and lists them in ``/openapi.json``.
"""

from __future__ import annotations

import time
from typing import Any

from edgeops.errors import UsageError
from fleet.api.routes import Call, Endpoint, _int
from fleet.api.services import Services
from fleet.drift.alerts import MAX_MONITORS, alert_store, monitor_view, parse_monitor
from fleet.drift.service import group_histograms
from fleet.errors import ConflictError, NotFoundError
from fleet.store._drift_alerts import DELIVERY_STATES, AlarmEvent, AlarmState, DeliveryRecord

__all__ = ["ENDPOINTS", "alarm_view", "delivery_view", "history_view"]


def alarm_view(a: AlarmState) -> dict[str, Any]:
    return {"monitor": a.monitor, "bundle": a.bundle, "side": a.side, "in_alarm": a.in_alarm,
            "since": a.since, "status": a.status, "drifting_windows": a.drifting_windows,
            "evaluated_at": a.evaluated_at, "features": a.features}


def history_view(e: AlarmEvent) -> dict[str, Any]:
    return {"id": e.id, "event_id": e.event_id, "monitor": e.monitor, "bundle": e.bundle,
            "side": e.side, "in_alarm": e.in_alarm, "at": e.at, "detail": e.detail}


def delivery_view(d: DeliveryRecord) -> dict[str, Any]:
    return {"id": d.id, "webhook_id": d.webhook_id, "url": d.url, "monitor": d.monitor,
            "event_id": d.event_id, "type": d.event_type, "state": d.state,
            "attempts": d.attempts, "next_at": d.next_at if d.state == "pending" else None,
            "created_at": d.created_at, "updated_at": d.updated_at,
            "log": [{"attempt": a.attempt, "at": a.at, "status_code": a.status_code,
                     "error": a.error, "duration_ms": a.duration_ms} for a in d.log]}


def list_monitors(svc: Services, call: Call) -> Any:
    return {"items": [monitor_view(m) for m in alert_store(svc.store).list_monitors()]}


def create_monitor(svc: Services, call: Call) -> Any:
    store = alert_store(svc.store)
    who = call.principal.name if call.principal is not None else None
    record, generated = parse_monitor(call.body, now=time.time(), created_by=who)
    if len(store.list_monitors()) >= MAX_MONITORS:
        raise ConflictError(f"this manager already has {MAX_MONITORS} drift monitors",
                            hint="remove one (edgeops fleet monitor rm NAME) or widen a cohort")
    store.add_monitor(record)
    return {"monitor": monitor_view(record), "secrets": generated}


def _monitor_name(call: Call) -> str:
    return call.path["name"]


def get_monitor(svc: Services, call: Call) -> Any:
    store = alert_store(svc.store)
    m = store.get_monitor(_monitor_name(call))
    if m is None:
        raise NotFoundError(f"no drift monitor {_monitor_name(call)!r}",
                            hint="list them with `edgeops fleet monitor list`")
    return monitor_view(m) | {"alarms": [alarm_view(a) for a in store.alarm_states(m.name)]}


def delete_monitor(svc: Services, call: Call) -> Any:
    if not alert_store(svc.store).remove_monitor(_monitor_name(call)):
        raise NotFoundError(f"no drift monitor {_monitor_name(call)!r}",
                            hint="list them with `edgeops fleet monitor list`")
    return {"removed": _monitor_name(call)}


def deliveries(svc: Services, call: Call) -> Any:
    state = call.query.get("state")
    if state is not None and state not in DELIVERY_STATES:
        raise UsageError(f"state={state!r}: use one of {', '.join(DELIVERY_STATES)}")
    rows = alert_store(svc.store).list_deliveries(call.query.get("monitor"), state,
                                                  _int(call.query, "limit", 100, 1, 1000))
    return {"items": [delivery_view(d) for d in rows]}


def alarms(svc: Services, call: Call) -> Any:
    store = alert_store(svc.store)
    monitor = call.query.get("monitor")
    return {"current": [alarm_view(a) for a in store.alarm_states(monitor)],
            "history": [history_view(e) for e in store.alarm_history(
                monitor, _int(call.query, "limit", 100, 1, 1000))]}


def console_drift(svc: Services, call: Call) -> Any:
    cohort = call.query.get("cohort")
    if cohort is not None and len(cohort) > 1024:
        raise UsageError("cohort selector is over 1024 characters")
    return group_histograms(svc.store, now=time.time(), cohort=cohort,
                            device=call.query.get("device"))


_P = "/api/v1/drift"
_OBJ: dict[str, Any] = {"type": "object"}
_ITEMS = {"type": "object", "required": ["items"],
          "properties": {"items": {"type": "array", "items": _OBJ}}}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", f"{_P}/monitors", list_monitors, "viewer",
             "Drift monitors (cohort, policy, webhooks; never secrets)", _ITEMS, tag="drift"),
    Endpoint("POST", f"{_P}/monitors", create_monitor, "operator",
             "Create a drift monitor; generated webhook secrets are in the answer, once",
             {"type": "object", "required": ["monitor", "secrets"],
              "properties": {"monitor": {"$ref": "#/components/schemas/DriftMonitor"},
                             "secrets": {"type": "object",
                                         "additionalProperties": {"type": "string"}}}},
             body="DriftMonitorRequest", status=201, tag="drift"),
    Endpoint("GET", f"{_P}/monitors/{{name}}", get_monitor, "viewer",
             "One drift monitor with its current alarm state per bundle and side",
             "DriftMonitor", tag="drift"),
    Endpoint("DELETE", f"{_P}/monitors/{{name}}", delete_monitor, "operator",
             "Remove a drift monitor with its webhooks, alarms and deliveries",
             {"type": "object", "properties": {"removed": {"type": "string"}}}, tag="drift"),
    Endpoint("GET", f"{_P}/deliveries", deliveries, "viewer",
             "Webhook deliveries, newest first, with every attempt (status code, error, time)",
             _ITEMS, query=(("monitor", "string", "only this monitor"),
                            ("state", "string", "pending|delivered|failed"),
                            ("limit", "integer", "rows (1-1000, 100)")), tag="drift"),
    Endpoint("GET", f"{_P}/alarms", alarms, "viewer",
             "Current alarm state per monitor, bundle and side, and alarm history",
             {"type": "object", "required": ["current", "history"],
              "properties": {"current": {"type": "array", "items": _OBJ},
                             "history": {"type": "array", "items": _OBJ}}},
             query=(("monitor", "string", "only this monitor"),
                    ("limit", "integer", "history rows (1-1000, 100)")), tag="drift"),
    Endpoint("GET", "/api/v1/console/drift", console_drift, "viewer",
             "Reference vs live histograms per feature for one cohort or device (latest "
             "window, per bundle) with the window's verdict",
             {"type": "object", "required": ["group", "now", "items"],
              "properties": {"group": {"type": "string"}, "now": {"type": "number"},
                             "items": {"type": "array", "items": _OBJ}}},
             query=(("cohort", "string", "tag selector (default all)"),
                    ("device", "string", "one device instead of a cohort")), tag="console"),
)

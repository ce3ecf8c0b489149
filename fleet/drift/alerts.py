"""Stored drift monitors and their alarm transitions: which events a confirmed drift causes.

A monitor is a cohort (tag selector), a :class:`MonitorPolicy`, up to
:data:`MAX_WEBHOOKS` webhooks and an opt-in ``retrain`` event. :class:`DriftAlerts` evaluates
every monitor (fleet/drift/service.py: cohort_verdicts) and, per bundle and side (data drift,
prediction drift), turns the verdict into an alarm state: ``alarm`` starts an alarm, ``ok``
ends it, any other status (drifting, insufficient-data, no-data) keeps the state it had. A
change is written with its events in one store transaction (fleet/store/_drift_alerts.py), so
it is announced once; the sender (fleet/drift/webhook_sender.py) delivers them later.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from edgeops.drift.reference import DriftReference
from edgeops.errors import ConfigError, EdgeOpsError, UsageError
from fleet.drift.drift_capture import DriftCapture, parse_drift_capture
from fleet.drift.monitor import GroupVerdict, MonitorPolicy, SideVerdict
from fleet.drift.service import MAX_DEVICES, DriftReads, cohort_concept, cohort_verdicts
from fleet.drift.webhooks import (
    TYPE_DETECTED,
    TYPE_RESOLVED,
    TYPE_RETRAIN,
    check_secret,
    check_url,
    cloudevent,
    new_secret,
)
from fleet.fields import known_fields
from fleet.selector import parse_selector
from fleet.store import (
    AlarmState,
    AlarmStore,
    CaptureStore,
    Device,
    DeviceFilter,
    DriftAlertStore,
    MonitorRecord,
    MonitorStore,
    OutgoingEvent,
    WebhookRecord,
)

__all__ = ["MAX_MONITORS", "MAX_WEBHOOKS", "DriftAlerts", "MonitorEvaluationStore", "alert_store",
           "monitor_view", "parse_monitor"]

MAX_MONITORS = 50               # bounds evaluation work and /metrics label cardinality
MAX_WEBHOOKS = 5                # per monitor
MAX_BUNDLES = 4                 # per monitor and evaluation: the bundles with the newest windows
MAX_EVENT_FEATURES = 32         # drifting features listed in one event (lowest p first)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_POLICY_KEYS = ("alpha", "correction", "test", "persistence", "min_samples")
_KEYS = frozenset(("name", "cohort", "retrain", "webhooks", "capture_on_drift", *_POLICY_KEYS))
SIDES = (("data", "data"), ("prediction", "prediction"))
CAPTURE_KEY = "capture_on_drift"    # kept in the stored policy JSON (no schema change)

log = logging.getLogger(__name__)
# (cohort, settings, now, created_by) -> the opened capture's id (fleet/drift/drift_capture.py)
OpenCapture = Callable[[str, DriftCapture, float, str], str]


class MonitorEvaluationStore(DriftReads, MonitorStore, AlarmStore, CaptureStore, Protocol):
    """What evaluating monitors needs: drift status reads, the monitors and their alarms, and
    the captures a retrain event may name."""


def alert_store(store: object) -> DriftAlertStore:
    """The store's monitor/alarm/delivery role (every SQL store has it)."""
    if not isinstance(store, DriftAlertStore):
        raise ConfigError(f"{type(store).__name__} keeps no drift monitors",
                          hint="use the SQLite or PostgreSQL store")
    return store


def _number(body: Mapping[str, Any], key: str, default: float) -> float:
    v = body.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise UsageError(f"monitor {key} must be a number")
    return float(v)


def _integer(body: Mapping[str, Any], key: str, default: int, hi: int) -> int:
    v = body.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
        raise UsageError(f"monitor {key} must be an integer from 1 to {hi}")
    return v


def parse_monitor(body: Any, *, now: float, created_by: str | None
                  ) -> tuple[MonitorRecord, dict[str, str]]:
    """Validate a monitor as the API receives it; returns the record and the secrets the
    manager generated (webhook id -> secret), which are shown once."""
    body = known_fields(body, _KEYS, what="monitor",
                        not_object="monitor body must be a JSON object",
                        example='e.g. {"name": "lyon-cams", "cohort": "city=lyon", '
                                '"webhooks": [{"url": "https://..."}]}')
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError("monitor name must be 1-63 of a-z 0-9 _ . - starting with a letter "
                         "or digit")
    cohort = body.get("cohort", "all")
    if not isinstance(cohort, str) or len(cohort) > 1024:
        raise UsageError("monitor cohort must be a tag selector string (city=lyon,class=camera)")
    parse_selector(cohort)                        # a bad selector: one line, before storing
    correction, test = body.get("correction", "bh"), body.get("test", "chi2")
    if not isinstance(correction, str) or not isinstance(test, str):
        raise UsageError("monitor correction and test must be strings (bh|bonferroni, chi2|g)")
    d = MonitorPolicy()
    policy = MonitorPolicy(alpha=_number(body, "alpha", d.alpha), correction=correction,
                           test=test, persistence=_integer(body, "persistence", d.persistence,
                                                           100),
                           min_samples=_integer(body, "min_samples", d.min_samples,
                                                10_000_000))
    retrain = body.get("retrain", False)
    if not isinstance(retrain, bool):
        raise UsageError("monitor retrain must be true or false")
    capture = parse_drift_capture(body.get("capture_on_drift"))
    hooks_in = body.get("webhooks", [])
    if not isinstance(hooks_in, list) or len(hooks_in) > MAX_WEBHOOKS:
        raise UsageError(f"monitor webhooks must be a list of at most {MAX_WEBHOOKS}")
    hooks, generated = [], {}
    for h in hooks_in:
        if not isinstance(h, dict) or set(h) - {"url", "secret"}:
            raise UsageError('each webhook is {"url": ..., "secret": ...} (secret optional)')
        url = check_url(h.get("url"))
        wid = "wh-" + secrets.token_hex(6)
        if h.get("secret") is None:
            secret = generated[wid] = new_secret()
        else:
            secret = check_secret(h["secret"])
        hooks.append(WebhookRecord(wid, url, secret, now))
    stored: dict[str, Any] = {k: getattr(policy, k) for k in _POLICY_KEYS}
    if capture is not None:
        stored[CAPTURE_KEY] = capture.to_dict()
    return MonitorRecord(name, cohort, stored, retrain, now, created_by, tuple(hooks)), generated


def monitor_policy(m: MonitorRecord) -> MonitorPolicy:
    return MonitorPolicy(**{k: m.policy[k] for k in _POLICY_KEYS if k in m.policy})


def monitor_capture(m: MonitorRecord) -> DriftCapture | None:
    """The monitor's capture-on-drift bounds, or None (off)."""
    v = m.policy.get(CAPTURE_KEY)
    return DriftCapture(**v) if isinstance(v, dict) else None


def monitor_view(m: MonitorRecord) -> dict[str, Any]:
    """A monitor as the API shows it: never a secret."""
    return {"name": m.name, "cohort": m.cohort, "policy": monitor_policy(m).to_dict(),
            "retrain": m.retrain, "capture_on_drift": m.policy.get(CAPTURE_KEY),
            "created_at": m.created_at, "created_by": m.created_by,
            "webhooks": [{"id": w.id, "url": w.url, "created_at": w.created_at}
                         for w in m.webhooks]}


@dataclass(frozen=True)
class _Concept:
    """What :meth:`DriftAlerts._events` reads of a verdict, for a concept-drift verdict."""

    bundle: str
    devices: int


def _finite(v: Any) -> Any:
    """JSON has no NaN or infinity: a statistic that is not finite is sent as null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class DriftAlerts:
    """Evaluates stored monitors and records alarm transitions with their events."""

    def __init__(self, store: MonitorEvaluationStore, *, source: str = "/edgeops/fleet",
                 lookback_s: float = 7200.0, clock: Callable[[], float] = time.time,
                 capture_for: Callable[[str, str], str | None] | None = None,
                 open_capture: OpenCapture | None = None) -> None:
        self.store = store
        self.source = source.rstrip("/")
        self.lookback_s = lookback_s
        self.clock = clock
        # the capture id to suggest in the retrain event: (cohort, bundle) -> id or None;
        # default: an open capture on exactly the monitor's cohort (fleet/capture)
        self.capture_for = capture_for if capture_for is not None else self._open_capture
        # opens a capture when a monitor with capture_on_drift starts an alarm; None: the
        # manager cannot sign commands here (the option is then recorded as not done)
        self.open_capture = open_capture

    def _open_capture(self, cohort: str, bundle: str) -> str | None:
        """The newest open capture whose selector is the monitor's cohort, if any."""
        now = self.clock()
        wanted = {cohort, str(parse_selector(cohort))}     # start_capture stores it normalised
        for c in self.store.list_captures(100):
            if c.selector in wanted and c.is_open(now):
                return str(c.id)
        return None

    def evaluate(self) -> int:
        """Evaluate every monitor once; the number of alarm transitions recorded."""
        now = self.clock()
        monitors = self.store.list_monitors()[:MAX_MONITORS]
        if not monitors:
            return 0
        fleet = self.store.select_devices(DeviceFilter())[:MAX_DEVICES]   # once per round
        return sum(self.evaluate_monitor(m, now, fleet) for m in monitors)

    def evaluate_monitor(self, m: MonitorRecord, now: float,
                         devices: Sequence[Device] | None = None) -> int:
        policy = monitor_policy(m)
        prior = {(a.bundle, a.side): a.in_alarm for a in self.store.alarm_states(m.name)}
        verdicts = cohort_verdicts(self.store, m.cohort, now=now, policy=policy,
                                   lookback_s=self.lookback_s, devices=devices)
        verdicts.sort(key=lambda v: -(v[0].latest_window_end or 0.0))
        n = 0
        opened: list[str | None] = []         # at most one capture per monitor and round
        for verdict, ref in verdicts[:MAX_BUNDLES]:
            for side, attr in SIDES:
                sv: SideVerdict = getattr(verdict, attr)
                if sv.status == "no-data" and not sv.features and (
                        verdict.bundle, side) not in prior:
                    continue            # e.g. a reference without outputs: nothing to watch
                # alarm starts it, ok ends it, anything else keeps the stored state; the store
                # decides under its lock whether this is a transition (another manager may
                # have written since ``prior`` was read), so events are built either way
                in_alarm = {"alarm": True, "ok": False}.get(sv.status)
                detail = self._detail(m, verdict, ref, side, sv)
                capture_id = None
                if in_alarm and not prior.get((verdict.bundle, side), False):
                    capture_id = self._capture_on_drift(m, verdict.bundle, now, detail, opened)
                events = [] if in_alarm is None else self._events(m, verdict, side, in_alarm,
                                                                  detail, now, capture_id)
                state = AlarmState(m.name, verdict.bundle, side, in_alarm, now, sv.status,
                                   sv.drifting_windows, list(sv.features), now)
                if self.store.update_alarm(state, events, detail):
                    n += 1
        return n + self._evaluate_concept(m, now, devices, policy, prior, opened)

    def _evaluate_concept(self, m: MonitorRecord, now: float, devices: Sequence[Device] | None,
                          policy: MonitorPolicy, prior: Mapping[tuple[str, str], bool | None],
                          opened: list[str | None]) -> int:
        """Concept drift (live accuracy against the build's, fleet/drift/concept.py) on the
        same alarm path, side ``concept``: the same start/end rules, events and capture."""
        verdicts = cohort_concept(self.store, m.cohort, now=now, policy=policy,
                                  lookback_s=self.lookback_s, devices=devices)
        verdicts.sort(key=lambda v: -((v.get("latest") or {}).get("window_end") or 0.0))
        n = 0
        for v in verdicts[:MAX_BUNDLES]:
            bundle, status = str(v["bundle"]), str(v["status"])
            if status in ("no-reference", "no-data") and (bundle, "concept") not in prior:
                continue            # no accuracy to compare with: nothing to watch
            run = 0
            for row in reversed(v.get("recent") or []):
                if row["status"] != "drifting":
                    break
                run += 1
            latest = v.get("latest") or {}
            end = latest.get("window_end")
            detail: dict[str, Any] = {
                "monitor": m.name, "cohort": m.cohort, "bundle": bundle, "side": "concept",
                "status": status, "drifting_windows": run, "devices": v.get("devices"),
                "window": {"start": None if end is None else end - run * 900.0, "end": end},
                "features": [], "reference_accuracy": v.get("reference_accuracy"),
                "accuracy": _finite(latest.get("accuracy")),
                "p_value": _finite(latest.get("p_value")), "answers": latest.get("total")}
            in_alarm = {"alarm": True, "ok": False}.get(status)
            capture_id = None
            if in_alarm and not prior.get((bundle, "concept"), False):
                capture_id = self._capture_on_drift(m, bundle, now, detail, opened)
            events = [] if in_alarm is None else self._events(
                m, _Concept(bundle, v.get("devices") or 0), "concept", in_alarm, detail, now,
                capture_id)
            state = AlarmState(m.name, bundle, "concept", in_alarm, now, status, run, [], now)
            if self.store.update_alarm(state, events, detail):
                n += 1
        return n

    def _capture_on_drift(self, m: MonitorRecord, bundle: str, now: float,
                          detail: dict[str, Any], opened: list[str | None]) -> str | None:
        """On an alarm start of a monitor with capture_on_drift: the open capture on its
        cohort, else a new one (once per round); recorded in ``detail`` (the alarm history).
        A capture that cannot be opened is recorded, never blocks the alarm."""
        settings = monitor_capture(m)
        if settings is None:
            return None
        if opened:
            detail["capture"] = {"id": opened[0], "opened": False}
            return opened[0]
        existing = self.capture_for(m.cohort, bundle)
        if existing is not None:
            detail["capture"] = {"id": existing, "opened": False}
            opened.append(existing)
            return existing
        if self.open_capture is None:
            detail["capture"] = {"id": None, "error": "this manager cannot open captures"}
            return None
        try:
            cid: str | None = self.open_capture(m.cohort, settings, now, f"monitor:{m.name}")
        except EdgeOpsError as exc:
            log.warning("monitor %s: capture on drift not opened: %s", m.name, exc)
            detail["capture"] = {"id": None, "error": str(exc)}
            opened.append(None)
            return None
        detail["capture"] = {"id": cid, "opened": True} | settings.to_dict()
        opened.append(cid)
        return cid

    def _detail(self, m: MonitorRecord, v: GroupVerdict, ref: DriftReference, side: str,
                sv: SideVerdict) -> dict[str, Any]:
        drifting = sorted((f for f in sv.features if f.get("drift")),
                          key=lambda f: f.get("p_adjusted", 1.0))[:MAX_EVENT_FEATURES]
        end = v.latest_window_end
        start = None
        if end is not None:
            last = int(end // ref.window_s)
            start = (last - max(sv.drifting_windows, 1) + 1) * ref.window_s
        return {"monitor": m.name, "cohort": m.cohort, "bundle": v.bundle, "side": side,
                "status": sv.status, "drifting_windows": sv.drifting_windows,
                "devices": v.devices, "window": {"start": start, "end": end},
                "features": [{k: _finite(f.get(k)) for k in ("feature", "p_adjusted", "psi",
                                                             "js", "ks", "n_live")}
                             for f in drifting]}

    def _events(self, m: MonitorRecord, v: GroupVerdict | _Concept, side: str, in_alarm: bool,
                detail: dict[str, Any], now: float,
                capture_id: str | None = None) -> list[OutgoingEvent]:
        name, _, version = v.bundle.partition("@")
        subject = f"{v.bundle}/{side}"
        source = f"{self.source}/monitors/{m.name}"
        kind = TYPE_DETECTED if in_alarm else TYPE_RESOLVED
        first = uuid.uuid4().hex
        data = detail | {"model": name, "version": version, "in_alarm": in_alarm,
                         "policy": monitor_policy(m).to_dict()}
        out = [OutgoingEvent(first, kind, cloudevent(kind, source=source, subject=subject,
                                                     event_id=first, time_iso=_iso(now),
                                                     data=data))]
        if in_alarm and m.retrain:
            rid = uuid.uuid4().hex
            capture = capture_id if capture_id is not None else self.capture_for(m.cohort,
                                                                                  v.bundle)
            retrain = {"model": name, "bundle_version": version, "bundle": v.bundle,
                       "cohort": m.cohort, "monitor": m.name, "side": side,
                       "drifting_features": [f["feature"] for f in detail["features"]],
                       "window": detail["window"], "capture_id": capture,
                       "detected_event": first}
            out.append(OutgoingEvent(rid, TYPE_RETRAIN, cloudevent(
                TYPE_RETRAIN, source=source, subject=v.bundle, event_id=rid,
                time_iso=_iso(now), data=retrain)))
        return out

"""``GET /api/v1/drift``: drift verdicts per device, cohort and deployment (fleet/drift).

Apart from fleet/api/routes.py so the drift monitor's query parameters and schema sit together;
the app mounts these endpoints beside the core table and lists them in ``/openapi.json``.
"""

from __future__ import annotations

import time
from typing import Any

from edgeops.errors import UsageError
from fleet.api.routes import Call, Endpoint
from fleet.api.services import Services
from fleet.drift.monitor import MonitorPolicy
from fleet.drift.service import drift_status

__all__ = ["ENDPOINTS"]


def _num(call: Call, name: str, default: float, cast: type = float) -> Any:
    raw = call.query.get(name)
    if raw is None:
        return default
    try:
        return cast(raw)
    except ValueError:
        raise UsageError(f"query parameter {name}={raw!r} is not a number") from None


_DEFAULT = MonitorPolicy()


def get_drift(svc: Services, call: Call) -> Any:
    q = call.query
    policy = MonitorPolicy(alpha=_num(call, "alpha", _DEFAULT.alpha),
                           correction=q.get("correction", _DEFAULT.correction),
                           test=q.get("test", _DEFAULT.test),
                           persistence=_num(call, "persistence", _DEFAULT.persistence, int),
                           min_samples=_num(call, "min_samples", _DEFAULT.min_samples, int))
    return drift_status(svc.store, now=time.time(), cohorts=q.getlist("cohort"),
                        deployment=q.get("deployment"), device=q.get("device"), policy=policy,
                        lookback_s=_lookback(_num(call, "lookback_s", 7200.0)),
                        reference=_reference(q.get("reference_accuracy")))


def _reference(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not 0.0 < v <= 1.0:
        raise UsageError(f"reference_accuracy={raw!r} must be a number in (0, 1]")
    return v


def _lookback(v: float) -> float:
    if not 60.0 <= v <= 30 * 86_400.0:      # also refuses NaN and infinities
        raise UsageError(f"lookback_s={v} must be between 60 and 2592000 seconds")
    return v


_SIDE = {"type": "object", "properties": {
    "status": {"type": "string",
               "enum": ["no-data", "insufficient-data", "ok", "drifting", "alarm"]},
    "drifting_windows": {"type": "integer"},
    "features": {"type": "array", "items": {"type": "object"}}}}
_GROUP = {"type": "object", "required": ["group", "bundle", "status"], "properties": {
    "group": {"type": "string"}, "bundle": {"type": "string"},
    "devices": {"type": "integer"}, "windows": {"type": "integer"},
    "latest_window_end": {"type": ["number", "null"]}, "status": {"type": "string"},
    "data_drift": _SIDE, "prediction_drift": _SIDE, "policy": {"type": "object"}}}
_GROUPS = {"type": "array", "items": _GROUP}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/api/v1/drift", get_drift, "viewer",
             "Data and prediction drift per device, cohort and deployment (binned sketches "
             "against the bundle's signed reference)",
             {"type": "object", "required": ["devices", "cohorts", "deployments", "policy"],
              "properties": {"now": {"type": "number"}, "policy": {"type": "object"},
                             "devices": _GROUPS, "cohorts": _GROUPS, "deployments": _GROUPS,
                             "concept": {"type": "array", "items": {"type": "object"}}}},
             query=(("cohort", "string", "tag selector, repeatable (city=lyon,class=camera)"),
                    ("deployment", "string", "deployment id"),
                    ("device", "string", "only this device"),
                    ("alpha", "number", "per-window error rate after correction "
                     f"({_DEFAULT.alpha})"),
                    ("correction", "string", "bh|bonferroni"),
                    ("test", "string", "chi2|g"),
                    ("persistence", "integer", "consecutive drifting windows for an alarm "
                     f"({_DEFAULT.persistence})"),
                    ("min_samples", "integer", "live samples per feature before a verdict (200)"),
                    ("lookback_s", "number", "how far back sketches are read (7200)"),
                    ("reference_accuracy", "number",
                     "accuracy to test ground truth against (default: the build's)"))),
)

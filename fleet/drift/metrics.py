"""Drift in ``/metrics``: stored monitors' alarm state and statistics, sketch refusals.

Read from the store at scrape time (``drift_alarms``: the latest verdict the evaluator wrote
per monitor, bundle and side), so every manager process reports the same figures, and a scrape
costs one small query, never a drift test. Refusal counters are this process's ingest counts.

Label cardinality is bounded: monitors are capped (:data:`fleet.drift.alerts.MAX_MONITORS`),
each reports its :data:`MAX_BUNDLES` most recently evaluated bundles, two sides, and per side
the :data:`MAX_FEATURES` features with the lowest corrected p-value; refusal reasons are the
fixed :data:`fleet.drift.intake.REASONS`. At most 50 x 4 x 2 x (3 + 4 x 10) = 17,200 series;
one monitor on one bundle with 10 features is 46 (plus 10 counters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fleet.drift.intake import REASONS
from fleet.metrics import Family
from fleet.store import AlarmState, AlarmStore

__all__ = ["MAX_BUNDLES", "MAX_FEATURES", "drift_alarm_alerts", "drift_families"]

MAX_BUNDLES = 4
MAX_FEATURES = 10
_STATS = (("p_adjusted", "edgeops_drift_feature_p_adjusted",
           "Corrected p-value of the latest window's two-sample test."),
          ("psi", "edgeops_drift_feature_psi", "Population stability index, latest window."),
          ("js", "edgeops_drift_feature_js_distance",
           "Jensen-Shannon distance (base 2), latest window."))


def _kept(states: list[AlarmState]) -> list[AlarmState]:
    newest: dict[str, list[str]] = {}
    for a in sorted(states, key=lambda a: -a.evaluated_at):
        b = newest.setdefault(a.monitor, [])
        if a.bundle not in b and len(b) < MAX_BUNDLES:
            b.append(a.bundle)
    return [a for a in states if a.bundle in newest.get(a.monitor, [])]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def drift_families(store: object, ingest_counts: Callable[[], Mapping[str, int]] | None
                   ) -> list[Family]:
    alarm = Family("edgeops_drift_alarm", "gauge",
                   "1 while a drift monitor is in alarm for a bundle and side (data, prediction).")
    windows = Family("edgeops_drift_drifting_windows", "gauge",
                     "Consecutive drifting windows ending at the latest one.")
    evaluated = Family("edgeops_drift_evaluated_timestamp_seconds", "gauge",
                       "When the monitor last evaluated this bundle and side (unix time).")
    feature = Family("edgeops_drift_feature_drift", "gauge",
                     "1 when the feature drifted in the latest window (corrected p < alpha).")
    stats = {key: Family(name, "gauge", help_) for key, name, help_ in _STATS}
    if isinstance(store, AlarmStore):
        for a in _kept(store.alarm_states()):
            labels = {"monitor": a.monitor, "bundle": a.bundle, "side": a.side}
            alarm.add(1.0 if a.in_alarm else 0.0, **labels)
            windows.add(a.drifting_windows, **labels)
            evaluated.add(a.evaluated_at, **labels)
            rows = sorted((f for f in a.features if isinstance(f.get("feature"), str)),
                          key=lambda f: _num(f.get("p_adjusted")) or 0.0)[:MAX_FEATURES]
            for f in rows:
                fl = labels | {"feature": f["feature"]}
                feature.add(1.0 if f.get("drift") else 0.0, **fl)
                for key, fam in stats.items():
                    v = _num(f.get(key))
                    if v is not None:
                        fam.add(v, **fl)
    refused = Family("edgeops_drift_sketches_refused_total", "counter",
                     "Drift sketches refused at ingest by this manager process, by reason "
                     "(nothing of them is stored).")
    counts = ingest_counts() if ingest_counts is not None else {}
    for reason in REASONS:
        refused.add(counts.get(f"drift_sketch:refused:{reason}", 0), reason=reason)
    return [alarm, windows, evaluated, feature, *stats.values(), refused]


def drift_alarm_alerts(store: object) -> list[dict[str, Any]]:
    """The console overview's alerts for stored monitors in alarm (kind ``drift-alarm``)."""
    if not isinstance(store, AlarmStore):
        return []
    out = []
    for a in store.alarm_states():
        if a.in_alarm:
            names = [f["feature"] for f in a.features if f.get("drift")][:3]
            out.append({"severity": "critical", "kind": "drift-alarm",
                        "subject": f"{a.monitor}: {a.bundle}",
                        "message": f"{a.side} drift for {a.drifting_windows} windows"
                                   + (f" ({', '.join(names)})" if names else ""),
                        "ts": a.since})
    return out

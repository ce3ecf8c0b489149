"""Concept drift: live accuracy from ground truth against the accuracy the build measured.

Why it exists: data and prediction drift (fleet/drift/monitor.py) say the inputs or outputs
moved; only ground truth says the model got worse. Agents score feedback per prediction id
(device_agent/feedback.py) and send per-window ``accuracy`` records; here they are checked on
intake (:func:`check_accuracy`, refusals counted by ingest as ``accuracy:refused:<reason>``),
summed per group and window like sketches, and each window is tested against the bundle's
reference accuracy (the top-1 accuracy ``edgeops build`` measured on labelled validation data,
in the signed manifest's artifact metrics; or one the operator states): a one-sided test of a
proportion (normal approximation with continuity correction, so windows need ``min_samples``
answers), alarm after ``persistence`` consecutive windows below at ``alpha``: the same rules
as the data-drift monitor, so the same false-alarm bound holds (alpha ** persistence per
window under no drift).

Regression windows (absolute-error histograms) are summed and reported; with no reference
error in the manifest they get no verdict.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeops.protocol.records import AccuracyRecord, RecordError
from fleet.drift.monitor import MonitorPolicy

__all__ = ["AccuracyRefusal", "AccuracyWindow", "check_accuracy", "evaluate_accuracy",
           "one_sided_p", "reference_accuracy"]

REASONS = ("malformed", "device-mismatch", "negative-count", "absurd-count", "future-window",
           "stale-window")
_MAX_TOTAL = 10_000_000


@dataclass(frozen=True)
class AccuracyRefusal:
    reason: str
    message: str


def check_accuracy(record: Mapping[str, Any], device_id: str, now: float, *,
                   max_clock_skew_s: float = 300.0, max_age_s: float = 7 * 86_400.0
                   ) -> AccuracyRefusal | None:
    """None when an ``accuracy`` record may be stored; else why not (pure).

    The record's own shape and counts are :class:`~edgeops.protocol.records.AccuracyRecord`'s
    checks (their reasons: ``malformed``, ``negative-count``, ``absurd-count``); the rest is
    the manager's policy: whose record it is, how far its window is from now, how many answers
    one window may plausibly hold.
    """
    if record.get("device_id") != device_id:
        return AccuracyRefusal("device-mismatch", f"accuracy from {device_id} claims to come "
                               f"from {record.get('device_id')!r}")
    try:
        rec = AccuracyRecord.from_dict(record)
    except RecordError as exc:
        return AccuracyRefusal(exc.reason, exc.message)
    if rec.window_end > now + max_clock_skew_s:
        return AccuracyRefusal("future-window",
                               f"window ends {rec.window_end - now:.0f} s in the future")
    if rec.window_end < now - max_age_s:
        return AccuracyRefusal("stale-window", f"window ended {now - rec.window_end:.0f} s ago")
    if rec.total > _MAX_TOTAL:
        return AccuracyRefusal("absurd-count", f"{rec.total} answers in one window")
    return None


def reference_accuracy(artifacts_metrics: Iterable[Mapping[str, Any]]) -> float | None:
    """The top-1 accuracy the build measured on labelled validation data, if any."""
    def find(d: Any) -> float | None:
        if isinstance(d, Mapping):
            v = d.get("top1_accuracy")
            if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1:
                return float(v)
            for x in d.values():
                got = find(x)
                if got is not None:
                    return got
        return None

    for m in artifacts_metrics:
        got = find(m)
        if got is not None:
            return got
    return None


def one_sided_p(correct: int, total: int, p0: float) -> float:
    """P(accuracy this low or lower | true accuracy p0): normal approximation with continuity
    correction (windows below ``min_samples`` get no verdict, so n is large enough)."""
    if total <= 0:
        return 1.0
    if p0 >= 1.0:
        return 0.0 if correct < total else 1.0
    if p0 <= 0.0:
        return 1.0
    sd = math.sqrt(total * p0 * (1 - p0))
    z = (correct + 0.5 - total * p0) / sd
    return 0.5 * math.erfc(-z / math.sqrt(2))


@dataclass(frozen=True)
class AccuracyWindow:
    device_id: str
    window_end: float
    total: int
    correct: int


def evaluate_accuracy(group: str, bundle: str, windows: Sequence[AccuracyWindow],
                      reference: float | None, policy: MonitorPolicy,
                      window_s: float = 900.0) -> dict[str, Any]:
    """Windows of a group summed per ``floor(window_end / window_s)``; the latest decides."""
    per: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    devices = set()
    for w in windows:
        c = per[int(w.window_end // window_s)]
        c[0] += w.total
        c[1] += w.correct
        devices.add(w.device_id)
    keys = sorted(per)
    verdicts: list[str] = []
    rows = []
    for k in keys[-max(policy.persistence, 1) * 4:]:
        total, correct = per[k]
        if reference is None:
            v, p = "no-reference", None
        elif total < policy.min_samples:
            v, p = "insufficient-data", None
        else:
            p = one_sided_p(correct, total, reference)
            v = "drifting" if p < policy.alpha else "ok"
        verdicts.append(v)
        rows.append({"window_end": (k + 1) * window_s, "total": total, "correct": correct,
                     "accuracy": correct / total if total else None, "p_value": p,
                     "status": v})
    status = verdicts[-1] if verdicts else "no-data"
    run, prev = 0, None
    for v, k in zip(reversed(verdicts), reversed(keys[-len(verdicts):]), strict=True):
        if v != "drifting" or (prev is not None and k != prev - 1):
            break          # a window with no data breaks the run, as in the data monitor
        run, prev = run + 1, k
    if status == "drifting" and run >= policy.persistence:
        status = "alarm"
    return {"group": group, "bundle": bundle, "devices": len(devices), "windows": len(keys),
            "reference_accuracy": reference, "status": status,
            "latest": rows[-1] if rows else None, "recent": rows}

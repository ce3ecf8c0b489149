"""Concept drift on the manager: accuracy intake (every refusal, counted, not stored), the
one-sided proportion test with persistence, and the ``concept`` part of drift status."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from scipy import stats

from edgeops.protocol import TelemetryBatch, topics
from fleet.drift.concept import (
    AccuracyWindow,
    check_accuracy,
    evaluate_accuracy,
    one_sided_p,
    reference_accuracy,
)
from fleet.drift.monitor import MonitorPolicy
from fleet.drift.report import render
from fleet.drift.service import drift_status
from fleet.ingest import Ingest
from fleet.store import Device, Store

NOW = 1_800_000_000.0
GOOD = {"kind": "accuracy", "ts": NOW - 5, "device_id": "cam-1", "bundle": "vc@1.0.0",
        "task": "classification", "window_start": NOW - 905, "window_end": NOW - 5,
        "total": 300, "correct": 270, "per_class": {"0": [150, 140], "1": [150, 130]}}


@pytest.mark.parametrize(("over", "reason"), [
    ({"device_id": "cam-2"}, "device-mismatch"),
    ({"task": "ranking"}, "malformed"),
    ({"total": "many"}, "malformed"),
    ({"correct": None}, "malformed"),
    ({"per_class": {"0": [1]}}, "malformed"),
    ({"total": -1, "correct": -1}, "negative-count"),
    ({"correct": 301}, "absurd-count"),
    ({"per_class": {"0": [10, 11]}}, "absurd-count"),
    ({"total": 10**9}, "absurd-count"),
    ({"window_end": NOW + 3600}, "future-window"),
    ({"window_start": NOW - 30 * 86_400 - 900, "window_end": NOW - 30 * 86_400},
     "stale-window"),
    ({"window_start": NOW, "window_end": NOW - 5}, "malformed"),         # ends before it starts
    ({"window_start": None}, "malformed"),
    ({"task": "regression", "abs_error": [1, 2]}, "absurd-count"),
    ({"task": "regression", "abs_error": [-1, 301]}, "negative-count"),
])
def test_bad_accuracy_records_are_refused(over: dict[str, Any], reason: str) -> None:
    got = check_accuracy(GOOD | over, "cam-1", NOW)
    assert got is not None and got.reason == reason, got
    assert check_accuracy(GOOD, "cam-1", NOW) is None


def test_one_sided_p_matches_the_exact_binomial() -> None:
    for k, n, p0 in ((270, 300, 0.92), (250, 300, 0.92), (480, 500, 0.95)):
        exact = stats.binom.cdf(k, n, p0)
        assert math.isclose(one_sided_p(k, n, p0), exact, rel_tol=0.35, abs_tol=1e-4)


def _windows(acc: list[float], n: int = 400) -> list[AccuracyWindow]:
    return [AccuracyWindow("cam-1", (100 + i) * 900.0 + 1, n, round(a * n))
            for i, a in enumerate(acc)]


def test_accuracy_drop_alarms_after_persistence_and_not_before() -> None:
    pol = MonitorPolicy(alpha=0.01, persistence=2)
    ok = evaluate_accuracy("device:cam-1", "vc@1", _windows([0.91, 0.90, 0.92]), 0.91, pol)
    assert ok["status"] == "ok"
    one = evaluate_accuracy("device:cam-1", "vc@1", _windows([0.91, 0.91, 0.80]), 0.91, pol)
    assert one["status"] == "drifting"
    two = evaluate_accuracy("device:cam-1", "vc@1", _windows([0.91, 0.80, 0.80]), 0.91, pol)
    assert two["status"] == "alarm" and two["latest"]["accuracy"] == pytest.approx(0.8)
    few = evaluate_accuracy("device:cam-1", "vc@1", _windows([0.5, 0.5], n=50), 0.91, pol)
    assert few["status"] == "insufficient-data"
    none = evaluate_accuracy("device:cam-1", "vc@1", _windows([0.5, 0.5]), None, pol)
    assert none["status"] == "no-reference"
    # the default policy: the one window that drops alarms
    one = evaluate_accuracy("device:cam-1", "vc@1", _windows([0.91, 0.91, 0.80]), 0.91,
                            MonitorPolicy())
    assert one["status"] == "alarm"


def test_reference_accuracy_is_read_from_the_builds_metrics() -> None:
    assert reference_accuracy([{"accuracy": {"summary": {"top1_accuracy": 0.93}}}]) == 0.93
    assert reference_accuracy([{"latency": {}}]) is None


def test_ingest_keeps_good_accuracy_and_drift_status_reports_concept(store: Store) -> None:
    for dev, city in (("cam-1", "lyon"), ("cam-2", "lyon")):
        store.upsert_device(Device(dev, "camera", "x86-cpu", {"city": city}, enrolled_at=1.0))
    ing = Ingest(store)           # checks windows against the wall clock
    now = time.time()
    recs = []
    for w in range(3):
        end = min((int(now // 900) - 2 + w) * 900.0 + 1, now)
        acc = 0.9 if w == 0 else 0.7
        recs.append(GOOD | {"ts": end, "window_end": end, "window_start": end - 900,
                            "total": 300, "correct": int(300 * acc), "per_class": {}})
    bad = [recs[0] | {"correct": 999}, recs[0] | {"device_id": "cam-2"}]
    payload = TelemetryBatch("cam-1", 1, (*recs, *bad)).to_bytes()
    ing.handle(topics.device_topic("cam-1", "telemetry"), payload)
    ing.flush()
    assert len(store.query_telemetry("cam-1", "accuracy")) == 3
    assert ing.stats.counts["accuracy:refused:absurd-count"] == 1
    assert ing.stats.counts["accuracy:refused:device-mismatch"] == 1
    out = drift_status(store, now=now, cohorts=["city=lyon"], reference=0.9,
                       lookback_s=3 * 3600)
    by = {c["group"]: c for c in out["concept"]}
    assert by["device:cam-1"]["status"] == "alarm"
    assert by["cohort:city=lyon"]["status"] == "alarm"
    assert "concept=alarm" in render(out)

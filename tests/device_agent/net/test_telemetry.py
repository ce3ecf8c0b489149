"""Telemetry building blocks: the durable bounded queue, feature summaries, drift, system."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.telemetry import (
    DurableQueue,
    FeatureStats,
    TelemetryLimits,
    drift_record,
    system_record,
    take_batch,
)


def test_queue_is_fifo_and_survives_reopen(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path / "t.db", 100)
    q.push_many([b'{"i":1}', b'{"i":2}', b'{"i":3}'])
    q.close()
    q = DurableQueue(tmp_path / "t.db", 100)
    rows = q.peek(2)
    assert [json.loads(b)["i"] for _, b in rows] == [1, 2]
    q.ack(rows[-1][0])
    assert [json.loads(b)["i"] for _, b in q.peek(10)] == [3]
    assert q.next_seq() == 1 and q.next_seq() == 2
    q.close()
    assert DurableQueue(tmp_path / "t.db", 100).next_seq() == 3


def test_queue_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path / "t.db", 5)
    for i in range(12):
        q.push(json.dumps({"i": i}).encode())
    assert len(q) == 5
    assert q.dropped == 7
    assert [json.loads(b)["i"] for _, b in q.peek(10)] == [7, 8, 9, 10, 11]


def test_queue_loses_nothing_when_the_process_is_killed(tmp_path: Path) -> None:
    """A writer killed with SIGKILL right after push returns: every pushed record is there."""
    code = (f"import sys; sys.path.insert(0, {os.getcwd()!r})\n"
            "from pathlib import Path\nfrom device_agent.telemetry import DurableQueue\n"
            f"q = DurableQueue(Path({str(tmp_path / 'k.db')!r}), 1000)\n"
            "for i in range(50):\n    q.push(str(i).encode())\n"
            "print('done', flush=True)\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert p.stdout.strip() == b"done" and p.returncode == -9
    assert [b for _, b in DurableQueue(tmp_path / "k.db", 1000).peek(100)] == \
        [str(i).encode() for i in range(50)]


def test_take_batch_respects_record_and_byte_bounds(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path / "t.db", 10_000)
    q.push_many([json.dumps({"kind": "x", "ts": 0, "pad": "p" * 1000}).encode()
                 for _ in range(500)])
    got = take_batch(q, TelemetryLimits(max_records_per_batch=400, max_batch_bytes=50_000))
    assert got is not None
    last, records = got
    assert 40 <= len(records) <= 50
    assert sum(len(json.dumps(r)) for r in records) <= 50_000
    q.ack(last)
    assert len(q) == 500 - len(records)
    assert take_batch(DurableQueue(tmp_path / "empty.db", 5)) is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30), min_size=1,
                max_size=8))
def test_feature_stats_match_numpy_over_all_batches(batches: list[list[float]]) -> None:
    fs = FeatureStats(sample_every=1)
    for b in batches:
        fs.observe({"x": np.asarray(b, dtype=np.float32)})
    allv = np.concatenate([np.asarray(b, dtype=np.float32) for b in batches]).astype(np.float64)
    s = fs.drain()["x"]
    assert s["count"] == allv.size
    assert math.isclose(s["mean"], allv.mean(), rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(s["std"], allv.std(), rel_tol=1e-6, abs_tol=1e-3)
    assert s["min"] == allv.min() and s["max"] == allv.max()
    assert fs.drain() == {}


def test_feature_stats_ignore_nan_and_non_numeric() -> None:
    fs = FeatureStats(max_features=1, sample_every=1)
    fs.observe({"x": np.array([1.0, np.nan, 3.0]), "s": np.array(["a"]), "y": np.ones(2)})
    d = fs.drain()
    assert set(d) == {"x"} and d["x"]["count"] == 2 and d["x"]["mean"] == 2.0


def test_feature_stats_sample_every_nth_request() -> None:
    fs = FeatureStats(sample_every=4)
    for i in range(1, 13):
        fs.observe({"x": np.array([float(i)])})
    d = fs.drain()["x"]
    assert d["count"] == 3 and d["mean"] == pytest.approx((4 + 8 + 12) / 3)


def test_drift_record_standardises_the_mean_shift() -> None:
    rec = drift_record(1.0, {"x": {"count": 10, "mean": 3.0, "std": 1.0, "min": 0, "max": 5}},
                       {"x": {"mean": 1.0, "std": 0.5}}, "m@1.0.0")
    assert rec is not None and rec.to_dict()["kind"] == "drift"
    assert rec.features["x"].shift == pytest.approx(4.0)
    assert rec.to_dict()["features"]["x"]["count"] == 10.0
    assert drift_record(1.0, {}, {}, None) is None
    no_base = drift_record(1.0, {"z": {"count": 1, "mean": 0.0, "std": 0.0, "min": 0.0,
                                       "max": 0.0}}, {}, None)
    assert no_base is not None and "shift" not in no_base.to_dict()["features"]["z"]


def test_system_record_has_the_protocol_fields(tmp_path: Path) -> None:
    rec = system_record(5.0, tmp_path).to_dict()
    assert rec["kind"] == "system" and rec["ts"] == 5.0
    for k in ("cpu_pct", "mem_mb", "disk_free_mb", "temp_c"):
        assert k in rec
    assert rec["disk_free_mb"] > 0 and rec["mem_mb"] > 0

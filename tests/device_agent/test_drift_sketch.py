"""The agent's drift sketch: sampled counts in the signed bins, windows, bytes on the wire."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device_agent.drift_sketch import DriftSketch
from device_agent.inference import InferenceService
from device_agent.slots import SlotStore
from edgeops.drift.features import build_reference, extract
from edgeops.drift.reference import DriftReference
from tests.device_agent.bundles import (
    FEATURES,
    Fleet,
    build_bundle,
    drift_reference,
    sketch_counts,
)
from tests.device_agent.test_inference import installed

RNG = np.random.default_rng(4)


def _ref(sample_every: int = 1, window_inferences: int = 1000) -> DriftReference:
    x = RNG.normal(size=(500, 6))
    ref = build_reference({"x": x}, {"y": x[:, :3]}, sample_every=sample_every,
                          window_inferences=window_inferences, window_s=60.0)
    assert ref is not None
    return ref


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _feed(s: DriftSketch, n: int, scale: float = 1.0) -> None:
    for _ in range(n):
        x = RNG.normal(size=(1, 6)) * scale
        s.observe({"x": x}, {"y": x[:, :3]})


def test_counts_land_in_the_reference_bins_and_the_window_closes_on_time() -> None:
    clock = Clock()
    s = DriftSketch(clock)
    ref = _ref()
    s.set_reference("m@1", ref)
    _feed(s, 50)
    assert not s.due(clock.t + 59)
    assert s.due(clock.t + 60)
    rec = s.take(clock.t + 60, "cam-1")
    assert rec is not None
    assert rec["kind"] == "drift_sketch" and rec["device_id"] == "cam-1"
    assert rec["bundle"] == "m@1" and rec["requests"] == rec["sampled"] == 50
    assert rec["window_start"] == 1000.0 and rec["window_end"] == 1060.0
    counts = sketch_counts(rec, ref)
    for f in ref.features:
        assert sum(counts[f.name]) == 50 and len(counts[f.name]) == f.bins
    assert s.take(clock.t + 61, "cam-1") is None          # a new, empty window


def test_only_one_request_in_sample_every_is_counted_and_count_closes_a_window() -> None:
    s = DriftSketch(Clock())
    ref = _ref(sample_every=4, window_inferences=40)
    s.set_reference("m@1", ref)
    _feed(s, 39)
    assert not s.due(1000.0)
    _feed(s, 1)
    assert s.due(1000.0)
    rec = s.take(1000.0, "cam-1")
    assert rec is not None and rec["requests"] == 40 and rec["sampled"] == 10
    assert sum(sketch_counts(rec, ref)["input:x[0]"]) == 10


def test_a_new_bundle_discards_the_open_window() -> None:
    s = DriftSketch(Clock())
    s.set_reference("m@1", _ref())
    _feed(s, 5)
    s.set_reference("m@2", _ref())
    _feed(s, 3)
    rec = s.take(2000.0, "cam-1")
    assert rec is not None and rec["bundle"] == "m@2" and rec["sampled"] == 3
    s.set_reference(None, None)
    _feed(s, 3)
    assert not s.due(9e9) and s.take(9e9, "cam-1") is None


def test_bytes_per_feature_per_window_stay_under_one_kilobyte() -> None:
    s = DriftSketch(Clock())
    ref = _ref(window_inferences=10**6)
    s.set_reference("m@1", ref)
    _feed(s, 10_000, scale=3.0)               # large counts: 5-digit numbers per bin
    rec = s.take(2000.0, "cam-1")
    assert rec is not None
    size = len(json.dumps(rec, separators=(",", ":")))
    assert size / len(ref.features) < 1024
    # the JSON form older agents send, for the same counts: names as keys, digits
    counts = sketch_counts(rec, ref)
    as_json = {k: v for k, v in rec.items() if k != "counts_z"} | {"counts": counts}
    assert len(json.dumps(as_json, separators=(",", ":"))) / len(ref.features) < 200
    # the counts themselves: 3-digit numbers, ~2 bytes each as varints before zlib
    assert len(rec["counts_z"]) < 0.5 * len(json.dumps(counts, separators=(",", ":")))


def test_the_inference_service_hands_outputs_to_output_observers(
        tmp_path: Path, fleet: Fleet, bundle_dir: Path) -> None:
    svc = InferenceService()
    svc.swap(installed(SlotStore(tmp_path / "slots"),
                       build_bundle(bundle_dir, fleet, version="1.0.0", scale=2.0)))
    s = DriftSketch(Clock())
    s.set_reference("classifier@1.0.0", drift_reference(window_inferences=3))
    svc.output_observers.append(s.observe)

    def broken(_i: object, _o: object) -> None:
        raise RuntimeError("observer bug")

    svc.output_observers.append(broken)       # must not fail the request
    x = np.zeros((1, FEATURES), dtype=np.float32)
    for _ in range(3):
        assert svc.predict({"x": x})["y"].shape == (1, FEATURES)
    assert s.due(1000.0)
    rec = s.take(1000.0, "cam-1")
    counts = sketch_counts(rec, drift_reference(window_inferences=3))
    assert rec is not None and sum(counts["output:y/class"]) == 3


@pytest.mark.parametrize("bad", [{"x": np.array(["a"])}, {"other": np.zeros((1, 6))}, {}])
def test_inputs_it_cannot_read_are_skipped_not_raised(bad: dict[str, np.ndarray]) -> None:
    s = DriftSketch(Clock())
    ref = _ref()
    s.set_reference("m@1", ref)
    s.observe(bad, {})
    rec = s.take(2000.0, "cam-1")
    assert rec is not None and rec["sampled"] == 1 and sketch_counts(rec, ref) == {}


def test_the_compiled_counting_matches_the_reference_bins_exactly() -> None:
    """Edges, values on edges, NaN/inf, categorical out of range: the agent's one-matrix
    counting gives what FeatureBins.bin_counts (the build's counting) gives."""
    from device_agent.drift_sketch import _Plan

    x = RNG.normal(size=(300, 5))
    x[:, 4] = RNG.integers(0, 3, 300)                     # discrete: duplicate edges merged
    ref = build_reference({"x": x}, {"y": RNG.normal(size=(300, 4))})
    assert ref is not None
    plan = _Plan(ref)
    live = RNG.normal(size=(64, 5)) * 2
    live[:8, 0] = ref.features[0].edges[:8]               # exactly on edges
    live[8, 1], live[9, 2] = np.nan, np.inf
    live[:, 4] = RNG.integers(-1, 5, 64)
    y = RNG.normal(size=(64, 4))
    y[3, 0] = np.nan
    found = {**extract(ref.rules[0], live), **extract(ref.rules[1], y)}
    got = np.zeros(len(plan.names) * plan.width, dtype=np.int64)
    for rule, arr in zip(ref.rules, (live, y), strict=True):
        blk = plan.block(rule, arr)
        assert blk is not None
        plan.add(got, *blk)
    table = got.reshape(len(plan.names), plan.width)
    for i, f in enumerate(ref.features):
        want = f.bin_counts(found[f.name])
        assert table[i, : f.bins].tolist() == want.tolist(), f.name
        assert not table[i, f.bins:].any()

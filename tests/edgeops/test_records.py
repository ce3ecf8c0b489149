"""Telemetry records, typed: today's wire form round-trips byte for byte, every bad field is
refused with a reason naming it, and a kind this version does not know is kept, not refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeops.bundle.manifest import canonical_json
from edgeops.drift.sketch_codec import PACKED_FIELD, pack_counts
from edgeops.protocol import MessageError
from edgeops.protocol.records import (
    KNOWN_KINDS,
    AccuracyRecord,
    CaptureSampleRecord,
    DeliveryRecord,
    DriftRecord,
    DriftSketchRecord,
    HeartbeatRecord,
    InferenceRecord,
    RecordError,
    SystemRecord,
    UnknownRecord,
    parse_record,
)

NOW = 1_800_000_000.25

# What agents sent before the record classes existed, field for field (the dict literals of
# device_agent/collector.py, telemetry.py, tuf_update.py, capture.py and feedback.py as they
# were): old managers read what new agents send, and new managers what old agents send.
HEARTBEAT = {"kind": "heartbeat", "ts": NOW, "agent_version": "0.9.0", "uptime_s": 3600.5,
             "active": {"name": "vc", "version": "1.0.0", "target": "x86_64-cpu", "slot": "a"},
             "deferred": False, "rejected_commands": 2, "mqtt_dropped_inbound": 0,
             "captured": 4}                                # a feature part's own counter
HEARTBEAT_IDLE = {"kind": "heartbeat", "ts": 12, "agent_version": "", "uptime_s": 0.0,
                  "active": None, "deferred": True, "rejected_commands": 0,
                  "mqtt_dropped_inbound": 7}
SYSTEM = {"kind": "system", "ts": NOW, "cpu_pct": 12.5, "mem_mb": 812.3, "mem_pct": 41.0,
          "agent_rss_mb": 95.1, "disk_free_mb": 10240.0, "temp_c": None}
SYSTEM_NO_DISK = SYSTEM | {"disk_free_mb": None, "temp_c": 61.5, "cpu_pct": 0}
INFERENCE = {"kind": "inference", "ts": NOW, "bundle": "vc@1.0.0", "count": 6, "errors": 1,
             "p50_ms": 2.5, "p95_ms": 10.0, "p99_ms": 10.0,
             "histogram": {"le_ms": [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, None],
                           "counts": [0, 0, 0, 1, 2, 1, 2, 0]}}
INFERENCE_IDLE = {"kind": "inference", "ts": NOW, "bundle": None, "count": 0, "errors": 0,
                  "p50_ms": None, "p95_ms": None, "p99_ms": None,
                  "histogram": {"le_ms": [1.0, None], "counts": [0, 0]}}
DRIFT = {"kind": "drift", "ts": NOW, "bundle": "vc@1.0.0", "features": {
    "x": {"count": 10.0, "mean": 3.0, "std": 1.0, "min": 0.0, "max": 5.0,
          "baseline_mean": 1.0, "baseline_std": 0.5, "shift": 4.0},
    "flat": {"count": 3.0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0,
             "baseline_mean": 0.0, "baseline_std": 0.0, "shift": None},
    "new": {"count": 1.0, "mean": None, "std": 0.0, "min": None, "max": None}}}
DELIVERY = {"kind": "delivery", "ts": NOW, "deployment_id": "d-1", "bundle": "vc@1.1.0",
            "method": "delta", "fetched_bytes": 1200, "full_bytes": 90000, "reason": None}
DELIVERY_FULL = DELIVERY | {"deployment_id": None, "method": "full", "fetched_bytes": 90000,
                            "reason": "no delta from the active model"}
CAPTURE = {"kind": "capture", "ts": NOW, "device_id": "cam-1",
           "capture_id": "c-0123456789abcdef", "bundle": None, "seq": 3, "bytes": 4,
           "data": "RU9DMQ=="}
ACCURACY = {"kind": "accuracy", "ts": NOW, "device_id": "cam-1", "bundle": "vc@1.0.0",
            "task": "classification", "window_start": NOW - 900, "window_end": NOW,
            "total": 300, "correct": 270, "per_class": {"0": [150, 140], "1": [150, 130]}}
ACCURACY_REG = {"kind": "accuracy", "ts": NOW, "device_id": "cam-1", "bundle": "vc@1.0.0",
                "task": "regression", "window_start": NOW - 900, "window_end": NOW,
                "total": 3, "abs_error": [1, 0, 2, 0]}

# packed counts, whole seconds (device_agent/drift_sketch.py since the packed form) ...
SKETCH = {"kind": "drift_sketch", "ts": 1_800_000_000, "device_id": "cam-1",
          "bundle": "vc@1.0.0", "window_start": 1_799_999_100, "window_end": 1_800_000_000,
          "requests": 900, "sampled": 112, PACKED_FIELD: pack_counts([[3, 0, 109], [112, 0]])}
# ... the JSON form agents sent before it, still accepted, and how the manager stores both
SKETCH_JSON = {"kind": "drift_sketch", "ts": NOW, "device_id": "cam-1", "bundle": "vc@1.0.0",
               "window_start": NOW - 900, "window_end": NOW, "requests": 900, "sampled": 112,
               "sample_every": 8, "counts": {"x.mean": [3, 0, 109], "x.std": [112, 0]}}

TODAY = [HEARTBEAT, HEARTBEAT_IDLE, SYSTEM, SYSTEM_NO_DISK, INFERENCE, INFERENCE_IDLE, DRIFT,
         SKETCH, SKETCH_JSON, DELIVERY, DELIVERY_FULL, CAPTURE, ACCURACY, ACCURACY_REG]
CLASSES = {"heartbeat": HeartbeatRecord, "system": SystemRecord, "inference": InferenceRecord,
           "drift": DriftRecord, "drift_sketch": DriftSketchRecord, "delivery": DeliveryRecord,
           "capture": CaptureSampleRecord, "accuracy": AccuracyRecord}


@pytest.mark.parametrize("wire", TODAY, ids=lambda d: str(d["kind"]))
def test_todays_records_round_trip_unchanged(wire: dict[str, Any]) -> None:
    before = copy.deepcopy(wire)
    rec = parse_record(wire)
    assert isinstance(rec, CLASSES[wire["kind"]])
    assert rec.to_dict() == wire
    assert canonical_json(rec.to_dict()) == canonical_json(wire)
    assert wire == before                                  # parsing does not touch the input
    assert type(rec).from_dict(rec.to_dict()) == rec


def test_every_kind_has_a_class_and_a_sample() -> None:
    assert set(CLASSES) == KNOWN_KINDS == {d["kind"] for d in TODAY}


def test_a_heartbeat_keeps_the_fields_of_the_agents_parts() -> None:
    beat = parse_record(HEARTBEAT)
    assert isinstance(beat, HeartbeatRecord) and beat.parts == {"captured": 4}
    with pytest.raises(RecordError, match="may not be named 'ts'"):
        HeartbeatRecord(NOW, "1", 0.0, parts={"ts": 1})


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    rec = parse_record(INFERENCE | {"gpu_ms": 3.0})
    assert rec == parse_record(INFERENCE) and "gpu_ms" not in rec.to_dict()
    drift = DRIFT | {"features": {"x": DRIFT["features"]["x"] | {"psi": 0.2}}}  # type: ignore[operator]
    assert parse_record(drift).to_dict()["features"]["x"] == DRIFT["features"]["x"]


def test_a_kind_this_version_does_not_know_is_kept_as_it_came() -> None:
    wire = {"kind": "gpu", "ts": NOW, "util_pct": 80, "deployment_id": None}
    rec = parse_record(wire)
    assert isinstance(rec, UnknownRecord) and rec.kind == "gpu" and rec.ts == NOW
    assert rec.to_dict() == wire
    for bad in ({"kind": "gpu"}, {"kind": "gpu", "ts": "now"}, {"kind": 5, "ts": 1},
                {"ts": 1}, {"kind": "k" * 65, "ts": 1}, {"kind": "", "ts": 1}):
        with pytest.raises(RecordError):
            parse_record(bad)
    with pytest.raises(RecordError, match="must be an object"):
        parse_record(["heartbeat"])  # type: ignore[arg-type]


def _per_class(v: Any) -> dict[str, Any]:
    return {"per_class": {"0": v}}


# (the record, the fields changed, the reason, words the one-line message must hold)
BAD: list[tuple[dict[str, Any], dict[str, Any], str, str]] = [
    (HEARTBEAT, {"ts": None}, "malformed", "'ts'"),
    (HEARTBEAT, {"ts": float("nan")}, "malformed", "'ts'"),
    (HEARTBEAT, {"ts": True}, "malformed", "'ts'"),
    (HEARTBEAT, {"agent_version": 9}, "malformed", "'agent_version'"),
    (HEARTBEAT, {"uptime_s": -1}, "malformed", "'uptime_s'"),
    (HEARTBEAT, {"active": "a"}, "malformed", "'active'"),
    (HEARTBEAT, {"deferred": "no"}, "malformed", "'deferred'"),
    (HEARTBEAT, {"rejected_commands": -2}, "negative-count", "'rejected_commands'"),
    (HEARTBEAT, {"mqtt_dropped_inbound": 1.5}, "malformed", "'mqtt_dropped_inbound'"),
    (HEARTBEAT, {"active": None, "deferred": None, "rejected_commands": True}, "malformed",
     "'rejected_commands'"),
    (SYSTEM, {"cpu_pct": 250}, "malformed", "'cpu_pct'"),
    (SYSTEM, {"cpu_pct": None}, "malformed", "'cpu_pct'"),
    (SYSTEM, {"mem_mb": "812"}, "malformed", "'mem_mb'"),
    (SYSTEM, {"mem_pct": -3}, "malformed", "'mem_pct'"),
    (SYSTEM, {"disk_free_mb": float("inf")}, "malformed", "'disk_free_mb'"),
    (SYSTEM, {"temp_c": "hot"}, "malformed", "'temp_c'"),
    (INFERENCE, {"count": -1}, "negative-count", "'count'"),
    (INFERENCE, {"count": "6"}, "malformed", "'count'"),
    (INFERENCE, {"errors": None}, "malformed", "'errors'"),
    (INFERENCE, {"p95_ms": -1.0}, "malformed", "'p95_ms'"),
    (INFERENCE, {"bundle": 3}, "malformed", "'bundle'"),
    (INFERENCE, {"histogram": [1, 2]}, "malformed", "'histogram'"),
    (INFERENCE, {"histogram": {"le_ms": [1.0], "counts": [1, 2]}}, "malformed", "histogram"),
    (INFERENCE, {"histogram": {"le_ms": [1.0, None], "counts": [1, -2]}}, "negative-count",
     "histogram.counts"),
    (INFERENCE, {"histogram": {"le_ms": ["1", None], "counts": [1, 2]}}, "malformed",
     "histogram.le_ms"),
    (INFERENCE, {"histogram": {"le_ms": [1.0] * 65, "counts": [0] * 65}}, "malformed",
     "at most 64"),
    (INFERENCE, {"histogram": {"le_ms": [1.0, float("nan")], "counts": [0, 0]}}, "malformed",
     "histogram.le_ms"),
    (INFERENCE, {"histogram": {"le_ms": [1.0, True], "counts": [0, 0]}}, "malformed",
     "histogram.le_ms"),
    (INFERENCE, {"histogram": {"le_ms": [1.0, None], "counts": [0, False]}}, "malformed",
     "histogram.counts"),
    (INFERENCE, {"histogram": {"le_ms": 1.0, "counts": [0]}}, "malformed", "histogram.le_ms"),
    (INFERENCE, {"histogram": {"le_ms": [1.0], "counts": None}}, "malformed",
     "histogram.counts"),
    (DRIFT, {"features": []}, "malformed", "'features'"),
    (DRIFT, {"features": {"x": 1}}, "malformed", "features"),
    (DRIFT, {"features": {"x": {"count": 1, "mean": "a", "std": 0, "min": 0, "max": 0}}},
     "malformed", "features.mean"),
    (DRIFT, {"features": {"x": {"count": 1, "mean": 0, "std": -1, "min": 0, "max": 0}}},
     "malformed", "features.std"),
    (DRIFT, {"features": {"x": {"count": 1, "mean": 0, "std": 0, "min": 0, "max": 0,
                                "shift": 2.0}}}, "malformed", "baseline_mean"),
    (DRIFT, {"features": {f"f{i}": {} for i in range(4097)}}, "malformed", "4096"),
    (SKETCH, {"device_id": ""}, "malformed", "'device_id'"),
    (SKETCH, {"bundle": None}, "malformed", "'bundle'"),
    (SKETCH, {"window_start": "then"}, "malformed", "'window_start'"),
    (SKETCH, {"window_start": 1_800_000_001}, "malformed", "ends before it starts"),
    (SKETCH, {"requests": -5, "sampled": -5}, "negative-count", "'requests'"),
    (SKETCH, {"sampled": 901}, "absurd-count", "901 sampled of 900"),
    (SKETCH, {PACKED_FIELD: None}, "malformed", "one of 'counts' or 'counts_z'"),
    (SKETCH, {PACKED_FIELD: 5}, "malformed", "'counts_z'"),
    (SKETCH, {"counts": {"x": [1]}}, "malformed", "one of 'counts' or 'counts_z'"),
    (SKETCH_JSON, {"counts": [1, 2]}, "malformed", "'counts'"),
    (SKETCH_JSON, {"counts": {"x": 3}}, "malformed", "counts['x']"),
    (SKETCH_JSON, {"counts": {"x": [1, -1]}}, "negative-count", "counts['x']"),
    (SKETCH_JSON, {"counts": {"x": [1, 0.5]}}, "malformed", "counts['x']"),
    (SKETCH_JSON, {"counts": {"x": [0] * 4097}}, "malformed", "counts['x']"),
    (SKETCH_JSON, {"sample_every": 0}, "malformed", "'sample_every'"),
    (DELIVERY, {"method": "carrier-pigeon"}, "malformed", "'method'"),
    (DELIVERY, {"fetched_bytes": -5}, "negative-count", "'fetched_bytes'"),
    (DELIVERY, {"full_bytes": None}, "malformed", "'full_bytes'"),
    (DELIVERY, {"bundle": ""}, "malformed", "'bundle'"),
    (DELIVERY, {"deployment_id": 4}, "malformed", "'deployment_id'"),
    (DELIVERY, {"reason": ["x"]}, "malformed", "'reason'"),
    (CAPTURE, {"seq": "x"}, "malformed", "'seq'"),
    (CAPTURE, {"seq": 2**62}, "absurd-count", "'seq'"),
    (CAPTURE, {"device_id": None}, "malformed", "'device_id'"),
    (CAPTURE, {"capture_id": ""}, "malformed", "'capture_id'"),
    (CAPTURE, {"bytes": -1}, "negative-count", "'bytes'"),
    (CAPTURE, {"data": b"x"}, "malformed", "'data'"),
    (ACCURACY, {"task": "ranking"}, "malformed", "'task'"),
    (ACCURACY, {"total": "many"}, "malformed", "'total'"),
    (ACCURACY, {"correct": None}, "malformed", "'correct'"),
    (ACCURACY, {"bundle": None}, "malformed", "'bundle'"),
    (ACCURACY, {"window_end": NOW - 1000}, "malformed", "ends before it starts"),
    (ACCURACY, {"window_start": None}, "malformed", "'window_start'"),
    (ACCURACY, _per_class([1]), "malformed", "per_class"),
    (ACCURACY, _per_class([1, 2, 3]), "malformed", "per_class"),
    (ACCURACY, _per_class([1, "a"]), "malformed", "per_class"),
    (ACCURACY, {"per_class": [1]}, "malformed", "'per_class'"),
    (ACCURACY, {"total": -1, "correct": -1}, "negative-count", "'total'"),
    (ACCURACY, {"correct": 301}, "absurd-count", "301 correct of 300"),
    (ACCURACY, _per_class([10, 11]), "absurd-count", "per_class"),
    (ACCURACY, _per_class([400, 1]), "absurd-count", "per_class"),
    (ACCURACY_REG, {"abs_error": [1, 1]}, "absurd-count", "sum to 2, not total 3"),
    (ACCURACY_REG, {"abs_error": [-1, 4]}, "negative-count", "'abs_error'"),
    (ACCURACY_REG, {"abs_error": None}, "malformed", "'abs_error'"),
    (ACCURACY_REG, {"abs_error": "1,2"}, "malformed", "'abs_error'"),
]


@pytest.mark.parametrize(("wire", "over", "reason", "words"), BAD,
                         ids=[f"{w['kind']}-{'-'.join(o)}" for w, o, _r, _w in BAD])
def test_each_bad_field_is_refused_with_its_reason(wire: dict[str, Any], over: dict[str, Any],
                                                   reason: str, words: str) -> None:
    with pytest.raises(RecordError) as exc:
        parse_record(wire | over)
    assert exc.value.reason == reason, exc.value.message
    assert words in exc.value.message and wire["kind"] in exc.value.message
    assert "\n" not in exc.value.diagnostics()
    assert isinstance(exc.value, MessageError)            # handlers log and drop it as before


def test_a_missing_field_is_refused_and_construction_validates_too() -> None:
    for wire in TODAY:
        for key in [k for k in wire if k not in ("kind",)]:
            partial = {k: v for k, v in wire.items() if k != key}
            try:
                rec = parse_record(partial)
            except RecordError:
                continue
            # only fields agents may leave out parse without them, and then are not sent
            assert key in _OPTIONAL[wire["kind"]], (wire["kind"], key)
            assert key not in rec.to_dict() or rec.to_dict()[key] is None
    with pytest.raises(RecordError, match="'count'"):
        InferenceRecord(NOW, None, -0.5, 0)  # type: ignore[arg-type]


_OPTIONAL = {"heartbeat": {"active", "deferred", "rejected_commands", "mqtt_dropped_inbound",
                           "captured"},
             "system": {"mem_pct", "agent_rss_mb", "disk_free_mb", "temp_c"},
             "inference": {"bundle", "p50_ms", "p95_ms", "p99_ms", "histogram"},
             "drift": {"bundle"}, "drift_sketch": {"sample_every"},
             "delivery": {"deployment_id", "reason"},
             "capture": {"bundle"}, "accuracy": {"per_class"}}


def test_the_accuracy_of_a_window_and_the_largest_drift_shift() -> None:
    acc = parse_record(ACCURACY)
    assert isinstance(acc, AccuracyRecord) and acc.accuracy == pytest.approx(0.9)
    assert isinstance(reg := parse_record(ACCURACY_REG), AccuracyRecord) and reg.accuracy is None
    drift = parse_record(DRIFT)
    assert isinstance(drift, DriftRecord) and drift.max_shift() == ("x", 4.0)


counts = st.integers(min_value=0, max_value=2**40)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=1e9)


@given(ts=finite, count=counts, errors=counts,
       p=st.lists(st.none() | finite, min_size=3, max_size=3),
       buckets=st.lists(st.tuples(st.none() | finite, counts), max_size=64),
       bundle=st.none() | st.text(min_size=1, max_size=20))
def test_inference_records_round_trip(ts: float, count: int, errors: int, p: list[Any],
                                      buckets: list[tuple[Any, int]], bundle: Any) -> None:
    wire = {"kind": "inference", "ts": ts, "bundle": bundle, "count": count, "errors": errors,
            "p50_ms": p[0], "p95_ms": p[1], "p99_ms": p[2],
            "histogram": {"le_ms": [b for b, _ in buckets], "counts": [c for _, c in buckets]}}
    assert canonical_json(parse_record(wire).to_dict()) == canonical_json(wire)


@given(total=st.integers(0, 10**6), data=st.data())
def test_accuracy_records_round_trip(total: int, data: st.DataObject) -> None:
    correct = data.draw(st.integers(0, total))
    per_class = data.draw(st.dictionaries(st.from_regex(r"[0-9]{1,2}", fullmatch=True),
                                          st.integers(0, total).flatmap(
                                              lambda t: st.tuples(st.just(t),
                                                                  st.integers(0, t))),
                                          max_size=8))
    wire = ACCURACY | {"total": total, "correct": correct,
                       "per_class": {k: list(v) for k, v in per_class.items()}}
    assert canonical_json(parse_record(wire).to_dict()) == canonical_json(wire)


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
maybe = st.none() | finite


@st.composite
def drift_features(draw: st.DrawFn) -> dict[str, Any]:
    f = {k: draw(maybe) for k in ("count", "mean", "min", "max", "std")}
    if draw(st.booleans()):
        f |= {"baseline_mean": draw(finite), "baseline_std": draw(finite),
              "shift": draw(maybe)}
    return f


WIRE = {
    "system": st.fixed_dictionaries({
        "kind": st.just("system"), "ts": finite, "cpu_pct": st.floats(0, 100),
        "mem_mb": finite, "mem_pct": st.floats(0, 100), "agent_rss_mb": finite,
        "disk_free_mb": maybe, "temp_c": st.none() | st.floats(-50, 150)}),
    "drift": st.fixed_dictionaries({
        "kind": st.just("drift"), "ts": finite, "bundle": st.none() | names,
        "features": st.dictionaries(names, drift_features(), max_size=5)}),
    "delivery": st.fixed_dictionaries({
        "kind": st.just("delivery"), "ts": finite, "deployment_id": st.none() | names,
        "bundle": names, "method": st.sampled_from(["delta", "full", "cached"]),
        "fetched_bytes": counts, "full_bytes": counts, "reason": st.none() | st.text()}),
    "capture": st.fixed_dictionaries({
        "kind": st.just("capture"), "ts": finite, "device_id": names, "capture_id": names,
        "bundle": st.none() | names, "seq": st.integers(0, 2**62 - 1), "bytes": counts,
        "data": st.text(max_size=40)}),
    "heartbeat": st.fixed_dictionaries({
        "kind": st.just("heartbeat"), "ts": finite, "agent_version": st.text(max_size=10),
        "uptime_s": finite, "active": st.none() | st.dictionaries(names, names, max_size=4),
        "deferred": st.booleans(), "rejected_commands": counts,
        "mqtt_dropped_inbound": counts}),
}


@given(st.one_of(*WIRE.values()))
def test_generated_records_of_every_kind_round_trip(wire: dict[str, Any]) -> None:
    assert canonical_json(parse_record(wire).to_dict()) == canonical_json(wire)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


@given(st.sampled_from(TODAY), st.dictionaries(st.text(max_size=12), json_values, max_size=4),
       st.data())
def test_any_damage_to_a_record_is_a_record_error_or_parses(wire: dict[str, Any],
                                                           over: dict[str, Any],
                                                           data: st.DataObject) -> None:
    # replace some of the record's own fields too, not only add others
    own = data.draw(st.lists(st.sampled_from(sorted(wire)), max_size=3))
    damaged = wire | {k: data.draw(json_values) for k in own} | over
    try:
        rec = parse_record(damaged)
    except RecordError as exc:
        assert exc.message and "\n" not in exc.message
        return
    assert rec.to_dict()["kind"] == wire["kind"] or isinstance(rec, UnknownRecord)


def test_huge_integers_are_refused_or_kept_not_a_crash() -> None:
    with pytest.raises(RecordError, match="histogram"):
        parse_record(INFERENCE | {"histogram": {"le_ms": [10**400, -1], "counts": [0, 0]}})
    assert parse_record(SYSTEM | {"mem_mb": 10**400}).to_dict()["mem_mb"] == 10**400

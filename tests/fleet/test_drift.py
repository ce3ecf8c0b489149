"""Drift on the manager: sketch intake (every refusal), grouping per device/cohort/deployment,
the HTTP route and the CLI. SQLite and PostgreSQL through the ``store`` fixture."""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeops.bundle import ArtifactEntry, FileRef, Manifest, TensorSpec
from edgeops.drift.features import build_reference, extract
from edgeops.drift.reference import DriftReference
from edgeops.drift.sketch_codec import PACKED_FIELD, pack_counts
from edgeops.errors import UsageError
from edgeops.keys import KeyStore
from edgeops.protocol import TelemetryBatch, topics
from fleet.api import openapi_document
from fleet.client import FleetClient
from fleet.drift.intake import SketchIntake, SketchLimits, check_sketch, read_sketch
from fleet.drift.monitor import MonitorPolicy
from fleet.drift.report import render
from fleet.drift.service import drift_status
from fleet.errors import NotFoundError
from fleet.ingest import Ingest, Outcome
from fleet.store import BundleRecord, Deployment, DeploymentDevice, Device, Store
from tests.fleet.live import LiveFleet, live_fleet

NOW = 1_800_000_000.0
SHA = "0" * 64


def _reference() -> DriftReference:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 2))
    ref = build_reference({"x": x}, {"y": np.stack([x[:, 0], -x[:, 0]], axis=1)})
    assert ref is not None
    return ref


REF = _reference()


def _manifest(version: str, drift: DriftReference | None) -> bytes:
    art = ArtifactEntry("x86-cpu", FileRef("artifacts/x86-cpu/model.onnx", SHA, 10), "onnx",
                        "onnxruntime", ("CPUExecutionProvider",), "fp32")
    return Manifest("vc", version, SHA, (TensorSpec("x", "float32", ("n", 2)),),
                    (TensorSpec("y", "float32", ("n", 2)),), (art,), drift=drift).to_bytes()


def _counts(x: np.ndarray) -> dict[str, list[int]]:
    y = np.stack([x[:, 0], -x[:, 0]], axis=1)
    out: dict[str, list[int]] = {}
    for rule in REF.rules:
        for name, v in extract(rule, x if rule.side == "input" else y).items():
            fb = REF.feature(name)
            assert fb is not None
            out[name] = [int(c) for c in fb.bin_counts(v)]
    return out


def _sketch(device: str, end: float, x: np.ndarray, **over: Any) -> dict[str, Any]:
    rec = {"kind": "drift_sketch", "ts": end, "device_id": device, "bundle": "vc@1.0.0",
           "window_start": end - 900, "window_end": end, "requests": 4 * len(x),
           "sampled": len(x), "sample_every": 4, "counts": _counts(x)}
    return rec | over


def _publish(store: Store) -> None:
    store.put_bundle(BundleRecord("vc", "1.0.0", _manifest("1.0.0", REF), b"{}", 1.0))
    store.put_bundle(BundleRecord("vc", "0.9.0", _manifest("0.9.0", None), b"{}", 1.0))


def _enrol(store: Store) -> None:
    for dev, city in (("cam-1", "lyon"), ("cam-2", "lyon"), ("cam-3", "paris")):
        store.upsert_device(Device(dev, "camera", "x86-cpu", {"city": city}, enrolled_at=1.0))


# -- intake: every refusal ------------------------------------------------------------------
X = np.random.default_rng(2).normal(size=(300, 2))
GOOD = _sketch("cam-1", NOW - 10, X)


def _bins_off() -> dict[str, Any]:
    c = dict(GOOD["counts"])
    c["input:x[0]"] = c["input:x[0]"][:-1]
    return c


def _negative() -> dict[str, Any]:
    c = dict(GOOD["counts"])
    c["input:x[0]"] = [-1, *c["input:x[0]"][1:]]
    return c


def _absurd() -> dict[str, Any]:
    c = dict(GOOD["counts"])
    c["input:x[0]"] = [10**9, *c["input:x[0]"][1:]]
    return c


@pytest.mark.parametrize(("over", "reason"), [
    ({"device_id": "cam-2"}, "device-mismatch"),
    ({"counts": _bins_off()}, "bins-mismatch"),
    ({"counts": {"input:nope": [1, 2]}}, "unknown-feature"),
    ({"counts": _negative()}, "negative-count"),
    ({"counts": _absurd()}, "absurd-count"),
    ({"sampled": 10**6, "requests": 10}, "absurd-count"),
    ({"requests": -5, "sampled": -5}, "negative-count"),
    ({"window_end": NOW + 3600, "window_start": NOW + 2700}, "future-window"),
    ({"window_end": NOW - 30 * 86_400, "window_start": NOW - 30 * 86_400 - 900}, "stale-window"),
    ({"window_start": NOW, "window_end": NOW - 100}, "malformed"),
    ({"counts": "lots"}, "malformed"),
    ({"bundle": "vc@9.9.9"}, "no-reference"),
])
def test_bad_sketches_are_refused_with_a_reason(over: dict[str, Any], reason: str) -> None:
    ref = None if over.get("bundle") == "vc@9.9.9" else REF
    got = check_sketch(GOOD | over, "cam-1", ref, NOW, SketchLimits())
    assert got is not None and got.reason == reason, got
    assert check_sketch(GOOD, "cam-1", REF, NOW) is None


@pytest.fixture
def ingest(store: Store) -> Ingest:
    _enrol(store)
    _publish(store)
    return Ingest(store, sketches=SketchIntake(store, clock=lambda: NOW))


def _send(ing: Ingest, device: str, records: list[dict[str, Any]], seq: int = 1,
          topic_device: str | None = None) -> Outcome:
    payload = TelemetryBatch(device, seq, tuple(records)).to_bytes()
    return ing.handle(topics.device_topic(topic_device or device, "telemetry"), payload)


def _packed(rec: dict[str, Any], flat: list[int] | None = None) -> dict[str, Any]:
    """The record as agents send it: counts packed in the reference's order
    (edgeops/drift/sketch_codec.py); ``flat`` replaces the counts, bins ignored."""
    counts = rec["counts"]
    per = [counts.get(f.name, [0] * f.bins) for f in REF.features]
    if flat is not None:
        per = [flat]
    out = {k: v for k, v in rec.items() if k != "counts"}
    return out | {PACKED_FIELD: pack_counts(per)}


PACKED = _packed(GOOD)
_FLAT = [v for f in REF.features for v in GOOD["counts"].get(f.name, [0] * f.bins)]


@pytest.mark.parametrize(("over", "reason"), [
    ({PACKED_FIELD: "%%% not base64"}, "bad-encoding"),
    ({PACKED_FIELD: base64.b64encode(b"not zlib at all").decode()}, "bad-encoding"),
    ({PACKED_FIELD: base64.b64encode(zlib.compress(b"\x00" * 10_000_000)).decode()},
     "bad-encoding"),                                     # a zlib bomb: stops at the cap
    ({PACKED_FIELD: _packed(GOOD, _FLAT[:-1])[PACKED_FIELD]}, "bins-mismatch"),
    ({PACKED_FIELD: _packed(GOOD, [*_FLAT, 3])[PACKED_FIELD]}, "bins-mismatch"),
    ({PACKED_FIELD: _packed(GOOD, [10**9, *_FLAT[1:]])[PACKED_FIELD]}, "absurd-count"),
    ({"counts": GOOD["counts"]}, "malformed"),            # both forms at once
    ({PACKED_FIELD: 7}, "malformed"),
    ({"device_id": "cam-2"}, "device-mismatch"),
])
def test_bad_packed_sketches_are_refused_with_a_reason(over: dict[str, Any], reason: str) -> None:
    got = check_sketch(PACKED | over, "cam-1", REF, NOW, SketchLimits())
    assert got is not None and got.reason == reason, got
    assert read_sketch(PACKED, "cam-1", REF, NOW) == GOOD["counts"]


def test_good_sketch_is_stored_and_bad_ones_are_counted_not_stored(ingest: Ingest,
                                                                    store: Store) -> None:
    bad = [GOOD | {"device_id": "cam-2"}, GOOD | {"counts": _bins_off()},
           GOOD | {"window_end": NOW + 3600}, GOOD | {"bundle": "vc@0.9.0"},
           GOOD | {"counts": _negative()}]
    assert _send(ingest, "cam-1", [GOOD, *bad]) is Outcome.BUFFERED
    ingest.flush()
    rows = store.query_telemetry("cam-1", "drift_sketch")
    assert len(rows) == 1 and rows[0].data["counts"] == GOOD["counts"]
    c = ingest.stats.counts
    assert c["drift_sketch:refused:device-mismatch"] == 1
    assert c["drift_sketch:refused:bins-mismatch"] == 1
    assert c["drift_sketch:refused:future-window"] == 1
    assert c["drift_sketch:refused:no-reference"] == 1
    assert c["drift_sketch:refused:negative-count"] == 1


def test_packed_sketches_are_stored_unpacked_and_old_ones_still_accepted(
        ingest: Ingest, store: Store) -> None:
    """Agents send packed counts; agents already in the field send JSON counts; both are
    stored in the JSON form, bad packed ones counted and not stored."""
    old = GOOD | {"window_end": NOW - 20, "ts": NOW - 20}
    bomb = base64.b64encode(zlib.compress(b"\x00" * 10_000_000)).decode()
    bad = [PACKED | {PACKED_FIELD: "%%%"}, PACKED | {PACKED_FIELD: bomb},
           PACKED | {PACKED_FIELD: _packed(GOOD, _FLAT[:-1])[PACKED_FIELD]}]
    assert _send(ingest, "cam-1", [PACKED, old, *bad]) is Outcome.BUFFERED
    ingest.flush()
    rows = store.query_telemetry("cam-1", "drift_sketch")
    assert len(rows) == 2
    for r in rows:
        assert r.data["counts"] == GOOD["counts"] and PACKED_FIELD not in r.data
    c = ingest.stats.counts
    assert c["drift_sketch:refused:bad-encoding"] == 2
    assert c["drift_sketch:refused:bins-mismatch"] == 1


def test_a_batch_on_another_devices_topic_is_refused_whole(ingest: Ingest, store: Store) -> None:
    assert _send(ingest, "cam-2", [GOOD | {"device_id": "cam-2"}],
                 topic_device="cam-1") is Outcome.MISMATCH
    ingest.flush()
    assert store.query_telemetry("cam-1", "drift_sketch") == []
    assert store.query_telemetry("cam-2", "drift_sketch") == []


def test_a_bundle_published_after_a_refusal_is_found_once_the_miss_expires(
        store: Store) -> None:
    _enrol(store)
    now = [NOW]
    intake = SketchIntake(store, clock=lambda: now[0], unknown_ttl_s=60.0)
    refusal = intake.check("cam-1", GOOD)
    assert refusal is not None and refusal.reason == "no-reference"
    _publish(store)
    assert intake.check("cam-1", GOOD) is not None          # the miss is still cached
    now[0] += 61
    assert intake.check("cam-1", GOOD | {"window_end": now[0] - 10,
                                         "window_start": now[0] - 910}) is None


def test_without_a_checker_sketches_are_never_stored(store: Store) -> None:
    _enrol(store)
    ing = Ingest(store)
    _send(ing, "cam-1", [GOOD])
    ing.flush()
    assert store.query_telemetry("cam-1", "drift_sketch") == []
    assert ing.stats.counts["drift_sketch:refused:no-reference"] == 1


# -- grouping -------------------------------------------------------------------------------
def _fill(ingest: Ingest, scale_by_device: dict[str, float], windows: int = 3) -> None:
    rng = np.random.default_rng(9)
    seq = 0
    for w in range(windows):
        end = (int(NOW // REF.window_s) - windows + w + 1) * REF.window_s - 1
        for dev, scale in scale_by_device.items():
            seq += 1
            x = rng.normal(size=(150, 2)) * scale      # 150 < min_samples: per device alone,
            _send(ingest, dev, [_sketch(dev, end, x)], seq=seq)   # no verdict
    ingest.flush()


def test_cohort_merges_devices_that_alone_are_too_small(ingest: Ingest, store: Store) -> None:
    _fill(ingest, {"cam-1": 1.6, "cam-2": 1.6, "cam-3": 1.0})
    out = drift_status(store, now=NOW, cohorts=["city=lyon", "city=paris"])
    devices = {g["group"]: g for g in out["devices"]}
    assert devices["device:cam-1"]["data_drift"]["status"] == "insufficient-data"
    cohorts = {g["group"]: g for g in out["cohorts"]}
    lyon = cohorts["cohort:city=lyon"]
    assert lyon["devices"] == 2 and lyon["data_drift"]["status"] == "alarm"
    assert lyon["prediction_drift"]["status"] == "alarm"    # y follows x0: its spread too
    assert cohorts["cohort:city=paris"]["data_drift"]["status"] == "insufficient-data"
    assert out["policy"]["false_alarm_rate_per_window"] == pytest.approx(MonitorPolicy().alpha)
    text = render(out)
    assert "cohort:city=lyon" in text and "input:x[0]" in text


def test_deployment_groups_its_devices_for_its_bundle(ingest: Ingest, store: Store) -> None:
    _fill(ingest, {"cam-1": 1.0, "cam-2": 1.0, "cam-3": 1.0})
    store.create_deployment(
        Deployment("d-1", "vc", "1.0.0", "all", {"phases": [100]}, "running", 0, NOW, NOW, NOW),
        [DeploymentDevice("d-1", d, 0, "healthy", "x86-cpu", NOW) for d in ("cam-1", "cam-2")])
    out = drift_status(store, now=NOW, deployment="d-1",
                       policy=MonitorPolicy(min_samples=250))
    (dep,) = out["deployments"]
    assert dep["group"] == "deployment:d-1" and dep["devices"] == 2
    assert dep["status"] == "ok"
    with pytest.raises(NotFoundError):
        drift_status(store, now=NOW, deployment="d-nope")
    with pytest.raises(NotFoundError):
        drift_status(store, now=NOW, device="cam-nope")


# -- HTTP and CLI ---------------------------------------------------------------------------
@pytest.fixture
def live(keystore: KeyStore, tmp_path: Path) -> Iterator[LiveFleet]:
    with live_fleet(keystore, tmp_path) as lf:
        yield lf


def test_route_and_cli_report_drift(live: LiveFleet, capsys: pytest.CaptureFixture[str]) -> None:
    store = live.server.store
    _enrol(store)
    _publish(store)
    ing = Ingest(store, sketches=SketchIntake(store))
    now = time.time()
    rng = np.random.default_rng(3)
    for w in range(3):
        end = (int(now // REF.window_s) - 2 + w) * REF.window_s + 1
        _send(ing, "cam-1", [_sketch("cam-1", min(end, now), rng.normal(size=(400, 2)) * 2)],
              seq=w + 1)
    ing.flush()
    c = FleetClient(live.url, live.admin)
    out = c.drift(device="cam-1")
    (g,) = out["devices"]
    assert g["group"] == "device:cam-1" and g["data_drift"]["status"] == "alarm"
    assert "/api/v1/drift" in openapi_document()["paths"]
    with pytest.raises(UsageError, match="alpha"):
        c.drift(alpha=2)
    base = ["fleet", "drift", "--fleet", live.url, "--token", live.admin]
    code, out_text, _ = _run(capsys, *base, "--device", "cam-1", "--json")
    assert code == 0 and json.loads(out_text)["devices"][0]["status"] == "alarm"
    code, out_text, _ = _run(capsys, *base, "--cohort", "city=lyon")
    assert code == 0 and "cohort:city=lyon" in out_text and "alarm" in out_text
    code, out_text, err = _run(capsys, *base, "--cohort", "city")
    assert code != 0 and "not key=value" in err and "Traceback" not in err


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from tests.fleet.live import run_cli

    return run_cli(capsys, *argv)


def test_cli_defaults_are_the_monitor_policys() -> None:
    """The CLI states its defaults without importing the monitor (numpy); they must not drift
    from MonitorPolicy's, which the API and stored monitors use."""
    from fleet.cli.monitors import add
    from fleet.cli.telemetry import drift

    d = MonitorPolicy()
    for cmd in (drift, add):
        opts = {p.name: p.default for p in cmd.params}
        assert (opts["alpha"], opts["persistence"], opts["min_samples"]) == (
            d.alpha, d.persistence, d.min_samples), cmd.name

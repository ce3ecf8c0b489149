"""Ground truth per prediction id (device_agent/feedback.py) over the real local API, and the
opt-in capture sampler (device_agent/capture.py): off by default, caps, persistence."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_agent.capture import CaptureSampler
from device_agent.feedback import FeedbackRefused, PredictionLog
from device_agent.inference import InferenceService, LoadedModel
from device_agent.local_api import LocalApiServer, LocalClient
from device_agent.slots import SlotStore
from edgeops.protocol.capture import CaptureOrder, read_sample
from edgeops.protocol.messages import MessageError
from edgeops.protocol.records import CaptureSampleRecord
from tests.device_agent.bundles import FEATURES, Fleet, build_bundle
from tests.device_agent.test_inference import installed

X = np.arange(2 * FEATURES, dtype=np.float32).reshape(2, FEATURES)
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


# -- the prediction log --------------------------------------------------------------------
def test_classification_feedback_is_scored_and_windowed() -> None:
    clock = Clock()
    log = PredictionLog(clock, window_s=900)
    pid = log.record("m@1", {"y": np.array([[0.1, 0.9], [0.8, 0.2]])})
    got = log.feedback(pid, label=[1, 1])
    assert got["task"] == "classification" and got["correct_rows"] == [True, False]
    assert not log.due(NOW + 10)
    clock.t += 901
    (rec,) = log.take(clock.t, "cam-1")
    assert rec.KIND == "accuracy" and rec.bundle == "m@1" and rec.device_id == "cam-1"
    assert (rec.total, rec.correct) == (2, 1)
    assert rec.to_dict()["per_class"] == {"1": [2, 1]}
    assert log.take(clock.t, "cam-1") == []


def test_regression_feedback_counts_absolute_errors() -> None:
    log = PredictionLog(Clock())
    pid = log.record("m@1", {"v": np.array([[1.0], [2.0]])})
    got = log.feedback(pid, value=[1.0, 2.5])
    assert got["abs_errors"] == [0.0, 0.5]
    (rec,) = log.take(NOW + 1000, "cam-1")
    assert rec.task == "regression" and rec.total == 2 and rec.abs_error is not None
    assert sum(rec.abs_error) == 2 and "correct" not in rec.to_dict()


@pytest.mark.parametrize(("setup", "kwargs", "reason"), [
    ("none", {"label": 1}, "unknown-id"),
    ("old", {"label": 1}, "expired"),
    ("twice", {"label": 1}, "duplicate"),
    ("cls", {"label": "cat"}, "wrong-type"),
    ("cls", {"label": 1.5}, "wrong-type"),
    ("cls", {"label": -1}, "wrong-type"),
    ("cls", {"label": [1, 0]}, "wrong-type"),         # two labels for one row
    ("cls", {"value": 0.3}, "wrong-type"),            # a value for a classification
    ("reg", {"label": 1}, "wrong-type"),              # a label for a regression
    ("reg", {"value": "high"}, "wrong-type"),
    ("reg", {"value": float("nan")}, "wrong-type"),
    ("evicted", {"label": 1}, "unknown-id"),
])
def test_bad_feedback_is_refused_with_a_reason_and_not_counted(setup: str,
                                                               kwargs: dict[str, Any],
                                                               reason: str) -> None:
    clock = Clock()
    log = PredictionLog(clock, capacity=2, ttl_s=60)
    out = {"y": np.array([[0.1, 0.9]])} if setup != "reg" else {"v": np.array([[1.0]])}
    pid = log.record("m@1", out)
    if setup == "none":
        pid = "0123456789abcdef"
    elif setup == "old":
        clock.t += 61
    elif setup == "twice":
        log.feedback(pid, label=1)
    elif setup == "evicted":
        log.record("m@1", out)
        log.record("m@1", out)
    with pytest.raises(FeedbackRefused) as exc:
        log.feedback(pid, **kwargs)
    assert exc.value.reason == reason
    recs = log.take(NOW + 1000, "cam-1")
    assert sum(r.total for r in recs) == (1 if setup == "twice" else 0)


# -- over the local API ----------------------------------------------------------------------
@pytest.fixture
def model(tmp_path: Path, fleet: Fleet, bundle_dir: Path) -> LoadedModel:
    return installed(SlotStore(tmp_path / "slots"),
                     build_bundle(bundle_dir, fleet, version="1.0.0", scale=2.0))


def test_local_api_hands_out_prediction_ids_and_takes_feedback(model: LoadedModel) -> None:
    svc = InferenceService()
    svc.swap(model)
    svc.predictions = PredictionLog(Clock())
    with LocalApiServer(svc, http=("127.0.0.1", 0)) as srv:
        assert srv.http_address is not None
        client = LocalClient(http=srv.http_address)
        out = client.predict({"x": X}, fmt="tensors")
        pid = client.last_prediction_id
        assert pid
        predicted = np.asarray(next(iter(out.values()))).argmax(axis=1).tolist()
        status, ans = client.feedback(pid, label=predicted)
        assert status == 200 and ans["accepted"] and ans["correct"]
        status, ans = client.feedback(pid, label=predicted)
        assert status == 409 and ans["reason"] == "duplicate"
        status, ans = client.feedback("nope", label=0)
        assert status == 404 and ans["reason"] == "unknown-id"
        body = json.dumps({"inputs": {"x": X.tolist()}}).encode()
        status, data, _ = client.request("POST", "/v1/predict", body)
        pid2 = json.loads(data)["prediction_id"]
        assert status == 200 and pid2 == client.last_prediction_id
        status, ans = client.feedback(pid2, label="cat")
        assert status == 400 and ans["reason"] == "wrong-type"
        status, data, _ = client.request("POST", "/v1/feedback", b"not json")
        assert status == 400 and json.loads(data)["reason"] == "malformed"
        client.close()


def test_without_a_prediction_log_there_are_no_ids(model: LoadedModel) -> None:
    svc = InferenceService()
    svc.swap(model)
    with LocalApiServer(svc, http=("127.0.0.1", 0)) as srv:
        assert srv.http_address is not None
        client = LocalClient(http=srv.http_address)
        client.predict({"x": X})
        assert client.last_prediction_id is None
        status, _ = client.feedback("x", label=0)
        assert status == 404
        client.close()


# -- the capture sampler -------------------------------------------------------------------
def _order(**over: Any) -> dict[str, Any]:
    return CaptureOrder("c-0123456789abcdef", True, 1.0, 2000, 1000, NOW + 3 * 86_400,
                        1024).to_dict() | over


def _serve(s: CaptureSampler, n: int) -> None:
    for i in range(n):
        s.observe({"x": X + i}, {"y": np.array([[0.2, 0.8]], np.float32)})


def test_capture_is_off_until_an_order_and_keeps_to_its_caps(tmp_path: Path) -> None:
    clock = Clock()
    s = CaptureSampler(tmp_path / "capture.json", clock, rng=random.Random(1))
    _serve(s, 5)
    assert s.take("cam-1", "m@1") == []                    # off by default
    s.apply(_order())
    _serve(s, 50)
    recs = s.take("cam-1", "m@1")
    size = recs[0].bytes
    assert len(recs) == 1000 // size                       # the per-day cap
    assert s.skipped["day-cap"] > 0
    inputs, _ = read_sample(base64.b64decode(recs[0].data))
    assert np.array_equal(inputs["x"], X)
    assert [r.seq for r in recs] == list(range(len(recs)))
    more: list[CaptureSampleRecord] = []
    for _ in range(2):
        clock.t += 86_400                                  # next UTC day: room again
        _serve(s, 50)
        more += s.take("cam-1", "m@1")
    assert len(recs) + len(more) == 2000 // size           # the per-device cap
    assert s.skipped["device-cap"] > 0
    # a restart keeps the order, the bytes used and the sample numbers
    s2 = CaptureSampler(tmp_path / "capture.json", clock)
    assert s2.order is not None and s2.used_total == s.used_total
    assert s2.next_seq == len(recs) + len(more)
    _serve(s2, 5)
    assert s2.take("cam-1", "m@1") == []
    # closing stops sampling at once
    s2.apply({"capture_id": "c-0123456789abcdef", "open": False})
    assert s2.order is None and CaptureSampler(tmp_path / "capture.json", clock).order is None


def test_capture_rate_until_sample_size_and_bad_orders(tmp_path: Path) -> None:
    clock = Clock()
    s = CaptureSampler(tmp_path / "capture.json", clock, rng=random.Random(7), buffer_max_bytes=10**6)
    s.apply(_order(sample_rate=0.25, max_bytes_per_device=10**6, max_bytes_per_day=10**6))
    _serve(s, 400)
    n = len(s.take("cam-1", None))
    assert 60 < n < 140                                    # about one in four
    s.apply(_order(max_sample_bytes=64))                   # same capture: counts kept
    _serve(s, 3)
    assert s.skipped["sample-too-large"] == 3
    clock.t = NOW + 3 * 86_400 + 1
    s = CaptureSampler(tmp_path / "c2.json", clock)
    s.apply(_order())
    _serve(s, 3)
    assert s.take("cam-1", None) == []                     # past ``until``
    with pytest.raises(MessageError):
        s.apply({"capture_id": "c-0123456789abcdef", "open": True, "sample_rate": 3})
    (tmp_path / "capture.json").write_text("{broken")
    assert CaptureSampler(tmp_path / "capture.json", clock).order is None   # off when unsure

"""A monitor's capture on drift (fleet/drift/drift_capture.py): when its alarm starts, the manager
opens one bounded capture on the cohort with signed commands, and the retrain event names it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeops.errors import UsageError
from edgeops.keys import KeyStore
from edgeops.protocol import check_command
from edgeops.protocol.capture import CaptureOrder
from fleet.capture.service import CaptureBounds, as_capture_store, start_capture
from fleet.client import FleetClient
from fleet.drift.alerts import DriftAlerts, alert_store, monitor_view, parse_monitor
from fleet.drift.drift_capture import CaptureOpener
from fleet.drift.webhooks import TYPE_RETRAIN
from fleet.ports import CommandSigner
from fleet.store import Store
from tests.fleet.fakes import FakeDeviceChannel
from tests.fleet.live import LiveFleet, live_fleet, run_cli
from tests.fleet.test_drift import NOW
from tests.fleet.test_drift_alerts import (  # noqa: F401 - fixtures
    SECRET,
    Clock,
    Receiver,
    _drift,
    _sender,
    fleet,
    receiver,
)

BOUNDS = {"sample_rate": 0.1, "max_bytes_per_device": 20_000, "max_bytes_per_day": 5_000,
          "hours": 2}


def _monitor(store: Store, url: str, capture: Any = None, name: str = "lyon") -> None:
    body: dict[str, Any] = {"name": name, "cohort": "city=lyon", "retrain": True,
                            "webhooks": [{"url": url, "secret": SECRET}]}
    if capture is not None:
        body["capture_on_drift"] = capture
    rec, _ = parse_monitor(body, now=NOW, created_by="test")
    alert_store(store).add_monitor(rec)


@pytest.fixture
def wired(fleet: Store, keystore: KeyStore  # noqa: F811
          ) -> tuple[DriftAlerts, FakeDeviceChannel, CommandSigner]:
    ch = FakeDeviceChannel()
    signer = CommandSigner(keystore.signer("manager"), fleet, clock=lambda: NOW)
    alerts = DriftAlerts(fleet, clock=lambda: NOW,
                         open_capture=CaptureOpener(fleet, lambda: (signer, ch)))
    return alerts, ch, signer


def _retrain_captures(store: Store, receiver: Receiver) -> list[Any]:  # noqa: F811
    _sender(store, Clock()).run_once()
    return [e["data"]["capture_id"] for e in receiver.events() if e["type"] == TYPE_RETRAIN]


def test_alarm_start_opens_exactly_one_capture_with_the_bounds(
        fleet: Store, wired: tuple[DriftAlerts, FakeDeviceChannel, CommandSigner],  # noqa: F811
        receiver: Receiver, keystore: KeyStore) -> None:  # noqa: F811
    alerts, ch, _ = wired
    _monitor(fleet, receiver.url, BOUNDS)
    _drift(fleet)
    assert alerts.evaluate() == 2                       # data and prediction alarms start
    (rec,) = as_capture_store(fleet).list_captures()
    assert rec.selector == "city=lyon" and rec.devices == ("cam-1", "cam-2")
    assert (rec.sample_rate, rec.max_bytes_per_device, rec.max_bytes_per_day, rec.until) == (
        0.1, 20_000, 5_000, NOW + 7200)
    key = keystore.signer("manager").public_key
    assert sorted(d for d, _ in ch.commands) == ["cam-1", "cam-2"]
    for dev, signed in ch.commands:
        order = CaptureOrder.from_dict(check_command(signed, device_id=dev, manager_keys=[key],
                                                     last_seq=0, now=NOW).body)
        assert order.open and order.capture_id == rec.id
    # both alarm starts name it in the history, and both retrain events carry its id
    history = alert_store(fleet).alarm_history("lyon")
    assert sorted(e.detail["capture"]["opened"] for e in history) == [False, True]
    assert {e.detail["capture"]["id"] for e in history} == {rec.id}
    assert _retrain_captures(fleet, receiver) == [rec.id, rec.id]
    # while the alarm holds, nothing new is opened
    _drift(fleet, first=1)
    alerts.evaluate()
    assert len(as_capture_store(fleet).list_captures()) == 1 and len(ch.commands) == 2


def test_an_open_capture_on_the_cohort_is_named_not_doubled(
        fleet: Store, wired: tuple[DriftAlerts, FakeDeviceChannel, CommandSigner],  # noqa: F811
        receiver: Receiver) -> None:  # noqa: F811
    alerts, ch, signer = wired
    before = start_capture(as_capture_store(fleet), signer, ch, selector="city=lyon",
                           bounds=CaptureBounds(0.5, 10_000, 4_000, NOW + 3600), now=NOW)
    _monitor(fleet, receiver.url, BOUNDS)
    _drift(fleet)
    alerts.evaluate()
    assert [c.id for c in as_capture_store(fleet).list_captures()] == [before.id]
    assert _retrain_captures(fleet, receiver) == [before.id, before.id]


def test_no_capture_when_the_option_is_off(
        fleet: Store, wired: tuple[DriftAlerts, FakeDeviceChannel, CommandSigner],  # noqa: F811
        receiver: Receiver) -> None:  # noqa: F811
    alerts, ch, _ = wired
    _monitor(fleet, receiver.url)
    assert monitor_view(alert_store(fleet).list_monitors()[0])["capture_on_drift"] is None
    _drift(fleet)
    assert alerts.evaluate() == 2
    assert as_capture_store(fleet).list_captures() == [] and ch.commands == []
    assert _retrain_captures(fleet, receiver) == [None, None]
    assert all("capture" not in e.detail for e in alert_store(fleet).alarm_history("lyon"))


def test_a_capture_that_cannot_open_is_recorded_and_the_alarm_still_fires(
        fleet: Store, receiver: Receiver) -> None:  # noqa: F811
    _monitor(fleet, receiver.url, BOUNDS)
    _drift(fleet)
    # no signer here: the manager records why no capture was opened
    assert DriftAlerts(fleet, clock=lambda: NOW).evaluate() == 2
    details = [e.detail["capture"] for e in alert_store(fleet).alarm_history("lyon")]
    assert details and all(d["id"] is None and "cannot open" in d["error"] for d in details)
    assert as_capture_store(fleet).list_captures() == []


@pytest.mark.parametrize(("capture", "words"), [
    ({"sample_rate": 0}, "sample rate 0 is not in"),
    ({"sample_rate": 1.5}, "not in \\(0, 1\\]"),
    ({"sample_rate": "x"}, "sample_rate must be a number"),
    ({"max_bytes_per_device": 0}, "max bytes per device"),
    ({"max_bytes_per_device": 2.5}, "max_bytes_per_device must be an integer"),
    ({"max_bytes_per_device": 1000, "max_bytes_per_day": 2000}, "max bytes per day"),
    ({"hours": 0}, "capture hours"),
    ({"hours": 1e9}, "capture hours"),
    ({"hours": float("nan")}, "capture hours"),
    ({"colour": 1}, "unknown capture_on_drift field"),
    ("yes", "must be null or an object"),
])
def test_bad_capture_bounds_are_refused(capture: Any, words: str) -> None:
    with pytest.raises(UsageError, match=words) as e:
        parse_monitor({"name": "m", "capture_on_drift": capture}, now=NOW, created_by=None)
    assert "\n" not in e.value.message


@pytest.fixture
def live(keystore: KeyStore, tmp_path: Path) -> Iterator[LiveFleet]:
    with live_fleet(keystore, tmp_path) as lf:
        yield lf


def test_cli_and_api_set_and_refuse_capture_on_drift(
        live: LiveFleet, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--fleet", live.url, "--token", live.admin]
    code, out, err = run_cli(capsys, "fleet", "monitor", "add", "lyon", "--cohort", "city=lyon",
                             "--capture-on-drift", "--capture-sample-rate", "0.2",
                             "--capture-max-bytes-per-device", "8M",
                             "--capture-max-bytes-per-day", "1M", "--capture-hours", "6", *base)
    assert code == 0, err
    assert "capture on drift" in out
    code, out, err = run_cli(capsys, "fleet", "monitor", "list", "--json", *base)
    assert json.loads(out)["items"][0]["capture_on_drift"] == {
        "sample_rate": 0.2, "max_bytes_per_device": 8 * 1024**2,
        "max_bytes_per_day": 1024**2, "hours": 6.0}
    for args, words in ((["--capture-on-drift", "--capture-sample-rate", "2"], "not in (0, 1]"),
                        (["--capture-on-drift", "--capture-max-bytes-per-device", "lots"],
                         "is not a size"),
                        (["--capture-on-drift", "--capture-hours", "0"], "capture hours"),
                        (["--capture-hours", "5"], "need --capture-on-drift")):
        code, out, err = run_cli(capsys, "fleet", "monitor", "add", "bad", *args, *base)
        assert code != 0 and words in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) <= 2                   # the line and its hint
    c = FleetClient(live.url, live.admin)
    with pytest.raises(UsageError, match="max bytes per day"):
        c.request("POST", "/api/v1/drift/monitors", body={
            "name": "bad", "capture_on_drift": {"max_bytes_per_device": 10,
                                                "max_bytes_per_day": 20}})
    assert [m["name"] for m in c.request("GET", "/api/v1/drift/monitors")["items"]] == ["lyon"]


# -- concept drift on the same alarm path ---------------------------------------------------
def _accuracy(store: Store, accuracies: list[float], now: float, seq: int = 100) -> None:
    """Accuracy windows of both Lyon cameras for a bundle whose build measured 0.9."""
    from edgeops.bundle import ArtifactEntry, FileRef, Manifest, TensorSpec
    from edgeops.protocol import TelemetryBatch, topics
    from fleet.ingest import Ingest
    from fleet.store.models import BundleRecord

    sha = "a" * 64
    art = ArtifactEntry("x86-cpu", FileRef("artifacts/x86-cpu/model.onnx", sha, 10), "onnx",
                        "onnxruntime", ("CPUExecutionProvider",), "fp32",
                        metrics={"accuracy": {"summary": {"top1_accuracy": 0.9}}})
    manifest = Manifest("acc", "1.0.0", sha, (TensorSpec("x", "float32", ("n", 2)),),
                        (TensorSpec("y", "float32", ("n", 2)),), (art,)).to_bytes()
    if store.get_bundle("acc", "1.0.0") is None:
        store.put_bundle(BundleRecord("acc", "1.0.0", manifest, b"{}", 1.0))
    ing = Ingest(store)
    for i, dev in enumerate(("cam-1", "cam-2")):
        recs = []
        for w, acc in enumerate(accuracies):
            end = min((int(now // 900) - len(accuracies) + 1 + w) * 900.0 + 1, now)
            recs.append({"kind": "accuracy", "ts": end, "device_id": dev,
                         "bundle": "acc@1.0.0", "task": "classification",
                         "window_start": end - 900, "window_end": end, "total": 300,
                         "correct": int(300 * acc), "per_class": {}})
        ing.handle(topics.device_topic(dev, "telemetry"),
                   TelemetryBatch(dev, seq + i, tuple(recs)).to_bytes())
    ing.flush()


def test_concept_drift_raises_the_same_alarm_webhooks_and_capture(
        fleet: Store, keystore: KeyStore, receiver: Receiver) -> None:  # noqa: F811
    import time

    now = time.time() - 900               # ingest takes no window from the future
    _accuracy(fleet, [0.9, 0.7, 0.7], now)
    _monitor(fleet, receiver.url, BOUNDS)
    ch = FakeDeviceChannel()
    signer = CommandSigner(keystore.signer("manager"), fleet, clock=lambda: now)
    alerts = DriftAlerts(fleet, clock=lambda: now, lookback_s=3 * 3600,
                         open_capture=CaptureOpener(fleet, lambda: (signer, ch)))
    assert alerts.evaluate() == 1
    (state,) = [a for a in alert_store(fleet).alarm_states("lyon") if a.side == "concept"]
    assert state.in_alarm and state.bundle == "acc@1.0.0" and state.drifting_windows == 2
    (rec,) = as_capture_store(fleet).list_captures()
    _sender(fleet, Clock(now)).run_once()
    events = receiver.events()
    detected = [e for e in events if e["type"] == "io.edgeops.drift.detected"]
    assert [e["subject"] for e in detected] == ["acc@1.0.0/concept"]
    assert detected[0]["data"]["accuracy"] == pytest.approx(0.7)
    assert detected[0]["data"]["reference_accuracy"] == 0.9
    assert [e["data"]["capture_id"] for e in events if e["type"] == TYPE_RETRAIN] == [rec.id]
    assert alerts.evaluate() == 0                      # holds: announced once
    # accuracy back at the build's: the alarm ends with a resolved event
    _accuracy(fleet, [0.9], now + 900, seq=200)
    later = DriftAlerts(fleet, clock=lambda: now + 900, lookback_s=3 * 3600)
    assert later.evaluate() == 1
    (ended,) = [a for a in alert_store(fleet).alarm_states("lyon") if a.side == "concept"]
    assert ended.in_alarm is False

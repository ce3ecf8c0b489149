"""Data capture on the manager: opening (signed commands to the cohort only), intake (every
refusal, counted, nothing stored), caps per device and per day, export to an .npz that the
build's data loader accepts, and the routes + CLI. SQLite and PostgreSQL via ``store``."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.data import InputSpec, load_samples
from edgeops.errors import UsageError
from edgeops.keys import KeyStore
from edgeops.protocol import TelemetryBatch, check_command, topics
from edgeops.protocol.capture import CaptureOrder, read_sample, sample_bytes
from edgeops.protocol.messages import MessageError
from fleet.api import openapi_document
from fleet.capture.intake import CaptureIntake, check_capture
from fleet.capture.service import (
    CaptureBounds,
    as_capture_store,
    export_npz,
    start_capture,
    stop_capture,
)
from fleet.cli._common import parse_bytes
from fleet.cli.capture import parse_until
from fleet.errors import ConflictError
from fleet.ingest import Ingest
from fleet.ports import CommandSigner
from fleet.store import CaptureRecord, Device, Store
from tests.fleet.fakes import FakeDeviceChannel
from tests.fleet.live import LiveFleet, live_fleet, run_cli

NOW = 1_800_000_000.0
X = np.arange(12, dtype=np.float32).reshape(1, 12)
Y = np.array([[0.1, 0.9]], dtype=np.float32)


def _sample(x: np.ndarray = X) -> bytes:
    return sample_bytes({"x": x}, {"y": Y})


def _record(device: str, cid: str, seq: int, data: bytes | None = None, **over: Any
            ) -> dict[str, Any]:
    raw = _sample() if data is None else data
    return {"kind": "capture", "ts": NOW - 5, "device_id": device, "capture_id": cid,
            "bundle": "vc@1.0.0", "seq": seq, "bytes": len(raw),
            "data": base64.b64encode(raw).decode()} | over


def _capture(**over: Any) -> CaptureRecord:
    base = {"id": "c-00000000000000aa", "selector": "city=lyon", "sample_rate": 0.5,
            "max_bytes_per_device": 10_000, "max_bytes_per_day": 4_000,
            "max_sample_bytes": 1024, "until": NOW + 3600, "status": "open",
            "devices": ("cam-1", "cam-2"), "created_at": NOW - 60}
    return CaptureRecord(**(base | over))


# -- the order and the frame ------------------------------------------------------------------
def test_order_round_trips_and_refuses_bad_bounds() -> None:
    o = CaptureOrder("c-0123456789abcdef", True, 0.1, 1000, 500, NOW, 512)
    assert CaptureOrder.from_dict(o.to_dict()) == o
    for bad in ({"sample_rate": 0.0}, {"sample_rate": 1.5}, {"max_bytes_per_day": 0},
                {"capture_id": "../etc"}, {"max_sample_bytes": 10**9}, {"open": "yes"},
                {"sample_rate": True}):
        with pytest.raises(MessageError):
            CaptureOrder.from_dict(o.to_dict() | bad)
    # closing needs no bounds
    assert not CaptureOrder.from_dict({"capture_id": o.capture_id, "open": False}).open


def test_sample_frame_round_trips_and_refuses_malformed_bytes() -> None:
    inputs, outputs = read_sample(_sample())
    assert np.array_equal(inputs["x"], X) and np.array_equal(outputs["y"], Y)
    good = _sample()
    for bad in (b"nope", good[:-3], good + b"\0", b"EOC1" + (10**6).to_bytes(4, "big"),
                sample_bytes({}, {"y": Y})):
        with pytest.raises(MessageError):
            read_sample(bad)
    with pytest.raises(MessageError, match="over"):
        read_sample(good, max_bytes=10)


# -- intake: every refusal ----------------------------------------------------------------------
@pytest.mark.parametrize(("record", "capture", "usage", "reason"), [
    (_record("cam-2", "c-00000000000000aa", 0), _capture(), (0, 0), "device-mismatch"),
    (_record("cam-1", "c-00000000000000aa", 0) | {"seq": "x"}, _capture(), (0, 0), "malformed"),
    (_record("cam-1", "c-00000000000000aa", 0) | {"data": "!!not base64!!"}, _capture(), (0, 0),
     "malformed"),
    (_record("cam-1", "c-00000000000000bb", 0), None, (0, 0), "no-capture"),
    (_record("cam-1", "c-00000000000000aa", 0), _capture(status="stopped"), (0, 0),
     "capture-closed"),
    (_record("cam-1", "c-00000000000000aa", 0), _capture(until=NOW - 1), (0, 0),
     "capture-closed"),
    (_record("cam-1", "c-00000000000000aa", 0), _capture(devices=("cam-2",)), (0, 0),
     "outside-cohort"),
    (_record("cam-1", "c-00000000000000aa", 0, _sample(np.zeros((1, 400), np.float32))),
     _capture(), (0, 0), "over-sample-cap"),
    (_record("cam-1", "c-00000000000000aa", 0), _capture(), (9_990, 0), "over-device-cap"),
    (_record("cam-1", "c-00000000000000aa", 0), _capture(), (100, 3_990), "over-day-cap"),
    (_record("cam-1", "c-00000000000000aa", 0, b"EOC1\0\0\0\2[]"), _capture(), (0, 0),
     "bad-arrays"),
])
def test_bad_capture_uploads_are_refused_with_a_reason(record: dict[str, Any],
                                                        capture: CaptureRecord | None,
                                                        usage: tuple[int, int],
                                                        reason: str) -> None:
    got = check_capture(record, "cam-1", capture, usage, NOW)
    assert getattr(got, "reason", None) == reason, got
    ok = check_capture(_record("cam-1", "c-00000000000000aa", 0), "cam-1", _capture(), (0, 0),
                       NOW)
    assert not hasattr(ok, "reason")


# -- opening, ingest, caps and export with a real store ----------------------------------------
def _enrol(store: Store) -> None:
    for dev, city in (("cam-1", "lyon"), ("cam-2", "lyon"), ("cam-3", "paris")):
        store.upsert_device(Device(dev, "camera", "x86-cpu", {"city": city}, enrolled_at=1.0))


@pytest.fixture
def opened(store: Store, keystore: KeyStore) -> tuple[CaptureRecord, FakeDeviceChannel,
                                                      CommandSigner]:
    _enrol(store)
    ch = FakeDeviceChannel()
    signer = CommandSigner(keystore.signer("manager"), store, clock=lambda: NOW)
    rec = start_capture(as_capture_store(store), signer, ch, selector="city=lyon",
                        bounds=CaptureBounds(0.5, 10_000, 4_000, NOW + 3600, 1024), now=NOW)
    return rec, ch, signer


def test_opening_signs_a_command_stating_the_bounds_for_the_cohort_only(
        opened: tuple[CaptureRecord, FakeDeviceChannel, CommandSigner],
        keystore: KeyStore) -> None:
    rec, ch, _ = opened
    assert rec.devices == ("cam-1", "cam-2")
    assert sorted(d for d, _ in ch.commands) == ["cam-1", "cam-2"]
    key = keystore.signer("manager").public_key
    for dev, signed in ch.commands:
        cmd = check_command(signed, device_id=dev, manager_keys=[key], last_seq=0, now=NOW)
        order = CaptureOrder.from_dict(cmd.body)
        assert cmd.kind == "capture" and order.open and order.capture_id == rec.id
        assert (order.sample_rate, order.max_bytes_per_device, order.max_bytes_per_day,
                order.until) == (0.5, 10_000, 4_000, NOW + 3600)


@pytest.mark.parametrize(("bounds", "match"), [
    (CaptureBounds(0.0, 10, 10, NOW + 60), "sample rate"),
    (CaptureBounds(0.5, 10, 20, NOW + 60), "per-day"),
    (CaptureBounds(0.5, 10, 10, NOW - 60), "until"),
    (CaptureBounds(0.5, 10, 10, NOW + 90 * 86_400), "until"),
])
def test_bad_bounds_open_nothing(store: Store, keystore: KeyStore, bounds: CaptureBounds,
                                 match: str) -> None:
    _enrol(store)
    ch = FakeDeviceChannel()
    signer = CommandSigner(keystore.signer("manager"), store, clock=lambda: NOW)
    with pytest.raises(UsageError, match=match):
        start_capture(as_capture_store(store), signer, ch, selector="city=lyon",
                      bounds=bounds, now=NOW)
    with pytest.raises(UsageError, match="selects no device"):
        start_capture(as_capture_store(store), signer, ch, selector="city=oslo",
                      bounds=CaptureBounds(0.5, 10, 10, NOW + 60), now=NOW)
    assert ch.commands == [] and as_capture_store(store).list_captures() == []


def _send(ing: Ingest, device: str, records: list[dict[str, Any]], seq: int,
          topic_device: str | None = None) -> None:
    payload = TelemetryBatch(device, seq, tuple(records)).to_bytes()
    ing.handle(topics.device_topic(topic_device or device, "telemetry"), payload)
    ing.flush()


def test_ingest_stores_good_samples_once_and_counts_refusals_storing_nothing(
        store: Store, opened: tuple[CaptureRecord, FakeDeviceChannel, CommandSigner]) -> None:
    rec, _, _ = opened
    cs = as_capture_store(store)
    ing = Ingest(store, captures=CaptureIntake(cs, clock=lambda: NOW))
    good = [_record("cam-1", rec.id, i, _sample(X + i)) for i in range(3)]
    _send(ing, "cam-1", good, 1)
    _send(ing, "cam-1", good[:1], 2)                      # a re-send: stored once
    size = len(_sample())
    assert cs.capture_totals(rec.id) == (3, 3 * size, 1)
    bad = [_record("cam-3", rec.id, 0),                                   # outside the cohort
           _record("cam-1", rec.id, 9, device_id="cam-2"),               # another device's id
           _record("cam-1", "c-00000000000000ff", 0),                     # no such capture
           _record("cam-1", rec.id, 10, b"EOC1junk")]                     # malformed arrays
    _send(ing, "cam-3", bad[:1], 1)
    _send(ing, "cam-1", bad[1:], 3)
    c = ing.stats.counts
    assert c["capture:refused:outside-cohort"] == 1
    assert c["capture:refused:device-mismatch"] == 1
    assert c["capture:refused:no-capture"] == 1
    assert c["capture:refused:bad-arrays"] == 1
    assert cs.capture_totals(rec.id) == (3, 3 * size, 1)
    # capture records never land in the telemetry table
    assert store.query_telemetry("cam-1", "capture") == []
    # the per-day cap (4,000 bytes) is the manager's count, whatever the device believes
    n_fit = 4_000 // size
    _send(ing, "cam-2", [_record("cam-2", rec.id, i) for i in range(n_fit + 3)], 1)
    assert c["capture:refused:over-day-cap"] == 3
    assert cs.capture_usage(rec.id, "cam-2", int(NOW // 86_400))[1] == n_fit * size
    files = list((store.data_dir / "captures").rglob("*")) if store.data_dir else []
    # content-addressed: cam-2's samples equal cam-1's first one, so no new file
    assert len([f for f in files if f.is_file()]) == 3


def test_without_a_sink_capture_records_are_refused(store: Store) -> None:
    _enrol(store)
    ing = Ingest(store)
    _send(ing, "cam-1", [_record("cam-1", "c-00000000000000aa", 0)], 1)
    assert ing.stats.counts["capture:refused:no-capture"] == 1


def test_export_writes_an_npz_build_accepts_and_stop_refuses_later_uploads(
        store: Store, opened: tuple[CaptureRecord, FakeDeviceChannel, CommandSigner],
        tmp_path: Path) -> None:
    rec, ch, signer = opened
    cs = as_capture_store(store)
    with pytest.raises(ConflictError, match="no samples"):
        export_npz(cs, rec.id)
    ing = Ingest(store, captures=CaptureIntake(cs, clock=lambda: NOW))
    _send(ing, "cam-1", [_record("cam-1", rec.id, i, _sample(X + i)) for i in range(5)], 1)
    # a sample with another input shape (a bundle switch) is left out, not mixed in
    _send(ing, "cam-2", [_record("cam-2", rec.id, 0, _sample(np.zeros((1, 3), np.float32)))], 1)
    data, summary = export_npz(cs, rec.id)
    assert summary["samples"] == 5 and summary["left_out"] == 1
    path = tmp_path / "live.npz"
    path.write_bytes(data)
    with np.load(path) as z:
        assert z.files == ["x"] and z["x"].shape == (5, 1, 12)
    samples = load_samples(path, [InputSpec("x", np.dtype("float32"), (1, 12), batch_axis=0)])
    assert len(samples) == 5
    assert np.array_equal(samples.sample(2)["x"], X + 2)
    stopped = stop_capture(cs, signer, ch, rec.id, NOW + 10)
    assert stopped.status == "stopped"
    closing = [CaptureOrder.from_dict(c.command.body) for _, c in ch.commands[-2:]]
    assert all(not o.open and o.capture_id == rec.id for o in closing)
    _send(ing, "cam-1", [_record("cam-1", rec.id, 99)], 2)
    assert ing.stats.counts["capture:refused:capture-closed"] == 1
    with pytest.raises(ConflictError, match="already stopped"):
        stop_capture(cs, signer, ch, rec.id, NOW + 20)


def test_size_and_until_parsing() -> None:
    assert parse_bytes("512K") == 512 * 1024 and parse_bytes("20M") == 20 * 1024**2
    assert parse_bytes("65536") == 65536 and parse_bytes("1GiB") == 1024**3
    assert parse_until("24h", NOW) == NOW + 86_400
    assert parse_until("2027-01-01T00:00:00+00:00", NOW) == 1798761600.0
    for bad in ("lots", "-5"):
        with pytest.raises(UsageError):
            parse_bytes(bad)
    with pytest.raises(UsageError, match="duration"):
        parse_until("tomorrow", NOW)


# -- HTTP and CLI -------------------------------------------------------------------------------
@pytest.fixture
def live(keystore: KeyStore, tmp_path: Path) -> Iterator[LiveFleet]:
    with live_fleet(keystore, tmp_path) as lf:
        yield lf


def test_cli_start_list_export_stop(live: LiveFleet, capsys: pytest.CaptureFixture[str],
                                    tmp_path: Path) -> None:
    store = live.server.store
    _enrol(store)
    base = ["--fleet", live.url, "--token", live.admin]
    code, out, err = run_cli(capsys, "fleet", "capture", "start", "--selector", "city=lyon",
                             "--sample-rate", "0.2", "--max-bytes-per-device", "1M",
                             "--max-bytes-per-day", "256K", "--until", "2h", "--json", *base)
    assert code == 0, err
    cap = json.loads(out)
    assert cap["status"] == "open" and cap["devices"] == ["cam-1", "cam-2"]
    cs = as_capture_store(store)
    ing = Ingest(store, captures=CaptureIntake(cs))
    import time

    recs = [_record("cam-1", cap["id"], i, ts=time.time()) for i in range(4)]
    _send(ing, "cam-1", recs, 1)
    code, out, _ = run_cli(capsys, "fleet", "capture", "list", *base)
    assert code == 0 and cap["id"] in out and "samples=4" in out
    npz = tmp_path / "out.npz"
    code, out, err = run_cli(capsys, "fleet", "capture", "export", cap["id"], "-o", str(npz),
                             *base)
    assert code == 0, err
    with np.load(io.BytesIO(npz.read_bytes())) as z:
        assert z["x"].shape == (4, 1, 12)
    code, out, _ = run_cli(capsys, "fleet", "capture", "stop", cap["id"], *base)
    assert code == 0 and "stopped" in out
    # bad input: one line, non-zero, no traceback, nothing opened
    code, _, err = run_cli(capsys, "fleet", "capture", "start", "--selector", "city=lyon",
                           "--sample-rate", "2", "--max-bytes-per-device", "1M",
                           "--max-bytes-per-day", "1M", "--until", "2h", *base)
    assert code != 0 and "sample rate" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "fleet", "capture", "export", "c-0000000000000000", "-o",
                           str(tmp_path / "none.npz"), *base)
    assert code != 0 and "no capture" in err and not (tmp_path / "none.npz").exists()
    assert len(cs.list_captures()) == 1
    assert "/api/v1/captures/{capture_id}/export" in openapi_document()["paths"]

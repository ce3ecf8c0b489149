"""Ingest against the real store (SQLite and PostgreSQL): every bad-input path has a test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeops.protocol import (
    DevicePhase,
    FetchRequest,
    StateReport,
    StatusMessage,
    TelemetryBatch,
    UnknownRecord,
    topics,
)
from fleet.delivery import DeliveryRejected
from fleet.ingest import Ingest, IngestConfig, Outcome
from fleet.store import Store
from tests.fleet.mqtt.conftest import enroll


def t(device: str, channel: str) -> str:
    return topics.device_topic(device, channel)


def telemetry(device: str, seq: int, n: int = 3, **extra: Any) -> bytes:
    recs = [{"kind": "heartbeat", "ts": 1000.0 + seq + i / 100, **extra} for i in range(n)]
    return TelemetryBatch(device, seq, tuple(recs)).to_bytes()


def state(device: str, seq: int, phase: DevicePhase = DevicePhase.DOWNLOADING,
          reason: str | None = None) -> bytes:
    return StateReport(device, seq, 1000.0 + seq, phase, "d-1", "clf@1.0.0", reason,
                       {"name": "clf", "version": "1.0.0", "target": "x86-cpu", "slot": "a"},
                       {"a": {}}).to_bytes()


class RecordingDelivery:
    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[tuple[FetchRequest, str | None]] = []
        self.refuse = refuse

    def submit(self, req: FetchRequest, device_target: str | None) -> int:
        if self.refuse:
            raise DeliveryRejected("no such artifact")
        self.calls.append((req, device_target))
        return 1


@pytest.fixture
def ingest(store: Store) -> Ingest:
    enroll(store, "cam-1", "cam-2")
    return Ingest(store, delivery=RecordingDelivery())


def test_telemetry_is_buffered_then_persisted_in_one_flush(ingest: Ingest, store: Store) -> None:
    for seq in range(5):
        assert ingest.handle(t("cam-1", "telemetry"), telemetry("cam-1", seq)) is Outcome.BUFFERED
    assert store.count_telemetry("cam-1") == 0
    assert ingest.flush() == 15
    assert store.count_telemetry("cam-1") == 15
    rows = store.query_telemetry("cam-1", kind="heartbeat")
    assert {r.seq for r in rows} == set(range(5))
    assert store.get_device("cam-1").last_seen == pytest.approx(1004.02)  # type: ignore[union-attr]


def test_a_record_of_a_kind_this_version_does_not_know_is_stored_and_counted(
        ingest: Ingest, store: Store) -> None:
    recs = ({"kind": "gpu", "ts": 1000.0, "util_pct": 80}, {"kind": "heartbeat", "ts": 1000.5})
    batch = TelemetryBatch("cam-1", 1, recs).to_bytes()
    assert ingest.handle(t("cam-1", "telemetry"), batch) is Outcome.BUFFERED
    assert ingest.flush() == 2
    (row,) = store.query_telemetry("cam-1", kind="gpu")
    assert row.data == {"util_pct": 80}
    rec = row.record()
    assert isinstance(rec, UnknownRecord) and rec.to_dict() == recs[0]
    assert ingest.stats.counts["telemetry:unknown-kind"] == 1


def test_flush_is_due_by_rows_or_age(store: Store) -> None:
    enroll(store, "cam-1")
    now = [0.0]
    ing = Ingest(store, config=IngestConfig(telemetry_batch_rows=6, telemetry_flush_s=0.1),
                 clock=lambda: now[0])
    ing.handle(t("cam-1", "telemetry"), telemetry("cam-1", 1))
    assert not ing.flush_due()
    now[0] = 0.2
    assert ing.flush_due()
    ing.flush()
    ing.handle(t("cam-1", "telemetry"), telemetry("cam-1", 2))
    ing.handle(t("cam-1", "telemetry"), telemetry("cam-1", 3))
    assert ing.flush_due()   # 6 rows


def test_redelivered_telemetry_is_not_stored_twice(ingest: Ingest, store: Store) -> None:
    payload = telemetry("cam-1", 7)
    assert ingest.handle(t("cam-1", "telemetry"), payload) is Outcome.BUFFERED
    ingest.flush()
    assert ingest.handle(t("cam-1", "telemetry"), payload) is Outcome.DUPLICATE
    ingest.flush()
    assert store.count_telemetry("cam-1") == 3


@pytest.mark.parametrize("payload", [
    b"", b"not json", b"[1,2]", b'{"v":2,"type":"telemetry"}', b'{"v":1,"type":"nope"}',
    b'{"v":1,"type":"telemetry","device_id":"cam-1","seq":1}',             # missing records
    b'{"v":1,"type":"telemetry","device_id":"cam-1","seq":1,"records":[{"kind":1}]}',
    b'{"v":1,"type":"state","device_id":"cam-1","seq":1,"ts":1}',            # wrong type here
    b'{"v":1,"type":"telemetry","device_id":"cam-1","seq":1,"records":[{"kind":"x","ts":NaN}]}',
    b'{"v":1,"type":"telemetry","device_id":"cam-1","seq":1,"records":'
    b'[{"kind":"x\\u0000","ts":1}]}',
    b'{"v":1,"type":"telemetry","device_id":"cam-1","seq":99999999999999999999999,'
    b'"records":[]}',
    b'{"v":1,"type":"telemetry","device_id":"cam-1","seq":1,"records":'
    b'[{"kind":"inference","ts":1,"count":1e999}]}',
], ids=["empty", "text", "array", "version", "type", "missing", "record-kind", "wrong-type",
        "nan", "nul", "huge-int", "inf-count"])
def test_malformed_telemetry_is_dropped(ingest: Ingest, store: Store, payload: bytes) -> None:
    assert ingest.handle(t("cam-1", "telemetry"), payload) is Outcome.MALFORMED
    ingest.flush()
    assert store.count_telemetry() == 0


def test_oversized_payload_is_dropped(store: Store) -> None:
    enroll(store, "cam-1")
    ing = Ingest(store, config=IngestConfig(max_payload_bytes=1024))
    big = telemetry("cam-1", 1, n=200)
    assert len(big) > 1024
    assert ing.handle(t("cam-1", "telemetry"), big) is Outcome.MALFORMED
    assert ing.buffered_rows() == 0


def test_unknown_device_is_dropped(ingest: Ingest, store: Store) -> None:
    for channel, payload in [("telemetry", telemetry("ghost", 1)), ("state", state("ghost", 1)),
                             ("status", StatusMessage("ghost", True, "0.1", 5.0).to_bytes())]:
        assert ingest.handle(t("ghost", channel), payload) is Outcome.UNKNOWN_DEVICE
    ingest.flush()
    assert store.count_telemetry() == 0
    assert store.get_device("ghost") is None


def test_device_id_in_payload_must_match_topic(ingest: Ingest, store: Store) -> None:
    assert ingest.handle(t("cam-2", "telemetry"), telemetry("cam-1", 1)) is Outcome.MISMATCH
    assert ingest.handle(t("cam-2", "state"), state("cam-1", 1)) is Outcome.MISMATCH
    ingest.flush()
    assert store.count_telemetry() == 0
    assert store.get_device("cam-1").last_state_seq == -1  # type: ignore[union-attr]


def test_topics_outside_the_tree_are_ignored(ingest: Ingest) -> None:
    for topic in ["edgeops/v1/devices/cam-1/desired", "edgeops/v2/devices/cam-1/state",
                  "other/thing", "edgeops/v1/devices/bad+id/state"]:
        assert ingest.handle(topic, state("cam-1", 1)) is Outcome.IGNORED


def test_replayed_and_out_of_order_state_reports_are_ignored(store: Store) -> None:
    enroll(store, "cam-1")
    seen: list[int] = []
    ing = Ingest(store, on_state=lambda r: seen.append(r.seq))
    assert ing.handle(t("cam-1", "state"), state("cam-1", 5, DevicePhase.INSTALLING)) \
        is Outcome.ACCEPTED
    assert ing.handle(t("cam-1", "state"), state("cam-1", 5, DevicePhase.INSTALLING)) \
        is Outcome.STALE                                                    # replay
    assert ing.handle(t("cam-1", "state"), state("cam-1", 3, DevicePhase.DOWNLOADING)) \
        is Outcome.STALE                                                    # out of order
    assert ing.handle(t("cam-1", "state"), state("cam-1", 6, DevicePhase.ACTIVATED)) \
        is Outcome.ACCEPTED
    assert seen == [5, 6]
    assert store.get_device("cam-1").last_state_seq == 6  # type: ignore[union-attr]


def test_rollout_engine_failure_does_not_stop_ingest(store: Store) -> None:
    enroll(store, "cam-1")

    def broken(report: StateReport) -> None:
        raise RuntimeError("engine bug")

    ing = Ingest(store, on_state=broken)
    assert ing.handle(t("cam-1", "state"), state("cam-1", 1)) is Outcome.ACCEPTED
    assert store.get_device("cam-1").last_state_seq == 1  # type: ignore[union-attr]


def test_status_online_offline_and_stale(store: Store) -> None:
    enroll(store, "cam-1")
    calls: list[tuple[str, bool]] = []
    ing = Ingest(store, on_status=lambda d, o: calls.append((d, o)))
    on = StatusMessage("cam-1", True, "0.2.0", 100.0).to_bytes()
    off = StatusMessage("cam-1", False, "", 50.0).to_bytes()    # older Last Will
    assert ing.handle(t("cam-1", "status"), on) is Outcome.ACCEPTED
    assert ing.handle(t("cam-1", "status"), off) is Outcome.STALE
    dev = store.get_device("cam-1")
    assert dev is not None and dev.online and dev.agent_version == "0.2.0"
    assert ing.handle(t("cam-1", "status"), b"") is Outcome.IGNORED   # retained cleared
    assert calls == [("cam-1", True)]


def test_fetch_goes_to_delivery_with_the_device_target(store: Store) -> None:
    enroll(store, "cam-1", target="rpi5-tflite")
    delivery = RecordingDelivery()
    ing = Ingest(store, delivery=delivery)
    req = FetchRequest("cam-1", "f" * 64, ((0, 3),))
    assert ing.handle(t("cam-1", "fetch"), req.to_bytes()) is Outcome.ACCEPTED
    assert delivery.calls == [(req, "rpi5-tflite")]


def test_refused_fetch_is_logged_and_dropped(store: Store, caplog: pytest.LogCaptureFixture
                                             ) -> None:
    enroll(store, "cam-1")
    ing = Ingest(store, delivery=RecordingDelivery(refuse=True))
    req = FetchRequest("cam-1", "f" * 64)
    assert ing.handle(t("cam-1", "fetch"), req.to_bytes()) is Outcome.REFUSED
    assert "refused fetch" in caplog.text


def test_newly_enrolled_device_is_seen_after_the_negative_cache(store: Store) -> None:
    now = [0.0]
    ing = Ingest(store, config=IngestConfig(unknown_cache_ttl_s=5.0), clock=lambda: now[0])
    assert ing.handle(t("cam-9", "state"), state("cam-9", 1)) is Outcome.UNKNOWN_DEVICE
    enroll(store, "cam-9")
    assert ing.handle(t("cam-9", "state"), state("cam-9", 2)) is Outcome.UNKNOWN_DEVICE
    now[0] = 6.0
    assert ing.handle(t("cam-9", "state"), state("cam-9", 3)) is Outcome.ACCEPTED


@given(payload=st.one_of(st.binary(max_size=300), st.builds(
    lambda d: json.dumps(d).encode(),
    st.dictionaries(st.sampled_from(["v", "type", "device_id", "seq", "ts", "records", "phase",
                                     "online", "artifact", "missing"]),
                    st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5),
                              st.lists(st.integers(), max_size=3)), max_size=8))),
       channel=st.sampled_from(["status", "state", "telemetry", "fetch"]))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_input_crashes_ingest(tmp_path: Path, payload: bytes, channel: str) -> None:
    from fleet.store import open_store

    store = _FUZZ_STORE.get("s")
    if store is None:
        store = _FUZZ_STORE["s"] = open_store(str(tmp_path / "fuzz.db"), tmp_path)
        enroll(store, "cam-1")
    ing = Ingest(store, delivery=RecordingDelivery())
    outcome = ing.handle(t("cam-1", channel), payload)
    assert isinstance(outcome, Outcome)
    ing.flush()


_FUZZ_STORE: dict[str, Store] = {}


class MarkSeenFailsOnce:
    """A fake around the real store: the first ``mark_seen`` fails (a PostgreSQL deadlock)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.failed = False

    def mark_seen(self, seen: Any) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("deadlock detected")
        self.inner.mark_seen(seen)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_flush_retried_after_a_failure_writes_nothing_twice(store: Store) -> None:
    enroll(store, "cam-1")
    ing = Ingest(MarkSeenFailsOnce(store))  # type: ignore[arg-type]
    ing.handle(t("cam-1", "telemetry"), telemetry("cam-1", 1))
    with pytest.raises(RuntimeError):
        ing.flush()
    ing.flush()                              # the worker's retry
    assert store.count_telemetry("cam-1") == 3
    assert store.get_device("cam-1").last_seen is not None  # type: ignore[union-attr]


def test_last_seen_is_written_in_device_order(store: Store) -> None:
    """Every worker updates devices in the same order, so two cannot deadlock."""
    enroll(store, "cam-1", "cam-2", "cam-3")
    calls: list[list[str]] = []

    class Recording:
        def mark_seen(self, seen: Any) -> None:
            calls.append(list(seen))
            store.mark_seen(seen)

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    ing = Ingest(Recording())  # type: ignore[arg-type]
    for dev in ("cam-3", "cam-1", "cam-2"):
        ing.handle(t(dev, "telemetry"), telemetry(dev, 1))
    ing.flush()
    assert calls == [["cam-1", "cam-2", "cam-3"]]

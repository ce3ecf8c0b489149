"""The manager worker against a real Mosquitto: ingest, commands, chunk delivery, scale-out."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from edgeops.errors import TransportError, UsageError
from edgeops.protocol import (
    Command,
    DevicePhase,
    SignedCommand,
    StateReport,
    StatusMessage,
    TelemetryBatch,
    topics,
)
from fleet.delivery import DeliveryConfig
from fleet.ingest import IngestConfig
from fleet.mqtt import MqttOptions
from fleet.store import BundleRecord, Store, open_store
from fleet.worker import ManagerWorker, WorkerConfig
from tests.fleet.mqtt.conftest import enroll
from tests.fleet.mqtt.devices import SimDevice
from tests.fleet.services import pg_available, require_or_skip, temporary_database
from tests.mosquitto import MosquittoBroker


def wait_for(pred: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition"
             ) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def add_artifact(store: Store, data: bytes, target: str | None, name: str = "clf",
                 version: str = "1.0.0") -> str:
    """Put a blob and a bundle listing it, the way the repository does on publish."""
    sha = hashlib.sha256(data).hexdigest()
    p = store.blob_path(sha)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    store.add_blob(sha, len(data))
    path = f"artifacts/{target}/model.onnx" if target else "manifest.json"
    store.put_bundle(BundleRecord(name, version, b'{"artifacts": []}', b"{}", 1.0,
                                  {path: (sha, len(data))}))
    return sha


def worker_for(store: Store, broker: MosquittoBroker, client_id: str = "mgr-1",
               delivery: DeliveryConfig | None = None, **kw: object) -> ManagerWorker:
    cfg = WorkerConfig(delivery=delivery or DeliveryConfig(batch_window_s=0.2),
                       ingest=IngestConfig(telemetry_flush_s=0.05), connect_timeout_s=5)
    return ManagerWorker(store, broker.url, store.data_dir, client_id=client_id, config=cfg,
                         **kw)  # type: ignore[arg-type]


@pytest.fixture
def worker(store: Store, broker: MosquittoBroker) -> Iterator[ManagerWorker]:
    enroll(store, "cam-1", "cam-2", "cam-3")
    enroll(store, "pi-1", target="rpi5-tflite")
    w = worker_for(store, broker)
    w.start()
    yield w
    w.stop()


def device(broker: MosquittoBroker, device_id: str) -> SimDevice:
    return SimDevice(device_id, broker.host, broker.port)


def test_device_messages_are_persisted(worker: ManagerWorker, store: Store,
                                       broker: MosquittoBroker) -> None:
    states: list[int] = []
    worker.ingest.on_state = lambda r: states.append(r.seq)
    d = device(broker, "cam-1")
    try:
        d.publish("status", StatusMessage("cam-1", True, "0.3.0", time.time()).to_bytes(),
                  retain=True)
        d.publish("state", StateReport("cam-1", 1, time.time(), DevicePhase.DOWNLOADING,
                                       "d-1", "clf@1.0.0").to_bytes())
        for seq in range(50):
            d.publish("telemetry", TelemetryBatch("cam-1", seq, (
                {"kind": "system", "ts": time.time(), "cpu_pct": 3.0},)).to_bytes())
        wait_for(lambda: store.count_telemetry("cam-1") == 50, what="50 telemetry rows")
        dev = store.get_device("cam-1")
        assert dev is not None and dev.online and dev.agent_version == "0.3.0"
        assert dev.last_state_seq == 1 and states == [1]
    finally:
        d.close()


def test_bad_input_on_the_wire_is_dropped_and_the_worker_carries_on(
        worker: ManagerWorker, store: Store, broker: MosquittoBroker) -> None:
    d = device(broker, "cam-1")
    ghost = device(broker, "ghost")
    try:
        d.publish("telemetry", b"\xff\xfe not json")
        d.publish("telemetry", b"x" * (300 * 1024))                       # oversized
        d.publish("state", StateReport("cam-2", 9, 1.0).to_bytes())      # someone else's id
        ghost.publish("telemetry", TelemetryBatch("ghost", 1, ({"kind": "heartbeat",
                                                                 "ts": 1.0},)).to_bytes())
        d.publish("state", StateReport("cam-1", 5, 2.0).to_bytes())
        d.publish("state", StateReport("cam-1", 5, 2.0).to_bytes())      # replay
        d.publish("state", StateReport("cam-1", 4, 3.0).to_bytes())      # out of order
        d.publish("telemetry", TelemetryBatch("cam-1", 1, ({"kind": "heartbeat",
                                                             "ts": 1.0},)).to_bytes())
        wait_for(lambda: store.count_telemetry("cam-1") == 1, what="the good telemetry")
        wait_for(lambda: worker.ingest.stats.counts.get("state:stale", 0) == 2, what="stale")
        c = worker.ingest.stats.counts
        assert c["telemetry:malformed"] == 2
        assert c["state:mismatch"] == 1
        assert c["telemetry:unknown-device"] == 1
        assert store.count_telemetry() == 1
        assert store.get_device("cam-1").last_state_seq == 5  # type: ignore[union-attr]
        assert store.get_device("cam-2").last_state_seq == -1  # type: ignore[union-attr]
    finally:
        d.close()
        ghost.close()


def test_desired_state_and_metadata_are_retained_for_late_devices(
        worker: ManagerWorker, broker: MosquittoBroker) -> None:
    signer = CryptoSigner.generate_ed25519()
    cmd = SignedCommand.sign(Command("cam-1", 1, "deploy", time.time(), time.time() + 60,
                                     {"deployment_id": "d-1", "name": "clf",
                                      "version": "1.0.0", "target": "x86-cpu"}), signer)
    worker.send_desired("cam-1", cmd)
    worker.publish_metadata("timestamp.json", b'{"signed": {}}')
    once = SignedCommand.sign(Command("cam-1", 2, "cancel", time.time(), time.time() + 60),
                              signer)
    time.sleep(0.3)     # the device is offline while the manager publishes
    d = device(broker, "cam-1")
    try:
        d.subscribe(topics.device_topic("cam-1", "desired"))
        d.subscribe(topics.device_topic("cam-1", "commands"))
        d.subscribe(f"{topics.PREFIX}/tuf/metadata/#")
        worker.send_command("cam-1", once)
        wait_for(lambda: len(d.messages_on("commands")) == 1, what="the command")
        desired = d.messages_on("desired")
        assert len(desired) == 1 and desired[0][1] is True
        assert SignedCommand.from_bytes(desired[0][0]) == cmd
        assert SignedCommand.from_bytes(d.messages_on("commands")[0][0]) == once
        meta = [(t, p, r) for t, p, r in d.received if t.endswith("timestamp.json")]
        assert meta == [(topics.tuf_metadata("timestamp.json"), b'{"signed": {}}', True)]
    finally:
        d.close()


def test_one_publication_serves_every_device_fetching_together(
        worker: ManagerWorker, store: Store, broker: MosquittoBroker) -> None:
    data = os.urandom(1024 * 1024 + 123)
    sha = add_artifact(store, data, "x86-cpu")
    devs = [device(broker, f"cam-{i}") for i in (1, 2, 3)]
    try:
        # "together": every device listens first, then the three fetches go out back to back
        # (no subscribe round trip between them), well inside one batching window
        for d in devs:
            d.subscribe(topics.artifact_chunks(sha))
        downloads = [d.fetch(sha) for d in devs]
        for dl in downloads:
            assert dl.done.wait(20), "download did not finish"
        assert all(dl.data() == data and dl.bad == 0 for dl in downloads)
        s = worker.delivery.stats
        assert s.requests == 3
        # one pass: egress is the artifact plus frame headers, not 3x
        assert len(data) <= s.bytes_published <= 1.05 * len(data)
        assert s.chunks_requested == 3 * s.chunks_published
    finally:
        for d in devs:
            d.close()


def test_a_device_resumes_after_a_disconnect_with_only_missing_chunks(
        store: Store, broker: MosquittoBroker) -> None:
    enroll(store, "cam-1")
    data = os.urandom(64 * 1024)                   # 16 chunks of 4 KiB, sent at 16 KiB/s
    sha = add_artifact(store, data, "x86-cpu")
    w = worker_for(store, broker, delivery=DeliveryConfig(
        chunk_bytes=4096, batch_window_s=0.0, max_bytes_per_s=16 * 1024, max_inflight_chunks=2))
    w.start()
    d = device(broker, "cam-1")
    try:
        dl = d.start_download(sha)
        wait_for(lambda: len(dl.chunks) >= 3, what="first chunks")
        d.close()                                  # the vehicle drives into a tunnel
        wait_for(lambda: w.delivery.idle(), what="the pass to end")
        got = len(dl.chunks)
        assert 3 <= got < 16
        before = w.delivery.stats.chunks_published
        d = device(broker, "cam-1")
        d.downloads[sha] = dl
        d.subscribe(topics.artifact_chunks(sha))
        d.resume(sha)
        assert dl.done.wait(15)
        assert dl.data() == data
        wait_for(lambda: w.delivery.idle(), what="resume pass to end")
        assert w.delivery.stats.chunks_published - before == 16 - got
    finally:
        d.close()
        w.stop()


def test_artifact_for_another_target_is_refused(worker: ManagerWorker, store: Store,
                                                broker: MosquittoBroker) -> None:
    sha = add_artifact(store, os.urandom(10_000), "rpi5-tflite")
    cam, pi = device(broker, "cam-1"), device(broker, "pi-1")
    try:
        refused = cam.start_download(sha)
        wait_for(lambda: worker.delivery.stats.rejected == 1, what="the refusal")
        served = pi.start_download(sha)
        assert served.done.wait(10)
        assert worker.ingest.stats.counts["fetch:refused"] == 1
        # cam-1 hears the chunks pi-1 asked for (topics are per artifact), but only because it
        # subscribed; the manager published for pi-1 alone
        assert worker.delivery.stats.requests == 1
        assert refused is not None
    finally:
        cam.close()
        pi.close()


def test_fetch_for_an_unknown_artifact_is_refused(worker: ManagerWorker,
                                                  broker: MosquittoBroker) -> None:
    d = device(broker, "cam-1")
    try:
        d.start_download("0" * 64)
        wait_for(lambda: worker.ingest.stats.counts.get("fetch:refused") == 1, what="refusal")
        assert worker.delivery.stats.chunks_published == 0
    finally:
        d.close()


def test_worker_survives_a_broker_restart(worker: ManagerWorker, store: Store,
                                          broker: MosquittoBroker) -> None:
    broker.restart()
    wait_for(lambda: worker.control.connected.is_set(), 20, "reconnect")
    d = device(broker, "cam-2")
    batch = TelemetryBatch("cam-2", 1, ({"kind": "heartbeat", "ts": 5.0},)).to_bytes()
    try:
        # Re-sent until stored, as an agent re-sends a batch no manager acknowledged: connected
        # is not re-subscribed, and under load the worker's SUBSCRIBE reached the restarted
        # broker after the first send, which no one received.
        deadline = time.monotonic() + 20
        while store.count_telemetry("cam-2") == 0:
            assert time.monotonic() < deadline, "timed out waiting for telemetry after restart"
            d.publish("telemetry", batch)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: store.count_telemetry("cam-2") > 0, 1, "telemetry")
    finally:
        d.close()


def test_broker_errors_are_one_line_errors(store: Store) -> None:
    with pytest.raises(UsageError, match="mqtt://HOST:PORT"):
        ManagerWorker(store, "http://127.0.0.1:1883")
    from tests.services import free_port

    w = ManagerWorker(store, f"mqtt://127.0.0.1:{free_port()}", config=WorkerConfig(
        connect_timeout_s=1.0))
    with pytest.raises(TransportError, match="no connection to MQTT broker"):
        w.start()


@pytest.mark.slow
def test_two_workers_split_the_load_over_one_postgresql(broker: MosquittoBroker,
                                                        tmp_path: Path) -> None:
    reason = pg_available()
    if reason:
        require_or_skip(reason)
    with temporary_database("edgeops_mqtt_test") as url:
        stores = [open_store(url, tmp_path / "data") for _ in range(2)]
        enroll(stores[0], *(f"cam-{i}" for i in range(4)))
        workers = [worker_for(s, broker, client_id=f"mgr-{n}") for n, s in enumerate(stores)]
        devs: list[SimDevice] = []
        try:
            for w in workers:
                w.start()
            devs = [device(broker, f"cam-{i}") for i in range(4)]
            for seq in range(100):
                for d in devs:
                    d.publish("telemetry", TelemetryBatch(d.device_id, seq, (
                        {"kind": "heartbeat", "ts": 1000.0 + seq},)).to_bytes())
            wait_for(lambda: stores[0].count_telemetry() == 400, 30, "400 rows")
            per_worker = [w.ingest.stats.telemetry_messages for w in workers]
            assert sum(per_worker) == 400 and min(per_worker) > 0, per_worker
            # both see the retained status (not shared), state goes to one of them
            devs[0].publish("status", StatusMessage("cam-0", True, "1", 10.0).to_bytes(),
                            retain=True)
            devs[0].publish("state", StateReport("cam-0", 1, 11.0).to_bytes())
            wait_for(lambda: all(w.ingest.stats.counts.get("status:accepted", 0)
                                 + w.ingest.stats.counts.get("status:stale", 0) == 1
                                 for w in workers), 10, "status on both workers")
            wait_for(lambda: sum(w.ingest.stats.counts.get("state:accepted", 0)
                                 for w in workers) == 1, 10, "one state")
            time.sleep(0.3)
            assert stores[1].count_telemetry() == 400            # nothing twice
        finally:
            for d in devs:
                d.close()
            for w in workers:
                w.stop()
            for s in stores:
                s.close()


def test_worker_options_reach_the_session(store: Store, broker: MosquittoBroker) -> None:
    w = ManagerWorker(store, broker.url, config=WorkerConfig(
        mqtt=MqttOptions(client_id="ignored", receive_maximum=10)), client_id="mgr-x")
    assert w.control.options.client_id == "mgr-x"
    assert w.chunks.options.client_id == "mgr-x-chunks"
    assert w.control.options.receive_maximum == 10

"""The manager's own identity on the generated broker: the real ``fleet.worker.ManagerWorker``.

It connects with the certificate from ``edgeops fleet ca issue --manager`` (mutual TLS), takes
device reports through its shared subscriptions into a real SQLite store, and reaches devices
with commands; what one device forges for another never reaches the store.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner

from edgeops.protocol import Command, SignedCommand, StateReport, topics
from tests.security._services import Identity, MqttProbe, SecureBroker

_ids = itertools.count()


@pytest.fixture
def worker(secure_broker: SecureBroker, identities: dict[str, tuple[Path, Path]],
           tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    from fleet.mqtt.adapter import MqttOptions, TlsOptions
    from fleet.pki import MANAGER_IDENTITY
    from fleet.store import open_store
    from fleet.store.models import Device
    from fleet.worker import ManagerWorker, WorkerConfig

    store = open_store(f"sqlite:///{tmp_path / 'fleet.db'}", tmp_path)
    store.migrate()
    for dev in ("cam-1", "cam-2"):
        store.upsert_device(Device(dev, "camera", "x86-cpu", {}, enrolled_at=1.0))
    key, cert = identities["manager"]
    client_id = f"mgr-{next(_ids)}"
    w = ManagerWorker(store, secure_broker.manager_url, tmp_path,
                      tls=TlsOptions(ca=secure_broker.files.ca, cert=cert, key=key),
                      client_id=client_id,
                      config=WorkerConfig(mqtt=MqttOptions(
                          client_id, username=MANAGER_IDENTITY,
                          password=secure_broker.manager_password,
                          # no session left behind: an earlier test's worker would otherwise
                          # keep its share of the group's messages for session_expiry_s
                          clean_start=True, session_expiry_s=0)))
    w.start()
    try:
        yield w, store
    finally:
        w.stop()
        store.close()


def _wait(pred: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_manager_identity_ingests_and_commands(worker: tuple[Any, Any],
                                               ident: Callable[[str], Identity],
                                               secure_broker: SecureBroker, attack) -> None:
    w, store = worker
    dev = MqttProbe(ident("cam-1"), secure_broker.port, f"cam-1-{next(_ids)}")
    try:
        assert dev.connect()
        assert dev.subscribe(topics.device_topic("cam-1", "commands")) == ["Granted QoS 1"]
        # a report for its own id arrives in the store through the shared subscription
        own = StateReport("cam-1", 7, time.time())
        assert dev.publish(topics.device_topic("cam-1", "state"), own.to_bytes()) == "Success"
        assert _wait(lambda: store.get_device("cam-1").last_state_seq == 7)
        # the same device forging a report for cam-2 is refused by the broker and never stored
        forged = StateReport("cam-2", 99, time.time())
        reason = dev.publish(topics.device_topic("cam-2", "state"), forged.to_bytes())
        assert reason == "Not authorized"
        time.sleep(0.5)
        assert store.get_device("cam-2").last_state_seq != 99
        # the manager's identity may command the device
        cmd = SignedCommand.sign(Command("cam-1", 1, "config", 0.0, time.time() + 60, {}),
                                 CryptoSigner.generate_ed25519())
        w.send_command("cam-1", cmd)
        assert dev.wait_for(topics.device_topic("cam-1", "commands")) == [cmd.to_bytes()]
        attack("cam-1 forges cam-2's state for the manager", "broker refuses, store unchanged",
               f"PUBACK {reason}; cam-2 seq unchanged")
    finally:
        dev.close()


def test_rogue_shared_subscriber_cannot_starve_the_real_manager(
        worker: tuple[Any, Any], ident: Callable[[str], Identity],
        secure_broker: SecureBroker, attack) -> None:
    """Issue 17's measurement, redone: cam-1 tries to join the workers' ``$share`` group
    while cam-2 sends telemetry batches; the real worker must store every one of them."""
    from edgeops.protocol import TelemetryBatch

    _, store = worker
    n = 20
    rogue = MqttProbe(ident("cam-1"), secure_broker.port, f"cam-1-{next(_ids)}")
    victim = MqttProbe(ident("cam-2"), secure_broker.port, f"cam-2-{next(_ids)}")
    try:
        assert rogue.connect() and victim.connect()
        before = store.count_telemetry("cam-2")
        answers = set()
        for seq in range(1, n + 1):
            for ch in ("telemetry", "state", "fetch"):
                answers.update(rogue.subscribe(topics.shared(f"{topics.PREFIX}/devices/+/{ch}")))
            batch = TelemetryBatch("cam-2", 1000 + seq, ({"kind": "system", "ts": time.time(),
                                                      "cpu_pct": 3.0},))
            assert victim.publish(topics.device_topic("cam-2", "telemetry"),
                                  batch.to_bytes()) == "Success"
        assert answers == {"Not authorized"}
        assert _wait(lambda: store.count_telemetry("cam-2") - before == n)
        time.sleep(0.3)
        stored = store.count_telemetry("cam-2") - before
        assert stored == n
        attack("cam-1 joins $share/edgeops-managers, real worker", f"{n}/{n} batches stored",
               f"SUBACK {answers.pop()}; {stored}/{n} stored")
    finally:
        rogue.close()
        victim.close()

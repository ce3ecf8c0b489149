"""End-to-end acknowledgement and reconciliation on the manager side, without a broker.

Ingest acknowledges what it has taken (state and fetch at once, telemetry after the commit),
the store keeps each telemetry batch once whichever worker gets it, restarted workers keep
their MQTT identity, and reconciliation asks in-flight devices to report again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeops.protocol import (
    DevicePhase,
    FetchRequest,
    StateReport,
    TelemetryBatch,
    check_command,
    topics,
)
from fleet.delivery import DeliveryRejected
from fleet.ingest import Ingest, IngestConfig, Outcome
from fleet.rollout import Strategy, parse_phases
from fleet.store import Store, TelemetryRow
from fleet.worker import persistent_client_id
from tests.fleet.fakes import FakeDeviceChannel
from tests.fleet.helpers import engine, enrol, publish, repository

DIGEST = "ab" * 32


class _Delivery:
    def __init__(self) -> None:
        self.refuse = False

    def submit(self, req: FetchRequest, device_target: str | None) -> int:
        if self.refuse:
            raise DeliveryRejected("no such artifact")
        return 1


def _tel(dev: str, seq: int, ts: float) -> tuple[str, bytes]:
    return (topics.device_topic(dev, "telemetry"),
            TelemetryBatch(dev, seq, ({"kind": "heartbeat", "ts": ts},)).to_bytes())


def test_store_keeps_each_telemetry_batch_once(store: Store) -> None:
    rows = [TelemetryRow("cam-1", 1.0, "heartbeat", {}, 7), TelemetryRow("cam-1", 1.0, "system",
                                                                        {}, 7)]
    assert store.insert_telemetry_once(rows) == 2
    assert store.insert_telemetry_once(rows) == 0             # the same batch again
    assert store.insert_telemetry_once([TelemetryRow("cam-2", 1.0, "heartbeat", {}, 7),
                                        TelemetryRow("cam-1", 2.0, "heartbeat", {}, 8)]) == 2
    assert store.count_telemetry("cam-1") == 3 and store.count_telemetry("cam-2") == 1


def test_ingest_acknowledges_only_what_it_has_taken(store: Store) -> None:
    (dev,) = enrol(store, 1)
    delivery = _Delivery()
    ing = Ingest(store, delivery=delivery, config=IngestConfig(telemetry_flush_s=60))
    rep = StateReport(dev, 5, 1.0, DevicePhase.DOWNLOADING, None, None)
    assert ing.handle(topics.device_topic(dev, "state"), rep.to_bytes()) is Outcome.ACCEPTED
    assert ing.handle(*_tel(dev, 3, 10.0)) is Outcome.BUFFERED
    acks = ing.take_acks()
    # the state report is stored; the telemetry batch is not committed yet: not acknowledged
    assert [(a.device_id, a.state, a.telemetry) for a in acks] == [(dev, 5, None)]
    ing.flush()
    assert [(a.state, a.telemetry) for a in ing.take_acks()] == [(None, 3)]
    # re-sends (the ack was lost): acknowledged again, stored once
    assert ing.handle(topics.device_topic(dev, "state"), rep.to_bytes()) is Outcome.STALE
    assert ing.handle(*_tel(dev, 3, 10.0)) is Outcome.DUPLICATE
    fresh = Ingest(store, delivery=delivery)          # another worker, or after a restart
    assert fresh.handle(*_tel(dev, 3, 10.0)) is Outcome.BUFFERED
    fresh.flush()
    assert [(a.state, a.telemetry) for a in ing.take_acks()] == [(5, None)]
    ing.flush()
    assert [(a.state, a.telemetry) for a in ing.take_acks()] == [(None, 3)]
    assert [a.telemetry for a in fresh.take_acks()] == [3]
    assert store.count_telemetry(dev) == 1
    # fetches: acknowledged when taken, and when refused (asking again cannot help)
    req = FetchRequest(dev, DIGEST, None).to_bytes()
    assert ing.handle(topics.device_topic(dev, "fetch"), req) is Outcome.ACCEPTED
    delivery.refuse = True
    assert ing.handle(topics.device_topic(dev, "fetch"), req) is Outcome.REFUSED
    assert [a.fetch for a in ing.take_acks()] == [(DIGEST,)]
    # nothing for unknown devices or malformed messages
    assert ing.handle(*_tel("nobody", 1, 1.0)) is Outcome.UNKNOWN_DEVICE
    assert ing.handle(topics.device_topic(dev, "state"), b"{") is Outcome.MALFORMED
    ing.flush()
    assert ing.take_acks() == []


def test_worker_client_id_survives_restarts(tmp_path: Path) -> None:
    a = persistent_client_id(tmp_path, "8080")
    assert a == persistent_client_id(tmp_path, "8080")
    assert a != persistent_client_id(tmp_path, "8081")       # workers sharing the data dir
    (tmp_path / "mqtt-client-id.8080").write_text("garbage/with+wildcards\n")
    b = persistent_client_id(tmp_path, "8080")
    assert b != a and b.startswith("edgeops-manager-") and "/" not in b


@pytest.fixture
def published(store: Store, keystore: Any, bundles: dict[str, Path]) -> Store:
    repo = repository(store, keystore)
    publish(repo, keystore, bundles["1.0.0"])
    return store


def test_reconcile_asks_in_flight_devices_to_report_again(published: Store,
                                                          keystore: Any) -> None:
    store, ch = published, FakeDeviceChannel()
    enrol(store, 10)
    eng = engine(store, keystore, ch)
    dep = eng.create("tiny", "1.0.0", "city=lyon", Strategy(parse_phases("50%,100%")))
    eng.step(dep.id)
    notified = sorted(ch.desired)
    assert len(notified) == 5
    done = notified[0]
    d = store.get_device(done)
    assert d is not None
    assert store.record_state(StateReport(done, d.last_state_seq + 1, 1.0, DevicePhase.HEALTHY,
                                          dep.id, "tiny@1.0.0"))
    assert eng.reconcile() == 4
    asked = dict(ch.commands)
    assert sorted(asked) == notified[1:]          # neither the healthy one nor the pending
    key = keystore.public_key("manager")
    for dev, cmd in asked.items():
        c = check_command(cmd, device_id=dev, manager_keys=[key], last_seq=0,
                          now=cmd.command.issued)
        assert c.kind == "report-state" and c.body == {"deployment_id": dep.id}
        assert c.expires - c.issued <= 600
        # a later seq than the deploy it may not have received yet (the agent does not
        # record it as accepted, see test_report_state in the agent's tests)
        assert c.seq > ch.desired[dev].command.seq

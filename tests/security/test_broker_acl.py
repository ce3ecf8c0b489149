"""The generated Mosquitto configuration, attacked from a real client with real certificates.

Setup: ``edgeops fleet broker-config`` output (mutual TLS, CN as username and client id,
dynamic-security roles; devices granted as enrolment does) run by a real mosquitto; clients
speak MQTT 5 so the broker's refusal of a QoS 1 publish (SUBSCRIBE) is visible as a PUBACK
(SUBACK) reason code. Every "refused" is cross-checked by a manager subscriber seeing nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgeops.protocol import topics
from fleet.pki import MANAGER_IDENTITY, FleetCA
from tests.security._services import Identity, MqttProbe, SecureBroker, tls_alert

_ids = itertools.count()


@pytest.fixture
def connect(secure_broker: SecureBroker) -> Iterator[Callable[[Identity], MqttProbe]]:
    probes: list[MqttProbe] = []

    def make(identity: Identity) -> MqttProbe:
        p = MqttProbe(identity, secure_broker.port, f"{identity.name}-{next(_ids)}")
        probes.append(p)
        return p

    yield make
    for p in probes:
        p.close()


@pytest.fixture
def manager(connect: Callable[[Identity], MqttProbe], ident: Callable[[str], Identity]
            ) -> MqttProbe:
    m = connect(ident("manager"))
    assert m.connect(), m.connect_error
    assert m.subscribe(f"{topics.PREFIX}/#") == ["Granted QoS 1"]
    return m


def test_device_publishes_to_its_own_topics(manager: MqttProbe, connect, ident) -> None:
    dev = connect(ident("cam-1"))
    assert dev.connect(), dev.connect_error
    for channel in ("status", "state", "telemetry", "fetch"):
        topic = topics.device_topic("cam-1", channel)
        assert dev.publish(topic, channel.encode()) == "Success"
        assert manager.wait_for(topic) == [channel.encode()]


@pytest.mark.parametrize("channel", ["state", "status", "telemetry", "fetch"])
def test_device_cannot_publish_into_another_devices_topics(manager: MqttProbe, connect, ident,
                                                           attack, channel: str) -> None:
    dev = connect(ident("cam-1"))
    assert dev.connect(), dev.connect_error
    victim = topics.device_topic("cam-2", channel)
    reason = dev.publish(victim, b"forged by cam-1")
    assert reason == "Not authorized"
    # the control: a publish the device may make arrives, the forged one never does
    own = topics.device_topic("cam-1", channel)
    assert dev.publish(own, b"control") == "Success"
    assert manager.wait_for(own)
    assert manager.received(victim) == []
    attack(f"cam-1 publishes cam-2/{channel}", "broker refuses", f"PUBACK {reason}, not delivered")


@pytest.mark.parametrize("topic", [
    topics.device_topic("cam-2", "commands"),
    topics.device_topic("cam-1", "commands"),   # a device cannot command itself either
    topics.device_topic("cam-2", "desired"),
    topics.device_topic("cam-2", "ack"),        # no device acknowledges another's traffic
    topics.device_topic("cam-1", "ack"),        # nor its own (only the manager acks)
    topics.tuf_metadata("timestamp.json"),
    topics.artifact_chunks("ab" * 32),
])
def test_device_cannot_publish_manager_topics(manager: MqttProbe, connect, ident, attack,
                                              topic: str) -> None:
    dev = connect(ident("cam-1"))
    assert dev.connect(), dev.connect_error
    reason = dev.publish(topic, b"forged")
    assert reason == "Not authorized"
    ctl = topics.device_topic("cam-1", "telemetry")
    assert dev.publish(ctl, b"control") == "Success"
    assert manager.wait_for(ctl)
    assert manager.received(topic) == []
    short = topic.removeprefix(topics.PREFIX + "/")
    attack(f"device publishes {short[:40]}", "broker refuses", f"PUBACK {reason}")


def test_device_cannot_read_another_devices_commands(manager: MqttProbe, connect, ident,
                                                     attack) -> None:
    spy, owner = connect(ident("cam-1")), connect(ident("cam-2"))
    assert spy.connect() and owner.connect()
    victim = topics.device_topic("cam-2", "commands")
    desired = topics.device_topic("cam-2", "desired")
    assert manager.publish(desired, b"retained desired", retain=True) == "Success"
    # the broker checks subscriptions (dynamic security): refused, not granted-and-starved
    refused = [spy.subscribe(victim), spy.subscribe(desired)]
    assert refused == [["Not authorized"]] * 2
    own = topics.device_topic("cam-1", "commands")
    assert spy.subscribe(own) == ["Granted QoS 1"]
    assert owner.subscribe(victim) == ["Granted QoS 1"]
    assert manager.publish(victim, b"for cam-2 only") == "Success"
    assert owner.wait_for(victim) == [b"for cam-2 only"]  # control: the owner gets it
    assert manager.publish(own, b"for cam-1") == "Success"
    assert spy.wait_for(own) == [b"for cam-1"]  # the spy's own subscription works...
    assert spy.received(victim) == [] and spy.received(desired) == []  # ...but not cam-2's
    attack("cam-1 subscribes cam-2/commands, desired", "SUBACK refused, nothing delivered",
           f"SUBACK {refused[0][0]}, 0 messages")


def test_device_receives_shared_artifact_and_metadata_topics(manager: MqttProbe, connect,
                                                             ident) -> None:
    dev = connect(ident("cam-1"))
    assert dev.connect()
    dev.subscribe(topics.artifact_chunks("cd" * 32))
    dev.subscribe(f"{topics.PREFIX}/tuf/metadata/#")
    assert manager.publish(topics.artifact_chunks("cd" * 32), b"chunk") == "Success"
    assert manager.publish(topics.tuf_metadata("timestamp.json"), b"{}") == "Success"
    assert dev.wait_for(topics.artifact_chunks("cd" * 32)) == [b"chunk"]
    assert dev.wait_for(topics.tuf_metadata("timestamp.json")) == [b"{}"]


def test_manager_uses_shared_subscriptions(manager: MqttProbe, connect, ident) -> None:
    worker = connect(ident("manager"))
    assert worker.connect()
    assert worker.subscribe(topics.shared(f"{topics.PREFIX}/devices/+/state")) == ["Granted QoS 1"]
    dev = connect(ident("cam-2"))
    assert dev.connect()
    assert dev.publish(topics.device_topic("cam-2", "state"), b"s") == "Success"
    assert worker.wait_for(topics.device_topic("cam-2", "state")) == [b"s"]


def test_connection_without_client_certificate_is_refused(secure_broker: SecureBroker, connect,
                                                          attack) -> None:
    p = connect(secure_broker.identity("anonymous", None, None))
    assert not p.connect()
    alert = tls_alert(secure_broker.identity("anonymous", None, None), secure_broker.port)
    assert alert is not None
    attack("connect without client certificate", "TLS handshake refused", f"alert {alert}")


def test_certificate_from_another_ca_is_refused(secure_broker: SecureBroker, connect, attack,
                                                tmp_path: Path) -> None:
    rogue = FleetCA(tmp_path / "rogue")
    rogue.init("rogue CA")
    key, cert = rogue.issue_with_key(MANAGER_IDENTITY, tmp_path / "rogue-id", kind="manager")
    p = connect(secure_broker.identity("rogue-manager", cert, key))
    assert not p.connect()
    alert = tls_alert(secure_broker.identity("rogue", cert, key), secure_broker.port)
    assert alert is not None and "UNKNOWN_CA" in alert.upper()
    attack("manager CN signed by a rogue CA", "TLS handshake refused", f"alert {alert}")


def test_expired_certificate_is_refused(fleet_ca: FleetCA, secure_broker: SecureBroker, connect,
                                        attack, tmp_path: Path) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=fleet_ca.limits.device_cert_lifetime_days + 5)
    key, cert = fleet_ca.issue_with_key("cam-old", tmp_path, kind="device", now=long_ago)
    p = connect(secure_broker.identity("cam-old", cert, key))
    assert not p.connect()
    alert = tls_alert(secure_broker.identity("cam-old", cert, key), secure_broker.port)
    assert alert is not None and "EXPIRED" in alert.upper()
    attack("expired device certificate connects", "TLS handshake refused", f"alert {alert}")


def test_revoked_certificate_cannot_connect(fleet_ca: FleetCA, tmp_path: Path, attack) -> None:
    """Own broker: the operator's procedure (revoke, copy the CRL, restart) also cuts the live
    session of the revoked device, which then cannot come back."""
    broker = SecureBroker(fleet_ca, tmp_path / "broker")
    key, cert = fleet_ca.issue_with_key("cam-7", tmp_path / "cam-7", kind="device")
    broker.start()
    try:
        live = MqttProbe(broker.identity("cam-7", cert, key), broker.port, "cam-7-a")
        assert live.connect(), live.connect_error  # control: valid until revoked
        fleet_ca.revoke("cam-7", reason="stolen")
        broker.reload_crl()
        assert live.disconnected.wait(5)           # the restart dropped the live session
        after = MqttProbe(broker.identity("cam-7", cert, key), broker.port, "cam-7-b")
        assert not after.connect()
        alert = tls_alert(broker.identity("cam-7", cert, key), broker.port)
        assert alert is not None and "REVOKED" in alert.upper()
        assert "certificate verify failed" in broker.log_text()  # and the broker logs the refusal
        live.close()
        attack("revoked certificate connects", "TLS refused, logged", f"alert {alert}")
    finally:
        broker.stop()


def test_sighup_reloads_the_crl_for_new_connections(fleet_ca: FleetCA, tmp_path: Path) -> None:
    """Mosquitto 2.0 re-reads crlfile on SIGHUP; sessions already open are kept (hence the
    restart in the procedure above, see docs/SECURITY.md)."""
    from fleet.broker_config import copy_crl

    broker = SecureBroker(fleet_ca, tmp_path / "broker")
    key, cert = fleet_ca.issue_with_key("cam-8", tmp_path / "cam-8", kind="device")
    broker.start()
    try:
        assert tls_alert(broker.identity("cam-8", cert, key), broker.port) is None
        fleet_ca.revoke("cam-8")
        copy_crl(fleet_ca, broker.files.directory)
        broker.reload()
        alert = tls_alert(broker.identity("cam-8", cert, key), broker.port)
        assert alert is not None and "REVOKED" in alert.upper()
    finally:
        broker.stop()


def test_stale_crl_fails_closed(tmp_path: Path) -> None:
    """A CRL past its nextUpdate makes the broker refuse every client (hence the cron job in
    docs/SECURITY.md): an attacker cannot win by stopping CRL refreshes."""
    ca = FleetCA(tmp_path / "ca")
    ca.init()
    key, cert = ca.issue_with_key("cam-5", tmp_path / "cam-5", kind="device")
    ca.refresh_crl(now=datetime.now(UTC) - timedelta(days=ca.limits.crl_lifetime_days + 1))
    broker = SecureBroker(ca, tmp_path / "broker")
    broker.start()
    try:
        alert = tls_alert(broker.identity("cam-5", cert, key), broker.port)
        assert alert is not None  # a valid, unrevoked certificate is refused too
        ca.refresh_crl()
        broker.reload_crl()
        assert tls_alert(broker.identity("cam-5", cert, key), broker.port) is None
    finally:
        broker.stop()

"""The demo's broker helper: amqtt in-process (MQTT 3.1.1) or mosquitto, both really used.

The manager's adapter in 3.1.1 mode (what the demo uses with amqtt) must publish, receive
retained messages at QoS 1 and acknowledge manually; stopping leaves no thread behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from edgeops.errors import UsageError
from fleet import embedded_broker
from fleet.embedded_broker import EmbeddedBroker, find_mosquitto
from fleet.mqtt import MqttConnection, MqttOptions


def wait_until(pred: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def _round_trip(broker: EmbeddedBroker) -> None:
    opts = MqttOptions(client_id="t-pub", protocol_version=broker.mqtt_version)
    stored = threading.Event()
    pub = MqttConnection(broker.url, opts, on_published=lambda mid: stored.set())
    pub.start(10)
    pub.publish("edgeops/v1/test/retained", b"kept", qos=1, retain=True)
    assert stored.wait(10)       # retained by the broker before anyone subscribes
    sub = MqttConnection(broker.url, MqttOptions(client_id="t-sub",
                                                 protocol_version=broker.mqtt_version),
                         subscriptions=[("edgeops/v1/test/#", 1)])
    sub.start(10)
    try:
        assert wait_until(lambda: sub.inbound.qsize() >= 1, 10)
        msg = sub.inbound.get()
        assert (msg.topic, msg.payload, msg.retain) == ("edgeops/v1/test/retained", b"kept",
                                                        True)
        msg.ack()
        pub.publish("edgeops/v1/test/live", b"now", qos=1)
        assert wait_until(lambda: sub.inbound.qsize() >= 1, 10)
        assert sub.inbound.get().payload == b"now"
    finally:
        sub.close()
        pub.close()


def test_amqtt_broker_with_the_adapter_in_mqtt_311_mode() -> None:
    before = {t.ident for t in threading.enumerate()}
    with EmbeddedBroker("amqtt") as b:
        assert b.kind == "amqtt" and b.mqtt_version == 4 and not b.shared_subscriptions
        _round_trip(b)
    assert wait_until(lambda: not [t for t in threading.enumerate()
                                   if t.ident not in before and t.is_alive()], 10)


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
def test_mosquitto_broker_with_the_adapter_in_mqtt_5_mode() -> None:
    with EmbeddedBroker("mosquitto") as b:
        assert b.kind == "mosquitto" and b.mqtt_version == 5 and b.shared_subscriptions
        _round_trip(b)
        proc = b._proc
    assert proc is not None and proc.poll() is not None       # the broker process is gone


def test_unknown_kind_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="broker kind"):
        EmbeddedBroker("rabbitmq")


def test_mosquitto_requested_but_missing_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_broker, "find_mosquitto", lambda: None)
    with pytest.raises(UsageError, match="no mosquitto"):
        EmbeddedBroker("mosquitto").start()


def test_auto_falls_back_to_amqtt_without_mosquitto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_broker, "find_mosquitto", lambda: None)
    with EmbeddedBroker("auto") as b:
        assert b.kind == "amqtt"

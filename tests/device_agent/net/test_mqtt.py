"""The paho adapter against a real mosquitto: status/Last Will, reconnect, QoS 1, TLS, bounds."""

from __future__ import annotations

import json
import random
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_agent.mqtt import Backoff, BrokerSettings, MqttConnection, TlsFiles, parse_broker_url
from edgeops.errors import ConfigError
from edgeops.protocol import StatusMessage, topics
from tests.device_agent.net.observer import Observer
from tests.device_agent.net.tlsfiles import make_tls
from tests.mosquitto import MosquittoBroker, start_or_skip

DEV = "cam-17"
STATUS = topics.device_topic(DEV, "status")


def _status(online: bool) -> bytes:
    return StatusMessage(DEV, online, "test", time.time()).to_bytes()


def _conn(port: int, **kw: object) -> MqttConnection:
    settings = BrokerSettings("127.0.0.1", port, keepalive_s=5,
                              backoff=Backoff(base_s=0.05, max_s=0.5), **kw)  # type: ignore[arg-type]
    return MqttConnection(DEV, settings, _status, rng=random.Random(1))


def _statuses(msgs: list[tuple[str, bytes, bool]]) -> list[bool]:
    return [json.loads(p)["online"] for t, p, _ in msgs if t == STATUS and p]


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_backoff_delay_is_bounded_by_its_exponential_ceiling(attempt: int, seed: int) -> None:
    b = Backoff(base_s=0.5, max_s=60.0)
    d = b.delay(attempt, random.Random(seed))
    assert 0.0 <= d <= b.ceiling(attempt) <= 60.0
    assert b.ceiling(attempt) == min(60.0, 0.5 * 2**attempt)


def test_backoff_spreads_a_fleet_instead_of_lockstep() -> None:
    b = Backoff(base_s=0.5, max_s=60.0)
    rng = random.Random(7)
    delays = [b.delay(10, rng) for _ in range(1000)]   # 1,000 devices, same attempt number
    buckets = [0] * 10
    for d in delays:
        buckets[min(9, int(d / 6.0))] += 1
    # full jitter: roughly uniform over [0, 60 s], no bucket holds a large share of the fleet
    assert max(buckets) < 200 and min(buckets) > 50


def test_parse_broker_url_rejects_bad_schemes_and_tls_without_files() -> None:
    assert parse_broker_url("mqtt://127.0.0.1:1999").port == 1999
    with pytest.raises(ConfigError):
        parse_broker_url("http://127.0.0.1:1883")
    with pytest.raises(ConfigError, match="TLS"):
        parse_broker_url("mqtts://127.0.0.1")


def test_status_retained_will_on_unclean_drop_and_reconnect(broker: MosquittoBroker,
                                                            observer: Observer) -> None:
    observer.subscribe(STATUS)
    conn = _conn(broker.port)
    conn.start()
    try:
        assert conn.wait_connected(10)
        observer.wait_for(lambda m: _statuses(m) == [True])
        # the TCP connection dies without DISCONNECT: the broker must publish the Last Will
        sock = conn._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        observer.wait_for(lambda m: _statuses(m)[:2] == [True, False])
        # ...and the agent comes back by itself, saying online again
        observer.wait_for(lambda m: _statuses(m)[:3] == [True, False, True])
        assert conn.generation >= 2
    finally:
        conn.stop()
    observer.wait_for(lambda m: _statuses(m)[-1] is False)
    # a late subscriber (a manager starting up) sees the retained offline status
    late = Observer(broker.port, "late")
    try:
        late.subscribe(STATUS)
        late.wait_for(lambda m: _statuses(m) == [False] and m[0][2])
    finally:
        late.close()


def test_resubscribes_after_broker_restart_with_jittered_backoff(broker: MosquittoBroker) -> None:
    cmd_topic = topics.device_topic(DEV, "commands")
    conn = _conn(broker.port)
    conn.subscribe(cmd_topic)
    conn.start()
    try:
        assert conn.wait_connected(10)
        broker.restart(down_s=0.5)
        deadline = time.monotonic() + 15
        while conn.generation < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert conn.generation >= 2, conn.last_error
        assert conn.delays and all(0 <= d <= 0.5 for d in conn.delays)
        obs = Observer(broker.port, "mgr")
        try:
            obs.publish(cmd_topic, b"hello")
        finally:
            obs.close()
        got = conn.get(5)
        assert got is not None and got.topic == cmd_topic and got.payload == b"hello"
    finally:
        conn.stop()


def test_inbound_queue_is_bounded_and_counts_overflow(broker: MosquittoBroker,
                                                      observer: Observer) -> None:
    t = topics.device_topic(DEV, "commands")
    settings = BrokerSettings("127.0.0.1", broker.port, inbound_queue_max=5)
    conn = MqttConnection(DEV, settings, _status)
    conn.subscribe(t)
    conn.start()
    try:
        assert conn.wait_connected(10)
        time.sleep(0.2)  # SUBACK
        for i in range(20):
            observer.publish(t, str(i).encode())
        deadline = time.monotonic() + 5
        while conn.dropped_inbound < 15 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert conn.dropped_inbound == 15
        got = [conn.get(1) for _ in range(5)]
        assert [g.payload for g in got if g] == [b"0", b"1", b"2", b"3", b"4"]
        assert conn.get(0.1) is None
    finally:
        conn.stop()


def test_mqtt_311_works_too(broker: MosquittoBroker, observer: Observer) -> None:
    observer.subscribe(STATUS)
    conn = _conn(broker.port, mqtt_version=3)
    conn.start()
    try:
        assert conn.wait_connected(10)
        observer.wait_for(lambda m: _statuses(m) == [True])
    finally:
        conn.stop()


def test_mutual_tls_with_device_certificate(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "pki", DEV)
    b = start_or_skip(MosquittoBroker.untuned(tmp_path / "tlsbroker", mtls=tls))
    try:
        assert b.tls_port is not None
        ok = MqttConnection(DEV, BrokerSettings(
            "127.0.0.1", b.tls_port, tls=TlsFiles(str(tls.ca), str(tls.client_cert),
                                                  str(tls.client_key))), _status)
        ok.start()
        try:
            assert ok.wait_connected(10), ok.last_error
        finally:
            ok.stop()
        # no client certificate: the broker refuses, the agent keeps backing off
        no_cert = MqttConnection(DEV, BrokerSettings(
            "127.0.0.1", b.tls_port, tls=TlsFiles(str(tls.ca)),
            backoff=Backoff(0.05, 0.2)), _status)
        no_cert.start()
        try:
            assert not no_cert.wait_connected(1.5)
            assert no_cert.attempts >= 1
        finally:
            no_cert.stop()
    finally:
        b.stop()

"""The manager's MQTT connections with descriptors numbered above 1024.

paho's ``loop_start()`` waits with ``select()``, which refuses a descriptor numbered 1024 or
above: a manager process holding a thousand descriptors (HTTP clients, database connections,
files) would never (re)connect to its broker. The adapter runs each connection on an epoll
:class:`edgeops.netloop.NetLoop` instead. These tests open 1,100 descriptors first, so every
socket the adapter opens lands above 1024, then connect, publish, receive, acknowledge and
survive a broker restart, over plain TCP and over mutual TLS.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgeops.errors import TransportError
from fleet.mqtt import MqttConnection, MqttOptions, TlsOptions
from tests.fleet.mqtt.conftest import Acks, receive
from tests.fleet.mqtt.test_tls import pki, tls_broker  # noqa: F401  (fixtures)
from tests.services import many_open_fds

FILLER_FDS = 1100


def assert_above_select_limit(conn: MqttConnection) -> None:
    sock = conn._client.socket()
    assert sock is not None and sock.fileno() >= 1024, sock
    with pytest.raises(ValueError):             # what paho's loop_start() runs into
        select.select([sock], [], [], 0)


def until_subscribed(pub: MqttConnection, sub: MqttConnection, timeout_s: float = 15.0) -> None:
    """Connected is not subscribed: the subscriber's SUBSCRIBE may reach the broker after the
    publisher's first messages (lost under load: 26 of 200 once). Probe until one arrives,
    then drain the probes still in flight."""
    deadline = time.monotonic() + timeout_s
    while not (got := receive(sub, 1, 0.2)):
        assert time.monotonic() < deadline, "the subscription never took effect"
        pub.publish("fd/probe/0", b"probe", qos=1)
    while got:
        sub.ack_all(got)
        got = receive(sub, 1, 0.5)


def round_trip(pub: MqttConnection, sub: MqttConnection, acks: Acks, tag: str,
               n: int = 200) -> None:
    until_subscribed(pub, sub)
    mids = {pub.publish(f"fd/{tag}/{i % 7}", f"{tag}-{i}".encode(), qos=1) for i in range(n)}
    got = receive(sub, n)
    assert sorted(m.payload for m in got) == sorted(f"{tag}-{i}".encode() for i in range(n))
    sub.ack_all(got)
    missing = acks.missing(mids, 10)
    assert not missing, f"{len(missing)} of {n} publishes never acknowledged"


def exchange_through_a_restart(broker: Any, tls: TlsOptions | None) -> None:
    """Publisher and shared-subscription consumer above 1024: traffic, restart, traffic."""
    acks = Acks()

    def opts(cid: str) -> MqttOptions:
        return MqttOptions(client_id=cid, reconnect_min_s=0.1, reconnect_max_s=1.0)

    before = {t.ident for t in threading.enumerate()}
    with many_open_fds(FILLER_FDS):
        pub = MqttConnection(broker.url, opts("fd-pub"), tls=tls, on_published=acks)
        # a shared subscription and a persistent session, as the worker has
        sub = MqttConnection(broker.url, opts("fd-sub"), tls=tls,
                             subscriptions=[("$share/mgr/fd/#", 1)])
        try:
            sub.start(10)
            pub.start(10)
            for c in (pub, sub):
                assert_above_select_limit(c)
                assert isinstance(c._client.socket(), ssl.SSLSocket) == (tls is not None)
            # 200 small packets: over TLS many share a record, so the loop must also read
            # what OpenSSL holds decrypted (the selector cannot see it)
            round_trip(pub, sub, acks, "first")
            broker.restart()                    # both reconnect, again above 1024
            assert pub.connected.wait(15) and sub.connected.wait(15), (pub.last_error,
                                                                       sub.last_error)
            for c in (pub, sub):
                assert_above_select_limit(c)
            time.sleep(0.2)                     # sub's subscription is renewed on connect
            round_trip(pub, sub, acks, "again")
        finally:
            sub.close()
            pub.close()
    assert not pub.connected.is_set() and not sub.connected.is_set()
    # close() stops each connection's network and connect threads
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and [t for t in threading.enumerate()
                                           if t.ident not in before and t.is_alive()]:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]


def test_manager_connections_work_with_descriptors_above_1024(broker: Any) -> None:
    exchange_through_a_restart(broker, None)


def test_mutual_tls_with_descriptors_above_1024(tls_broker: Any, pki: Path  # noqa: F811
                                                ) -> None:
    tls = TlsOptions(ca=pki / "ca.crt", cert=pki / "manager.crt", key=pki / "manager.key")
    assert tls_broker.url.startswith("mqtts://")
    exchange_through_a_restart(tls_broker, tls)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_broker_fails_start_with_the_reason_and_stops_retrying() -> None:
    conn = MqttConnection(f"mqtt://127.0.0.1:{_free_port()}",
                          MqttOptions(client_id="fd-down", reconnect_min_s=0.05,
                                      reconnect_max_s=0.2))
    t = time.monotonic()
    with pytest.raises(TransportError, match=r"within 1 s \(cannot connect to mqtt://127"):
        conn.start(1.0)
    assert time.monotonic() - t < 5
    attempts = conn._attempts
    assert attempts >= 2                        # it retried with backoff until the timeout
    time.sleep(0.5)
    assert conn._attempts == attempts           # and no timer survives close()


def test_paho_loop_option_still_works_below_1024(broker: Any) -> None:
    """``network_loop="paho"`` (loop_start, kept as an option): traffic, restart, traffic."""
    acks = Acks()

    def opts(cid: str) -> MqttOptions:
        return MqttOptions(client_id=cid, reconnect_min_s=0.1, reconnect_max_s=1.0,
                           network_loop="paho")

    pub = MqttConnection(broker.url, opts("paho-pub"), on_published=acks)
    sub = MqttConnection(broker.url, opts("paho-sub"), subscriptions=[("$share/mgr/fd/#", 1)])
    try:
        sub.start(10)
        pub.start(10)
        assert pub._net is None and pub._client._thread is not None   # paho's own thread
        round_trip(pub, sub, acks, "paho")
        broker.restart()
        assert pub.connected.wait(15) and sub.connected.wait(15), (pub.last_error,
                                                                   sub.last_error)
        time.sleep(0.2)
        round_trip(pub, sub, acks, "paho-again")
    finally:
        sub.close()
        pub.close()
    assert pub._client._thread is None


def test_unknown_network_loop_is_a_usage_error() -> None:
    from edgeops.errors import UsageError

    with pytest.raises(UsageError, match="network loop 'uv' is not 'selector' or 'paho'"):
        MqttConnection("mqtt://127.0.0.1:1", MqttOptions(client_id="x", network_loop="uv"))


def test_acks_go_out_without_waiting_for_more_incoming_traffic(broker: Any) -> None:
    """With Receive Maximum 10 the broker sends 10 messages, then nothing until they are
    acknowledged: acks queued by the consumer thread must make the loop write at once, with
    no incoming packet to wake it (the keepalive, 60 s here, would be the next one)."""
    sub = MqttConnection(broker.url, MqttOptions(client_id="ack-sub", receive_maximum=10,
                                                 keepalive_s=60),
                         subscriptions=[("ack/#", 1)])
    pub = MqttConnection(broker.url, MqttOptions(client_id="ack-pub"))
    try:
        sub.start(10)
        pub.start(10)
        time.sleep(0.2)                         # the subscription is in place
        for i in range(50):
            pub.publish("ack/x", b"%d" % i, qos=1)
        seen: list[bytes] = []
        for _ in range(5):                      # five windows of 10, each freed by its acks
            got = receive(sub, 10, timeout_s=10)
            assert len(got) == 10, f"after {len(seen)} messages the next window never came"
            seen += [m.payload for m in got]
            sub.ack_all(got)
        assert seen == [b"%d" % i for i in range(50)]
    finally:
        pub.close()
        sub.close()

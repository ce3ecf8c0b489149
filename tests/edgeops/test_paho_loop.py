"""PahoMember: one paho client driven from a NetLoop, against a real Mosquitto.

The owner here is the smallest one that works (a plain paho client, hooks that record what they
are given), so each test shows what the member itself does: connect and attach, write what other
threads queue, back off and reconnect, stop cleanly, and clear paho's stale "registered for
writing" flag.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgeops.netloop import NetLoop
from edgeops.paho_loop import PahoMember
from tests.mosquitto import MosquittoBroker, free_port


class Owner:
    """What MqttConnection is to the member, reduced to recording its hooks."""

    def __init__(self, port: int, net: NetLoop, *, delay_s: float = 0.05) -> None:
        self.port = port
        self.net = net
        self.delay_s = delay_s
        self.wire = threading.Lock()
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.connects = 0            # connect() calls that returned
        self.connect_errors: list[Exception] = []
        self.loop_errors: list[BaseException] = []
        self.delays = 0
        self.received: list[bytes] = []
        self.got = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-loop-{port}",
                                  protocol=MQTTProtocolVersion.MQTTv311)
        self.client.connect_timeout = 2.0
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.connected.clear()
        self.client.on_message = self._on_message
        self.member = PahoMember(self.client, name="test connection", wire=self.wire,
                                 stopping=self.stopping, connected=self.connected,
                                 connect=self._connect, connect_failed=self.connect_errors.append,
                                 loop_failed=self.loop_errors.append, next_delay=self._delay)

    def _connect(self) -> None:
        with self.wire:
            self.client.connect("127.0.0.1", self.port, keepalive=5)
        self.connects += 1

    def _delay(self) -> float:
        self.delays += 1
        return self.delay_s

    def _on_connect(self, client: paho.Client, *_a: Any) -> None:
        client.subscribe("paho-loop/#", qos=1)
        self.connected.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self.received.append(bytes(msg.payload))
        self.got.set()

    def publish(self, payload: bytes) -> paho.MQTTMessageInfo:
        with self.wire:
            return self.client.publish("paho-loop/t", payload, qos=1)


@pytest.fixture
def net() -> Iterator[NetLoop]:
    loop = NetLoop("test-paho-loop", tick_s=0.2)
    try:
        yield loop
    finally:
        loop.close()


def _wait(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _on_loop(net: NetLoop, fn: Callable[[], None]) -> None:
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        finally:
            done.set()
    net.call_soon(run)
    assert done.wait(5), "the loop thread did not run the call"


def test_connects_writes_what_other_threads_queue_and_stops_cleanly(
        mosquitto: MosquittoBroker, net: NetLoop) -> None:
    o = Owner(mosquitto.port, net)
    o.member.start(net)
    assert o.connected.wait(10) and not o.member.idle.is_set()
    time.sleep(0.2)                      # the SUBACK (a retained-free topic: nothing to wait for)
    info = o.publish(b"one")             # from this thread: only queued, the loop writes it
    info.wait_for_publish(5)
    assert info.is_published()
    assert o.got.wait(5) and o.received == [b"one"]
    o.member.stop(3.0)
    assert o.member.idle.is_set() and o.member.net is None
    assert o.client.socket() is None     # DISCONNECT written, socket closed by paho
    assert not o.connected.is_set() and o.stopping.is_set()
    assert o.connects == 1 and o.connect_errors == [] and o.delays == 0
    o.member.stop(3.0)                   # a second stop is a no-op


def test_a_refused_connect_is_recorded_and_retried_until_stop(net: NetLoop) -> None:
    o = Owner(free_port(), net, delay_s=0.05)   # nothing listens there
    o.member.start(net)
    _wait(lambda: o.delays >= 3, 10, "three retries")
    assert all(isinstance(e, ConnectionRefusedError) for e in o.connect_errors)
    assert len(o.connect_errors) >= 3 and o.connects == 0
    t0 = time.monotonic()
    o.member.stop(3.0)
    assert o.member.idle.is_set() and time.monotonic() - t0 < 3.0   # no socket to close
    tried = len(o.connect_errors)
    time.sleep(0.3)
    assert len(o.connect_errors) == tried   # no timer or connect survives stop()


def test_a_lost_connection_clears_connected_and_reconnects(
        mosquitto: MosquittoBroker, net: NetLoop) -> None:
    o = Owner(mosquitto.port, net)
    o.member.start(net)
    assert o.connected.wait(10)
    mosquitto.restart(down_s=0.3)
    _wait(lambda: o.connects >= 2 and o.connected.is_set(), 15, "the reconnect")
    assert o.delays >= 1
    o.member.stop(3.0)
    assert o.member.idle.is_set()


def test_a_callback_that_raises_drops_the_connection_and_reconnects(
        mosquitto: MosquittoBroker, net: NetLoop) -> None:
    o = Owner(mosquitto.port, net)
    o.client.suppress_exceptions = False      # paho re-raises callback errors into loop_read

    def boom(*_a: Any) -> None:
        raise RuntimeError("handler bug")
    o.client.on_message = boom
    o.member.start(net)
    assert o.connected.wait(10)
    time.sleep(0.2)
    o.publish(b"x")                           # comes back to us: on_message raises on the loop
    _wait(lambda: bool(o.loop_errors) and o.connects >= 2, 15, "the drop and the reconnect")
    assert isinstance(o.loop_errors[0], RuntimeError)
    o.client.on_message = None                # the broker redelivers x: let it through now
    o.member.stop(3.0)
    assert o.member.idle.is_set()


def test_a_dropped_socket_is_closed_at_once_and_what_was_queued_meanwhile_goes_out(
        mosquitto: MosquittoBroker, net: NetLoop) -> None:
    """The drop closes paho's socket itself (no private close): its descriptor is released at
    once, nothing reads it again, and a QoS 1 publish queued during the backoff is sent after
    the reconnect."""
    o = Owner(mosquitto.port, net, delay_s=0.5)
    o.client.suppress_exceptions = False

    def boom_once(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        o.client.on_message = o._on_message   # only the first delivery raises
        raise RuntimeError("handler bug")
    o.client.on_message = boom_once
    o.member.start(net)
    assert o.connected.wait(10)
    time.sleep(0.2)
    first = o.client.socket()
    assert first is not None
    o.publish(b"x")
    # closed by the member, not left to paho; connected cleared; the backoff (0.5 s) running
    _wait(lambda: first.fileno() == -1 and not o.connected.is_set(), 10, "the drop")
    assert isinstance(o.loop_errors[0], RuntimeError) and o.connects == 1
    info = o.publish(b"during the backoff")  # paho queues it on the dead socket's connection
    _wait(lambda: o.connects >= 2 and o.connected.is_set(), 10, "the reconnect")
    info.wait_for_publish(5)
    assert info.is_published()
    _wait(lambda: b"during the backoff" in o.received, 5, "the queued publish")
    assert o.client.socket() is not first and o.loop_errors[1:] == []
    o.member.stop(3.0)
    assert o.member.idle.is_set() and o.client.socket() is None


def test_a_stale_write_registration_does_not_hold_back_the_next_publish(
        mosquitto: MosquittoBroker, net: NetLoop) -> None:
    """paho "registers" for writing when a TLS read wants to write, with nothing queued. Its flag
    then stays set and the next publish does not call the hook; the member clears it, so that
    publish is written at once (without the fix it waits for ever: nothing else writes)."""
    o = Owner(mosquitto.port, net)
    o.member.start(net)
    assert o.connected.wait(10)
    time.sleep(0.2)
    _on_loop(net, lambda: o.client._call_socket_register_write())   # as paho's read path does
    assert not o.client.want_write()
    info = o.publish(b"after")
    info.wait_for_publish(3)
    assert info.is_published(), "the publish stayed queued: the loop was never asked to write"
    assert o.got.wait(5) and o.received == [b"after"]
    o.member.stop(3.0)


def test_stop_before_start_and_hooks_without_a_loop_do_nothing(net: NetLoop) -> None:
    o = Owner(free_port(), net)
    o.member.stop(1.0)                        # never started
    assert o.member.idle.is_set() and not o.stopping.is_set()
    info = o.publish(b"offline")              # queued by paho; no loop to wake
    assert info.rc == paho.MQTT_ERR_NO_CONN

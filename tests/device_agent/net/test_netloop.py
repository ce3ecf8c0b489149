"""The shared network loop: descriptors above 1024, one thread for many connections, errors.

paho's own loops wait with ``select()``, which refuses any descriptor numbered 1024 or above
(paho then reports "connection lost" and reconnects for ever). The first test opens 1,100
descriptors before the agent connects, so its socket lands above 1024: it fails with a
``select()`` loop and passes with the selector loop.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from device_agent.mqtt import Backoff, BrokerSettings, MqttConnection
from edgeops.netloop import NetLoop
from edgeops.protocol import StatusMessage, topics
from tests.device_agent.net.observer import Observer
from tests.mosquitto import MosquittoBroker, free_port
from tests.services import many_open_fds

FILLER_FDS = 1100


def _status_for(dev: str):  # type: ignore[no-untyped-def]
    return lambda online: StatusMessage(dev, online, "test", time.time()).to_bytes()


def _conn(dev: str, port: int, net: NetLoop, **kw: object) -> MqttConnection:
    settings = BrokerSettings("127.0.0.1", port, keepalive_s=5,
                              backoff=Backoff(base_s=0.05, max_s=0.5), **kw)  # type: ignore[arg-type]
    return MqttConnection(dev, settings, _status_for(dev), rng=random.Random(1), net=net)


@contextmanager
def _private_loop() -> Iterator[NetLoop]:
    net = NetLoop("test-net")
    try:
        yield net
    finally:
        net.close()


def test_agent_connection_works_with_descriptors_above_1024(broker: MosquittoBroker,
                                                           observer: Observer) -> None:
    dev = "cam-fd"
    cmd = topics.device_topic(dev, "commands")
    observer.subscribe(topics.device_topic(dev, "state"))
    with many_open_fds(FILLER_FDS), _private_loop() as net:
        conn = _conn(dev, broker.port, net)
        conn.subscribe(cmd)
        conn.start()
        try:
            assert conn.wait_connected(10), conn.last_error
            sock = conn._client.socket()
            assert sock is not None and sock.fileno() >= 1024
            with pytest.raises(ValueError):     # what paho's loop would have run into
                select.select([sock], [], [], 0)
            for i in range(20):                 # both ways, several round trips
                observer.publish(cmd, f"cmd-{i}".encode())
                got = conn.get(5)
                assert got is not None and got.payload == f"cmd-{i}".encode()
                conn.publish(topics.device_topic(dev, "state"), f"ack-{i}".encode())
            observer.wait_for(lambda m: sum(t.endswith("/state") for t, _, _ in m) == 20)
            assert conn.generation == 1 and conn.disconnects == 0, conn.last_error
        finally:
            conn.stop()
        assert not conn.connected.is_set()


def test_many_connections_share_one_network_thread(broker: MosquittoBroker,
                                                   observer: Observer) -> None:
    n = 40
    devs = [f"cam-{i:02d}" for i in range(n)]
    before = {t.ident for t in threading.enumerate()}
    with _private_loop() as net:
        conns = [_conn(d, broker.port, net) for d in devs]
        for c, d in zip(conns, devs, strict=True):
            c.subscribe(topics.device_topic(d, "commands"))
            c.start()
        try:
            assert all(c.wait_connected(15) for c in conns), [c.last_error for c in conns]
            new = [t for t in threading.enumerate() if t.ident not in before]
            # the loop thread and its connect pool (4), whatever the number of connections
            assert 1 <= len(new) <= 5, [t.name for t in new]
            assert all(t.name.startswith("test-net") for t in new)
            for d in devs:
                observer.publish(topics.device_topic(d, "commands"), d.encode())
            for c, d in zip(conns, devs, strict=True):
                got = c.get(5)
                assert got is not None and got.payload == d.encode()
        finally:
            for c in conns:
                c.stop()


def test_stop_while_the_broker_is_unreachable_returns_promptly() -> None:
    port = free_port()                          # nothing listens here
    with _private_loop() as net:
        conn = _conn("cam-down", port, net)
        conn.start()
        deadline = time.monotonic() + 5
        while conn.attempts < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert conn.attempts >= 3 and conn.last_error is not None
        assert "failed" in conn.last_error
        t = time.monotonic()
        conn.stop(timeout_s=1.0)
        assert time.monotonic() - t < 2.0
        attempts = conn.attempts
        time.sleep(0.7)                         # no reconnect timer survives stop()
        assert conn.attempts == attempts


def test_a_failing_callback_drops_only_that_connection(broker: MosquittoBroker,
                                                       observer: Observer) -> None:
    """paho raising on the loop thread: that connection reconnects, the others carry on."""
    with _private_loop() as net:
        bad, good = _conn("cam-bad", broker.port, net), _conn("cam-good", broker.port, net)
        good.subscribe(topics.device_topic("cam-good", "commands"))
        for c in (bad, good):
            c.start()
        try:
            assert bad.wait_connected(10) and good.wait_connected(10)

            def boom(*_a: object) -> None:
                raise RuntimeError("boom")

            bad._client.on_message = boom       # paho re-raises callback errors by default
            bad._client.suppress_exceptions = False
            bad.subscribe("test/boom")
            time.sleep(0.3)                     # SUBACK
            observer.publish("test/boom", b"x")
            deadline = time.monotonic() + 10
            while bad.generation < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert bad.generation >= 2
            assert bad.last_error is not None
            observer.publish(topics.device_topic("cam-good", "commands"), b"still here")
            got = good.get(5)
            assert got is not None and got.payload == b"still here"
            assert good.generation == 1
        finally:
            bad.stop()
            good.stop()


class _RaisingMember:
    """A fake loop member over a socket pair whose read handler raises once."""

    def __init__(self, net: NetLoop) -> None:
        self.net = net
        self.a, self.b = socket.socketpair()
        self.errors: list[BaseException] = []
        self.reads = 0

    def on_io(self, readable: bool, writable: bool) -> None:
        data = self.a.recv(100)
        self.reads += 1
        if data == b"raise":
            raise RuntimeError("handler bug")

    def on_tick(self) -> None:
        pass

    def on_error(self, exc: BaseException) -> None:
        self.errors.append(exc)


def test_loop_survives_a_member_that_raises() -> None:
    with _private_loop() as net:
        m = _RaisingMember(net)
        net.call_soon(lambda: net.watch(m.a, m, write=False))
        m.b.send(b"raise")
        deadline = time.monotonic() + 5
        while not m.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [str(e) for e in m.errors] == ["handler bug"]
        m.b.send(b"fine")
        while m.reads < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert m.reads == 2
        done = threading.Event()
        net.call_later(0.05, done.set)
        assert done.wait(2)
        cancelled = threading.Event()
        net.call_later(0.05, cancelled.set).cancel()
        assert not cancelled.wait(0.3)
        m.a.close()
        m.b.close()


class _IdleMember:
    def on_io(self, readable: bool, writable: bool) -> None:
        pass

    def on_tick(self) -> None:
        pass

    def on_error(self, exc: BaseException) -> None:
        pass


def test_the_shared_loop_stops_only_when_no_connection_uses_it() -> None:
    """The demo checks it leaves no thread behind; a member still on the loop keeps it alive."""
    NetLoop.close_shared_if_idle()
    net = NetLoop.shared()
    member = _IdleMember()
    net.add_member(member)
    assert any(t.name == net.name for t in threading.enumerate())
    assert NetLoop.close_shared_if_idle() is False
    assert NetLoop.shared() is net
    net.remove_member(member)
    assert NetLoop.close_shared_if_idle() is True
    time.sleep(0.05)
    assert not [t.name for t in threading.enumerate()
                if t.name == net.name or t.name.startswith(f"{net.name}-connect")]
    fresh = NetLoop.shared()
    assert fresh is not net
    fresh.add_member(member)                      # a later agent gets a working loop
    done = threading.Event()
    fresh.call_soon(done.set)
    assert done.wait(2)
    fresh.remove_member(member)
    assert NetLoop.close_shared_if_idle() is True


def test_an_agent_restarted_after_the_shared_loop_stopped_connects_again(
        broker: MosquittoBroker) -> None:
    settings = BrokerSettings("127.0.0.1", broker.port, keepalive_s=5,
                              backoff=Backoff(base_s=0.05, max_s=0.5))
    conn = MqttConnection("cam-restart", settings, _status_for("cam-restart"),
                          rng=random.Random(1))                  # no net: the shared loop
    for _ in range(2):        # the second start finds the shared loop closed by the first stop
        conn.start()
        try:
            assert conn.wait_connected(10), conn.last_error
        finally:
            conn.stop()
        assert NetLoop.close_shared_if_idle() is True


class _WakeSocketThatRaces:
    """The loop's wake socket, with another thread's call_soon() landing inside the first read
    (where a real thread can land: the read releases the GIL)."""

    def __init__(self, real: socket.socket, net: NetLoop) -> None:
        self.real = real
        self.net = net
        self.raced = threading.Event()

    def recv(self, n: int) -> bytes:
        if not self.raced.is_set():
            self.raced.set()
            t = threading.Thread(target=self.net.call_soon, args=(lambda: None,))
            t.start()
            t.join()
        return self.real.recv(n)

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_a_call_from_another_thread_during_a_wake_up_does_not_silence_later_ones() -> None:
    """Draining the wake socket must not swallow a wake-up and leave the loop deaf: every
    later call_soon() from another thread would then wait for the next tick (here 5 s)."""
    net = NetLoop("test-wake", tick_s=5.0)
    try:
        first = threading.Event()
        net.call_soon(first.set)                    # starts the thread
        assert first.wait(2)
        raced = _WakeSocketThatRaces(net._wake_r, net)
        net._wake_r = raced                         # type: ignore[assignment]
        woke = threading.Event()
        net.call_soon(woke.set)                     # its wake-up drains through the racing read
        assert woke.wait(2) and raced.raced.is_set()
        for i in range(3):                          # and later calls still wake the loop at once
            done = threading.Event()
            t0 = time.monotonic()
            net.call_soon(done.set)
            assert done.wait(2), f"call {i} waited for the tick"
            assert time.monotonic() - t0 < 1.0
    finally:
        if isinstance(net._wake_r, _WakeSocketThatRaces):
            net._wake_r = net._wake_r.real
        net.close()


def test_a_loop_closed_before_it_ever_ran_releases_its_descriptors() -> None:
    """Left to the garbage collector, they are freed at a random moment: a later test that
    needs every low descriptor number taken (the 1,100-descriptor tests) then fails."""
    net = NetLoop("test-never-ran")
    wake_r, wake_w = net._wake_r, net._wake_w
    net.close()
    assert wake_r.fileno() == -1 and wake_w.fileno() == -1

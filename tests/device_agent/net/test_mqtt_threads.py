"""Many threads publishing through one mutual-TLS connection must not corrupt it.

paho writes to the socket from the publishing thread unless told otherwise; over TLS that races
the network thread's reads and OpenSSL fails with ``[SSL: BAD_LENGTH]`` (paho issue 691), the
connection drops and the agent reconnects. This test hammers one ``MqttConnection`` from many
threads while it also receives every message back (so its network thread reads all along), and
requires: no disconnect, every QoS 1 publish acknowledged, every message seen by an independent
subscriber and echoed back to the device.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

from device_agent.mqtt import Backoff, BrokerSettings, MqttConnection, TlsFiles
from edgeops.protocol import StatusMessage
from tests.device_agent.net.observer import Observer
from tests.device_agent.net.tlsfiles import make_tls
from tests.mosquitto import MosquittoBroker, start_or_skip

DEV = "cam-stress"
TOPIC = "test/stress/echo"   # the stress test owns this topic; nothing in the protocol uses it
THREADS = 8
PER_THREAD = 60


def _status(online: bool) -> bytes:
    return StatusMessage(DEV, online, "test", time.time()).to_bytes()


def _payload(thread: int, i: int, rng: random.Random) -> bytes:
    # sizes from tiny to several TLS records, so partial writes (where the race bites) happen
    head = f"{thread}:{i}:".encode()
    return head + rng.randbytes(rng.choice((16, 700, 20_000, 150_000, 400_000)))


def test_concurrent_publishes_over_mutual_tls_keep_the_connection(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "pki", DEV)
    broker = start_or_skip(MosquittoBroker.untuned(tmp_path / "broker", mtls=tls))
    observer: Observer | None = None
    conn: MqttConnection | None = None
    try:
        assert broker.tls_port is not None
        observer = Observer(broker.port, client_id="stress-observer")
        observer.subscribe(TOPIC)
        conn = MqttConnection(DEV, BrokerSettings(
            "127.0.0.1", broker.tls_port, keepalive_s=10, backoff=Backoff(0.05, 0.5),
            tls=TlsFiles(str(tls.ca), str(tls.client_cert), str(tls.client_key)),
            inbound_queue_max=THREADS * PER_THREAD * 2), _status, rng=random.Random(3))
        conn.subscribe(TOPIC)            # every publish comes back: the socket is read all along
        conn.start()
        assert conn.wait_connected(10), conn.last_error

        errors: list[BaseException] = []
        infos: list[paho.MQTTMessageInfo] = []
        lock = threading.Lock()
        go = threading.Event()

        def publisher(n: int) -> None:
            rng = random.Random(n)
            go.wait()
            try:
                for i in range(PER_THREAD):
                    info = conn.publish(TOPIC, _payload(n, i, rng))
                    with lock:
                        infos.append(info)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=publisher, args=(n,)) for n in range(THREADS)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(120)
        assert not errors, errors
        total = THREADS * PER_THREAD
        assert len(infos) == total

        def heads(msgs: list[tuple[str, bytes, bool]]) -> set[bytes]:
            return {p.split(b":", 2)[0] + b":" + p.split(b":", 2)[1] for t, p, _ in msgs
                    if t == TOPIC}

        seen = observer.wait_for(lambda m: len(heads(m)) == total and heads(m), timeout_s=120)
        assert seen == {f"{n}:{i}".encode() for n in range(THREADS) for i in range(PER_THREAD)}

        echoed: set[bytes] = set()
        deadline = time.monotonic() + 60
        while len(echoed) < total and time.monotonic() < deadline:
            msg = conn.get(1.0)
            if msg is not None and msg.topic == TOPIC:
                echoed.add(b":".join(msg.payload.split(b":", 2)[:2]))
        assert len(echoed) == total

        # every QoS 1 publish acknowledged by the broker, on the one connection it started with
        # (a PUBACK may trail the echo of its own message: wait for them, bounded)
        for info in infos:
            info.wait_for_publish(30)
        assert all(i.is_published() for i in infos)
        assert conn.disconnects == 0, conn.last_error
        assert conn.generation == 1, conn.last_error
        assert conn.dropped_inbound == 0
        assert "bad length" not in broker.log_text().lower()
    finally:
        if conn is not None:
            conn.stop()
        if observer is not None:
            observer.close()
        broker.stop()

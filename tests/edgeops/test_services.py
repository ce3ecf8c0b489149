"""The test services themselves work: a private broker carries a QoS 1 message, a temp DB exists."""

from __future__ import annotations

import queue

import paho.mqtt.client as mqtt

from tests.mosquitto import MosquittoBroker


def test_private_broker_round_trip(mosquitto: MosquittoBroker) -> None:
    got: queue.Queue[bytes] = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sub")
    sub.on_message = lambda _c, _u, m: got.put(m.payload)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("t/#", qos=1)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        import time

        time.sleep(0.2)
        pub.publish("t/x", b"hello", qos=1).wait_for_publish(5)
        assert got.get(timeout=5) == b"hello"
    finally:
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()


def test_temporary_postgres_database(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)

"""A lost connection must not wedge the agent's state outbox.

A QoS 1 publish made while paho is losing its connection gets ``rc = MQTT_ERR_NO_CONN`` and its
``MQTTMessageInfo.is_published()`` raises ``RuntimeError`` from then on. The daemon used to keep
asking that same info, so every later state report stayed on disk until the agent restarted and
the fleet never heard about, say, a refused attack. Real broker, real agent; the one piece of
set-up done by hand is the in-flight entry itself (the race that produces it in the field is a
publish between the socket dying and ``connected`` being cleared; here it is produced exactly by
publishing through the agent's own connection while the broker is down).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from device_agent.daemon import _Inflight
from edgeops.protocol import topics
from tests.device_agent.net.agents import FleetRepo, agent_config, new_agent
from tests.device_agent.net.fake_manager import FakeManager
from tests.mosquitto import MosquittoBroker

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEV = "cam-outbox"


def _until(pred: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_state_outbox_recovers_after_a_publish_lost_with_the_connection(
        tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker) -> None:
    a = new_agent(agent_config(fr, tmp_path, DEV, broker.url))
    a.start()
    mgr: FakeManager | None = None
    try:
        assert a.conn.wait_connected(10)
        _until(lambda: a._inflight_state is None and len(a.state_q) == 0)
        broker.stop()
        _until(lambda: not a.conn.connected.is_set())

        # a report made offline, whose publish went out while the connection was gone
        a.report(None, reason="reported while the connection was lost")
        rid, body = a.state_q.peek(1)[0]
        info = a.conn.publish(topics.device_topic(DEV, "state"), body)
        with pytest.raises(RuntimeError):
            info.is_published()              # paho's verdict on it, for good
        a._inflight_state = _Inflight(rid, info)  # the I/O loop does not flush while offline

        broker.start()
        mgr = FakeManager(broker.port, fr.repo, fr.fleet.manager)
        assert a.conn.wait_connected(20), a.conn.last_error
        a.report(None, reason="reported after the reconnect")
        got = mgr.wait(lambda: [s for s in mgr.states
                                if s["reason"] == "reported after the reconnect"], 20)
        assert got
        _until(lambda: len(a.state_q) == 0)   # nothing left behind on disk
        seqs = [s["seq"] for s in mgr.states]
        assert seqs == sorted(seqs)
    finally:
        a.stop()
        if mgr is not None:
            mgr.close()

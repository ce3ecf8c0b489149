"""The agent's outbox: a message leaves the disk only when a manager acknowledged it.

A broker PUBACK is not delivery: with no manager subscribed (the agent reconnected first after
an outage) the broker acknowledges and drops. Real broker, real agent, a fake manager whose
end-to-end acks (docs/PROTOCOL.md ``ack``) can be switched off.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from device_agent.outbox import AckSettings
from edgeops.protocol import topics
from tests.device_agent.net.agents import FAST, FleetRepo, agent_config, new_agent
from tests.device_agent.net.fake_manager import FakeManager
from tests.mosquitto import MosquittoBroker

pytestmark = pytest.mark.slow

DEV = "cam-outbox"


def _until(pred: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_state_outbox_resends_a_report_published_while_the_connection_was_lost(
        tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker) -> None:
    a = new_agent(agent_config(fr, tmp_path, DEV, broker.url))
    a.start()
    mgr: FakeManager | None = None
    try:
        assert a.conn.wait_connected(10)
        _until(lambda: not a.outbox.busy and len(a.state_q) == 0)
        broker.stop()
        _until(lambda: not a.conn.connected.is_set())
        # a report made offline; the agent's own publish of it went nowhere
        a.report(None, reason="reported while the connection was lost")
        a.conn.publish(topics.device_topic(DEV, "state"), a.state_q.peek(1)[0][1])

        broker.start()
        mgr = FakeManager(broker.port, fr.repo, fr.fleet.manager)
        assert a.conn.wait_connected(20), a.conn.last_error
        a.report(None, reason="reported after the reconnect")
        got = mgr.wait(lambda: [s for s in mgr.states
                                if s["reason"] == "reported after the reconnect"], 20)
        assert got
        assert [s for s in mgr.states if s["reason"] == "reported while the connection was lost"]
        _until(lambda: len(a.state_q) == 0)   # nothing left behind on disk
        seqs = [s["seq"] for s in mgr.states]
        assert seqs == sorted(seqs)
    finally:
        a.stop()
        if mgr is not None:
            mgr.close()


def test_broker_puback_is_not_delivery_until_the_manager_acks(
        tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker) -> None:
    """No ack: the report stays on disk and is re-sent (same seq); the ack removes it."""
    mgr = FakeManager(broker.port, fr.repo, fr.fleet.manager)
    mgr.acks = False
    settings = dataclasses.replace(FAST, acks=AckSettings(timeout_s=0.3, max_timeout_s=0.6))
    a = new_agent(agent_config(fr, tmp_path, DEV, broker.url), settings=settings)
    a.start()
    try:
        assert a.conn.wait_connected(10)
        rep = a.report(None, reason="needs an ack")
        mgr.wait(lambda: len([s for s in mgr.states if s["seq"] == rep.seq]) >= 3, 20)
        assert len(a.state_q) >= 1                 # every copy was PUBACKed, none acked
        assert a.outbox.resent >= 2
        mgr.acks = True
        _until(lambda: len(a.state_q) == 0 and len(a.telemetry_q) == 0)
        # telemetry batches re-sent while unacknowledged kept their seq and records
        by_seq: dict[int, list[object]] = {}
        for t in mgr.telemetry:
            by_seq.setdefault(t["seq"], []).append(t["records"])
        assert all(all(r == recs[0] for r in recs) for recs in by_seq.values())
    finally:
        a.stop()
        mgr.close()

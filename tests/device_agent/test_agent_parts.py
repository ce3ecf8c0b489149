"""The agent as a composition of parts: what each part sees, without a broker.

A real :class:`device_agent.daemon.Agent` that is never started (its broker URL points nowhere):
messages are fed to its router and the parts' hooks are called as the I/O thread would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_agent.config import AgentConfig
from device_agent.daemon import Agent
from device_agent.parts import AgentPart
from edgeops.keys import KeyStore
from edgeops.protocol import (
    Command,
    DevicePhase,
    SignedCommand,
    StateReport,
    UnknownRecord,
    parse_record,
    topics,
)
from tests.device_agent.bundles import FEATURES, Fleet, build_bundle, drift_reference
from tests.device_agent.test_inference import installed
from tests.edgeops.bundles import make_keystore


class RecordingPart(AgentPart):
    """A feature part (think: a data-capture uploader) that records what the agent gave it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.ticks: list[float] = []
        self.closed = False

    def subscriptions(self) -> Sequence[str]:
        return ["edgeops/v1/capture/+/requests"]

    def handle(self, topic: str, payload: bytes) -> bool:
        if topic.startswith("edgeops/v1/capture/"):
            self.messages.append((topic, payload))
            return True
        return False

    def tick(self, now: float) -> None:
        self.ticks.append(now)

    def heartbeat(self) -> dict[str, Any]:
        return {"captured": len(self.messages)}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def keystore(tmp_path: Path) -> KeyStore:
    return make_keystore(tmp_path / "home")


@pytest.fixture
def agent(tmp_path: Path, keystore: KeyStore) -> Iterator[Agent]:
    store = keystore
    key = store.public_key("manager")
    cfg = AgentConfig.from_dict({
        "schema": "edgeops.agent-config/v1", "device_id": "cam-1", "target": "x86-cpu",
        "broker": {"url": "mqtt://127.0.0.1:9"}, "data_dir": str(tmp_path / "state"),
        "trust": {"root": str(tmp_path / "home" / "trust" / "root.json"),
                  "manager_keys": [{"keyid": key.keyid, **key.to_dict()}]}}, base_dir=tmp_path)
    a = Agent(cfg, clock=lambda: 1_000.0)
    yield a
    if not a.closed.is_set():
        a._close()


def _states(agent: Agent) -> list[dict[str, Any]]:
    return [json.loads(body) for _, body in agent.state_q.peek(100)]


def test_the_parts_are_wired_and_a_feature_part_gets_its_hooks(agent: Agent) -> None:
    part = RecordingPart()
    agent.parts.append(part)
    assert agent.parts[:2] == [agent.collector, agent.reports]
    agent._route("edgeops/v1/capture/cam-1/requests", b"x")
    agent._route(topics.device_topic("cam-1", "commands"), b"")   # cleared: nobody gets it
    assert part.messages == [("edgeops/v1/capture/cam-1/requests", b"x")]
    for p in agent.parts:
        p.tick(1_000.0)
    assert part.ticks == [1_000.0]
    records = [json.loads(body) for _, body in agent.telemetry_q.peek(100)]
    beat = next(r for r in records if r["kind"] == "heartbeat")
    assert beat["captured"] == 1 and beat["rejected_commands"] == 0
    assert beat["deferred"] is False
    agent._close()
    assert part.closed and agent.closed.is_set()


def test_every_record_the_collector_queues_parses_as_its_typed_record(agent: Agent) -> None:
    agent.collector.collect(1_000.0)
    records = [json.loads(body) for _, body in agent.telemetry_q.peek(100)]
    assert {r["kind"] for r in records} >= {"heartbeat", "system", "inference"}
    for r in records:
        rec = parse_record(r)
        assert not isinstance(rec, UnknownRecord) and rec.to_dict() == r


def test_a_report_goes_through_the_reporter_with_a_persisted_seq(agent: Agent) -> None:
    rep = agent.report(DevicePhase.NOTIFIED, deployment_id="d-1", bundle="m@1")
    assert isinstance(rep, StateReport) and rep.seq == 1 == agent.net.state_seq
    assert agent.report(None, reason="x") is not None
    got = _states(agent)
    assert [(s["seq"], s["phase"], s["deployment_id"]) for s in got] == [
        (1, "notified", "d-1"), (2, None, None)]


def test_garbage_on_the_command_topics_is_counted_by_the_gate(agent: Agent) -> None:
    agent._route(topics.device_topic("cam-1", "commands"), b"{not json")
    assert agent.rejected_commands == agent.gate.rejected == 1
    assert "command rejected" in (_states(agent)[-1]["reason"] or "")


def test_a_genuine_command_with_a_bad_body_fails_its_deployment_once(
        agent: Agent, keystore: KeyStore) -> None:
    cmd = Command("cam-1", 7, "deploy", 990.0, 2_000.0, {"deployment_id": "d-7", "version": "1"})
    payload = SignedCommand.sign(cmd, keystore.signer("manager")).to_bytes()
    agent._route(topics.device_topic("cam-1", "desired"), payload)
    last = _states(agent)[-1]
    assert (last["phase"], last["deployment_id"]) == ("failed", "d-7")
    assert "'name' must be a non-empty string" in last["reason"]
    assert agent._work.qsize() == 0 and agent.rejected_commands == 0
    assert agent.net.command_seq == 7                  # recorded: the retained copy is not rerun
    n = len(_states(agent))
    agent._route(topics.device_topic("cam-1", "desired"), payload)
    assert len(_states(agent)) == n


def test_the_drift_sketch_counts_in_the_bins_of_the_model_being_served(
        agent: Agent, fleet: Fleet, bundle_dir: Path) -> None:
    """The bins switch at the model swap, not at the collector's next pass (requests between
    the two were discarded), and follow the model served, not the slot pointer (during a trial
    the pointer already names the new slot while the old model serves)."""
    store, inference = agent.core.store, agent.core.inference
    sketch = agent.collector.drift_sketch
    ref = drift_reference(window_inferences=3)
    inference.swap(installed(store, build_bundle(bundle_dir, fleet, version="1.0.0", drift=ref)))
    assert sketch.bundle == "classifier@1.0.0"          # at the swap, before any collector pass
    installed(store, build_bundle(bundle_dir, fleet, version="2.0.0", drift=ref))
    agent.collector.collect(1_000.0)                    # the pointer names 2.0.0; 1.0.0 serves
    assert sketch.bundle == "classifier@1.0.0"
    for _ in range(3):
        inference.predict({"x": np.zeros((1, FEATURES), dtype=np.float32)})
    agent.collector.collect(1_001.0)
    sent = [json.loads(body) for _, body in agent.telemetry_q.peek(100)]
    assert [(r["bundle"], r["requests"]) for r in sent if r["kind"] == "drift_sketch"] == [
        ("classifier@1.0.0", 3)]


def test_a_model_listener_that_raises_does_not_fail_the_swap(agent: Agent) -> None:
    def broken(_model: object) -> None:
        raise RuntimeError("listener bug")

    agent.core.inference.model_listeners.insert(0, broken)
    assert agent.core.inference.swap(None) is None
    assert agent.collector.drift_sketch.bundle is None

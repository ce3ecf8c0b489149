"""Data capture end to end: real manager (HTTP + MQTT worker), real Mosquitto, real agents.

Open a capture on one district through the API; the agents there receive the signed command,
sample served requests into their capped buffer and upload them as telemetry; a device outside
the cohort that samples anyway (as a tampered agent would) is refused and counted, nothing of
it stored; the export is an .npz of the model's inputs.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from edgeops.keys import KeyStore
from fleet.capture.service import as_capture_store
from fleet.client import FleetClient
from fleet.enroll import write_enrollment
from tests.fleet.live import enrol_and_start_agents, live_fleet, publish_bundle, wait_until
from tests.mosquitto import MosquittoBroker, running_broker

if TYPE_CHECKING:
    from device_agent.daemon import Agent

pytestmark = pytest.mark.slow


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    with running_broker() as b:
        yield b


def _serve(agent: Agent, n: int) -> None:
    model = agent.core.inference.model
    assert model is not None
    for i in range(n):
        feed = {t.name: np.full([d if isinstance(d, int) and d > 0 else 1 for d in t.shape],
                                i, dtype=t.dtype) for t in model.inputs}
        agent.core.inference.predict(feed)


def test_capture_reaches_the_cohort_and_refuses_an_outsider(
        keystore: KeyStore, bundles: dict[str, Path], tmp_path: Path,
        broker: MosquittoBroker) -> None:
    from device_agent.config import AgentConfig
    from device_agent.daemon import Agent

    with live_fleet(keystore, tmp_path / "mgr", broker=broker.url) as lf:
        c = FleetClient(lf.url, lf.admin)
        agents: list[Agent] = []
        try:
            enrol_and_start_agents(c, tmp_path, 2, agents)          # district 4
            ans = c.enrol("cam-x", "camera", "x86-cpu", {"district": "5"})
            write_enrollment(tmp_path / "cam-x", ans["agent_config"], ans["root_json"].encode())
            outsider = Agent(AgentConfig.from_file(tmp_path / "cam-x" / "agent.json"))
            outsider.start()
            agents.append(outsider)
            wait_until("devices online", lambda: c.devices(online="true")["total"] == 3)
            publish_bundle(c, keystore, bundles["1.0.0"])
            dep = c.deploy("tiny", "1.0.0", "all", {})
            wait_until("rollout", lambda: c.deployment(dep["id"])["status"] == "completed")

            # off by default: serving samples nothing
            _serve(agents[0], 20)
            assert agents[0].capture.order is None

            cap = c.request("POST", "/api/v1/captures", body={
                "selector": "district=4", "sample_rate": 1.0, "max_bytes_per_device": 1024,
                "max_bytes_per_day": 1024, "until": time.time() + 3600})
            assert cap["devices"] == ["cam-0", "cam-1"]
            wait_until("orders accepted", lambda: all(
                a.capture.order is not None for a in agents[:2]))
            assert outsider.capture.order is None
            # a tampered outsider samples under the same capture id: refused on intake
            outsider.capture.apply({**agents[0].capture.order.to_dict()})  # type: ignore[union-attr]
            for a in agents:
                _serve(a, 40)
            # the device keeps to its cap: 1024 bytes of samples at most
            assert 0 < agents[0].capture.used_total <= 1024
            assert agents[0].capture.skipped.get("device-cap", 0) > 0
            cs = as_capture_store(lf.server.store)
            wait_until("samples stored", lambda: cs.capture_totals(cap["id"])[2] == 2, 60)
            worker = lf.server.worker
            wait_until("outsider refused", lambda: worker.stats()["ingest"].get(
                "capture:refused:outside-cohort", 0) > 0, 60)
            n, size, devices = cs.capture_totals(cap["id"])
            assert devices == 2 and size <= 2 * 1024
            assert all(r.device_id != "cam-x" for r in cs.capture_samples(cap["id"]))
            data = c.request("GET", f"/api/v1/captures/{cap['id']}/export", raw=True)
            with np.load(io.BytesIO(data)) as z:
                model = agents[0].core.inference.model
                assert model is not None
                assert z.files == [t.name for t in model.inputs]
                assert z[z.files[0]].shape[0] == n
            c.request("POST", f"/api/v1/captures/{cap['id']}/stop")
            wait_until("orders closed", lambda: all(
                a.capture.order is None for a in agents[:2]))

            # ground truth: scored on the agent, sent as an accuracy window, tested in the fleet
            log = agents[0].predictions
            log.window_s = 0.0                     # close the window at the next tick
            for i in range(10):
                pid = log.record("tiny@1.0.0", {"y": np.array([[0.9, 0.1]])})
                log.feedback(pid, label=0 if i < 7 else 1)
            got = wait_until("accuracy in the fleet", lambda: [
                g for g in c.drift(device="cam-0", reference_accuracy=0.9, min_samples=5)
                ["concept"] if g["group"] == "device:cam-0"], 60)
            assert got[0]["latest"]["total"] == 10 and got[0]["latest"]["correct"] == 7
        finally:
            for a in agents:
                a.stop()

"""A full disk degrades the agent and it recovers (issue 22): real broker, real agent, and a
real small filesystem (a tmpfs; skipped, saying so, where it cannot be mounted).

The field failure: with the disk full the download looped on ENOSPC for minutes without
reporting; after a restart while full, ``report()`` raised ENOSPC inside the worker's error
handler, the worker thread died, and once space was freed the agent served its old model but
never took another command.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_agent.daemon import Agent
from device_agent.diskspace import DiskLimits
from edgeops.protocol import DevicePhase
from tests.device_agent.net.agents import FAST, FleetRepo, agent_config
from tests.device_agent.net.fake_manager import FakeManager
from tests.device_agent.smalldisk import fill, small_disk
from tests.mosquitto import MosquittoBroker

pytestmark = pytest.mark.slow

DEV = "cam-disk"
X = np.ones((1, 4), dtype=np.float32)
KIB = 1024
SETTINGS = dataclasses.replace(FAST, disk=DiskLimits(reserve_bytes=1024 * KIB,
                                                     restore_margin_bytes=256 * KIB,
                                                     restore_every_s=0.2))


def _agent(fr: FleetRepo, disk: Path, broker: MosquittoBroker) -> Agent:
    a = Agent(agent_config(fr, disk, DEV, broker.url), settings=SETTINGS)
    a.core.installer.reserve_free_bytes = 256 * KIB   # the 64 MiB default is the whole tmpfs
    a.start()
    assert a.conn.wait_connected(10)
    return a


def _deploy(mgr: FakeManager, version: str, dep: str, channel: str = "commands") -> None:
    mgr.command(DEV, "deploy", {"deployment_id": dep, "name": "classifier",
                                "version": version, "target": "x86-cpu"}, channel=channel)


def _final(mgr: FakeManager, dep: str, timeout_s: float = 60) -> dict[str, Any]:
    terminal = {"healthy", "failed", "rolled-back", "deferred"}
    final: dict[str, Any] = mgr.wait(lambda: next(
        (s for s in mgr.states if s["deployment_id"] == dep and s["phase"] in terminal), None),
        timeout_s)
    return final


def _until(pred: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _serves_v1(a: Agent) -> None:
    model = a.core.inference.model
    assert model is not None and model.version == "1.0.0"
    np.testing.assert_allclose(a.core.inference.predict({"x": X})["y"], 3.0)


def test_full_disk_fails_the_deployment_survives_a_restart_and_recovers(
        tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker, mgr: FakeManager) -> None:
    with small_disk(tmp_path / "disk", 16) as disk:
        a = _agent(fr, disk, broker)
        agents = [a]
        try:
            assert a.disk.held
            _deploy(mgr, "1.0.0", "d1")
            assert _final(mgr, "d1")["phase"] == "healthy"
            _serves_v1(a)

            # 1. the disk fills up; a deployment arrives (retained, as the manager sends it)
            filler = fill(disk)
            _deploy(mgr, "2.0.0", "d2", channel="desired")
            final = _final(mgr, "d2")
            assert final["phase"] == "failed"
            assert "not enough disk space" in final["reason"], final["reason"]
            assert final["active"]["version"] == "1.0.0"
            assert a.disk.releases == 1                 # the reserve carried the reports
            _serves_v1(a)

            # 2. restart while full, and the disk fills the room the reserve left, too
            a.stop()
            more = fill(disk, "filler2")
            a = _agent(fr, disk, broker)
            agents.append(a)
            assert not a.disk.held                      # no room to take it back
            _serves_v1(a)
            _deploy(mgr, "2.0.0", "d3")
            # reports wait in memory, in order, up to the deployment's failure: the disk must
            # stay full until the agent has given up on d3, or a slow run installs it
            _until(lambda: any(item.phase == DevicePhase.FAILED and item.deployment_id == "d3"
                               for item in list(a.reports.waiting)))
            _serves_v1(a)
            assert [t for t in threading.enumerate() if t.name == f"agent-work-{DEV}"]

            # 3. space is freed: what waited is reported, the reserve comes back, and the
            #    next deployment completes
            filler.unlink()
            more.unlink()
            final = _final(mgr, "d3")
            assert final["phase"] == "failed" and "disk" in final["reason"], final["reason"]
            _until(lambda: not a.reports.waiting and a.disk.held)
            _deploy(mgr, "2.0.0", "d4")
            final = _final(mgr, "d4")
            assert final["phase"] == "healthy", final
            assert final["active"]["version"] == "2.0.0"
            np.testing.assert_allclose(a.core.inference.predict({"x": X})["y"], 4.0)
            # at least once end to end: a report whose ack came late is sent again (the
            # manager keeps one per seq), but reports first arrive in the order they were made
            seqs = list(dict.fromkeys(s["seq"] for s in mgr.states))
            assert seqs == sorted(seqs)
        finally:
            for ag in agents:
                ag.stop()


def test_worker_survives_an_exception_in_its_own_error_handler(
        tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker, mgr: FakeManager,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FAULT INJECTION: the install raises, and so does the first report its handler makes
    (the shape of the field failure, without needing a full disk). The worker restarts and
    the next deployment completes."""
    a = Agent(agent_config(fr, tmp_path, DEV, broker.url), settings=dataclasses.replace(
        SETTINGS, loop_backoff=dataclasses.replace(SETTINGS.loop_backoff, base_s=0.05)))
    a.start()
    try:
        assert a.conn.wait_connected(10)
        _deploy(mgr, "1.0.0", "d1")
        assert _final(mgr, "d1")["phase"] == "healthy"
        real_install, real_push = a.core.install, a.state_q.push
        armed = {"install": True, "push": False}

        def install(req: Any) -> Any:
            if armed["install"]:
                armed["install"], armed["push"] = False, True
                raise RuntimeError("injected install failure")
            return real_install(req)

        def push(body: bytes) -> None:
            if armed["push"]:
                armed["push"] = False
                raise RuntimeError("injected outbox failure")
            real_push(body)

        monkeypatch.setattr(a.core, "install", install)
        monkeypatch.setattr(a.state_q, "push", push)
        _deploy(mgr, "2.0.0", "d2")
        _until(lambda: not armed["install"] and not armed["push"])
        _deploy(mgr, "2.0.0", "d3")
        final = _final(mgr, "d3")
        assert final["phase"] == "healthy" and final["active"]["version"] == "2.0.0"
        assert [t for t in threading.enumerate() if t.name == f"agent-work-{DEV}"]
    finally:
        a.stop()

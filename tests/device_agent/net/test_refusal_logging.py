"""A refused download is written to the agent's log (WARNING, with the reason, no secrets).

The fleet hears about a refusal through ``state``; the device's own log must say it too, since
that is what an operator reads on the box after an attack. Real broker, real TUF repository,
real keys; the fake manager plays the fleet side.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_agent.daemon import Agent
from edgeops.bundle import read_bundle
from tests.device_agent.net.agents import FAST, FleetRepo, agent_config
from tests.device_agent.net.fake_manager import FakeManager
from tests.mosquitto import MosquittoBroker, free_port

pytestmark = pytest.mark.slow

DEV = "cam-log"
MQTT_PASSWORD = "mqtt-pw-5e3c7e7"
HTTP_PASSWORD = "http-pw-9a1b2c3"


@pytest.fixture
def agent(tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker) -> Iterator[Agent]:
    # credentials in both places an error message could quote them from
    cfg = agent_config(fr, tmp_path, DEV, broker.url,
                       broker={"url": broker.url, "keepalive_s": 5, "username": DEV,
                               "password": MQTT_PASSWORD},
                       fleet_url=f"http://fleet:{HTTP_PASSWORD}@127.0.0.1:{free_port()}")
    a = Agent(cfg, settings=dataclasses.replace(FAST, http_fallback=True))
    a.start()
    assert a.conn.wait_connected(10)
    yield a
    a.stop()


def _refused(mgr: FakeManager, version: str, dep: str) -> dict[str, Any]:
    mgr.command(DEV, "deploy", {"deployment_id": dep, "name": "classifier",
                                "version": version, "target": "x86-cpu"})
    final: dict[str, Any] = mgr.wait(lambda: next(
        (s for s in mgr.states if s["deployment_id"] == dep and s["phase"] == "failed"), None),
        60)
    return final


def _warnings(caplog: pytest.LogCaptureFixture, dep: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "device_agent.deployer" and r.levelno == logging.WARNING
            and f"deployment {dep}:" in r.getMessage()]


def test_bundle_and_tuf_rejections_are_logged_with_the_reason(
        caplog: pytest.LogCaptureFixture, mgr: FakeManager, agent: Agent, fr: FleetRepo) -> None:
    caplog.set_level(logging.INFO, logger="device_agent")
    final = _refused(mgr, "6.0.0", "foreign-bundle")          # bundle signed by a foreign key
    assert "not signed by a trusted targets key" in final["reason"]
    assert [m for m in _warnings(caplog, "foreign-bundle") if final["reason"] in m]

    entry = read_bundle(fr.bundles["2.0.0"]).manifest.artifact_for("x86-cpu")
    assert entry is not None
    good = fr.repo.by_sha[entry.file.sha256]
    fr.repo.by_sha[entry.file.sha256] = bytes([good[0] ^ 0xFF]) + good[1:]
    try:
        final = _refused(mgr, "2.0.0", "wrong-bytes")           # TUF: hash mismatch
    finally:
        fr.repo.by_sha[entry.file.sha256] = good
    assert "hash mismatch" in final["reason"]
    assert [m for m in _warnings(caplog, "wrong-bytes") if final["reason"] in m]


def test_refusal_log_and_report_carry_no_credentials(
        caplog: pytest.LogCaptureFixture, mgr: FakeManager, agent: Agent) -> None:
    caplog.set_level(logging.DEBUG, logger="device_agent")
    mgr.answer = False           # MQTT transfer fails -> HTTP fallback to the credentialed URL
    final = _refused(mgr, "1.0.0", "fallback")
    assert "download rejected" in final["reason"] and "***@127.0.0.1" in final["reason"]
    assert _warnings(caplog, "fallback")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (HTTP_PASSWORD, MQTT_PASSWORD):
        assert secret not in logged
        assert all(secret not in (s["reason"] or "") for s in mgr.states)

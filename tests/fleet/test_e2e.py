"""End to end: real manager (HTTP + MQTT worker), real Mosquitto, real device agents.

Enrol three devices through the API, start the real ``device_agent`` daemons on the configs
enrolment wrote, publish two signed bundles, deploy in phases, upgrade, then roll back
fleet-wide; the registry must follow what the devices report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from edgeops.keys import KeyStore
from fleet.client import FleetClient
from tests.fleet.live import enrol_and_start_agents, live_fleet, publish_bundle, wait_until
from tests.mosquitto import MosquittoBroker, running_broker

if TYPE_CHECKING:
    from device_agent.daemon import Agent

pytestmark = pytest.mark.slow


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    with running_broker() as b:
        yield b


def test_enrol_publish_deploy_upgrade_and_roll_back_real_agents(
        keystore: KeyStore, bundles: dict[str, Path], tmp_path: Path,
        broker: MosquittoBroker) -> None:
    with live_fleet(keystore, tmp_path / "mgr", broker=broker.url) as lf:
        c = FleetClient(lf.url, lf.admin)
        agents: list[Agent] = []
        try:
            enrol_and_start_agents(c, tmp_path, 3, agents)
            wait_until("devices online", lambda: c.devices(online="true")["total"] == 3)
            publish_bundle(c, keystore, bundles["1.0.0"])
            dep = c.deploy("tiny", "1.0.0", "district=4", {"phases": ["1", "100%"]})
            done = wait_until("rollout 1.0.0", lambda: (s := c.deployment(dep["id"]))["status"]
                         != "running" and s)
            assert done["status"] == "completed", done
            assert done["counts"] == {"healthy": 3}
            assert {d["active_bundle"] for d in c.devices()["items"]} == {"tiny@1.0.0"}

            publish_bundle(c, keystore, bundles["1.1.0"])
            up = c.deploy("tiny", "1.1.0", "all", {})
            done = wait_until("rollout 1.1.0", lambda: (s := c.deployment(up["id"]))["status"]
                         != "running" and s)
            assert done["counts"] == {"healthy": 3}, done
            assert c.devices(version="1.1.0")["total"] == 3

            c.act(up["id"], "rollback")
            wait_until("fleet back on 1.0.0", lambda: c.devices(version="tiny@1.0.0")["total"] == 3)
        finally:
            for a in agents:
                a.stop()
        wait_until("devices offline", lambda: c.devices(online="false")["total"] == 3, 30)


def test_two_managers_on_one_postgresql_and_one_broker_roll_out_together(
        keystore: KeyStore, bundles: dict[str, Path], tmp_path: Path,
        broker: MosquittoBroker) -> None:
    """Two full managers (HTTP, worker, rollout loop) share the database, broker and data."""
    from tests.fleet.services import pg_available, require_or_skip, temporary_database

    if reason := pg_available():
        require_or_skip(reason)
    with temporary_database() as db, \
            live_fleet(keystore, tmp_path, db=db, broker=broker.url) as a, \
            live_fleet(keystore, tmp_path, db=db, broker=broker.url) as b:
        ca, cb = FleetClient(a.url, a.admin), FleetClient(b.url, b.admin)
        agents: list[Agent] = []
        try:
            enrol_and_start_agents(ca, tmp_path, 4, agents)
            wait_until("devices online", lambda: cb.devices(online="true")["total"] == 4)
            publish_bundle(cb, keystore, bundles["1.0.0"])
            dep = ca.deploy("tiny", "1.0.0", "all", {"phases": ["50%", "100%"]})
            done = wait_until("rollout", lambda: (s := cb.deployment(dep["id"]))["status"]
                         != "running" and s)
            assert done["status"] == "completed" and done["counts"] == {"healthy": 4}, done
            assert cb.devices(version="tiny@1.0.0")["total"] == 4
            assert all(ag.rejected_commands == 0 for ag in agents)
        finally:
            for ag in agents:
                ag.stop()

"""End to end: real manager (HTTP + MQTT worker), real Mosquitto, real device agents.

Enrol three devices through the API, start the real ``device_agent`` daemons on the configs
enrolment wrote, publish two signed bundles, deploy in phases, upgrade, then roll back
fleet-wide; the registry must follow what the devices report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata, Root

from edgeops.bundle import read_bundle
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from fleet.client import FleetClient
from fleet.enroll import write_enrollment
from fleet.repository import sign_targets_update
from tests.edgeops.bundles import PASSPHRASE
from tests.fleet.live import live_fleet

pytestmark = [pytest.mark.slow, pytest.mark.broker]


@pytest.fixture
def broker() -> Iterator[Any]:
    from tests.fleet.mqtt.broker import BrokerUnavailableError, running_broker, services_required

    try:
        ctx = running_broker()
        b = ctx.__enter__()
    except BrokerUnavailableError as exc:
        if services_required():
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield b
    ctx.__exit__(None, None, None)


def _publish(c: FleetClient, keys: KeyStore, bundle: Path) -> None:
    root = Metadata[Root].from_file(str(root_path(keys)))
    targets = sign_targets_update(c.current_targets(), read_bundle(bundle), root,
                                  keys.signer("targets", PASSPHRASE))
    c.publish(c.upload(bundle)["upload"], targets)


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def test_enrol_publish_deploy_upgrade_and_roll_back_real_agents(
        keystore: KeyStore, bundles: dict[str, Path], tmp_path: Path, broker: Any) -> None:
    from device_agent.config import AgentConfig
    from device_agent.daemon import Agent

    with live_fleet(keystore, tmp_path / "mgr", broker=broker.url) as lf:
        c = FleetClient(lf.url, lf.admin)
        agents = []
        try:
            for i in range(3):
                ans = c.enrol(f"cam-{i}", "camera", "x86-cpu", {"district": "4"})
                d = tmp_path / f"cam-{i}"
                write_enrollment(d, ans["agent_config"], ans["root_json"].encode())
                agent = Agent(AgentConfig.from_file(d / "agent.json"))
                agent.start()
                agents.append(agent)
            _wait("devices online", lambda: c.devices(online="true")["total"] == 3)
            _publish(c, keystore, bundles["1.0.0"])
            dep = c.deploy("tiny", "1.0.0", "district=4", {"phases": ["1", "100%"]})
            done = _wait("rollout 1.0.0", lambda: (s := c.deployment(dep["id"]))["status"]
                         != "running" and s)
            assert done["status"] == "completed", done
            assert done["counts"] == {"healthy": 3}
            assert {d["active_bundle"] for d in c.devices()["items"]} == {"tiny@1.0.0"}

            _publish(c, keystore, bundles["1.1.0"])
            up = c.deploy("tiny", "1.1.0", "all", {})
            done = _wait("rollout 1.1.0", lambda: (s := c.deployment(up["id"]))["status"]
                         != "running" and s)
            assert done["counts"] == {"healthy": 3}, done
            assert c.devices(version="1.1.0")["total"] == 3

            c.act(up["id"], "rollback")
            _wait("fleet back on 1.0.0", lambda: c.devices(version="tiny@1.0.0")["total"] == 3)
        finally:
            for a in agents:
                a.stop()
        _wait("devices offline", lambda: c.devices(online="false")["total"] == 3, 30)


@pytest.mark.postgres
def test_two_managers_on_one_postgresql_and_one_broker_roll_out_together(
        keystore: KeyStore, bundles: dict[str, Path], tmp_path: Path, broker: Any) -> None:
    """Two full managers (HTTP, worker, rollout loop) share the database, broker and data."""
    from device_agent.config import AgentConfig
    from device_agent.daemon import Agent
    from tests.fleet.services import pg_available, require_or_skip, temporary_database

    if reason := pg_available():
        require_or_skip(reason)
    with temporary_database() as db, \
            live_fleet(keystore, tmp_path, db=db, broker=broker.url) as a, \
            live_fleet(keystore, tmp_path, db=db, broker=broker.url) as b:
        ca, cb = FleetClient(a.url, a.admin), FleetClient(b.url, b.admin)
        agents = []
        try:
            for i in range(4):
                ans = ca.enrol(f"cam-{i}", "camera", "x86-cpu", {"district": "4"})
                d = tmp_path / f"cam-{i}"
                write_enrollment(d, ans["agent_config"], ans["root_json"].encode())
                agent = Agent(AgentConfig.from_file(d / "agent.json"))
                agent.start()
                agents.append(agent)
            _wait("devices online", lambda: cb.devices(online="true")["total"] == 4)
            _publish(cb, keystore, bundles["1.0.0"])
            dep = ca.deploy("tiny", "1.0.0", "all", {"phases": ["50%", "100%"]})
            done = _wait("rollout", lambda: (s := cb.deployment(dep["id"]))["status"]
                         != "running" and s)
            assert done["status"] == "completed" and done["counts"] == {"healthy": 4}, done
            assert cb.devices(version="tiny@1.0.0")["total"] == 4
            assert all(ag.rejected_commands == 0 for ag in agents)
        finally:
            for ag in agents:
                ag.stop()

"""A real fleet manager for tests: FleetServer's app under uvicorn on a free loopback port, and
what the end-to-end tests (tests/fleet/test_e2e.py, tests/sim/test_sim_live.py) do with it:
publish a signed bundle through the API, wait for the fleet to get somewhere, start real agents.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
from tuf.api.metadata import Metadata, Root

from edgeops.bundle import read_bundle
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from fleet.client import FleetClient
from fleet.enroll import write_enrollment
from fleet.repository import sign_targets_update
from fleet.server import FleetServer, ServeOptions
from tests.edgeops.bundles import PASSPHRASE
from tests.services import free_port

if TYPE_CHECKING:
    from device_agent.daemon import Agent, DaemonSettings

__all__ = ["LiveFleet", "cli_fleet", "enrol_and_start_agents", "free_port", "live_fleet",
           "publish_bundle", "run_cli", "stop_agents", "wait_until"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``edgeops ARGV`` in this process: exit code, stdout, stderr."""
    from edgeops.cli.main import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


class LiveFleet:
    def __init__(self, server: FleetServer, url: str, admin: str) -> None:
        self.server = server
        self.url = url
        self.admin = admin


@contextmanager
def live_fleet(keys: KeyStore, tmp: Path, *, db: str | None = None, broker: str | None = None,
               require_blessing: bool = False, tick_s: float = 0.2) -> Iterator[LiveFleet]:
    port = free_port()
    opts = ServeOptions(db=db or f"sqlite:///{tmp / 'fleet.db'}", listen=f"127.0.0.1:{port}",
                        data=tmp / "data", broker=broker, keys_home=keys.home,
                        require_blessing=require_blessing, tick_s=tick_s)
    server = FleetServer(opts)
    # a second manager on the same database finds the admin token already made
    admin = server.admin_token or (opts.data / "admin.token").read_text().strip()
    uv = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=port,
                                       log_level="warning", lifespan="off"))
    server.start_background()
    t = threading.Thread(target=uv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield LiveFleet(server, f"http://127.0.0.1:{port}", admin)
    finally:
        uv.should_exit = True
        t.join(timeout=10)
        server.stop()


@contextmanager
def cli_fleet(keystore: KeyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[LiveFleet]:
    """A live fleet that the `edgeops` CLI in this process talks to (its URL, admin token,
    EDGEOPS_HOME and key passphrase in the environment)."""
    with live_fleet(keystore, tmp_path) as lf:
        monkeypatch.setenv("EDGEOPS_FLEET", lf.url)
        monkeypatch.setenv("EDGEOPS_TOKEN", lf.admin)
        monkeypatch.setenv("EDGEOPS_HOME", str(keystore.home))
        monkeypatch.setenv("EDGEOPS_KEY_PASSPHRASE", PASSPHRASE.decode())
        yield lf


def publish_bundle(c: FleetClient, keys: KeyStore, bundle: Path) -> None:
    """Upload ``bundle`` and publish targets metadata signed with the offline targets key."""
    root = Metadata[Root].from_file(str(root_path(keys)))
    targets = sign_targets_update(c.current_targets(), read_bundle(bundle), root,
                                  keys.signer("targets", PASSPHRASE))
    c.publish(c.upload(bundle)["upload"], targets)


def wait_until(what: str, check: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    """Poll ``check`` until it returns something truthy (returned); AssertionError on timeout."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def enrol_and_start_agents(c: FleetClient, tmp: Path, n: int, agents: list[Agent],
                           settings: DaemonSettings | None = None) -> None:
    """Enrol cameras ``cam-0``..``cam-{n-1}`` (district 4) through the API and start the real
    daemon on the config enrolment wrote (with ``settings``, else the defaults); each started
    agent is appended to ``agents`` at once, so the caller's ``finally`` stops it even when a
    later one fails."""
    from device_agent.config import AgentConfig
    from device_agent.daemon import Agent, DaemonSettings

    for i in range(n):
        ans = c.enrol(f"cam-{i}", "camera", "x86-cpu", {"district": "4"})
        d = tmp / f"cam-{i}"
        write_enrollment(d, ans["agent_config"], ans["root_json"].encode())
        agent = Agent(AgentConfig.from_file(d / "agent.json"),
                      settings=settings or DaemonSettings())
        agent.start()
        agents.append(agent)


def stop_agents(agents: list[Agent]) -> None:
    """Stop every agent at once: each stop waits a second or two for its threads and its last
    acknowledgements, and eight of them one after another took 15 s."""
    threads = [threading.Thread(target=a.stop, name=f"stop-{a.device_id}") for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

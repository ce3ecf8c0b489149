"""The daemon with delta updates: real broker, real TUF repo with signed deltas, real agent.

1.0.0 is installed in full (nothing to start from), 2.0.0 arrives as a delta from it (rebuilt
into the inactive slot), 3.0.0's published delta is made from another model (refused from its
header: the agent fetches 3.0.0 in full) and 4.0.0's has a corrupt payload (found while
rebuilding: the installer installs the full artifact). Each says why; every step ends healthy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_agent.daemon import Agent
from edgeops.delta import delta_target_path, diff_artifacts
from edgeops.keys import KeyStore
from tests.device_agent.bundles import PASSPHRASE, build_bundle, bundle_parts, make_fleet
from tests.device_agent.net.agents import FleetRepo, agent_config, new_agent
from tests.device_agent.net.fake_manager import FakeManager
from tests.mosquitto import MosquittoBroker
from tests.tuf_repo import TufRepo

pytestmark = pytest.mark.slow

DEV = "cam-20"


@pytest.fixture(scope="module")
def fr(tmp_path_factory: pytest.TempPathFactory) -> FleetRepo:
    tmp = tmp_path_factory.mktemp("delta-fleet")
    fleet = make_fleet(tmp / "fleet")
    repo = TufRepo(KeyStore(fleet.home), PASSPHRASE)
    out = tmp / "bundles"
    out.mkdir()
    bundles = {v: build_bundle(out, fleet, version=v, scale=s)
               for v, s in (("1.0.0", 2.0), ("2.0.0", 3.0), ("3.0.0", 4.0), ("4.0.0", 5.0))}
    for b in bundles.values():
        repo.add_bundle(b)
    art = {v: bundle_parts(b).artifact for v, b in bundles.items()}
    sha = {v: hashlib.sha256(a).hexdigest() for v, a in art.items()}
    repo.add_target(delta_target_path("classifier", "2.0.0", "x86-cpu", sha["1.0.0"],
                                      sha["2.0.0"]),
                    diff_artifacts(art["1.0.0"], art["2.0.0"]).to_bytes())
    repo.add_target(delta_target_path("classifier", "3.0.0", "x86-cpu", sha["2.0.0"],
                                      sha["3.0.0"]),       # signed, but made from 1.0.0
                    diff_artifacts(art["1.0.0"], art["3.0.0"]).to_bytes())
    corrupt = bytearray(diff_artifacts(art["3.0.0"], art["4.0.0"]).to_bytes())
    corrupt[-3] ^= 0xFF                                    # signed as it is: a publisher bug
    repo.add_target(delta_target_path("classifier", "4.0.0", "x86-cpu", sha["3.0.0"],
                                      sha["4.0.0"]), bytes(corrupt))
    repo.publish()
    return FleetRepo(fleet, repo, bundles)


@pytest.fixture
def mgr(broker: MosquittoBroker, fr: FleetRepo) -> Iterator[FakeManager]:
    m = FakeManager(broker.port, fr.repo, fr.fleet.manager, chunk_bytes=256)
    m.publish_metadata()
    yield m
    m.close()


@pytest.fixture
def agent(tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker) -> Iterator[Agent]:
    a = new_agent(agent_config(fr, tmp_path, DEV, broker.url))
    a.start()
    assert a.conn.wait_connected(10)
    yield a
    a.stop()


def _deploy_and_wait(mgr: FakeManager, version: str, dep: str) -> dict[str, Any]:
    mgr.command(DEV, "deploy", {"deployment_id": dep, "name": "classifier", "version": version,
                                "target": "x86-cpu"})
    final: dict[str, Any] = mgr.wait(lambda: next(
        (s for s in mgr.states if s["deployment_id"] == dep
         and s["phase"] in ("healthy", "failed", "rolled-back")), None), 60)
    return final


def _delivery(mgr: FakeManager, dep: str) -> dict[str, Any]:
    rec: dict[str, Any] = mgr.wait(lambda: next(
        (r for b in mgr.telemetry for r in b["records"]
         if r["kind"] == "delivery" and r.get("deployment_id") == dep), None), 20)
    return rec


def test_delta_then_bad_delta_falls_back_and_reports_why(mgr: FakeManager, agent: Agent,
                                                         fr: FleetRepo) -> None:
    assert _deploy_and_wait(mgr, "1.0.0", "d1")["phase"] == "healthy"
    first = _delivery(mgr, "d1")
    assert (first["method"], first["reason"]) == ("full", None)

    final = _deploy_and_wait(mgr, "2.0.0", "d2")
    assert final["phase"] == "healthy" and final["active"]["version"] == "2.0.0"
    rec = _delivery(mgr, "d2")
    a2 = bundle_parts(fr.bundles["2.0.0"]).artifact
    assert rec["method"] == "delta" and rec["full_bytes"] == len(a2)
    assert hashlib.sha256(a2).hexdigest() not in {f.artifact for f in mgr.fetches}

    final = _deploy_and_wait(mgr, "3.0.0", "d3")
    assert final["phase"] == "healthy" and final["active"]["version"] == "3.0.0"
    rec = _delivery(mgr, "d3")
    assert rec["method"] == "full" and "does not hold" in rec["reason"]
    said = [s["reason"] for s in mgr.states
            if s["deployment_id"] == "d3" and s["phase"] == "downloading" and s["reason"]]
    assert said and "delta failed" in said[0] and "fetched the full artifact" in said[0]

    final = _deploy_and_wait(mgr, "4.0.0", "d4")
    assert final["phase"] == "healthy" and final["active"]["version"] == "4.0.0"
    said = [s["reason"] for s in mgr.states
            if s["deployment_id"] == "d4" and s["phase"] == "installing" and s["reason"]]
    assert said and "delta failed" in said[0] and "fetching the full artifact" in said[0]
    rec = _delivery(mgr, "d4")
    assert rec["method"] == "full" and "delta failed" in rec["reason"]

"""The daemon end to end: real broker, real TUF repo, real keys, real agent core and runtime.

The fleet manager is played by ``FakeManager`` (retained TUF metadata, chunk answers, signed
commands); everything on the device side is the production code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_agent.core import AgentCore
from device_agent.daemon import Agent
from device_agent.tuf_client import DownloadLimits
from edgeops.bundle import read_bundle
from edgeops.protocol import DevicePhase, topics
from tests.cpuinfo import AVX2, cpu
from tests.device_agent.bundles import drift_reference, sketch_counts
from tests.device_agent.net.agents import (
    FAST,
    FleetRepo,
    agent_config,
    new_agent,
)
from tests.device_agent.net.fake_manager import FakeManager
from tests.device_agent.net.observer import Observer
from tests.mosquitto import MosquittoBroker, start_or_skip

pytestmark = pytest.mark.slow

DEV = "cam-17"
X = np.ones((1, 4), dtype=np.float32)


@pytest.fixture
def agent(tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker) -> Iterator[Agent]:
    a = new_agent(agent_config(fr, tmp_path, DEV, broker.url))
    a.start()
    assert a.conn.wait_connected(10)
    yield a
    a.stop()


def _deploy(mgr: FakeManager, version: str, dep: str, channel: str = "commands",
            **kw: Any) -> None:
    mgr.command(DEV, "deploy", {"deployment_id": dep, "name": "classifier",
                                "version": version, "target": "x86-cpu"},
                channel=channel, **kw)


def _final(mgr: FakeManager, dep: str, timeout_s: float = 60) -> dict[str, Any]:
    terminal = {"healthy", "failed", "rolled-back", "deferred"}
    final: dict[str, Any] = mgr.wait(lambda: next(
        (s for s in mgr.states if s["deployment_id"] == dep and s["phase"] in terminal), None),
        timeout_s)
    return final


def _phases(mgr: FakeManager, dep: str) -> list[str]:
    """The phases the manager learnt, once per report (a re-send repeats a seq)."""
    once = {s["seq"]: s for s in mgr.states}
    return [s["phase"] for s in once.values() if s["deployment_id"] == dep]


def _serving(agent: Agent) -> str | None:
    m = agent.core.inference.model
    return m.version if m else None


def test_deploy_reports_every_phase_and_serves_the_new_model(mgr: FakeManager,
                                                             agent: Agent) -> None:
    _deploy(mgr, "1.0.0", "d1")
    assert _final(mgr, "d1")["phase"] == "healthy"
    assert _phases(mgr, "d1") == ["notified", "downloading", "verifying", "installing",
                                  "activated", "healthy"]
    np.testing.assert_allclose(agent.core.inference.predict({"x": X})["y"], 3.0)
    # the next version through the retained ``desired`` topic
    _deploy(mgr, "2.0.0", "d2", channel="desired")
    final = _final(mgr, "d2")
    assert final["phase"] == "healthy"
    assert final["active"]["version"] == "2.0.0"
    np.testing.assert_allclose(agent.core.inference.predict({"x": X})["y"], 4.0)
    # at least once end to end: a late ack means a re-send with the same seq (the manager
    # keeps one); first arrivals come in the order the reports were made
    seqs = list(dict.fromkeys(s["seq"] for s in mgr.states))
    assert seqs == sorted(seqs)
    # manifest, signatures, artifact and golden of each version travelled over MQTT chunks
    assert len({f.artifact for f in mgr.fetches}) == 8


@pytest.mark.parametrize(("version", "why"), [("3.0.0", "health check failed"),
                                              ("4.0.0", "health check failed"),
                                              ("5.0.0", "health check failed")])
def test_bad_models_roll_back_and_the_old_one_keeps_serving(mgr: FakeManager, agent: Agent,
                                                            version: str, why: str) -> None:
    _deploy(mgr, "1.0.0", "good")
    assert _final(mgr, "good")["phase"] == "healthy"
    _deploy(mgr, version, "bad")
    final = _final(mgr, "bad")
    assert final["phase"] == "rolled-back" and why in final["reason"]
    assert final["active"]["version"] == "1.0.0"
    assert _serving(agent) == "1.0.0"
    np.testing.assert_allclose(agent.core.inference.predict({"x": X})["y"], 3.0)


def test_foreign_signed_bundle_is_rejected_before_install(mgr: FakeManager,
                                                          agent: Agent) -> None:
    _deploy(mgr, "1.0.0", "good")
    _final(mgr, "good")
    _deploy(mgr, "6.0.0", "evil")
    final = _final(mgr, "evil")
    assert final["phase"] == "failed"
    assert "not signed by a trusted targets key" in final["reason"]
    assert "installing" not in _phases(mgr, "evil")
    assert _serving(agent) == "1.0.0"


def test_tampered_chunks_and_metadata_are_rejected(mgr: FakeManager, agent: Agent,
                                                   fr: FleetRepo) -> None:
    _deploy(mgr, "1.0.0", "good")
    _final(mgr, "good")
    mgr.corrupt = lambda _i, frame: frame[:-1] + bytes([frame[-1] ^ 1])
    _deploy(mgr, "2.0.0", "tampered-chunks")
    final = _final(mgr, "tampered-chunks")
    assert final["phase"] == "failed" and "SHA-256" in final["reason"]
    mgr.corrupt = None
    # metadata altered after signing (a broker-level attacker rewrites retained targets)
    fr.repo.publish()        # a new targets version the device has not cached yet...
    mgr.publish_metadata()
    name = f"{fr.repo.targets.signed.version}.targets.json"
    good = fr.repo.metadata[name]
    bad = good.replace(b"bundles/classifier", b"bundles/clazzifier", 1)  # altered after signing
    assert bad != good
    mgr.client.publish(topics.tuf_metadata(name), bad, qos=1, retain=True).wait_for_publish(5)
    try:
        _deploy(mgr, "2.0.0", "tampered-md")
        final = _final(mgr, "tampered-md")
        assert final["phase"] == "failed"
        assert "not signed by trusted keys" in final["reason"]
    finally:
        mgr.client.publish(topics.tuf_metadata(name), good, qos=1,
                           retain=True).wait_for_publish(5)
    assert _serving(agent) == "1.0.0"


def test_oversized_chunks_are_rejected(mgr: FakeManager, agent: Agent) -> None:
    mgr.chunk_bytes = 512            # the agent accepts at most 256 (FAST settings)
    _deploy(mgr, "1.0.0", "big")
    final = _final(mgr, "big")
    assert final["phase"] == "failed" and "exceeds the 256-byte limit" in final["reason"]
    assert _serving(agent) is None


def test_bad_commands_are_rejected_and_reported(mgr: FakeManager, agent: Agent,
                                                fr: FleetRepo) -> None:
    _deploy(mgr, "1.0.0", "good")
    _final(mgr, "good")
    first = mgr.command(DEV, "config", {"deployment_id": "c1"})
    mgr.wait(lambda: any(s["reason"] == "config applied" for s in mgr.states))
    mgr.command(DEV, "config", {"deployment_id": "c2"})
    mgr.wait(lambda: len([s for s in mgr.states if s["reason"] == "config applied"]) == 2)

    def rejected() -> list[str]:
        return [s["reason"] for s in mgr.states
                if (s["reason"] or "").startswith("command rejected")]

    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: mgr.send_raw(DEV, b"{not json"), "malformed"),
        (lambda: mgr.send_raw(DEV, b"x" * 300_000), "exceeds the limit"),
        (lambda: mgr.command(DEV, "deploy", {"name": "classifier", "version": "2.0.0"},
                             to="cam-99"), "addressed to 'cam-99'"),
        (lambda: mgr.command(DEV, "deploy", {"name": "classifier", "version": "2.0.0"},
                             signer=fr.fleet.foreign), "key this device does not trust"),
        (lambda: mgr.command(DEV, "deploy", {"name": "classifier", "version": "2.0.0"},
                             expires_in_s=-5), "expired"),
        (lambda: mgr.send_raw(DEV, first.to_bytes()), "replay"),
    ]
    for i, (send, why) in enumerate(cases):
        send()

        def enough(n: int = i) -> bool:
            return len(rejected()) > n

        mgr.wait(enough)
        assert why in rejected()[i], rejected()
    assert agent.rejected_commands == len(cases)
    assert _serving(agent) == "1.0.0"
    assert not any(s["phase"] == "notified" and s["bundle"] == "classifier@2.0.0"
                   for s in mgr.states)


def test_wrong_target_and_rollback_command(mgr: FakeManager, agent: Agent) -> None:
    _deploy(mgr, "1.0.0", "d1")
    _final(mgr, "d1")
    _deploy(mgr, "2.0.0", "d2")
    _final(mgr, "d2")
    mgr.command(DEV, "deploy", {"deployment_id": "arm", "name": "classifier",
                                "version": "2.0.0", "target": "arm64-npu"})
    assert "this device is 'x86-cpu'" in _final(mgr, "arm")["reason"]
    mgr.command(DEV, "rollback", {"deployment_id": "d2"})
    rb = mgr.wait(lambda: next((s for s in mgr.states if s["phase"] == "rolled-back"), None))
    assert rb["active"]["version"] == "1.0.0"
    assert _serving(agent) == "1.0.0"


def test_vnni_artifact_on_a_cpu_without_vnni_is_refused_and_reported(
        mgr: FakeManager, tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker) -> None:
    dev = "vnni-1"
    cfg = agent_config(fr, tmp_path, dev, broker.url, target="x86-cpu-vnni")
    a = Agent(cfg, settings=FAST,
              core_factory=lambda c, cb: AgentCore(c, on_phase=cb, cpu=cpu(AVX2)))
    a.start()
    try:
        assert a.conn.wait_connected(10)
        mgr.command(dev, "deploy", {"deployment_id": "v", "name": "classifier",
                                    "version": "7.0.0", "target": "x86-cpu-vnni"})
        final = _final(mgr, "v")
        assert final["phase"] == "failed" and final["device_id"] == dev
        assert "has 8-bit weights that need VNNI" in final["reason"]
        assert final["reason"].endswith("; enrol this device as x86-cpu")
        assert _phases(mgr, "v") == ["notified", "downloading", "verifying", "failed"]
        assert final["active"] is None and a.core.inference.model is None
    finally:
        a.stop()


def test_deferred_while_driving_then_installed(mgr: FakeManager, tmp_path: Path,
                                               fr: FleetRepo, broker: MosquittoBroker) -> None:
    flag = tmp_path / "driving"
    flag.write_text("1")
    cfg = agent_config(fr, tmp_path, DEV, broker.url,
                       policy={"maintenance_windows": [], "driving_signal": {"file": str(flag)}})
    a = new_agent(cfg)
    a.start()
    assert a.conn.wait_connected(10)
    try:
        _deploy(mgr, "1.0.0", "d1")
        deferred = _final(mgr, "d1")
        assert deferred["phase"] == "deferred" and "driving" in deferred["reason"]
        assert _serving(a) is None
        flag.write_text("0")
        healthy = mgr.wait(lambda: next((s for s in mgr.states if s["phase"] == "healthy"),
                                        None))
        assert healthy["deployment_id"] == "d1"
        assert _serving(a) == "1.0.0"
    finally:
        a.stop()


def test_telemetry_survives_broker_outage_and_agent_restart(
        tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker) -> None:
    cfg = agent_config(fr, tmp_path, DEV, broker.url,
                       telemetry={"interval_s": 0.2, "queue_max_records": 100_000})
    a = new_agent(cfg)
    a.start()
    mgr = FakeManager(broker.port, fr.repo, fr.fleet.manager)
    try:
        mgr.wait(lambda: len(mgr.telemetry) >= 1)
        broker.stop()
        time.sleep(1.0)                      # agent keeps measuring while offline ...
        outage = (time.time() - 1.0, time.time())
        a.stop()                             # ... and is restarted while still offline
        a = new_agent(cfg)
        a.start()
        time.sleep(0.5)
        mgr.close()
        broker.start()
        mgr = FakeManager(broker.port, fr.repo, fr.fleet.manager)

        def heartbeats() -> list[float]:
            return sorted(r["ts"] for b in mgr.telemetry for r in b["records"]
                          if r["kind"] == "heartbeat")

        mgr.wait(lambda: len([t for t in heartbeats() if outage[0] <= t <= outage[1]]) >= 3,
                 30)
        kinds = {r["kind"] for b in mgr.telemetry for r in b["records"]}
        assert {"heartbeat", "system", "inference"} <= kinds
        assert all(b["dropped"] == 0 for b in mgr.telemetry)
    finally:
        a.stop()
        mgr.close()


def test_queue_bound_drops_oldest_and_says_so(tmp_path: Path, fr: FleetRepo,
                                              broker: MosquittoBroker) -> None:
    cfg = agent_config(fr, tmp_path, DEV, broker.url,
                       telemetry={"interval_s": 0.1, "queue_max_records": 6})
    broker.stop()
    a = new_agent(cfg)
    a.start()
    try:
        time.sleep(1.0)                      # ~30 records into a 6-record queue
        broker.start()
        mgr = FakeManager(broker.port, fr.repo, fr.fleet.manager)
        try:
            batch = mgr.wait(lambda: next((b for b in mgr.telemetry if b["dropped"] > 0),
                                          None), 20)
            assert len(batch["records"]) <= 6
        finally:
            mgr.close()
    finally:
        a.stop()


def test_drift_summaries_follow_the_inputs_against_the_baseline(
        mgr: FakeManager, agent: Agent) -> None:
    _deploy(mgr, "1.0.0", "d1")
    _final(mgr, "d1")
    for _ in range(20):
        agent.core.inference.predict({"x": np.full((1, 4), 5.0, dtype=np.float32)})
    rec = mgr.wait(lambda: next((r for b in mgr.telemetry for r in b["records"]
                                 if r["kind"] == "drift"), None), timeout_s=60.0)
    x = rec["features"]["x"]
    # sampled (1 request in 8), each request holds 4 values
    assert x["mean"] == pytest.approx(5.0) and x["count"] > 0 and x["count"] % 4 == 0
    assert x["shift"] == pytest.approx(5.0)         # baseline mean 0, std 1
    inf = mgr.wait(lambda: next((r for b in mgr.telemetry for r in b["records"]
                                 if r["kind"] == "inference" and r["count"] > 0), None))
    assert inf["p50_ms"] is not None and inf["errors"] == 0


def test_drift_sketch_counts_live_requests_into_the_signed_bins(
        mgr: FakeManager, agent: Agent) -> None:
    _deploy(mgr, "1.0.0", "d1")
    _final(mgr, "d1")
    for _ in range(16):                  # the reference closes a window after 16 requests
        agent.core.inference.predict({"x": np.full((1, 4), 5.0, dtype=np.float32)})
    # a telemetry batch waits for the one before it to be acknowledged (at least once end to
    # end); one late ack costs a 5-10 s re-send, so this wait is longer than the others
    rec = mgr.wait(lambda: next((r for b in mgr.telemetry for r in b["records"]
                                 if r["kind"] == "drift_sketch"), None), timeout_s=60.0)
    assert rec["device_id"] == DEV and rec["bundle"] == "classifier@1.0.0"
    assert rec["requests"] == 16 and rec["sampled"] == 16
    counts = sketch_counts(rec, drift_reference())        # the bundle's reference
    x0 = counts["input:x[0]"]
    assert len(x0) == 20 and sum(x0) == 16 and x0[-1] == 16     # 5.0 is above every edge
    assert sum(counts["output:y/class"]) == 16


def test_many_agents_share_one_process(mgr: FakeManager, tmp_path: Path, fr: FleetRepo,
                                       broker: MosquittoBroker) -> None:
    agents = [new_agent(agent_config(fr, tmp_path, f"sim-{i}", broker.url,
                                     telemetry={"interval_s": 5, "queue_max_records": 100}))
              for i in range(4)]
    for a in agents:
        a.start()
    try:
        for i in range(4):
            mgr.command(f"sim-{i}", "deploy", {"deployment_id": f"m{i}", "name": "classifier",
                                               "version": "1.0.0", "target": "x86-cpu"},
                        channel="desired")
        for i in range(4):
            def healthy(n: int = i) -> bool:
                return any(s["device_id"] == f"sim-{n}" and s["phase"] == "healthy"
                           for s in mgr.states)

            mgr.wait(healthy, 120)
        assert all(_serving(a) == "1.0.0" for a in agents)
    finally:
        for a in agents:
            a.stop()


def test_run_exits_cleanly_on_sigterm_and_says_offline(tmp_path: Path, fr: FleetRepo,
                                                       broker: MosquittoBroker,
                                                       observer: Observer) -> None:
    cfg = agent_config(fr, tmp_path, DEV, broker.url)
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(cfg.to_dict()))
    status = topics.device_topic(DEV, "status")
    observer.subscribe(status)
    code = ("import sys, logging; from device_agent.config import AgentConfig; "
            "from device_agent.daemon import run; "
            "sys.exit(run(AgentConfig.from_file(sys.argv[1])))")
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=os.getcwd(),
                         stderr=subprocess.PIPE)
    try:
        observer.wait_for(lambda m: any(json.loads(x[1]).get("online") for x in m), 30)
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        observer.wait_for(lambda m: json.loads(m[-1][1])["online"] is False)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_run_fails_with_one_line_when_the_root_is_missing(tmp_path: Path, fr: FleetRepo,
                                                          broker: MosquittoBroker) -> None:
    cfg = agent_config(fr, tmp_path, DEV, broker.url)
    d = cfg.to_dict()
    d["trust"]["root"] = str(tmp_path / "nope.json")
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(d))
    code = ("import sys; from device_agent.config import AgentConfig; "
            "from device_agent.daemon import run; "
            "sys.exit(run(AgentConfig.from_file(sys.argv[1])))")
    p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                       timeout=60)
    assert p.returncode == 1
    assert p.stderr.decode().strip().startswith("error: trust root")
    assert "Traceback" not in p.stderr.decode()


def test_cancel_stops_a_stalled_download(mgr: FakeManager, agent: Agent) -> None:
    mgr.answer = False                       # the manager never sends a chunk
    _deploy(mgr, "1.0.0", "slow")
    mgr.wait(lambda: "downloading" in _phases(mgr, "slow"))
    mgr.command(DEV, "cancel", {"deployment_id": "slow"})
    final = _final(mgr, "slow", 20)
    assert final["phase"] == "failed" and "cancelled" in final["reason"]
    assert _serving(agent) is None


def test_http_fallback_when_mqtt_transfer_fails(mgr: FakeManager, tmp_path: Path,
                                                fr: FleetRepo, broker: MosquittoBroker) -> None:
    from tests.tuf_repo import HttpRepoServer

    http = HttpRepoServer(fr.repo)
    settings = dataclasses.replace(FAST, http_fallback=True, download=DownloadLimits(
        chunk_bytes=256, idle_timeout_s=0.3, max_requests=2, metadata_wait_s=3.0))
    a = Agent(agent_config(fr, tmp_path, DEV, broker.url, fleet_url=http.url),
              settings=settings)
    a.start()
    try:
        assert a.conn.wait_connected(10)
        mgr.answer = False
        _deploy(mgr, "1.0.0", "d1")
        assert _final(mgr, "d1")["phase"] == "healthy"
        assert any("/tuf/targets/" in r for r in http.requests)
        assert _serving(a) == "1.0.0"
    finally:
        a.stop()
        http.close()


def test_command_and_state_seqs_survive_a_restart(mgr: FakeManager, tmp_path: Path,
                                                  fr: FleetRepo,
                                                  broker: MosquittoBroker) -> None:
    cfg = agent_config(fr, tmp_path, DEV, broker.url)
    a = new_agent(cfg)
    a.start()
    assert a.conn.wait_connected(10)
    old = mgr.command(DEV, "config", {"deployment_id": "c1"})
    mgr.command(DEV, "config", {"deployment_id": "c2"})
    mgr.wait(lambda: len([s for s in mgr.states if s["reason"] == "config applied"]) == 2)
    a.stop()
    last_seq = max(s["seq"] for s in mgr.states)
    b = new_agent(cfg)                      # same data dir: a restarted device
    b.start()
    try:
        assert b.conn.wait_connected(10)
        mgr.send_raw(DEV, old.to_bytes())
        rej = mgr.wait(lambda: next((s for s in mgr.states
                                     if "replay" in (s["reason"] or "")), None))
        assert rej["seq"] > last_seq
        # the same stale command as a retained ``desired`` (normal after a restart, until the
        # manager re-signs it) is ignored quietly; a forged one there is still reported
        mgr.send_raw(DEV, old.to_bytes(), channel="desired")
        mgr.command(DEV, "config", {}, signer=fr.fleet.foreign, channel="desired")
        mgr.wait(lambda: any("does not trust" in (s["reason"] or "") for s in mgr.states))
        assert len([s for s in mgr.states if "replay" in (s["reason"] or "")]) == 1
        assert b.rejected_commands == 2
    finally:
        b.stop()


def test_the_injected_clock_decides_expiry(mgr: FakeManager, tmp_path: Path, fr: FleetRepo,
                                           broker: MosquittoBroker) -> None:
    a = Agent(agent_config(fr, tmp_path, DEV, broker.url), settings=FAST,
              clock=lambda: time.time() + 3600)   # this device's clock is an hour ahead
    a.start()
    try:
        assert a.conn.wait_connected(10)
        mgr.command(DEV, "config", {}, expires_in_s=600)
        rej = mgr.wait(lambda: next((s for s in mgr.states if s["reason"]), None))
        assert "expired" in rej["reason"]
    finally:
        a.stop()


def test_agent_connects_with_mutual_tls_from_its_config(tmp_path: Path, fr: FleetRepo) -> None:
    from tests.device_agent.net.tlsfiles import make_tls

    tls = make_tls(tmp_path / "pki", DEV)
    b = start_or_skip(MosquittoBroker.untuned(tmp_path / "tlsbroker", mtls=tls))
    try:
        cfg = agent_config(fr, tmp_path, DEV, f"mqtts://127.0.0.1:{b.tls_port}",
                           broker={"url": f"mqtts://127.0.0.1:{b.tls_port}", "keepalive_s": 5,
                                   "tls": {"ca": str(tls.ca), "cert": str(tls.client_cert),
                                           "key": str(tls.client_key)}})
        obs = Observer(b.port, "tls-observer")
        obs.subscribe(topics.device_topic(DEV, "status"))
        a = new_agent(cfg)
        a.start()
        try:
            assert a.conn.wait_connected(10), a.conn.last_error
            obs.wait_for(lambda m: any(json.loads(x[1])["online"] for x in m))
        finally:
            a.stop()
            obs.close()
    finally:
        b.stop()


def test_foreign_signed_metadata_and_wrong_artifact_bytes_are_rejected(
        mgr: FakeManager, agent: Agent, fr: FleetRepo) -> None:
    from tests.tuf_repo import foreign_signer

    _deploy(mgr, "1.0.0", "good")
    assert _final(mgr, "good")["phase"] == "healthy"
    repo = fr.repo
    try:
        repo.publish(targets_signers=[foreign_signer()])   # a compromised manager's own key
        mgr.publish_metadata()
        _deploy(mgr, "2.0.0", "foreign-md")
        final = _final(mgr, "foreign-md")
        assert final["phase"] == "failed" and "not signed by trusted keys" in final["reason"]
    finally:
        repo.publish()           # the real targets key signs a newer version again
        mgr.publish_metadata()
    # the artifact bytes on the wire differ from what TUF signed (chunks individually valid)
    entry = read_bundle(fr.bundles["2.0.0"]).manifest.artifact_for("x86-cpu")
    assert entry is not None
    good = repo.by_sha[entry.file.sha256]
    repo.by_sha[entry.file.sha256] = bytes([good[0] ^ 0xFF]) + good[1:]
    try:
        _deploy(mgr, "2.0.0", "wrong-bytes")
        final = _final(mgr, "wrong-bytes")
        assert final["phase"] == "failed" and "hash mismatch" in final["reason"]
    finally:
        repo.by_sha[entry.file.sha256] = good
    assert _serving(agent) == "1.0.0"
    np.testing.assert_allclose(agent.core.inference.predict({"x": X})["y"], 3.0)


def test_report_state_resends_the_last_deployment_report_without_taking_the_seq(
        mgr: FakeManager, agent: Agent) -> None:
    """``report-state`` (manager restart): the last report about the deployment comes again,
    with a new seq; the command's seq is not recorded, so an older deploy still counts."""
    agent.report(DevicePhase.HEALTHY, deployment_id="d-rs", bundle="tiny@1.0.0")
    mgr.wait(lambda: [s for s in mgr.states if s["deployment_id"] == "d-rs"])
    before = agent.net.command_seq
    mgr.command(DEV, "report-state", {"deployment_id": "d-rs"}, seq=before + 10)
    again = mgr.wait(lambda: [s for s in mgr.states if s["deployment_id"] == "d-rs"][1:])
    first = next(s for s in mgr.states if s["deployment_id"] == "d-rs")
    assert again[0]["phase"] == "healthy" and again[0]["seq"] > first["seq"]
    assert agent.net.command_seq == before
    mgr.command(DEV, "report-state", {"deployment_id": "d-other"}, seq=before + 11)
    mgr.wait(lambda: [s for s in mgr.states if "no report about deployment d-other"
                      in (s["reason"] or "")])
    # a command signed before the report-state ones, received after them, is accepted
    mgr.command(DEV, "config", {"deployment_id": None}, seq=before + 1)
    mgr.wait(lambda: [s for s in mgr.states if s["reason"] == "config applied"])
    assert agent.net.command_seq == before + 1 and agent.rejected_commands == 0

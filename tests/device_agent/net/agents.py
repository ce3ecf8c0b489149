"""Building real agents for the daemon tests: config, fast settings, a fleet with bundles."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.config import AgentConfig
from device_agent.daemon import Agent, DaemonSettings
from device_agent.mqtt import Backoff
from device_agent.tuf_client import DownloadLimits
from edgeops.keys import KeyStore
from tests.cpuinfo import VNNI_PLAN
from tests.device_agent.bundles import (
    PASSPHRASE,
    Fleet,
    build_bundle,
    drift_reference,
    make_fleet,
)
from tests.tuf_repo import TufRepo

__all__ = ["FAST", "FleetRepo", "agent_config", "make_fleet_repo", "new_agent"]

FAST = DaemonSettings(
    deferred_retry_s=0.3, idle_poll_s=0.1, metadata_wait_s=2.0, http_fallback=False,
    backoff=Backoff(0.05, 0.5),
    download=DownloadLimits(chunk_bytes=256, idle_timeout_s=1.0, max_requests=3,
                            metadata_wait_s=3.0))


@dataclass
class FleetRepo:
    fleet: Fleet
    repo: TufRepo
    bundles: dict[str, Path]


def make_fleet_repo(tmp: Path) -> FleetRepo:
    """Keys, a TUF repo and published bundles: 1.0.0/2.0.0 good, 3.0.0 NaN, 4.0.0 broken,
    5.0.0 wrong golden, 6.0.0 signed by a foreign key, 7.0.0 an x86-cpu-vnni INT8 artifact
    (8-bit weights: refused on a CPU without VNNI)."""
    fleet = make_fleet(tmp / "fleet")
    repo = TufRepo(KeyStore(fleet.home), PASSPHRASE)
    out = tmp / "bundles"
    out.mkdir()
    bundles = {
        "1.0.0": build_bundle(out, fleet, version="1.0.0", scale=2.0, drift=drift_reference()),
        "2.0.0": build_bundle(out, fleet, version="2.0.0", scale=3.0),
        "3.0.0": build_bundle(out, fleet, version="3.0.0", kind="nan"),
        "4.0.0": build_bundle(out, fleet, version="4.0.0", kind="broken"),
        "5.0.0": build_bundle(out, fleet, version="5.0.0", kind="wrong"),
        "6.0.0": build_bundle(out, fleet, version="6.0.0", signer=fleet.foreign),
        "7.0.0": build_bundle(out, fleet, version="7.0.0", target="x86-cpu-vnni",
                              precision="int8", details={"plan": VNNI_PLAN}),
    }
    for b in bundles.values():
        repo.add_bundle(b)
    repo.publish()
    return FleetRepo(fleet, repo, bundles)


def agent_config(fr: FleetRepo, tmp: Path, device_id: str, broker_url: str,
                 **extra: Any) -> AgentConfig:
    key = fr.fleet.manager.public_key
    d: dict[str, Any] = {
        "schema": "edgeops.agent-config/v1", "device_id": device_id, "target": "x86-cpu",
        "broker": {"url": broker_url, "keepalive_s": 5},
        "data_dir": str(tmp / "devices" / device_id),
        "trust": {"root": str(fr.fleet.home / "trust" / "root.json"),
                  "manager_keys": [{"keyid": key.keyid, **key.to_dict()}]},
        "telemetry": {"interval_s": 0.3, "queue_max_records": 1000}}
    d.update(extra)
    return AgentConfig.from_dict(d, base_dir=tmp)


def new_agent(cfg: AgentConfig, settings: DaemonSettings = FAST) -> Agent:
    return Agent(cfg, settings=settings)

"""The simulator against a real manager and a real mosquitto: faults on, rollout completes.

Real agents (in-process, and in their own process for ``powercut``), real signed commands,
real TUF downloads. Bounded: a handful of devices, every wait with a timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeops.keys import KeyStore
from edgeops_sim import FaultPlan, SimFleet, SimOptions
from edgeops_sim.streams import DeviceSpec
from fleet.client import FleetClient
from tests.fleet.live import live_fleet, publish_bundle, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker]


def _cameras(n: int) -> list[DeviceSpec]:
    return [DeviceSpec(f"cam-{i:03d}", "traffic-camera", "camera", "x86-cpu",
                       {"district": "4"}, seed=i) for i in range(n)]


def _roll_out(tmp_path: Path, keystore: KeyStore, bundles: dict[str, Path], broker: Any,
              faults: FaultPlan, n: int, in_process: bool = True
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    with live_fleet(keystore, tmp_path / "mgr", broker=broker.url) as lf:
        c = FleetClient(lf.url, lf.admin)
        sim = SimFleet(_cameras(n), tmp_path / "sim", broker.url,
                       SimOptions(tick_s=0.5, telemetry_interval_s=1.0, faults=faults))
        sim.enrol(c)
        sim.start()
        try:
            wait_until("devices online", lambda: c.devices(online="true")["total"] == n, 90)
            publish_bundle(c, keystore, bundles["1.0.0"])
            dep = c.deploy("tiny", "1.0.0", "all", {"phases": ["50%", "100%"]})
            done = wait_until("rollout", lambda: (s := c.deployment(dep["id"]))["status"]
                         != "running" and s, 150)
            if in_process:       # powercut devices run in their own process: no predictions
                wait_until("predictions on the new model",
                      lambda: sim.snapshot()["predictions"] > 0, 30)
            snap = sim.snapshot()
        finally:
            sim.stop()
        return done, snap


def test_rollout_completes_with_dropped_slow_and_skewed_devices(
        tmp_path: Path, keystore: KeyStore, bundles: dict[str, Path], mosquitto: Any) -> None:
    plan = FaultPlan(frozenset({"drop", "slow", "skew"}), share=1.0, drop_every_s=3.0,
                     slow_delay_s=0.02, skew_s=30.0)
    done, snap = _roll_out(tmp_path, keystore, bundles, mosquitto, plan, 3)
    assert done["status"] == "completed" and done["counts"] == {"healthy": 3}, done
    assert snap["link_drops"] > 0
    assert snap["rejected_commands"] == 0          # 30 s of skew stays within command expiry
    assert snap["serving"] == {"tiny@1.0.0": 3}


def test_power_cut_mid_install_recovers(
        tmp_path: Path, keystore: KeyStore, bundles: dict[str, Path], mosquitto: Any) -> None:
    plan = FaultPlan(frozenset({"powercut"}), share=1.0, powercut_after_s=0.3)
    done, snap = _roll_out(tmp_path, keystore, bundles, mosquitto, plan, 2, in_process=False)
    assert snap["power_cuts"] >= 1
    assert done["status"] == "completed" and done["counts"] == {"healthy": 2}, done

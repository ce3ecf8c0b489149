"""The retraining loop of docs/DRIFT.md, end to end on this machine: drift, detect, capture,
rebuild, redeploy.

Run: ``python docs/examples/drift_loop.py [--workdir edgeops-drift-loop] [--devices 3]``.
Everything real: the example sensor model (``edgeops.examples``), ``edgeops build``, a broker
(mosquitto if installed, else amqtt), the fleet manager on SQLite with its HTTP API and MQTT
worker, real device agents. The roadside readings come from the fleet simulator's world
(``edgeops_sim.drift.drifted_observations``, what ``edgeops sim`` feeds its devices) with the
drift ``edgeops sim --drift calibration:1`` injects (``noise_db`` reads +15 dB x d, here d = 1)
on every device. The example drives the readings itself, through that same function, because
closing a sketch window takes 10,000 requests per device, a rate ``edgeops sim`` does not reach.

Time is compressed: a sketch window closes after the bundle's ``window_inferences`` (10,000)
requests instead of 15 minutes, so each device is sent that many requests per window; the
monitor sums windows per 15-minute slot, so the windows of this run share one slot, which the
default policy (one drifting window alarms) judges alone; ``--persistence 2`` (the slower
policy) would need two slots.

The rebuild re-uses the same network with the capture as calibration data and as the new drift
reference (``--reference``): the bundle then describes what its devices now see. A real loop
would first retrain on the captured inputs once they are labelled; edgeops's part is the data
and the bundle, not the training.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

NAME = "vehicle-classifier"
PASSPHRASE = "drift-loop-example"  # noqa: S105 - throw-away keys in the work directory


def edgeops(*args: str) -> str:
    """``edgeops ARGS`` in this process (the user's code path); returns what it printed."""
    from edgeops.cli.main import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.main(list(args), standalone_mode=False)
    return out.getvalue()


def wait(what: str, check: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}")


def readings(rng: np.random.Generator, n: int, drift: float) -> np.ndarray:
    """The simulator's roadside observations, hours spread over the day (the reference's
    time-of-day features cover the whole day; one pinned hour would read as drift)."""
    from edgeops_sim.drift import DriftSpec, active_drift, drifted_observations

    # the injection `edgeops sim --drift calibration:D` applies (edgeops_sim/drift.py)
    x = drifted_observations(rng, n, 12.0, active_drift((DriftSpec("calibration", drift),), 0.0))
    hours = rng.uniform(0, 24, n)
    x[:, 7], x[:, 8] = np.sin(hours / 24 * 2 * np.pi), np.cos(hours / 24 * 2 * np.pi)
    return x


def run(work: Path, devices: int = 3, log: Callable[[str], None] = print) -> dict[str, Any]:
    from device_agent.config import AgentConfig
    from device_agent.daemon import Agent
    from edgeops.examples import make_vehicle_classifier
    from fleet.client import FleetClient
    from fleet.embedded_broker import EmbeddedBroker, _free_port
    from fleet.enroll import write_enrollment
    from fleet.server import FleetServer, ServeOptions

    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["EDGEOPS_HOME"] = str(work / "home")
    os.environ["EDGEOPS_KEY_PASSPHRASE"] = PASSPHRASE
    result: dict[str, Any] = {}

    log("1. the example sensor model, keys, and bundle 1.0.0 (drift reference from validation)")
    ex = make_vehicle_classifier(work / "model")
    if not (work / "home").exists():
        edgeops("keys", "init")
    out = work / "out"
    edgeops("build", str(ex.model), "--name", NAME, "--version", "1.0.0", "--target",
            "x86-cpu", "--calibration", str(ex.calibration), "--validation",
            str(ex.validation), "--out", str(out), "--json")

    log("2. a broker, the fleet manager, and real agents on the cohort city=lyon")
    broker = EmbeddedBroker("auto")
    broker_url = broker.start()
    port = _free_port()
    server = FleetServer(ServeOptions(db=f"sqlite:///{work / 'fleet.db'}",
                                      listen=f"127.0.0.1:{port}", data=work / "fleet-data",
                                      broker=broker_url, keys_home=work / "home", tick_s=0.25))
    import threading

    import uvicorn

    uv = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=port,
                                       log_level="warning", lifespan="off"))
    uv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    server.start_background()
    threading.Thread(target=uv.run, daemon=True).start()
    wait("the HTTP API", lambda: uv.started, 20)
    url = f"http://127.0.0.1:{port}"
    token = server.admin_token or (work / "fleet-data" / "admin.token").read_text().strip()
    os.environ["EDGEOPS_FLEET"], os.environ["EDGEOPS_TOKEN"] = url, token
    c = FleetClient(url, token)
    agents: list[Agent] = []
    rng = np.random.default_rng(0)
    try:
        for i in range(devices):
            ans = c.enrol(f"veh-{i}", "camera", "x86-cpu", {"city": "lyon"})
            d = work / "devices" / f"veh-{i}"
            write_enrollment(d, ans["agent_config"], ans["root_json"].encode())
            cfg = json.loads((d / "agent.json").read_text())
            cfg.setdefault("telemetry", {})["interval_s"] = 1.0    # compressed time
            (d / "agent.json").write_text(json.dumps(cfg))
            agent = Agent(AgentConfig.from_file(d / "agent.json"))
            agent.start()
            agents.append(agent)
        wait("devices online", lambda: c.devices(online="true")["total"] == devices, 60)

        def deploy(version: str) -> None:
            edgeops("publish", str(out / f"{NAME}-{version}.edgebundle"))
            dep = c.deploy(NAME, version, "city=lyon", {})
            wait(f"rollout {version}", lambda: c.deployment(dep["id"])["status"] != "running",
                 180)
            got = c.deployment(dep["id"])
            if got["status"] != "completed":
                raise RuntimeError(f"rollout of {version} ended {got['status']}")

        def window(drift: float) -> None:
            """One closed sketch window per device of the simulator's readings."""
            before = [len(c.request("GET", f"/api/v1/devices/{a.device_id}/telemetry",
                                    query={"kind": "drift_sketch"})["items"]) for a in agents]
            for a in agents:
                model = a.core.inference.model
                assert model is not None
                ref = a.collector.drift_sketch._ref
                n = ref.window_inferences if ref is not None else 10_000
                for row in readings(rng, n, drift):
                    a.core.inference.predict({model.inputs[0].name: row[None, :]})
            for a, b in zip(agents, before, strict=True):
                wait("a sketch", lambda a=a, b=b: len(c.request(
                    "GET", f"/api/v1/devices/{a.device_id}/telemetry",
                    query={"kind": "drift_sketch"})["items"]) > b, 180)

        deploy("1.0.0")

        def drift_status() -> dict[str, Any]:
            status: dict[str, Any] = json.loads(edgeops(
                "fleet", "drift", "--cohort", "city=lyon", "--json"))
            (cohort,) = [g for g in status["cohorts"] if g["bundle"].endswith(
                status_bundle[0])]
            return cohort

        status_bundle = ["@1.0.0"]
        log("3. stable readings: the cohort is ok")
        window(0.0)
        result["before"] = drift_status()["data_drift"]["status"]
        log(f"   data drift: {result['before']}")

        log("4. drift injected in the simulator's world: noise_db reads +15 dB")
        window(1.0)
        detected = drift_status()
        result["detected"] = detected["data_drift"]["status"]
        result["drifting_features"] = [f["feature"] for f in detected["data_drift"]["features"]
                                       if f["drift"]]
        log(f"   data drift: {result['detected']} on {result['drifting_features']}")

        log("5. capture on the drifting cohort, then export")
        cap = json.loads(edgeops(
            "fleet", "capture", "start", "--selector", "city=lyon", "--sample-rate", "0.25",
            "--max-bytes-per-device", "2M", "--max-bytes-per-day", "1M", "--until", "1h",
            "--json"))
        wait("orders accepted", lambda: all(a.capture.order is not None for a in agents), 30)
        for a in agents:
            model = a.core.inference.model
            assert model is not None
            for row in readings(rng, 2_000, 1.0):
                a.core.inference.predict({model.inputs[0].name: row[None, :]})
        wait("samples stored", lambda: json.loads(edgeops("fleet", "capture", "list", "--json"))
             ["items"][0]["samples"] >= 300 * devices, 60)
        live = work / "live.npz"
        edgeops("fleet", "capture", "export", cap["id"], "-o", str(live))
        edgeops("fleet", "capture", "stop", cap["id"])
        with np.load(live) as z:
            result["captured"] = {k: list(z[k].shape) for k in z.files}
        log(f"   {live}: {result['captured']}")

        log("6. rebuild 1.1.0 with the capture as calibration and drift reference, redeploy")
        edgeops("build", str(ex.model), "--name", NAME, "--version", "1.1.0", "--target",
                "x86-cpu", "--calibration", str(live), "--reference", str(live),
                "--out", str(out), "--json")
        deploy("1.1.0")
        status_bundle[0] = "@1.1.0"
        window(1.0)
        result["after"] = drift_status()["data_drift"]["status"]
        log(f"   data drift against the new reference: {result['after']}")
    finally:
        for a in agents:
            a.stop()
        uv.should_exit = True
        server.stop()
        broker.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("edgeops-drift-loop"))
    ap.add_argument("--devices", type=int, default=3)
    args = ap.parse_args(argv)
    print(json.dumps(run(args.workdir, args.devices, lambda s: print(s, file=sys.stderr)),
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

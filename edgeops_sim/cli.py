"""``edgeops sim``: run N simulated devices (real agent code, many per process) against a fleet.

A thin shell over :class:`edgeops_sim.fleet.SimFleet`: enrol the devices through the manager's
API (token from ``--token``/``EDGEOPS_TOKEN``), start them, print a progress line on stderr
every few seconds until ``--duration`` passes or Ctrl-C, then stop every agent and print a
summary (``--json``: JSON on stdout, no progress).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click

from edgeops.errors import UsageError

__all__ = ["sim"]


@click.command()
@click.option("--devices", "n", type=click.IntRange(1, 5000), default=20, show_default=True,
              help="How many devices to simulate.")
@click.option("--fleet", "fleet_url", envvar="EDGEOPS_FLEET", required=True, metavar="URL",
              help="Fleet manager API, e.g. http://127.0.0.1:8080.")
@click.option("--token", envvar="EDGEOPS_TOKEN", required=True,
              help="An admin or operator token (enrols the devices).")
@click.option("--broker", envvar="EDGEOPS_BROKER", required=True, metavar="URL",
              help="MQTT broker the devices connect to, e.g. mqtt://127.0.0.1:1883.")
@click.option("--mqtt-version", type=click.Choice(["5", "3.1.1"]), default="5",
              show_default=True, help="3.1.1 for brokers without MQTT 5 (amqtt).")
@click.option("--profile", type=click.Choice(["smart-city"]), default="smart-city",
              show_default=True, help="Which fleet to simulate.")
@click.option("--faults", default="", metavar="LIST",
              help="Faults to inject: drop,slow,powercut,skew (each hits --fault-share).")
@click.option("--fault-share", type=float, default=0.1, show_default=True,
              help="Fraction of devices affected by each fault.")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("edgeops-sim"), show_default=True,
              help="Enrolment folders and agent state (reused on the next run).")
@click.option("--prefix", default="", help="Prefix for device ids (several simulators).")
@click.option("--hours-per-s", type=float, default=0.1, show_default=True,
              help="Simulated hours per real second (daily cycles).")
@click.option("--sensor-interval", type=float, default=10.0, show_default=True,
              metavar="SECONDS", help="One reading per air-quality/bin sensor this often.")
@click.option("--duration", type=float, default=None, metavar="SECONDS",
              help="Stop after this long (default: until Ctrl-C).")
@click.option("--per-process", type=click.IntRange(1, 2000), default=100, show_default=True,
              help="Agents per process; more devices run as several processes (one "
                   "process uses at most one core).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="No progress; JSON summary on stdout.")
def sim(n: int, fleet_url: str, token: str, broker: str, mqtt_version: str, profile: str,
        faults: str, fault_share: float, workdir: Path, prefix: str, hours_per_s: float,
        sensor_interval: float, duration: float | None, per_process: int, seed: int,
        as_json: bool) -> None:
    """Simulate a fleet of devices that run the real agent, many per process.

    Devices are enrolled with the manager, connect to the broker and behave like a city:
    traffic counts with daily cycles, air quality with drift episodes, bins filling up,
    vehicles that drive (installs wait) and go offline. Faults: drop (links cut), slow
    (delaying proxy), powercut (agent process killed mid-install), skew (clock offset).

    \b
    Example:
      edgeops sim --devices 200 --fleet http://127.0.0.1:8080 --token $TOKEN \\
          --broker mqtt://127.0.0.1:1883 --faults drop,slow,powercut,skew --duration 600
    """
    from edgeops_sim.faults import FaultPlan, parse_faults
    from edgeops_sim.fleet import SimFleet, SimOptions
    from edgeops_sim.streams import smart_city
    from fleet.client import FleetClient

    if duration is not None and duration <= 0:
        raise UsageError("--duration must be positive")
    if sensor_interval <= 0:
        raise UsageError("--sensor-interval must be positive")
    plan = FaultPlan(parse_faults(faults), share=fault_share)
    specs = smart_city(n, seed, prefix)
    mqtt_v = 5 if mqtt_version == "5" else 4
    sim_fleet = SimFleet(specs, workdir, broker, SimOptions(
        mqtt_version=mqtt_v, hours_per_s=hours_per_s, faults=plan,
        sensor_interval_s=sensor_interval, seed=seed))
    fleet: Any = sim_fleet
    if n > per_process:
        from edgeops_sim.shards import ShardedFleet

        fleet = ShardedFleet(workdir, broker, [s.id for s in specs], n=n, seed=seed,
                             prefix=prefix, per_process=per_process, options={
                                 "mqtt_version": mqtt_v, "hours_per_s": hours_per_s,
                                 "sensor_interval_s": sensor_interval, "seed": seed,
                                 "faults": sorted(plan.faults), "fault_share": fault_share})

    def say(text: str) -> None:
        if not as_json:
            click.echo(text, err=True)

    client = FleetClient(fleet_url, token)
    say(f"enrolling {n} devices with {fleet_url} ...")
    sim_fleet.enrol(client)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    t0 = time.monotonic()
    fleet.start()
    try:
        while not stop.wait(5.0):
            s = fleet.snapshot()
            say(f"[{time.monotonic() - t0:6.0f} s] sim {s.get('sim_hour', 0):05.2f} h · "
                f"{s.get('online', 0)}/{n} online · serving {s.get('serving', {})} · "
                f"{s.get('predictions', 0)} predictions · drops {s.get('link_drops', 0)} · "
                f"power cuts {s.get('power_cuts', 0)}")
            if duration is not None and time.monotonic() - t0 >= duration:
                break
    except KeyboardInterrupt:
        pass
    summary = fleet.snapshot()
    fleet.stop()
    summary.update({"faults": sorted(plan.faults), "fault_share": fault_share,
                    "elapsed_s": round(time.monotonic() - t0, 1)})
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        say(f"stopped {n} devices after {summary['elapsed_s']} s")

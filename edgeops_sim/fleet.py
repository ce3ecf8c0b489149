"""Many real device agents in one process, enrolled with a real manager and fed sensor streams.

Why it exists: ``edgeops sim`` and ``edgeops demo`` need a fleet without owning one. Each
simulated device is a real :class:`device_agent.daemon.Agent` (real MQTT session, signed
command checks, TUF download, A/B slots, health check, telemetry) enrolled through the real
API; this module only adds what the world would do: one driver thread turns the streams of
``edgeops_sim.streams`` into inference requests on each agent's model and sensor telemetry,
flips vehicles' driving signal and takes them off the network now and then, and applies the
faults of ``edgeops_sim.faults``. Simulated time runs ``hours_per_s`` faster than the clock so
a daily cycle fits in a demo.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeops_sim.faults import FaultPlan, SlowLink
from edgeops_sim.streams import (
    DeviceSpec,
    air_quality,
    bin_level,
    drift_level,
    observations,
    traffic_rate,
    vehicle_driving,
    vehicle_online,
)

__all__ = ["SimDevice", "SimFleet", "SimOptions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimOptions:
    """How the simulated world behaves. Units in the names."""

    mqtt_version: int = 5                 # 4 (3.1.1) for brokers without MQTT 5 (amqtt)
    hours_per_s: float = 0.1              # simulated hours per real second (a day in 4 min)
    start_hour: float = 7.0               # simulated local time at start
    tick_s: float = 1.0                   # driver loop period
    telemetry_interval_s: float = 5.0     # agents' telemetry period
    max_predict_per_tick: int = 8         # inference requests per device per tick (bound)
    deferred_retry_s: float = 5.0         # vehicles re-check "still driving?" this often
    idle_poll_s: float = 1.0              # agents' I/O thread wake-up when idle (messages
                                          # wake it at once; 1,000 agents poll 2,000×/s)
    sensor_interval_s: float = 10.0       # one sensor reading per sensor this often
    vehicles_drive: bool = True           # vehicles follow their driving schedule
    drive_for_s: float | None = None      # demo: vehicles drive this long, then park
    vehicles_roam: bool = True            # vehicles drop off the network and come back
    faults: FaultPlan = field(default_factory=FaultPlan)
    seed: int = 0


@dataclass
class SimDevice:
    spec: DeviceSpec
    config_path: Path
    agent: Any = None                     # device_agent.daemon.Agent when running in-process
    proc: subprocess.Popen[bytes] | None = None   # powercut devices: their own process
    online: bool = False
    predictions: int = 0
    errors: int = 0
    power_cuts: int = 0
    link_drops: int = 0
    last_cmd_seq: int = 0
    cut_at: float | None = None
    next_sensor: float = 0.0
    rng: random.Random = field(default_factory=random.Random)


class SimFleet:
    """Enrol (:meth:`enrol`), :meth:`start`, watch (:meth:`snapshot`), :meth:`stop`."""

    def __init__(self, specs: list[DeviceSpec], workdir: Path, broker_url: str,
                 options: SimOptions = SimOptions()) -> None:
        self.specs = specs
        self.workdir = workdir
        self.broker_url = broker_url
        self.options = options
        self.devices: dict[str, SimDevice] = {}
        self._stop = threading.Event()
        self._driver: threading.Thread | None = None
        self._links: dict[str, SlowLink] = {}
        self._t0 = time.monotonic()
        self._np = np.random.default_rng(options.seed)
        self.sensor_records = 0

    # -- enrolment -------------------------------------------------------------------------
    def enrol(self, client: Any, progress: Callable[[int, int], None] | None = None) -> None:
        """Register every device with the manager (``fleet.client.FleetClient``) and write its
        enrolment folder; a device whose folder exists already is reused as is."""
        from fleet.enroll import write_enrollment

        for i, spec in enumerate(self.specs):
            d = self.workdir / "devices" / spec.id
            cfg = d / "agent.json"
            if not cfg.exists():
                ans = client.enrol(spec.id, spec.device_class, spec.target, spec.tags)
                conf = dict(ans["agent_config"])
                conf["broker"] = {**conf.get("broker", {}), "url": self._broker_for(spec.id)}
                conf["telemetry"] = {**conf.get("telemetry", {}),
                                     "interval_s": self.options.telemetry_interval_s}
                if spec.kind == "vehicle" and self.options.vehicles_drive:
                    conf["policy"] = {**conf.get("policy", {}),
                                      "driving_signal": {"file": "driving"}}
                    (d / "driving").parent.mkdir(parents=True, exist_ok=True)
                    (d / "driving").write_text("1")
                write_enrollment(d, conf, ans["root_json"].encode())
            self.devices[spec.id] = SimDevice(spec, cfg, rng=random.Random(spec.seed))
            if progress is not None:
                progress(i + 1, len(self.specs))

    def attach(self) -> None:
        """Use the enrolment folders :meth:`enrol` wrote earlier (another process did it)."""
        for spec in self.specs:
            cfg = self.workdir / "devices" / spec.id / "agent.json"
            if not cfg.exists():
                from edgeops.errors import UsageError

                raise UsageError(f"device {spec.id} is not enrolled in {self.workdir}")
            self.devices[spec.id] = SimDevice(spec, cfg, rng=random.Random(spec.seed))

    def _broker_for(self, device_id: str) -> str:
        if not self.options.faults.has(device_id, "slow"):
            return self.broker_url
        link = self._links.get(device_id)
        if link is None:
            from fleet.mqtt import parse_broker_url

            addr = parse_broker_url(self.broker_url)
            link = SlowLink((addr.host, addr.port), self.options.faults.slow_delay_s)
            self._links[device_id] = link
        return link.url

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start every agent (in this process; powercut devices in their own), then drive."""
        for dev in self.devices.values():
            if self.options.faults.has(dev.spec.id, "slow"):   # a reused folder: new proxy port
                self._rewrite_broker(dev)
            self._start_device(dev)
        self._t0 = time.monotonic()
        self._stop.clear()
        self._driver = threading.Thread(target=self._drive, name="sim-driver", daemon=True)
        self._driver.start()

    def stop(self) -> None:
        self._stop.set()
        if self._driver is not None:
            self._driver.join(10)
            self._driver = None
        # Each agent's stop waits for its threads' next wake-up (~1 s): in parallel, or 1,000
        # devices would take a quarter of an hour to shut down.
        from concurrent.futures import ThreadPoolExecutor

        devs = list(self.devices.values())
        if devs:
            with ThreadPoolExecutor(max_workers=min(64, len(devs)),
                                    thread_name_prefix="sim-stop") as pool:
                list(pool.map(self._stop_device, devs))
        for link in self._links.values():
            link.close()
        self._links.clear()

    def __enter__(self) -> SimFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _rewrite_broker(self, dev: SimDevice) -> None:
        conf = json.loads(dev.config_path.read_text())
        conf["broker"]["url"] = self._broker_for(dev.spec.id)
        dev.config_path.write_text(json.dumps(conf, indent=2))

    def _start_device(self, dev: SimDevice) -> None:
        if self.options.faults.has(dev.spec.id, "powercut"):
            dev.proc = subprocess.Popen(
                [sys.executable, "-m", "edgeops_sim.agent_proc", str(dev.config_path),
                 str(self.options.mqtt_version), str(self.options.deferred_retry_s)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            dev.online = True
            return
        from device_agent.config import AgentConfig
        from device_agent.daemon import Agent, DaemonSettings
        from device_agent.diskspace import DiskLimits

        skew = self.options.faults.skew_for(dev.spec.id)
        settings = DaemonSettings(mqtt_version=self.options.mqtt_version,
                                  deferred_retry_s=self.options.deferred_retry_s,
                                  idle_poll_s=self.options.idle_poll_s,
                                  disk=DiskLimits(reserve_bytes=0))  # one host disk for all
        clock = (lambda: time.time() + skew) if skew else time.time
        dev.agent = Agent(AgentConfig.from_file(dev.config_path), settings=settings,
                          clock=clock, rng=random.Random(dev.spec.seed))
        dev.agent.start()
        dev.online = True
        dev.next_sensor = time.monotonic() + dev.rng.uniform(0, self.options.sensor_interval_s)

    def _stop_device(self, dev: SimDevice) -> None:
        if dev.proc is not None:
            dev.proc.terminate()
            try:
                dev.proc.wait(10)
            except subprocess.TimeoutExpired:
                dev.proc.kill()
                dev.proc.wait(5)
            dev.proc = None
        if dev.agent is not None:
            dev.agent.stop()
            dev.agent = None
        dev.online = False

    # -- the world -------------------------------------------------------------------------
    def hour(self) -> float:
        """Simulated local hour (may exceed 24: days keep counting)."""
        return self.options.start_hour + (time.monotonic() - self._t0) * self.options.hours_per_s

    def _drive(self) -> None:
        while not self._stop.wait(self.options.tick_s):
            hour = self.hour()
            for dev in list(self.devices.values()):
                try:
                    self._step_device(dev, hour)
                except Exception:  # one device's trouble must not stop the world
                    log.exception("simulating %s failed", dev.spec.id)

    def _step_device(self, dev: SimDevice, hour: float) -> None:
        spec, opt = dev.spec, self.options
        if dev.proc is not None or dev.cut_at is not None:
            self._powercut_step(dev)
            return
        if spec.kind == "vehicle":
            if opt.vehicles_drive:
                if opt.drive_for_s is not None:
                    driving = time.monotonic() - self._t0 < opt.drive_for_s
                else:
                    driving = vehicle_driving(hour, spec.seed)
                (dev.config_path.parent / "driving").write_text("1" if driving else "0")
            if opt.vehicles_roam:
                want = vehicle_online(hour, spec.seed)
                if want != dev.online:
                    if want:
                        self._start_device(dev)
                    else:
                        self._stop_device(dev)
        if dev.agent is None:
            return
        if self.options.faults.has(spec.id, "drop") and \
                dev.rng.random() < opt.tick_s / self.options.faults.drop_every_s:
            self._drop_link(dev)
        drift = drift_level(hour, spec.seed) if spec.kind == "air-quality" else 0.0
        rate = traffic_rate(hour % 24.0) / 60.0 * opt.tick_s * 5     # scaled for a short demo
        n = min(opt.max_predict_per_tick, int(self._np.poisson(rate)))
        self._predict(dev, observations(self._np, n, hour % 24.0, drift))
        due = dev.next_sensor <= time.monotonic()
        if spec.kind in ("air-quality", "bin-level") and due:
            # staggered by device so 1,000 sensors do not write their queues in one burst
            dev.next_sensor = time.monotonic() + opt.sensor_interval_s
            rec: dict[str, Any] = {"kind": "sensor", "ts": time.time(), "sensor": spec.kind,
                                   "sim_hour": round(hour, 2)}
            if spec.kind == "air-quality":
                rec.update(air_quality(hour, spec.seed))
            else:
                rec["fill"] = bin_level(hour, spec.seed)
            dev.agent.telemetry_q.push(json.dumps(rec, separators=(",", ":")).encode())
            self.sensor_records += 1

    def _predict(self, dev: SimDevice, x: np.ndarray) -> None:
        inference = dev.agent.core.inference
        if inference.model is None:
            return
        spec = inference.model.inputs[0]
        width = spec.shape[-1] if spec.shape else None
        if isinstance(width, int) and width != x.shape[1]:   # feed what the model expects
            x = np.resize(x, (x.shape[0], width)).astype(np.float32)
        name = spec.name
        for row in x:
            try:
                inference.predict({name: row[None, :]})
                dev.predictions += 1
            except Exception:  # a model that fails to serve is telemetry, not a crash
                dev.errors += 1

    def _drop_link(self, dev: SimDevice) -> None:
        """Cut the TCP connection under paho (no DISCONNECT: the broker sends the Will)."""
        client = getattr(dev.agent.conn, "_client", None)
        sock = client.socket() if client is not None else None
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
                dev.link_drops += 1
            except OSError:
                pass

    def _powercut_step(self, dev: SimDevice) -> None:
        """Kill the device's process soon after it accepts a deploy; bring it back later."""
        now = time.monotonic()
        if dev.proc is None:
            if dev.cut_at is not None and now - dev.cut_at > 3.0:
                dev.cut_at = None
                self._start_device(dev)           # power is back
            return
        seq = _command_seq(dev.config_path)
        if seq > dev.last_cmd_seq:
            dev.last_cmd_seq = seq
            delay = dev.rng.uniform(0.0, self.options.faults.powercut_after_s)
            threading.Timer(delay, self._cut, args=(dev,)).start()

    def _cut(self, dev: SimDevice) -> None:
        proc = dev.proc
        if proc is None or self._stop.is_set():
            return
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        dev.proc = None
        dev.online = False
        dev.power_cuts += 1
        dev.cut_at = time.monotonic()

    # -- observation -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Counts for progress lines and the JSON summary."""
        active: Counter[str] = Counter()
        online = 0
        for dev in self.devices.values():
            online += dev.online
            if dev.agent is not None:
                m = dev.agent.core.inference.model
                active[_label(m) if m is not None else "none"] += 1
        connected = sum(1 for d in self.devices.values()
                        if d.agent is not None and d.agent.conn.connected.is_set())
        return {"devices": len(self.devices), "online": online, "connected": connected,
                "serving": dict(sorted(active.items())),
                "predictions": sum(d.predictions for d in self.devices.values()),
                "prediction_errors": sum(d.errors for d in self.devices.values()),
                "sensor_records": self.sensor_records,
                "link_drops": sum(d.link_drops for d in self.devices.values()),
                "power_cuts": sum(d.power_cuts for d in self.devices.values()),
                "rejected_commands": sum(d.agent.rejected_commands for d in
                                         self.devices.values() if d.agent is not None),
                "sim_hour": round(self.hour() % 24.0, 2)}


def _label(model: Any) -> str:
    return f"{model.name}@{model.version}"


def _command_seq(config_path: Path) -> int:
    try:
        d = json.loads((config_path.parent / "state" / "net_state.json").read_bytes())
        return int(d.get("command_seq", 0))
    except (OSError, ValueError):
        return 0



"""Sensor streams and fleet profiles for the simulator, as pure functions of time and a seed.

Why it exists: a load test is only as good as its traffic. These signals give the real agents
realistic work: traffic counts with a daily cycle (morning and evening peaks), air quality
with slow drift episodes (a sensor going out of calibration), bin levels filling and being
emptied, and vehicles that drive, park and drop off the network. No I/O and no threads here:
``edgeops_sim.fleet`` calls them with the simulated hour, so they are easy to test.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from edgeops.examples import FEATURES, vehicle_data

__all__ = ["KINDS", "PROFILES", "DeviceSpec", "air_quality", "bin_level", "drift_level",
           "observations", "smart_city", "traffic_rate", "vehicle_driving", "vehicle_online"]

# kind -> (device class, target profile): the smart-city fleet of issue 9
KINDS: dict[str, tuple[str, str]] = {
    "air-quality": ("sensor", "arm64-cpu"),
    "bin-level": ("sensor", "arm64-cpu"),
    "traffic-camera": ("camera", "x86-cpu"),
    "vehicle": ("vehicle", "cuda-gpu"),
}
# share of the fleet per kind, in this order
_SMART_CITY = (("air-quality", 0.3), ("bin-level", 0.2), ("traffic-camera", 0.3),
               ("vehicle", 0.2))
PROFILES = ("smart-city",)
_DISTRICTS = ("1", "2", "3", "4")


@dataclass(frozen=True)
class DeviceSpec:
    """One simulated device: identity for enrolment plus what it simulates."""

    id: str
    kind: str
    device_class: str
    target: str
    tags: dict[str, str] = field(default_factory=dict)
    seed: int = 0


def smart_city(n: int, seed: int = 0, prefix: str = "") -> list[DeviceSpec]:
    """``n`` devices: air-quality and bin-level sensors, traffic cameras, vehicles.

    Every kind is present once ``n >= 4``; ids are stable for a given ``n`` (``aq-001``...).
    """
    if n < 1:
        raise ValueError("a fleet needs at least one device")
    counts = {k: int(n * share) for k, share in _SMART_CITY}
    for k, _ in _SMART_CITY:              # at least one of each kind when there is room
        if counts[k] == 0 and sum(counts.values()) < n:
            counts[k] = 1
    order = [k for k, _ in _SMART_CITY]
    i = 0
    while sum(counts.values()) < n:       # rounding leftovers, spread over the kinds
        counts[order[i % len(order)]] += 1
        i += 1
    short = {"air-quality": "aq", "bin-level": "bin", "traffic-camera": "cam", "vehicle": "veh"}
    out: list[DeviceSpec] = []
    for kind in order:
        cls, target = KINDS[kind]
        for j in range(counts[kind]):
            dev_id = f"{prefix}{short[kind]}-{j + 1:03d}"
            h = int(hashlib.sha256(f"{seed}/{dev_id}".encode()).hexdigest()[:8], 16)
            tags = {"city": "sim", "district": _DISTRICTS[h % len(_DISTRICTS)], "kind": kind}
            out.append(DeviceSpec(dev_id, kind, cls, target, tags, h))
    return out


def traffic_rate(hour: float) -> float:
    """Vehicles per minute past a roadside sensor at local ``hour`` (0-24): two rush hours."""
    morning = math.exp(-((hour - 8.0) ** 2) / 2.0)
    evening = math.exp(-((hour - 17.5) ** 2) / 3.0)
    night = 0.5 + 0.5 * math.cos((hour - 14.0) / 24.0 * 2 * math.pi)   # 0 at 2 am, 1 at 2 pm
    return 2.0 + 10.0 * night + 25.0 * morning + 20.0 * evening


def drift_level(hour: float, seed: int) -> float:
    """0 normally; rises to 1 during a drift episode (one ~6-hour episode every ~3 days)."""
    period = 72.0
    start = (seed % 997) / 997 * period
    t = (hour - start) % period
    if t > 6.0:
        return 0.0
    return math.sin(t / 6.0 * math.pi)


def air_quality(hour: float, seed: int) -> dict[str, float]:
    """PM2.5 and NO2 (µg/m³): traffic-driven daily cycle plus the sensor's drift episodes."""
    base = 8.0 + 0.6 * traffic_rate(hour % 24)
    drift = drift_level(hour, seed)
    wobble = math.sin(hour * 7.3 + seed) * 1.5
    return {"pm25": round(base * 0.5 + wobble + 25.0 * drift, 2),
            "no2": round(base + 2 * wobble, 2), "drift": round(drift, 3)}


def bin_level(hour: float, seed: int) -> float:
    """Fill level 0-1: fills with the day's activity, emptied every morning at 6."""
    since = (hour - 6.0) % 24.0
    rate = 0.025 + (seed % 7) * 0.004
    return round(min(1.0, since * rate), 3)


def vehicle_driving(hour: float, seed: int) -> bool:
    """Driving in two shifts a day with breaks, offset per vehicle."""
    h = (hour + (seed % 5)) % 24.0
    return 6.0 <= h < 11.0 or 13.0 <= h < 19.0


def vehicle_online(hour: float, seed: int) -> bool:
    """Vehicles drop off the network for a while (tunnels, depots): ~1 hour in 8."""
    return ((hour + (seed % 11) * 0.7) % 8.0) >= 1.0


def observations(rng: np.random.Generator, n: int, hour: float, drift: float = 0.0
                 ) -> np.ndarray:
    """``n`` roadside vehicle observations (float32, ``len(FEATURES)`` columns) at ``hour``;
    ``drift`` shifts the noise reading, as a sensor out of calibration would."""
    if n <= 0:
        return np.zeros((0, len(FEATURES)), np.float32)
    x, _ = vehicle_data(n, int(rng.integers(0, 2**31 - 1)))
    x[:, FEATURES.index("hour_sin")] = math.sin(hour / 24 * 2 * math.pi)
    x[:, FEATURES.index("hour_cos")] = math.cos(hour / 24 * 2 * math.pi)
    x[:, FEATURES.index("noise_db")] += np.float32(15.0 * drift)
    return x

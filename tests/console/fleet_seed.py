"""A simulated fleet written through the real store, repository and rollout engine.

Used by the console tests and ``benchmarks/console.py``: devices in several cities and classes
(most online), signed bundles published through the TUF repository, one running three-phase
deployment with devices at every stage, one aborted deployment with its reason, and an hour of
inference, system and drift telemetry for a few devices (one of them drifting).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from edgeops.keys import KeyStore
from edgeops.protocol import StateReport
from fleet.api.services import Services
from fleet.rollout import Strategy
from fleet.store import Device, TelemetryRow
from tests.fleet.helpers import publish

__all__ = ["CITIES", "SeededFleet", "seed_fleet", "telemetry_rows"]

CITIES = ("lyon", "porto", "turin", "ghent", "graz", "malmo")
_CLASSES = (("camera", "x86-cpu"), ("sensor", "x86-cpu"), ("vehicle", "x86-cpu"),
            ("gateway", "x86-cpu"))
LE_MS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
         2500.0, None)


@dataclass(frozen=True)
class SeededFleet:
    devices: list[str]
    online: int
    running: str            # id of the running deployment
    aborted: str            # id of the aborted deployment
    drifting: str           # device whose drift alerts
    charted: list[str]      # devices with an hour of telemetry


def _histogram(rng: random.Random, n: int, center_ms: float) -> list[int]:
    counts = [0] * len(LE_MS)
    for _ in range(n):
        v = rng.lognormvariate(math.log(center_ms), 0.35)
        i = next((k for k, b in enumerate(LE_MS) if b is None or v <= b), len(LE_MS) - 1)
        counts[i] += 1
    return counts


def telemetry_rows(device: str, now: float, points: int, rng: random.Random,
                   drift: float = 0.4) -> list[TelemetryRow]:
    """An hour of inference/system/drift records for one device, one point a minute."""
    rows: list[TelemetryRow] = []
    for k in range(points):
        ts = now - (points - k) * 60.0
        center = 6.0 + 2.0 * math.sin(k / 7.0) + rng.random()
        n = 40
        counts = _histogram(rng, n, center)
        errors = 1 if rng.random() < 0.05 else 0
        rows.append(TelemetryRow(device, ts, "inference", {
            "count": n, "errors": errors, "p50_ms": round(center, 2),
            "p95_ms": round(center * 1.6, 2), "p99_ms": round(center * 2.1, 2),
            "histogram": {"le_ms": list(LE_MS), "counts": counts}}, seq=3 * k))
        rows.append(TelemetryRow(device, ts, "system", {
            "cpu_pct": round(30 + 20 * math.sin(k / 9.0) + 5 * rng.random(), 1),
            "mem_mb": round(410 + k * 0.8 + 10 * rng.random(), 1), "disk_free_mb": 2048,
            "temp_c": 48.0}, seq=3 * k + 1))
        shift = drift * (k / max(points - 1, 1)) + 0.2 * rng.random()
        rows.append(TelemetryRow(device, ts, "drift", {
            "bundle": "tiny@1.0.0", "features": {"input": {
                "mean": 0.5 + shift * 0.1, "std": 0.1, "min": 0.0, "max": 1.0,
                "baseline_mean": 0.5, "baseline_std": 0.1, "shift": round(shift, 3)}}},
            seq=3 * k + 2))
    return rows


def seed_fleet(svc: Services, keys: KeyStore, bundles: dict[str, Path], n_devices: int = 60,
               *, charted: int = 3, points: int = 60, seed: int = 7) -> SeededFleet:
    """Write the simulated fleet; deterministic for a given ``seed``."""
    rng = random.Random(seed)
    now = time.time()
    store = svc.store
    ids: list[str] = []
    for i in range(n_devices):
        cls, target = _CLASSES[i % len(_CLASSES)]
        city = CITIES[(i // len(_CLASSES)) % len(CITIES)]
        did = f"{cls[:3]}-{city}-{i:05d}"
        store.upsert_device(Device(did, cls, target, {"city": city, "district": str(i % 5)},
                                   enrolled_at=now - 86400))
        ids.append(did)
    for name in ("1.0.0", "1.1.0"):
        publish(svc.repository, keys, bundles[name])
    online = 0
    for did in ids:
        up = rng.random() < 0.85
        online += up
        store.set_status(did, up, now - rng.random() * 600, agent_version="0.3.0")
        store.record_state(StateReport(did, 1, now - 30, active={
            "name": "tiny", "version": "1.0.0", "target": "x86-cpu", "slot": "a"},
            slots={"a": {"name": "tiny", "version": "1.0.0"}, "b": None}))
    aborted = svc.engine.create("tiny", "1.1.0", "class=gateway",
                                Strategy.from_dict({"phases": ["50%", "100%"]}))
    store.update_deployment(aborted.id, now=now - 1800, status="aborted",
                            reason="failure rate 40% reached the 20% limit (2 of 5 devices)")
    dep = svc.engine.create("tiny", "1.1.0", "all",
                            Strategy.from_dict({"phases": ["10%", "50%", "100%"],
                                                "bake_s": 3600, "abort_failure_pct": 50}))
    rows = store.deployment_devices(dep.id)
    first = [r for r in rows if r.wave == 0]
    for k, r in enumerate(first):
        state = ("healthy", "healthy", "installing", "failed")[k % 4]
        store.transition_device(dep.id, r.device_id, state=state, now=now,
                                expect=["pending", "notified"],
                                reason="verification failed: sha256 mismatch"
                                if state == "failed" else None)
    chart_ids = ids[:charted]
    for j, did in enumerate(chart_ids):
        store.insert_telemetry(telemetry_rows(did, now, points, rng,
                                              drift=4.5 if j == 0 else 0.4))
    return SeededFleet(ids, online, dep.id, aborted.id, chart_ids[0], chart_ids)

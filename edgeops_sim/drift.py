"""Drift injected into the simulator's roadside observations: ``edgeops sim --drift``.

Why it exists: the drift monitors (docs/DRIFT.md) are only believable if the same world that
loads the fleet can also drift on demand. Three kinds, each a step that starts ``at`` real
seconds after the simulator starts:

* ``calibration:M``: the noise sensor reads ``+15 dB x M`` (a sensor out of calibration; the
  same shift as the air-quality drift episodes, on every device);
* ``spread:M``: every non-time input spreads ``(1 + M)`` times as wide around its usual centre
  (a noisier sensor, a wider mix of vehicles);
* ``classmix:M``: a share ``M`` of the vehicles are ``bicycle`` (a prior shift: the
  predictions' class mix moves, and the inputs with it).

``edgeops sim --drift calibration:0.3@10m,spread:0.5@1h``. :func:`parse_drift` and
:func:`drifted_observations` are pure; docs/examples/drift_loop.py calls the latter too.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeops.errors import UsageError
from edgeops.examples import CLASSES, FEATURES, vehicle_data
from edgeops_sim.streams import observations

__all__ = ["DRIFT_KINDS", "ActiveDrift", "DriftSpec", "active_drift", "drifted_observations",
           "parse_drift"]

DRIFT_KINDS = ("calibration", "spread", "classmix")
CLASSMIX_CLASS = "bicycle"
_TIME = frozenset(("hour_sin", "hour_cos"))
_ITEM = re.compile(r"^([a-z]+):([^@]+)(?:@(\d+(?:\.\d+)?)(s|m|h)?)?$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class DriftSpec:
    """One injected drift: its kind, magnitude and start (real seconds after the start)."""

    kind: str
    magnitude: float
    at_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise UsageError(f"unknown drift kind {self.kind!r}",
                             hint=f"choose from {', '.join(DRIFT_KINDS)}")
        hi = 1.0 if self.kind == "classmix" else 10.0
        if not (math.isfinite(self.magnitude) and 0.0 <= self.magnitude <= hi):
            raise UsageError(f"drift {self.kind} magnitude {self.magnitude} is not in 0..{hi:g}")
        if not (math.isfinite(self.at_s) and self.at_s >= 0.0):
            raise UsageError("a drift's start (@...) must be zero or later")

    def __str__(self) -> str:
        return f"{self.kind}:{self.magnitude:g}@{self.at_s:g}s"


def parse_drift(text: str | None) -> tuple[DriftSpec, ...]:
    """``KIND:MAGNITUDE[@START]`` items, comma-separated; START in s (default), m or h."""
    if not text or text.strip() in ("", "none"):
        return ()
    out = []
    for item in (p.strip() for p in text.split(",")):
        m = _ITEM.match(item)
        if not m:
            raise UsageError(f"--drift item {item!r} is not KIND:MAGNITUDE[@START]",
                             hint="e.g. --drift calibration:0.3@10m,spread:0.5@1h")
        try:
            magnitude = float(m.group(2))
        except ValueError:
            raise UsageError(f"--drift {item!r}: magnitude {m.group(2)!r} is not a number",
                             hint="e.g. --drift calibration:0.3@10m") from None
        at = float(m.group(3) or 0.0) * _UNIT_S[m.group(4) or "s"]
        out.append(DriftSpec(m.group(1), magnitude, at))
    return tuple(out)


@dataclass(frozen=True)
class ActiveDrift:
    """The drift in effect at one instant (several specs of one kind add up; classmix caps
    at 1)."""

    calibration: float = 0.0
    spread: float = 0.0
    classmix: float = 0.0


def active_drift(specs: Sequence[DriftSpec], elapsed_s: float,
                 calibration: float = 0.0) -> ActiveDrift:
    """What ``specs`` inject ``elapsed_s`` after the start, plus a ``calibration`` the world
    already has (the air-quality episodes)."""
    on = [s for s in specs if elapsed_s >= s.at_s]
    total = {k: sum(s.magnitude for s in on if s.kind == k) for k in DRIFT_KINDS}
    return ActiveDrift(calibration + total["calibration"], total["spread"],
                       min(1.0, total["classmix"]))


@functools.lru_cache(maxsize=1)
def _centre() -> np.ndarray:
    x, _ = vehicle_data(8192, 0)
    return np.asarray(x.mean(axis=0), np.float32)


def drifted_observations(rng: np.random.Generator, n: int, hour: float,
                         drift: ActiveDrift = ActiveDrift()) -> np.ndarray:
    """:func:`edgeops_sim.streams.observations` with ``drift`` applied (the one code path
    for ``edgeops sim --drift`` and docs/examples/drift_loop.py)."""
    x = observations(rng, n, hour, drift.calibration)
    if n <= 0:
        return x
    cols = np.array([i for i, f in enumerate(FEATURES) if f not in _TIME], np.intp)
    if drift.classmix > 0.0:
        idx = np.flatnonzero(rng.random(n) < drift.classmix)
        if idx.size:
            pool, labels = vehicle_data(max(64, 12 * idx.size), int(rng.integers(0, 2**31 - 1)))
            rows = np.resize(pool[labels == CLASSES.index(CLASSMIX_CLASS)], (idx.size, x.shape[1]))
            x[np.ix_(idx, cols)] = rows[:, cols]
            x[idx, FEATURES.index("noise_db")] += np.float32(15.0 * drift.calibration)
    if drift.spread > 0.0:
        c = _centre()[cols]
        x[:, cols] = c + (x[:, cols] - c) * np.float32(1.0 + drift.spread)
    return x

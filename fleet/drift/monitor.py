"""The drift monitor: merge device sketches into fleet windows and decide, with stated error rates.

Why it exists: one device's window rarely holds enough samples for a verdict, and drift that
shows only across a cohort is invisible per device. So counts from any set of devices (one
device, a cohort selected by tags, the devices of a deployment) are summed per window (windows
aligned on ``window_s``), every watched feature is tested against the bundle's reference
(edgeops/drift/stats.py), p-values are corrected per side (inputs = data drift, outputs =
prediction drift, reported apart), and an alarm needs ``persistence`` consecutive drifting
windows (default 1: the window that drifts alarms). Features with fewer than ``min_samples``
live samples get no verdict.

Pure: rows and the reference in, a :class:`GroupVerdict` out; fleet/drift/service.py does the
store queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeops.drift.reference import DriftReference
from edgeops.drift.stats import (
    FeatureTest,
    benjamini_hochberg,
    bonferroni,
    compare,
    false_alarm_rate,
    persistent,
)
from edgeops.errors import UsageError

__all__ = ["GroupVerdict", "MonitorPolicy", "Sketch", "evaluate", "merge_windows"]

STATUSES = ("no-data", "insufficient-data", "ok", "drifting", "alarm")


@dataclass(frozen=True)
class MonitorPolicy:
    """Per-monitor settings. Defaults: one drifting window alarms, at most 3 x 10^-4 false
    alarms per window per side, so a group's data, prediction and concept sides together stay
    under 1 per 1,000 windows (docs/DRIFT.md, "False alarm rate"). ``alpha=0.01,
    persistence=2`` is the slower policy: a window later, fewer windows flagged."""

    alpha: float = 0.0003                # per window, per side, after correction
    correction: str = "bh"               # "bh" (Benjamini-Hochberg) or "bonferroni"
    test: str = "chi2"                   # "chi2" or "g"
    persistence: int = 1                 # consecutive drifting windows before an alarm
    min_samples: int = 200               # live samples per feature before any verdict
    # live counts above this many times the reference's are scaled down to it (conservative):
    # every window is compared with the same finite reference, and when live samples dwarf it
    # the reference's own noise decides, the same way in every window, so windows stop being
    # independent and persistence > 1 stops cutting false alarms (docs/DRIFT.md, "False alarm
    # rate"); with persistence 1 the bound needs no independence, the scaling costs little
    max_live_to_reference: float = 4.0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise UsageError(f"drift alpha {self.alpha} is not in (0, 1)")
        if self.correction not in ("bh", "bonferroni"):
            raise UsageError(f"drift correction {self.correction!r}: use bh or bonferroni")
        if self.test not in ("chi2", "g"):
            raise UsageError(f"drift test {self.test!r}: use chi2 or g")
        if self.persistence < 1 or self.min_samples < 1:
            raise UsageError("drift persistence and min_samples must be at least 1")
        if not self.max_live_to_reference >= 1.0:
            raise UsageError("drift max_live_to_reference must be at least 1")

    @property
    def false_alarm_rate(self) -> float:
        """Alarms per window per side on a stable stream, at most (``alpha`` itself with
        persistence 1; ``alpha ** persistence`` assumes independent windows)."""
        return false_alarm_rate(self.alpha, self.persistence)

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "correction": self.correction, "test": self.test,
                "persistence": self.persistence, "min_samples": self.min_samples,
                "max_live_to_reference": self.max_live_to_reference,
                "false_alarm_rate_per_window": self.false_alarm_rate}


@dataclass(frozen=True)
class Sketch:
    """One accepted ``drift_sketch`` record (see device_agent/drift_sketch.py)."""

    device_id: str
    window_end: float
    counts: Mapping[str, Sequence[int]]


def merge_windows(sketches: Iterable[Sketch], reference: DriftReference
                  ) -> dict[int, dict[str, np.ndarray]]:
    """Window index (``floor(window_end / window_s)``) -> feature -> summed counts."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for s in sketches:
        w = int(s.window_end // reference.window_s)
        acc = out.setdefault(w, {})
        for name, c in s.counts.items():
            fb = reference.feature(name)
            if fb is None or len(c) != fb.bins:
                continue        # refused at intake; a stored row from another bundle
            cur = acc.get(name)
            arr = np.asarray(c, dtype=np.int64)
            acc[name] = arr if cur is None else cur + arr
    return out


@dataclass(frozen=True)
class SideVerdict:
    """Data drift (inputs) or prediction drift (outputs) of one group."""

    status: str                                  # one of STATUSES
    drifting_windows: int                        # consecutive, ending at the latest window
    features: tuple[dict[str, Any], ...] = ()    # latest window: FeatureTest + adjusted p

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "drifting_windows": self.drifting_windows,
                "features": list(self.features)}


@dataclass(frozen=True)
class GroupVerdict:
    group: str                                   # "device:cam-1", "cohort:city=lyon", ...
    bundle: str
    devices: int
    windows: int
    latest_window_end: float | None
    data: SideVerdict
    prediction: SideVerdict
    policy: MonitorPolicy = field(default_factory=MonitorPolicy)

    @property
    def status(self) -> str:
        """The worse of the two sides."""
        return max(self.data.status, self.prediction.status, key=STATUSES.index)

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "bundle": self.bundle, "devices": self.devices,
                "windows": self.windows, "latest_window_end": self.latest_window_end,
                "status": self.status, "data_drift": self.data.to_dict(),
                "prediction_drift": self.prediction.to_dict(), "policy": self.policy.to_dict()}


def window_verdict(counts: Mapping[str, np.ndarray], reference: DriftReference, side: str,
                policy: MonitorPolicy) -> tuple[bool | None, list[dict[str, Any]]]:
    """(drifted?, per-feature results) for one window and side; None: too few samples."""
    tests: list[FeatureTest] = []
    n_live: list[int] = []
    for fb in reference.features:
        if fb.side != side:
            continue
        live = counts.get(fb.name)
        if live is None or int(live.sum()) < policy.min_samples:
            continue
        n = int(live.sum())
        cap = policy.max_live_to_reference * fb.total
        scaled = live * (cap / n) if n > cap else live
        tests.append(compare(fb.name, side, fb.counts, scaled.tolist(),
                             ordered=fb.kind == "quantile", test=policy.test))
        n_live.append(n)
    if not tests:
        return None, []
    ps = [t.p_value for t in tests]
    adj = benjamini_hochberg(ps) if policy.correction == "bh" else bonferroni(ps)
    rows = [t.to_dict() | {"n_live": n, "n_effective": t.n_live, "p_adjusted": a,
                           "drift": a < policy.alpha}
            for t, a, n in zip(tests, adj, n_live, strict=True)]
    return any(a < policy.alpha for a in adj), rows


def _side(windows: Mapping[int, Mapping[str, np.ndarray]], reference: DriftReference,
          side: str, policy: MonitorPolicy) -> SideVerdict:
    if not any(fb.side == side for fb in reference.features):
        return SideVerdict("no-data", 0)
    if not windows:
        return SideVerdict("no-data", 0)
    order = sorted(windows)
    flags: list[bool] = []
    latest_rows: list[dict[str, Any]] = []
    latest_verdict: bool | None = None
    prev: int | None = None
    for w in order:
        verdict, rows = window_verdict(windows[w], reference, side, policy)
        if prev is not None and w != prev + 1:
            flags = []                 # a gap (no data) breaks a run of drifting windows
        flags.append(bool(verdict))
        prev = w
        latest_verdict, latest_rows = verdict, rows
    run = 0
    for f in reversed(flags):
        if not f:
            break
        run += 1
    if latest_verdict is None:
        status = "insufficient-data"
    elif persistent(flags, policy.persistence):
        status = "alarm"
    elif latest_verdict:
        status = "drifting"
    else:
        status = "ok"
    return SideVerdict(status, run, tuple(latest_rows))


def evaluate(group: str, bundle: str, sketches: Sequence[Sketch], reference: DriftReference,
             policy: MonitorPolicy = MonitorPolicy()) -> GroupVerdict:
    """The verdict for one group of devices running one bundle."""
    windows = merge_windows(sketches, reference)
    latest = max((s.window_end for s in sketches), default=None)
    return GroupVerdict(group=group, bundle=bundle,
                        devices=len({s.device_id for s in sketches}), windows=len(windows),
                        latest_window_end=latest,
                        data=_side(windows, reference, "input", policy),
                        prediction=_side(windows, reference, "output", policy), policy=policy)

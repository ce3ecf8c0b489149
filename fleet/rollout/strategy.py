"""How a deployment rolls out: phases, pacing, bake time, health criteria and abort thresholds.

A :class:`Strategy` is validated data with units in its field names; it round-trips through
JSON (persisted with the deployment) and parses from the CLI's ``--phases 1%,10%,50%,100%``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edgeops.errors import UsageError

__all__ = ["PhaseSpec", "Strategy", "assign_waves", "parse_phases"]


@dataclass(frozen=True)
class PhaseSpec:
    """Cumulative size of the fleet reached by the end of a phase: a percentage or a count."""

    percent: float | None = None
    count: int | None = None

    def reach(self, n: int) -> int:
        if self.percent is not None:
            return min(n, max(1 if n else 0, math.ceil(n * self.percent / 100.0)))
        return min(n, self.count or 0)

    def __str__(self) -> str:
        if self.percent is None:
            return str(self.count)
        short = f"{self.percent:g}"          # "10%", but never at the cost of precision
        return f"{short if float(short) == self.percent else repr(self.percent)}%"


def parse_phases(text: str) -> tuple[PhaseSpec, ...]:
    """``1%,10%,50%,100%`` or ``5,50,all``: cumulative, non-decreasing, ending with everyone."""
    specs: list[PhaseSpec] = []
    for raw in text.split(","):
        part = raw.strip()
        try:
            if part in ("all", "100%"):
                specs.append(PhaseSpec(percent=100.0))
            elif part.endswith("%"):
                pct = float(part[:-1])
                if not 0 < pct <= 100:
                    raise ValueError
                specs.append(PhaseSpec(percent=pct))
            else:
                count = int(part)
                if count <= 0:
                    raise ValueError
                specs.append(PhaseSpec(count=count))
        except ValueError:
            raise UsageError(f"phase {part!r} is neither a percentage (0-100%) nor a positive "
                             "count", hint="e.g. --phases 1%,10%,50%,100% or --phases 5,50,all"
                             ) from None
    pcts = [s.percent for s in specs if s.percent is not None]
    counts = [s.count for s in specs if s.count is not None]
    if pcts != sorted(pcts) or counts != sorted(counts):
        raise UsageError(f"phases {text!r} must grow from one phase to the next")
    if specs[-1].percent != 100.0:
        specs.append(PhaseSpec(percent=100.0))      # the last phase always reaches everyone
    return tuple(specs)


@dataclass(frozen=True)
class Strategy:
    phases: tuple[PhaseSpec, ...] = (PhaseSpec(percent=100.0),)
    max_per_minute: int | None = None       # devices notified per rolling minute
    bake_s: float = 0.0                     # wait after a phase completes before the next
    device_timeout_s: float = 24 * 3600.0   # notified → terminal, else timed-out
    abort_failure_pct: float = 20.0         # abort when failures reach this share ...
    abort_min_sample: int = 5               # ... of at least this many finished devices
    abort_max_failures: int | None = None   # or when this many devices failed in total
    max_error_rate: float | None = None     # inference errors / inferences, from telemetry
    max_latency_factor: float | None = None  # fleet p95 vs the bundle's own p95 figure
    min_inferences: int = 100               # telemetry sample needed to judge health
    auto_rollback: bool = False             # on abort, roll back devices that activated it
    allow_downgrade: bool = False           # an operator rollback: older than installed is fine

    def __post_init__(self) -> None:
        if not self.phases:
            raise UsageError("a strategy needs at least one phase")
        if self.max_per_minute is not None and self.max_per_minute <= 0:
            raise UsageError("--max-per-minute must be positive")
        if self.bake_s < 0 or self.device_timeout_s <= 0:
            raise UsageError("bake time must be >= 0 and the device timeout > 0")
        if not 0 < self.abort_failure_pct <= 100 or self.abort_min_sample < 1:
            raise UsageError("--abort-failure-pct must be in (0, 100] and --abort-min-sample >= 1")
        if self.abort_max_failures is not None and self.abort_max_failures < 1:
            raise UsageError("--abort-max-failures must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phases"] = [str(p) for p in self.phases]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Strategy:
        if not isinstance(d, dict):
            raise UsageError("strategy must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"unknown strategy fields: {sorted(unknown)}",
                             hint=f"known: {sorted(known)}")
        kw = dict(d)
        phases = kw.pop("phases", None)
        if phases is not None:
            text = ",".join(str(p) for p in phases) if isinstance(phases, list) else str(phases)
            kw["phases"] = parse_phases(text)
        try:
            return cls(**kw)
        except TypeError as exc:
            raise UsageError(f"strategy is malformed: {exc}") from None


def assign_waves(device_ids: Sequence[str], phases: Sequence[PhaseSpec], seed: str
                 ) -> dict[str, int]:
    """Fix once, at creation, which phase each device belongs to (so none is in two).

    Devices are ordered by a hash of the deployment id and their own id: a stable shuffle,
    so the 1% canary is not always the same alphabetical corner of the fleet.
    """
    ordered = sorted(device_ids,
                     key=lambda d: hashlib.sha256(f"{seed}/{d}".encode()).hexdigest())
    n = len(ordered)
    reach = [p.reach(n) for p in phases]
    for i in range(1, len(reach)):
        reach[i] = max(reach[i], reach[i - 1])
    reach[-1] = n
    out: dict[str, int] = {}
    wave = 0
    for i, dev in enumerate(ordered):
        while i >= reach[wave]:
            wave += 1
        out[dev] = wave
    return out

"""A running digest of fleet health telemetry, so the overview never rescans the table.

Alerts on drift and the last hour's inference error rate need every recent telemetry row, and
at fleet scale that is millions of rows an hour. The digest reads each row once: it remembers
the last telemetry id it folded in and, on each use, reads only newer inference and drift rows
(by primary key), keeping per-minute inference totals for the window and each device's latest
drift shift. After a restart it starts from the newest ``max_scan_rows`` rows, so its first
answer is bounded too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fleet.console.queries import FleetQueries, shifts

__all__ = ["DriftSignal", "TelemetryDigest"]


@dataclass(frozen=True)
class DriftSignal:
    device_id: str
    ts: float
    feature: str
    shift: float


class TelemetryDigest:
    """Per-minute inference totals over ``window_s`` and the latest drift per device."""

    def __init__(self, queries: FleetQueries, *, window_s: float = 3600.0, batch: int = 20_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.q = queries
        self.window_s = window_s
        self.batch = batch
        self.clock = clock
        self._lock = threading.Lock()
        self._after_id: int | None = None
        self._minutes: dict[int, list[float]] = {}     # minute → [records, count, errors, p95]
        self._drift: dict[str, DriftSignal] = {}

    def refresh(self) -> int:
        """Fold in rows inserted since the last call; returns how many were read."""
        with self._lock:
            if self._after_id is None:
                self._after_id = max(0, self.q.telemetry_max_id() - self.q.limits.max_scan_rows)
            read = 0
            while True:
                rows = self.q.health_rows(self._after_id, self.batch)
                for rid, device, ts, kind, n, errors, p95, data in rows:
                    self._fold(str(device), float(ts), str(kind), n, errors, p95, data)
                    self._after_id = int(rid)
                read += len(rows)
                if len(rows) < self.batch:
                    break
            self._expire()
            return read

    def _fold(self, device: str, ts: float, kind: str, n: Any, errors: Any, p95: Any,
              data: Any) -> None:
        if ts < self.clock() - self.window_s:
            return
        if kind == "inference":
            m = self._minutes.setdefault(int(ts // 60), [0, 0, 0, float("-inf")])
            m[0] += 1
            m[1] += int(n or 0)
            m[2] += int(errors or 0)
            if p95 is not None:
                m[3] = max(m[3], float(p95))
            return
        found = shifts(ts, data)
        if not found:
            return
        feature, shift = max(found, key=lambda f: f[1])
        old = self._drift.get(device)
        if old is None or ts >= old.ts:
            self._drift[device] = DriftSignal(device, ts, feature, shift)

    def _expire(self) -> None:
        floor = self.clock() - self.window_s
        for minute in [m for m in self._minutes if (m + 1) * 60 < floor]:
            del self._minutes[minute]
        for device in [d for d, s in self._drift.items() if s.ts < floor]:
            del self._drift[device]

    def inference(self, since: float) -> dict[str, Any]:
        """Totals of inference telemetry from ``since`` (to the minute) to now."""
        self.refresh()
        with self._lock:
            ms = [v for m, v in self._minutes.items() if (m + 1) * 60 > since]
        records = int(sum(v[0] for v in ms))
        count = int(sum(v[1] for v in ms))
        errors = int(sum(v[2] for v in ms))
        p95 = max((v[3] for v in ms if v[3] != float("-inf")), default=None)
        return {"records": records, "inferences": count, "errors": errors,
                "error_rate": errors / count if count else None, "p95_ms_max": p95}

    def drifting(self, threshold: float, since: float, limit: int) -> list[DriftSignal]:
        """Devices whose latest drift report since ``since`` reaches ``threshold``, worst first."""
        self.refresh()
        with self._lock:
            hits = [s for s in self._drift.values() if s.ts >= since and s.shift >= threshold]
        return sorted(hits, key=lambda s: (-s.shift, s.device_id))[:limit]

"""Aggregate reads for the console and ``/metrics``: GROUP BY in the database, never rows.

Loading 10,000 device records to draw one bar chart would be wrong, so the counting happens in
the store's aggregate methods (:mod:`fleet.store._aggregates`: public, typed, SQLite and
PostgreSQL alike). This module shapes their answers for the console's JSON and sums latency
histograms; it holds no SQL. Every result is bounded: grouped counts, ``LIMIT``-ed lists, or
a primary-key range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from edgeops.protocol.messages import MessageError
from edgeops.protocol.records import DriftRecord, LatencyHistogram
from fleet.store import ConsoleReads, DeploymentStore, DeviceField, OnlineCount, TelemetryDigestRow
from fleet.store.models import stored_record

__all__ = ["DEFAULT_CONSOLE_LIMITS", "ConsoleLimits", "FleetQueries", "TelemetryScan"]


@dataclass(frozen=True)
class ConsoleLimits:
    """Bounds and alert thresholds of the console's aggregates (units in the names)."""

    city_tag: str = "city"                   # tag key the overview groups devices by
    max_groups: int = 200                    # rows of any GROUP BY answer
    max_facet_values: int = 100              # values listed per filter facet
    alert_window_s: float = 24 * 3600.0      # aborted deployments newer than this alert
    offline_alert_fraction: float = 0.2      # a city with this share offline alerts
    offline_alert_min_devices: int = 5       # ... if it has at least this many devices
    drift_alert_shift: float = 3.0           # |mean - baseline| / std that alerts
    drift_window_s: float = 3600.0           # drift and error-rate alerts look this far back
    error_rate_alert: float = 0.05           # fleet inference error rate that alerts
    max_alerts: int = 50
    max_scan_rows: int = 200_000             # newest telemetry rows a fresh digest reads
    max_series_points: int = 2_000           # points per device chart


DEFAULT_CONSOLE_LIMITS = ConsoleLimits()


@dataclass(frozen=True)
class TelemetryScan:
    """Inference telemetry rows newer than ``after_id`` (by insertion order), summed."""

    last_id: int
    records: int
    inferences: int
    errors: int
    le_ms: tuple[float | None, ...]
    counts: tuple[int, ...]


class ConsoleStore(ConsoleReads, DeploymentStore, Protocol):
    """The console's and ``/metrics``' reads: the grouped counts, and deployments with their
    per-state counts."""


class FleetQueries:
    """Grouped, bounded reads over the fleet store (SQLite or PostgreSQL), shaped for the
    console's JSON and ``/metrics``."""

    def __init__(self, store: ConsoleStore, limits: ConsoleLimits = DEFAULT_CONSOLE_LIMITS) -> None:
        self.store = store
        self.limits = limits

    # -- devices ---------------------------------------------------------------------------
    def device_counts(self) -> dict[str, Any]:
        """Online/offline per class and per city, and the totals."""
        lim = self.limits
        classes = _pivot(self.store.device_online_counts(), lim.max_groups)
        cities = _pivot(self.store.device_online_counts(lim.city_tag), lim.max_groups)
        online = sum(c["online"] for c in classes)
        offline = sum(c["offline"] for c in classes)
        return {"total": online + offline, "online": online, "offline": offline,
                "by_class": classes, "by_city": cities, "city_tag": lim.city_tag}

    def facets(self) -> dict[str, Any]:
        """Values the device filters offer, each with its count."""
        n = self.limits.max_facet_values

        def values(field: DeviceField) -> list[dict[str, Any]]:
            return [{"value": v.value, "count": v.count}
                    for v in self.store.device_value_counts(field, n)]

        by_key: dict[str, list[dict[str, Any]]] = {}
        for t in self.store.tag_value_counts(n * 10):
            vals = by_key.setdefault(t.key, [])
            if len(vals) < n:
                vals.append({"value": t.value, "count": t.count})
        return {"class": values("class"), "target": values("target"),
                "version": values("version"), "tags": by_key}

    # -- deployments -----------------------------------------------------------------------
    def wave_counts(self, deployment_id: str) -> list[dict[str, Any]]:
        """Per rollout phase (wave): devices in each state."""
        return [{"wave": w, "counts": c, "devices": sum(c.values())}
                for w, c in sorted(self.store.deployment_wave_counts(deployment_id).items())]

    def deployment_devices_page(self, deployment_id: str, state: str | None, limit: int,
                                offset: int) -> dict[str, Any]:
        total, rows = self.store.deployment_devices_page(deployment_id, state, limit, offset)
        return {"items": [{"device_id": r.device_id, "wave": r.wave, "state": r.state,
                           "target": r.target, "updated_at": r.updated_at, "reason": r.reason,
                           "previous": r.previous} for r in rows],
                "total": total, "limit": limit, "offset": offset}

    def deployment_status_counts(self) -> dict[str, int]:
        return self.store.deployment_status_counts()

    def recent_aborts(self, since: float) -> list[dict[str, Any]]:
        deps = self.store.deployments_updated_since(since, ("aborted", "rolled-back"),
                                                    self.limits.max_alerts)
        return [{"id": d.id, "bundle": f"{d.bundle_name}@{d.bundle_version}",
                 "status": d.status, "reason": d.reason, "updated_at": d.updated_at}
                for d in deps]

    # -- telemetry -------------------------------------------------------------------------
    def telemetry_max_id(self) -> int:
        """Rows ever inserted (ids only grow): the ingest counter, read from the primary key."""
        return self.store.telemetry_max_id()

    def health_rows(self, after_id: int, batch: int) -> list[TelemetryDigestRow]:
        """Inference and drift rows with ``after_id < id``, oldest first (one batch):
        ``(id, device_id, ts, kind, n_count, n_errors, p95_ms, data-or-None)``, the data of
        drift rows only."""
        return self.store.telemetry_digest_rows(after_id, ("inference", "drift"), batch,
                                                data_for=("drift",))

    def scan_inference(self, after_id: int, batch: int) -> TelemetryScan:
        """Sum the latency histograms of inference rows with ``after_id < id`` (one batch)."""
        # the highest id first: rows committed during the scan are read next time, not skipped
        top = self.telemetry_max_id()
        rows = self.store.telemetry_digest_rows(after_id, ("inference",), batch, until_id=top,
                                                data_for=("inference",))
        last = after_id
        inferences = errors = 0
        le: tuple[float | None, ...] = ()
        counts: list[int] = []
        for r in rows:
            last = r.id
            inferences += r.n_count or 0
            errors += r.n_errors or 0
            hist = _histogram(r.data)
            if hist is None:
                continue
            h_le, h_counts = hist
            if not le:
                le, counts = h_le, [0] * len(h_le)
            if h_le == le:
                counts = [a + b for a, b in zip(counts, h_counts, strict=True)]
        if len(rows) < batch:   # every inference row up to ``top`` was read
            last = max(last, top)
        return TelemetryScan(last, len(rows), inferences, errors, le, tuple(counts))


def _pivot(rows: list[OnlineCount], cap: int) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault(r.name, {"name": r.name, "online": 0, "offline": 0})
        entry["online" if r.online else "offline"] += r.count
    items = sorted(out.values(), key=lambda e: (-(e["online"] + e["offline"]), e["name"]))
    return items[:cap]


def shifts(ts: float, data: Any) -> list[tuple[str, float]]:
    """(feature, shift) of a stored ``drift`` record's features that have one; none when the
    record does not parse (:class:`~edgeops.protocol.records.DriftRecord`)."""
    try:
        rec = stored_record("drift", ts, json.loads(data))
    except (ValueError, TypeError, MessageError):
        return []
    if not isinstance(rec, DriftRecord):
        return []
    return [(name, float(f.shift)) for name, f in rec.features.items() if f.shift is not None]


def _histogram(data: Any) -> tuple[tuple[float | None, ...], list[int]] | None:
    """A stored ``inference`` record's latency histogram (None when it has none or it does
    not parse): only the histogram is read, this runs over every inference row."""
    try:
        h = json.loads(data).get("histogram")
        hist = LatencyHistogram.from_dict(h)
    except (ValueError, TypeError, AttributeError, MessageError):
        return None
    if not hist.le_ms:
        return None
    return hist.le_ms, list(hist.counts)

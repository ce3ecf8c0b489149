"""Aggregate read queries for the console and ``/metrics``: GROUP BY in the database, never rows.

The :class:`fleet.store.Store` interface hands out records one by one, which is right for the
rollout engine but would mean loading 10,000 devices to draw one bar chart. These queries count
in SQL instead. They run through the SQL store's own transaction plumbing (the same portable
``?`` SQL as :mod:`fleet.store._sql`, so SQLite and PostgreSQL both work) and only read.
Every result is bounded: grouped counts, ``LIMIT``-ed lists, or a primary-key range.
"""

# ruff: noqa: S608 - SQL text is assembled only from constant fragments and "?" placeholders;
# every value is bound as a parameter.
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeops.errors import ConfigError
from fleet.store import Store

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


class FleetQueries:
    """Grouped, bounded reads over the fleet store (SQLite or PostgreSQL)."""

    def __init__(self, store: Store, limits: ConsoleLimits = DEFAULT_CONSOLE_LIMITS) -> None:
        if not hasattr(store, "_tx") or not hasattr(store, "_exec"):
            raise ConfigError("the console needs the SQL fleet store (SQLite or PostgreSQL)")
        self.store = store
        self.limits = limits

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        s: Any = self.store
        with s._tx() as cur:
            s._exec(cur, sql, params)
            return [tuple(r) for r in cur.fetchall()]

    # -- devices ---------------------------------------------------------------------------
    def device_counts(self) -> dict[str, Any]:
        """Online/offline per class and per city, and the totals."""
        lim = self.limits
        by_class = self._rows("SELECT device_class, online, COUNT(*) FROM devices "
                              "GROUP BY device_class, online ORDER BY device_class")
        by_city = self._rows(
            "SELECT COALESCE(t.value, ''), d.online, COUNT(*) FROM devices d "
            "LEFT JOIN device_tags t ON t.device_id = d.id AND t.key = ? "
            "GROUP BY COALESCE(t.value, ''), d.online ORDER BY COUNT(*) DESC",
            (lim.city_tag,))
        classes = _pivot(by_class, lim.max_groups)
        cities = _pivot(by_city, lim.max_groups)
        online = sum(c["online"] for c in classes)
        offline = sum(c["offline"] for c in classes)
        return {"total": online + offline, "online": online, "offline": offline,
                "by_class": classes, "by_city": cities, "city_tag": lim.city_tag}

    def facets(self) -> dict[str, Any]:
        """Values the device filters offer, each with its count."""
        n = self.limits.max_facet_values

        def two(sql: str) -> list[dict[str, Any]]:
            return [{"value": v, "count": int(c)} for v, c in self._rows(sql, (n,))]

        tags = self._rows("SELECT key, value, COUNT(*) FROM device_tags GROUP BY key, value "
                          "ORDER BY key, COUNT(*) DESC LIMIT ?", (n * 10,))
        by_key: dict[str, list[dict[str, Any]]] = {}
        for k, v, c in tags:
            vals = by_key.setdefault(k, [])
            if len(vals) < n:
                vals.append({"value": v, "count": int(c)})
        return {
            "class": two("SELECT device_class, COUNT(*) FROM devices GROUP BY device_class "
                         "ORDER BY COUNT(*) DESC LIMIT ?"),
            "target": two("SELECT target, COUNT(*) FROM devices GROUP BY target "
                          "ORDER BY COUNT(*) DESC LIMIT ?"),
            "version": two("SELECT active_name || '@' || active_version, COUNT(*) FROM devices "
                           "WHERE active_name IS NOT NULL AND active_version IS NOT NULL "
                           "GROUP BY active_name, active_version ORDER BY COUNT(*) DESC "
                           "LIMIT ?"),
            "tags": by_key}

    # -- deployments -----------------------------------------------------------------------
    def wave_counts(self, deployment_id: str) -> list[dict[str, Any]]:
        """Per rollout phase (wave): devices in each state."""
        rows = self._rows("SELECT wave, state, COUNT(*) FROM deployment_devices WHERE "
                          "deployment_id = ? GROUP BY wave, state ORDER BY wave",
                          (deployment_id,))
        waves: dict[int, dict[str, int]] = {}
        for wave, state, n in rows:
            waves.setdefault(int(wave), {})[str(state)] = int(n)
        return [{"wave": w, "counts": c, "devices": sum(c.values())}
                for w, c in sorted(waves.items())]

    def deployment_devices_page(self, deployment_id: str, state: str | None, limit: int,
                                offset: int) -> dict[str, Any]:
        where, params = " WHERE deployment_id = ?", [deployment_id]
        if state:
            where += " AND state = ?"
            params.append(state)
        total = int(self._rows(f"SELECT COUNT(*) FROM deployment_devices{where}", params)[0][0])
        rows = self._rows("SELECT device_id, wave, state, target, updated_at, reason, previous "
                          f"FROM deployment_devices{where} ORDER BY wave, device_id "
                          "LIMIT ? OFFSET ?", [*params, limit, offset])
        keys = ("device_id", "wave", "state", "target", "updated_at", "reason", "previous")
        return {"items": [dict(zip(keys, r, strict=True)) for r in rows], "total": total,
                "limit": limit, "offset": offset}

    def deployment_status_counts(self) -> dict[str, int]:
        return {str(s): int(n) for s, n in
                self._rows("SELECT status, COUNT(*) FROM deployments GROUP BY status")}

    def recent_aborts(self, since: float) -> list[dict[str, Any]]:
        rows = self._rows("SELECT id, bundle_name, bundle_version, status, reason, updated_at "
                          "FROM deployments WHERE status IN ('aborted', 'rolled-back') AND "
                          "updated_at >= ? ORDER BY updated_at DESC LIMIT ?",
                          (since, self.limits.max_alerts))
        return [{"id": r[0], "bundle": f"{r[1]}@{r[2]}", "status": r[3], "reason": r[4],
                 "updated_at": float(r[5])} for r in rows]

    # -- telemetry -------------------------------------------------------------------------
    def telemetry_max_id(self) -> int:
        """Rows ever inserted (ids only grow): the ingest counter, read from the primary key."""
        return int(self._rows("SELECT COALESCE(MAX(id), 0) FROM telemetry")[0][0] or 0)

    def health_rows(self, after_id: int, batch: int) -> list[tuple[Any, ...]]:
        """Inference and drift rows with ``after_id < id``, oldest first (one batch):
        ``(id, device_id, ts, kind, n_count, n_errors, p95_ms, data-or-None)``."""
        rows = self._rows("SELECT id, device_id, ts, kind, n_count, n_errors, p95_ms, "
                          "CASE WHEN kind = 'drift' THEN data ELSE NULL END FROM telemetry "
                          "WHERE id > ? AND kind IN ('inference', 'drift') ORDER BY id LIMIT ?",
                          (after_id, batch))
        return rows

    def scan_inference(self, after_id: int, batch: int) -> TelemetryScan:
        """Sum the latency histograms of inference rows with ``after_id < id`` (one batch)."""
        # the highest id first: rows committed during the scan are read next time, not skipped
        top = self.telemetry_max_id()
        rows = self._rows("SELECT id, n_count, n_errors, data FROM telemetry WHERE id > ? AND "
                          "id <= ? AND kind = 'inference' ORDER BY id LIMIT ?",
                          (after_id, top, batch))
        last = after_id
        inferences = errors = 0
        le: tuple[float | None, ...] = ()
        counts: list[int] = []
        for rid, n, e, data in rows:
            last = int(rid)
            inferences += int(n or 0)
            errors += int(e or 0)
            hist = _histogram(data)
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


def _pivot(rows: list[tuple[Any, ...]], cap: int) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, online, n in rows:
        entry = out.setdefault(str(key), {"name": str(key), "online": 0, "offline": 0})
        entry["online" if online else "offline"] += int(n)
    items = sorted(out.values(), key=lambda e: (-(e["online"] + e["offline"]), e["name"]))
    return items[:cap]


def shifts(data: Any) -> list[tuple[str, float]]:
    try:
        features = json.loads(data).get("features") or {}
    except (ValueError, AttributeError):
        return []
    out = []
    for name, f in features.items() if isinstance(features, dict) else ():
        shift = f.get("shift") if isinstance(f, dict) else None
        if isinstance(shift, int | float) and not isinstance(shift, bool):
            out.append((str(name), float(shift)))
    return out


def _histogram(data: Any) -> tuple[tuple[float | None, ...], list[int]] | None:
    try:
        h = json.loads(data).get("histogram")
        le = tuple(None if b is None else float(b) for b in h["le_ms"])
        counts = [int(c) for c in h["counts"]]
    except (ValueError, AttributeError, KeyError, TypeError):
        return None
    if len(le) != len(counts) or not le or any(c < 0 for c in counts):
        return None
    return le, counts

"""The telemetry digest and the console queries on real SQLite and PostgreSQL stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.console.digest import TelemetryDigest
from fleet.console.queries import ConsoleLimits, FleetQueries
from fleet.store import Device, Store, TelemetryRow, open_store

T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store on each backend: the console's SQL must be portable."""
    url = (f"sqlite:///{tmp_path / 'fleet.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    s = open_store(url, tmp_path / "data")
    for d in ("cam-1", "cam-2"):
        s.upsert_device(Device(d, "camera", "x86-cpu"))
    yield s
    s.close()


def inference(device: str, ts: float, count: int, errors: int, p95: float) -> TelemetryRow:
    return TelemetryRow(device, ts, "inference", {"count": count, "errors": errors,
                                                  "p95_ms": p95})


def drift(device: str, ts: float, shift: float) -> TelemetryRow:
    def feature(s: float) -> dict[str, Any]:
        return {"count": 100.0, "mean": 1.0 + s, "std": 1.0, "min": 0.0, "max": 9.0,
                "baseline_mean": 1.0, "baseline_std": 1.0, "shift": s}
    return TelemetryRow(device, ts, "drift", {"bundle": "m@1", "features": {
        "x": feature(shift), "y": feature(shift / 2)}})


def test_each_row_is_read_once_and_totals_follow(store: Store) -> None:
    now = [T0]
    dg = TelemetryDigest(FleetQueries(store), clock=lambda: now[0], batch=2)
    store.insert_telemetry([inference("cam-1", T0 - 30, 100, 5, 12.0),
                            inference("cam-2", T0 - 20, 100, 0, 30.0),
                            TelemetryRow("cam-1", T0 - 10, "heartbeat", {}),
                            drift("cam-1", T0 - 5, 4.0)])
    assert dg.refresh() == 3                       # heartbeats are not read at all
    assert dg.refresh() == 0
    got = dg.inference(T0 - 3600)
    assert got == {"records": 2, "inferences": 200, "errors": 5, "error_rate": 0.025,
                   "p95_ms_max": 30.0}
    store.insert_telemetry([inference("cam-1", T0, 50, 5, 8.0)])
    assert dg.inference(T0 - 3600)["inferences"] == 250
    assert dg.refresh() == 0


def test_window_expires_old_minutes_and_drift(store: Store) -> None:
    now = [T0]
    dg = TelemetryDigest(FleetQueries(store), window_s=600, clock=lambda: now[0])
    store.insert_telemetry([inference("cam-1", T0 - 300, 10, 1, 5.0), drift("cam-2", T0 - 300, 5)])
    assert dg.inference(T0 - 600)["inferences"] == 10
    assert [s.device_id for s in dg.drifting(3.0, T0 - 600, 10)] == ["cam-2"]
    now[0] = T0 + 1000                               # both left the window
    assert dg.inference(now[0] - 600)["inferences"] == 0
    assert dg.drifting(3.0, now[0] - 600, 10) == []
    # rows older than the window when they arrive are never counted
    store.insert_telemetry([inference("cam-1", T0 - 5000, 99, 0, 1.0)])
    assert dg.inference(0)["inferences"] == 0


def test_latest_drift_report_decides_and_the_worst_feature_names_it(store: Store) -> None:
    dg = TelemetryDigest(FleetQueries(store), clock=lambda: T0)
    store.insert_telemetry([drift("cam-1", T0 - 100, 6.0), drift("cam-2", T0 - 90, 3.5)])
    hits = dg.drifting(3.0, T0 - 3600, 10)
    assert [(s.device_id, s.feature, s.shift) for s in hits] == [("cam-1", "x", 6.0),
                                                                 ("cam-2", "x", 3.5)]
    store.insert_telemetry([drift("cam-1", T0 - 10, 0.5)])     # cam-1 recovered
    assert [s.device_id for s in dg.drifting(3.0, T0 - 3600, 10)] == ["cam-2"]
    assert [s.device_id for s in dg.drifting(3.0, T0 - 3600, 0)] == []


def test_first_refresh_reads_only_the_newest_rows(store: Store) -> None:
    q = FleetQueries(store, ConsoleLimits(max_scan_rows=3))
    store.insert_telemetry([inference("cam-1", T0 - k, 1, 0, 1.0) for k in range(10, 0, -1)])
    dg = TelemetryDigest(q, clock=lambda: T0)
    assert dg.refresh() == 3
    assert dg.inference(0)["inferences"] == 3


def test_malformed_drift_records_are_ignored(store: Store) -> None:
    dg = TelemetryDigest(FleetQueries(store), clock=lambda: T0)
    store.insert_telemetry([
        TelemetryRow("cam-1", T0 - 5, "drift", {"features": "nope"}),
        TelemetryRow("cam-1", T0 - 4, "drift", {"features": {"x": {"shift": "high"}}}),
        TelemetryRow("cam-2", T0 - 3, "drift", {"features": {"x": {"shift": True}}})])
    assert dg.refresh() == 3
    assert dg.drifting(0.0, 0, 10) == []


def _hist_row(device: str, ts: float, counts: list[int]) -> TelemetryRow:
    return TelemetryRow(device, ts, "inference", {
        "count": sum(counts), "errors": 0, "p95_ms": 5.0,
        "histogram": {"le_ms": [1.0, 10.0, None], "counts": counts}})


def test_metrics_histogram_catches_up_within_its_budget_and_skips_nothing(store: Store) -> None:
    from fleet.metrics import MetricsCollector

    col = MetricsCollector(FleetQueries(store), scan_batch=2, catch_up_budget_s=0.0)
    store.insert_telemetry([_hist_row("cam-1", T0 + k, [1, 2, 0]) for k in range(5)]
                           + [TelemetryRow("cam-2", T0, "heartbeat", {})])

    def count() -> float:
        fam = {f.name: f for f in col.collect()}["edgeops_inference_latency_seconds"]
        return next(v for suffix, _, v in fam.samples if suffix == "_count")

    assert count() == 6            # one batch (2 rows × 3) per scrape with no time budget
    assert count() == 12
    assert count() == 15           # last partial batch: caught up
    store.insert_telemetry([_hist_row("cam-2", T0 + 9, [0, 0, 4])])
    assert count() == 19
    assert count() == 19           # each row counted once


def test_grouped_queries_on_both_backends(store: Store) -> None:
    from fleet.store import Deployment, DeploymentDevice

    store.upsert_device(Device("bus-1", "vehicle", "arm64-cpu", {"city": "graz", "line": "4"}))
    store.set_status("cam-1", True, T0)
    q = FleetQueries(store)
    counts = q.device_counts()
    assert (counts["total"], counts["online"]) == (3, 1)
    assert {c["name"]: (c["online"], c["offline"]) for c in counts["by_class"]} == {
        "camera": (1, 1), "vehicle": (0, 1)}
    assert {c["name"]: c["offline"] + c["online"] for c in counts["by_city"]} == {"graz": 1,
                                                                                   "": 2}
    f = q.facets()
    assert f["target"] == [{"value": "x86-cpu", "count": 2}, {"value": "arm64-cpu", "count": 1}]
    assert f["tags"] == {"city": [{"value": "graz", "count": 1}],
                         "line": [{"value": "4", "count": 1}]}
    assert f["version"] == []
    store.create_deployment(
        Deployment("d-1", "tiny", "1.0.0", "all", {}, "aborted", 0, T0, T0, T0, "bad"),
        [DeploymentDevice("d-1", d, w, s, "x86-cpu", T0)
         for d, w, s in (("cam-1", 0, "healthy"), ("cam-2", 1, "pending"),
                         ("bus-1", 1, "failed"))])
    assert q.wave_counts("d-1") == [{"wave": 0, "counts": {"healthy": 1}, "devices": 1},
                                    {"wave": 1, "counts": {"failed": 1, "pending": 1},
                                     "devices": 2}]
    page = q.deployment_devices_page("d-1", None, 2, 1)
    assert page["total"] == 3 and [r["device_id"] for r in page["items"]] == ["bus-1", "cam-2"]
    assert q.deployment_devices_page("d-1", "failed", 10, 0)["total"] == 1
    assert q.deployment_status_counts() == {"aborted": 1}
    assert [a["id"] for a in q.recent_aborts(T0 - 1)] == ["d-1"]
    assert q.recent_aborts(T0 + 1) == []


class PublicOnly:
    """The store seen through its public methods only: reaching for ``_tx``/``_exec`` (the
    SQL plumbing) fails, as it would on any other Store implementation."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):
            raise AttributeError(f"{name} is private to the store")
        return getattr(self._inner, name)


def test_console_queries_use_only_the_public_store_interface(store: Store) -> None:
    store.insert_telemetry([inference("cam-1", T0, 10, 1, 5.0), drift("cam-2", T0 + 1, 4.0)])
    q = FleetQueries(PublicOnly(store))  # type: ignore[arg-type]
    assert q.device_counts()["total"] == 2
    assert q.facets()["class"] == [{"value": "camera", "count": 2}]
    assert q.deployment_status_counts() == {} and q.recent_aborts(0.0) == []
    assert q.wave_counts("d-none") == [] and q.deployment_devices_page("d-none", None, 5, 0)[
        "total"] == 0
    scan = q.scan_inference(0, 100)
    assert (scan.records, scan.inferences, scan.errors) == (1, 10, 1)
    assert len(q.health_rows(0, 100)) == 2

"""The store's aggregate reads (console, /metrics) on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json

import pytest

from edgeops.errors import UsageError
from edgeops.protocol import DevicePhase, StateReport
from fleet.store import (
    Deployment,
    DeploymentDevice,
    Device,
    OnlineCount,
    Store,
    TagCount,
    TelemetryRow,
    ValueCount,
)


def _fleet(store: Store) -> None:
    """Six cameras in lyon/turin (two offline), two sensors, one without a city tag."""
    for i in range(6):
        store.upsert_device(Device(f"cam-{i}", "camera", "x86-cpu",
                                   {"city": "lyon" if i < 4 else "turin"}, enrolled_at=1.0))
    store.upsert_device(Device("sen-0", "sensor", "arm-cpu", {"city": "lyon"}, enrolled_at=1.0))
    store.upsert_device(Device("sen-1", "sensor", "arm-cpu", {}, enrolled_at=1.0))
    for d in ("cam-0", "cam-1", "cam-2", "cam-4", "sen-0", "sen-1"):
        assert store.set_status(d, True, 2.0)
    active = {"name": "vc", "version": "1.0.0", "target": "x86-cpu", "slot": "b"}
    for d in ("cam-0", "cam-1"):
        assert store.record_state(StateReport(d, 1, 3.0, DevicePhase.HEALTHY, active=active))


def test_device_online_counts_by_class_and_by_tag(store: Store) -> None:
    _fleet(store)
    assert store.device_online_counts() == [
        OnlineCount("camera", False, 2), OnlineCount("camera", True, 4),
        OnlineCount("sensor", True, 2)]
    assert store.device_online_counts("city") == [
        OnlineCount("", True, 1), OnlineCount("lyon", False, 1), OnlineCount("lyon", True, 4),
        OnlineCount("turin", False, 1), OnlineCount("turin", True, 1)]
    assert store.device_online_counts("no-such-tag") == [
        OnlineCount("", False, 2), OnlineCount("", True, 6)]


def test_device_value_and_tag_counts_are_ranked_and_bounded(store: Store) -> None:
    _fleet(store)
    assert store.device_value_counts("class", 10) == [ValueCount("camera", 6),
                                                      ValueCount("sensor", 2)]
    assert store.device_value_counts("target", 1) == [ValueCount("x86-cpu", 6)]
    assert store.device_value_counts("version", 10) == [ValueCount("vc@1.0.0", 2)]
    assert store.tag_value_counts(10) == [TagCount("city", "lyon", 5),
                                          TagCount("city", "turin", 2)]
    assert store.tag_value_counts(1) == [TagCount("city", "lyon", 5)]


def test_device_value_counts_refuses_an_unknown_field(store: Store) -> None:
    with pytest.raises(UsageError, match="cannot count devices by 'id; DROP'") as e:
        store.device_value_counts("id; DROP", 5)  # type: ignore[arg-type]
    assert e.value.hint and "class" in e.value.hint


def _deployment(store: Store, dep_id: str, status: str, updated_at: float,
                states: list[str]) -> None:
    store.create_deployment(
        Deployment(dep_id, "vc", "1.0.0", "all", {"phases": [50, 100]}, status, 0, 1.0, 1.0,
                   updated_at, f"why {dep_id}"),
        [DeploymentDevice(dep_id, f"cam-{i}", i % 2, s, "x86-cpu", 1.0, previous="vc@0.9.0")
         for i, s in enumerate(states)])


def test_deployment_waves_pages_and_statuses(store: Store) -> None:
    _fleet(store)
    _deployment(store, "d-1", "running", 5.0,
                ["healthy", "notified", "healthy", "failed", "pending", "pending"])
    _deployment(store, "d-2", "aborted", 10.0, ["failed"])
    _deployment(store, "d-3", "rolled-back", 20.0, ["healthy"])
    _deployment(store, "d-4", "aborted", 1.0, ["failed"])
    assert store.deployment_wave_counts("d-1") == {
        0: {"healthy": 2, "pending": 1}, 1: {"failed": 1, "notified": 1, "pending": 1}}
    assert store.deployment_wave_counts("d-none") == {}
    total, rows = store.deployment_devices_page("d-1", None, 2, 1)
    assert total == 6 and [(r.wave, r.device_id) for r in rows] == [(0, "cam-2"), (0, "cam-4")]
    assert rows[0].previous == "vc@0.9.0"
    total, rows = store.deployment_devices_page("d-1", "pending", 10, 0)
    assert total == 2 and [r.device_id for r in rows] == ["cam-4", "cam-5"]
    assert store.deployment_devices_page("d-1", "healthy", 10, 50) == (2, [])
    assert store.deployment_status_counts() == {"aborted": 2, "rolled-back": 1, "running": 1}
    recent = store.deployments_updated_since(5.0, ("aborted", "rolled-back"), 10)
    assert [d.id for d in recent] == ["d-3", "d-2"] and recent[1].reason == "why d-2"
    assert [d.id for d in store.deployments_updated_since(0.0, ("aborted",), 1)] == ["d-2"]
    assert store.deployments_updated_since(0.0, (), 10) == []


def test_telemetry_digest_rows_by_id_with_data_only_where_asked(store: Store) -> None:
    assert store.telemetry_max_id() == 0
    assert store.telemetry_digest_rows(0, ("inference",), 10) == []
    store.insert_telemetry([
        TelemetryRow("cam-0", 1.0, "inference", {"count": 10, "errors": 1, "p95_ms": 7.5}),
        TelemetryRow("cam-0", 2.0, "drift", {"features": {"x": {"shift": 4.0}}}),
        TelemetryRow("cam-1", 3.0, "system", {"cpu_pct": 5}),
        TelemetryRow("cam-1", 4.0, "inference", {"count": 5, "errors": 0, "p95_ms": 3.0})])
    top = store.telemetry_max_id()
    both = store.telemetry_digest_rows(0, ("inference", "drift"), 10, data_for=("drift",))
    assert [(r.kind, r.device_id, r.ts) for r in both] == [
        ("inference", "cam-0", 1.0), ("drift", "cam-0", 2.0), ("inference", "cam-1", 4.0)]
    assert [r.id for r in both] == sorted(r.id for r in both) and both[-1].id == top
    first = both[0]
    assert (first.n_count, first.n_errors, first.p95_ms, first.data) == (10, 1, 7.5, None)
    assert json.loads(both[1].data or "")["features"]["x"]["shift"] == 4.0
    rid, device, ts, kind, n, errors, p95, data = both[2]        # unpacks like a row
    assert (device, ts, kind, n, errors, p95, data) == ("cam-1", 4.0, "inference", 5, 0, 3.0,
                                                        None)
    # a batch, then the rest from where it stopped; an upper bound; data for inference
    one = store.telemetry_digest_rows(0, ("inference",), 1, data_for=("inference",))
    assert len(one) == 1 and json.loads(one[0].data or "")["count"] == 10
    rest = store.telemetry_digest_rows(one[0].id, ("inference",), 10)
    assert [r.ts for r in rest] == [4.0]
    assert store.telemetry_digest_rows(0, ("inference",), 10, until_id=rid - 1)[-1].ts == 1.0
    assert store.telemetry_digest_rows(0, (), 10) == []

"""Store behaviour on SQLite and PostgreSQL alike (the ``store`` fixture runs both)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeops.errors import ConfigError, UsageError
from edgeops.protocol import DevicePhase, StateReport
from fleet.store import (
    Blessing,
    BundleRecord,
    Deployment,
    DeploymentDevice,
    Device,
    DeviceFilter,
    Store,
    StoreConflict,
    TelemetryRow,
    open_store,
)


def _dev(i: int, **kw: object) -> Device:
    base: dict[str, object] = {"id": f"cam-{i:03d}", "device_class": "camera", "target": "x86-cpu",
                               "tags": {"city": "lyon", "district": str(i % 4)},
                               "enrolled_at": 1.0}
    base.update(kw)
    return Device(**base)  # type: ignore[arg-type]


def _deployment(store: Store, ids: list[str], dep_id: str = "d-1") -> None:
    now = time.time()
    store.create_deployment(
        Deployment(dep_id, "vc", "1.0.0", "city=lyon", {"phases": [100]}, "running", 0, now, now,
                   now),
        [DeploymentDevice(dep_id, d, 0, "pending", "x86-cpu", now) for d in ids])


def test_migrations_are_idempotent(store: Store) -> None:
    from fleet.store.schema import SCHEMA_VERSION

    assert store.schema_version() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION
    assert store.schema_version() == SCHEMA_VERSION


def test_device_upsert_get_and_reenrol_keeps_runtime_fields(store: Store) -> None:
    store.upsert_device(_dev(1))
    assert store.set_status("cam-001", True, 10.0, "0.1.0")
    store.upsert_device(_dev(1, tags={"city": "paris"}))
    d = store.get_device("cam-001")
    assert d is not None
    assert d.tags == {"city": "paris"} and d.online and d.agent_version == "0.1.0"
    assert store.get_device("nope") is None


def test_list_devices_filters_and_paginates(store: Store) -> None:
    for i in range(25):
        store.upsert_device(_dev(i, device_class="vehicle" if i % 5 == 0 else "camera"))
    store.upsert_device(_dev(99, id="bus-7", device_class="vehicle", tags={"route": "C3"}))
    assert store.list_devices(DeviceFilter(device_class="vehicle")).total == 6
    assert store.list_devices(DeviceFilter(tags={"district": "1"})).total == 6
    assert store.list_devices(DeviceFilter(tags={"district": "1", "city": "x"})).total == 0
    assert [d.id for d in store.list_devices(DeviceFilter(search="C3")).items] == ["bus-7"]
    assert [d.id for d in store.list_devices(DeviceFilter(search="BUS")).items] == ["bus-7"]
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_devices(DeviceFilter(), limit=7, cursor=cursor)
        assert page.total == 26
        seen += [d.id for d in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(seen) and len(set(seen)) == 26


def test_status_ignores_unknown_devices_and_stale_messages(store: Store) -> None:
    store.upsert_device(_dev(1))
    assert not store.set_status("ghost", True, 5.0)
    assert store.set_status("cam-001", True, 5.0)
    assert not store.set_status("cam-001", False, 4.0)      # older Last Will arrives late
    d = store.get_device("cam-001")
    assert d is not None and d.online
    assert store.list_devices(DeviceFilter(online=True)).total == 1


def test_record_state_drops_replays_and_unknown_devices(store: Store) -> None:
    store.upsert_device(_dev(1))
    _deployment(store, ["cam-001"])
    active = {"name": "vc", "version": "1.0.0", "target": "x86-cpu", "slot": "b"}
    r5 = StateReport("cam-001", 5, 100.0, DevicePhase.DOWNLOADING, "d-1", "vc@1.0.0")
    assert store.record_state(r5)
    assert not store.record_state(r5)                                   # replay
    assert not store.record_state(StateReport("cam-001", 4, 101.0, DevicePhase.HEALTHY, "d-1"))
    assert not store.record_state(StateReport("ghost", 9, 1.0, DevicePhase.HEALTHY, "d-1"))
    assert store.deployment_counts("d-1") == {"downloading": 1}
    assert store.record_state(StateReport("cam-001", 6, 102.0, DevicePhase.HEALTHY, "d-1",
                                          active=active))
    d = store.get_device("cam-001")
    assert d is not None and d.active_bundle == "vc@1.0.0" and d.last_state_seq == 6
    assert store.list_devices(DeviceFilter(version="vc@1.0.0")).total == 1
    assert store.list_devices(DeviceFilter(version="2.0.0")).total == 0
    # a report naming a deployment the device is not in changes only the device
    assert store.record_state(StateReport("cam-001", 7, 103.0, DevicePhase.FAILED, "d-x"))
    assert store.deployment_counts("d-1") == {"healthy": 1}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seqs=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=20))
def test_record_state_accepts_exactly_the_increasing_seqs(store: Store, seqs: list[int]) -> None:
    dev = f"p-{abs(hash(tuple(seqs))) % 10**9}"
    store.upsert_device(_dev(0, id=dev))
    accepted = [s for s in seqs if store.record_state(StateReport(dev, s, 1.0))]
    expect, top = [], -1
    for s in seqs:
        if s > top:
            expect.append(s)
            top = s
    assert accepted == expect


def test_telemetry_insert_query_and_aggregate(store: Store) -> None:
    for i in range(3):
        store.upsert_device(_dev(i))
    _deployment(store, ["cam-000", "cam-001"])
    rows = [TelemetryRow(f"cam-{i % 3:03d}", 1000.0 + i, "inference",
                         {"count": 100, "errors": i % 2, "p95_ms": 10.0 + i}, seq=i)
            for i in range(30)]
    rows += [TelemetryRow("cam-000", 2000.0, "heartbeat", {})]
    assert store.insert_telemetry(rows) == 31
    assert store.insert_telemetry([]) == 0
    assert store.count_telemetry() == 31
    got = store.query_telemetry("cam-000", kind="inference", since=1010.0)
    assert [r.ts for r in got] == [1027.0, 1024.0, 1021.0, 1018.0, 1015.0, 1012.0]
    assert got[0].data["p95_ms"] == 37.0
    agg = store.aggregate_telemetry(["cam-000"])
    assert agg["records"] == 11 and agg["inferences"] == 1000 and agg["devices"] == 1
    assert agg["errors"] == 5 and agg["error_rate"] == pytest.approx(0.005)
    dep = store.aggregate_deployment("d-1")
    assert dep["devices"] == 2 and dep["inferences"] == 2000 and dep["p95_ms_max"] == 38.0
    assert store.aggregate_telemetry([])["records"] == 0


def test_bundles_are_immutable_and_blobs_resolve(store: Store) -> None:
    rec = BundleRecord("vc", "1.0.0", b'{"artifacts": []}', b"{}", 1.0,
                       {"manifest.json": ("a" * 64, 10)})
    assert store.put_bundle(rec)
    assert not store.put_bundle(rec)
    with pytest.raises(StoreConflict):
        store.put_bundle(BundleRecord("vc", "1.0.0", b"{}", b"{}", 2.0))
    got = store.get_bundle("vc", "1.0.0")
    assert got is not None and got.files == rec.files and got.manifest == rec.manifest
    assert [b.version for b in store.list_bundles("vc")] == ["1.0.0"]
    sha = "b" * 64
    assert store.artifact_path(sha) is None
    store.add_blob(sha, 3)
    assert store.artifact_path(sha) is None                 # known but not on disk
    p = store.blob_path(sha)
    p.parent.mkdir(parents=True)
    p.write_bytes(b"abc")
    assert store.artifact_path(sha) == p


def test_deployment_transitions_are_compare_and_set(store: Store) -> None:
    store.upsert_device(_dev(1))
    _deployment(store, ["cam-001"])
    assert store.transition_device("d-1", "cam-001", state="notified", now=5.0,
                                   expect=["pending"], command=b"cmd", notified=True)
    assert not store.transition_device("d-1", "cam-001", state="notified", now=6.0,
                                       expect=["pending"], command=b"cmd2", notified=True)
    (row,) = store.deployment_devices("d-1")
    assert row.state == "notified" and row.notified_at == 5.0 and row.command == b"cmd"
    assert [r.device_id for r in store.device_deployments("cam-001")] == ["cam-001"]
    assert store.update_deployment("d-1", now=7.0, status="paused", expect_status=["running"])
    assert not store.update_deployment("d-1", now=8.0, status="paused", expect_status=["running"])
    assert store.device_deployments("cam-001") == []
    dep = store.get_deployment("d-1")
    assert dep is not None and dep.status == "paused"
    assert [d.id for d in store.list_deployments(["paused"])] == ["d-1"]


def test_tokens_blessings_metadata_and_seq(store: Store) -> None:
    t = store.add_token("f" * 64, "operator", "ci", 1.0)
    got = store.get_token("f" * 64)
    assert got is not None and got.role == "operator" and not got.revoked
    assert store.revoke_token(t.token_id)
    got = store.get_token("f" * 64)
    assert got is not None and got.revoked
    assert store.get_token("0" * 64) is None
    store.put_blessing(Blessing("vc", "1.0.0", "x86_64", True, {"ok": 1}, 1.0))
    assert store.has_blessing("vc", "1.0.0", "x86_64")
    assert not store.has_blessing("vc", "1.0.0", "aarch64")
    store.put_blessing(Blessing("vc", "1.0.0", "x86_64", False, {"ok": 0}, 2.0))
    assert not store.has_blessing("vc", "1.0.0", "x86_64")
    store.put_metadata([("1.targets.json", "targets", 1, b"t1"),
                        ("timestamp.json", "timestamp", 1, b"ts1")])
    store.put_metadata([("2.targets.json", "targets", 2, b"t2"),
                        ("timestamp.json", "timestamp", 2, b"ts2")])
    assert store.get_metadata("timestamp.json") == b"ts2"
    assert store.latest_metadata("targets") == (2, b"t2")
    assert store.get_metadata("9.root.json") is None
    assert [store.next_command_seq("cam-1") for _ in range(3)] == [1, 2, 3]
    assert store.next_command_seq("cam-2") == 1
    store.set_setting("k", "v")
    store.set_setting("k", "w")
    assert store.get_setting("k") == "w"


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url, expect in (("sqlite:///rel.db", tmp_path / "rel.db"),
                        (f"sqlite:///{tmp_path / 'abs.db'}", tmp_path / "abs.db"),
                        ("plain.db", tmp_path / "plain.db")):
        s = open_store(url)
        s.close()
        assert expect.is_file(), url
    for bad in ("sqlite://", "sqlite:///", "mysql://x/y"):
        with pytest.raises(UsageError):
            open_store(bad)
    from edgeops.errors import TransportError

    with pytest.raises(TransportError, match="cannot connect to PostgreSQL"):
        open_store("postgresql://postgres@127.0.0.1:9/nope")


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    s = open_store(str(tmp_path / "f.db"))
    s.close()
    import sqlite3

    with sqlite3.connect(tmp_path / "f.db") as raw:
        raw.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")
    with pytest.raises(ConfigError, match="newer than"):
        open_store(str(tmp_path / "f.db"))


def test_batch_notify_moves_only_pending_rows_and_counts_offline(store: Store) -> None:
    for i in range(3):
        store.upsert_device(_dev(i))
    _deployment(store, ["cam-000", "cam-001", "cam-002"])
    assert store.transition_device("d-1", "cam-001", state="notified", now=1.0,
                                   expect=["pending"], command=b"first", notified=True)
    moved = store.notify_devices("d-1", {"cam-000": b"a", "cam-001": b"b", "cam-002": b"c"}, 2.0)
    assert moved == ["cam-000", "cam-002"]
    rows = {r.device_id: r for r in store.deployment_devices("d-1")}
    assert rows["cam-001"].command == b"first" and rows["cam-000"].command == b"a"
    assert store.waiting_offline("d-1") == 3
    store.set_status("cam-000", True, 5.0)
    assert store.waiting_offline("d-1") == 2
    assert store.next_command_seqs(["x", "y", "x"]) == {"x": 2, "y": 1}
    assert store.next_command_seq("x") == 3


def test_deployment_counts_group_by_state_in_name_order(store: Store) -> None:
    ids = [f"cam-{i:03d}" for i in range(6)]
    for i in range(6):
        store.upsert_device(_dev(i))
    _deployment(store, ids)
    _deployment(store, ids[:2], dep_id="d-2")               # another deployment: not counted
    for dev, state in zip(ids, ("notified", "healthy", "healthy", "failed", "notified"),
                          strict=False):
        assert store.transition_device("d-1", dev, state=state, now=1.0, expect=["pending"])
    counts = store.deployment_counts("d-1")
    assert counts == {"failed": 1, "healthy": 2, "notified": 2, "pending": 1}
    assert list(counts) == ["failed", "healthy", "notified", "pending"]
    assert store.deployment_counts("d-2") == {"pending": 2}
    assert store.deployment_counts("d-none") == {}

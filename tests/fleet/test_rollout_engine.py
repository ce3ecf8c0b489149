"""The rollout engine on a real store with real keys and a fake device channel."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeops.protocol import DevicePhase, StateReport, StatusMessage, check_command
from fleet.errors import ConflictError, DeploymentRejected, NotFoundError
from fleet.rollout import Strategy, parse_phases
from fleet.store import Blessing, Store
from tests.fleet.fakes import FakeDeviceChannel
from tests.fleet.helpers import engine, enrol, publish, repository


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _report(store: Store, dev: str, dep: str, phase: DevicePhase, ts: float,
            version: str = "1.0.0") -> StateReport:
    d = store.get_device(dev)
    assert d is not None
    active = ({"name": "tiny", "version": version, "target": "x86-cpu", "slot": "b"}
              if phase in (DevicePhase.ACTIVATED, DevicePhase.HEALTHY) else None)
    return StateReport(dev, d.last_state_seq + 1, ts, phase, dep, f"tiny@{version}",
                       active=active)


@pytest.fixture
def published(store: Store, keystore, bundles: dict[str, Path]) -> Store:  # type: ignore[no-untyped-def]
    repo = repository(store, keystore)
    for b in bundles.values():
        publish(repo, keystore, b)
    return store


def test_staged_rollout_to_completion_with_signed_commands(published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    store, ch, clock = published, FakeDeviceChannel(), Clock()
    ids = enrol(store, 20)
    eng = engine(store, keystore, ch, clock)
    dep = eng.create("tiny", "1.0.0", "city=lyon", Strategy(parse_phases("10%,50%"), bake_s=10))
    mgr_key = keystore.public_key("manager")
    for _round in range(10):
        eng.step(dep.id)
        for dev, cmd in list(ch.desired.items()):
            c = check_command(cmd, device_id=dev, manager_keys=[mgr_key], last_seq=0,
                              now=clock())
            assert c.kind == "deploy" and c.body["target"] == "x86-cpu"
            row = {r.device_id: r for r in store.deployment_devices(dep.id)}[dev]
            if row.state == "notified":
                assert eng.record_state(_report(store, dev, dep.id, DevicePhase.HEALTHY, clock()))
        clock.t += 11
    final = store.get_deployment(dep.id)
    assert final is not None and final.status == "completed"
    assert store.deployment_counts(dep.id) == {"healthy": 20}
    assert sorted(ch.desired) == ids
    assert len(ch.desired_log) == 20                       # each device notified exactly once
    st = eng.status(dep.id)
    assert st["progress"] == 1.0 and st["phases"] == 3


def test_phases_are_respected_one_wave_at_a_time(published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    store, ch, clock = published, FakeDeviceChannel(), Clock()
    enrol(store, 10)
    eng = engine(store, keystore, ch, clock)
    dep = eng.create("tiny", "1.0.0", "all", Strategy(parse_phases("1%,50%")))
    eng.step(dep.id)
    assert len(ch.desired) == 1                            # 1% of 10 → one canary
    eng.step(dep.id)
    assert len(ch.desired) == 1                            # canary not finished: wait
    (canary,) = ch.desired
    eng.record_state(_report(store, canary, dep.id, DevicePhase.HEALTHY, clock()))
    eng.step(dep.id)                                       # advance
    eng.step(dep.id)                                       # notify wave 1
    assert len(ch.desired) == 5


def test_a_device_clock_running_ahead_does_not_hold_the_next_phase_back(
        published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    """Bake time counts on the manager's clock: the canary's report says it is an hour later
    (a skewed device), and the next wave still goes out once the bake has passed here."""
    store, ch, clock = published, FakeDeviceChannel(), Clock()
    enrol(store, 10)
    eng = engine(store, keystore, ch, clock)
    dep = eng.create("tiny", "1.0.0", "all", Strategy(parse_phases("1%,50%"), bake_s=10))
    eng.step(dep.id)
    (canary,) = ch.desired
    assert eng.record_state(_report(store, canary, dep.id, DevicePhase.HEALTHY,
                                    clock() + 3600))
    clock.t += 11
    eng.step(dep.id)                                       # advance
    eng.step(dep.id)                                       # notify wave 1
    assert len(ch.desired) == 5


def test_abort_on_failures_stops_notifying(published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    store, ch, clock = published, FakeDeviceChannel(), Clock()
    enrol(store, 10)
    eng = engine(store, keystore, ch, clock)
    dep = eng.create("tiny", "1.0.0", "all", Strategy(parse_phases("30%"), abort_max_failures=2))
    eng.step(dep.id)
    first = list(ch.desired)
    assert len(first) == 3
    for dev in first[:2]:
        eng.record_state(_report(store, dev, dep.id, DevicePhase.FAILED, clock()))
    plan = eng.step(dep.id)
    assert plan.finish == "aborted"
    got = store.get_deployment(dep.id)
    assert got is not None and got.status == "aborted" and "2 devices failed" in (got.reason or "")
    eng.tick()
    assert len(ch.desired) == 3


def test_offline_vehicle_is_pending_then_times_out(published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    store, ch, clock = published, FakeDeviceChannel(), Clock()
    enrol(store, 1, prefix="bus", device_class="vehicle")
    eng = engine(store, keystore, ch, clock)
    dep = eng.create("tiny", "1.0.0", "class=vehicle",
                     Strategy(device_timeout_s=3 * 86400, abort_min_sample=1000))
    eng.step(dep.id)
    assert "bus-000" in ch.desired                          # retained: waits for the vehicle
    clock.t += 2 * 86400
    eng.step(dep.id)
    st = eng.status(dep.id)
    assert st["counts"] == {"notified": 1} and st["waiting_offline"] == 1
    clock.t += 86400
    eng.step(dep.id)
    assert store.deployment_counts(dep.id) == {"timed-out": 1}


def test_returning_device_gets_a_fresh_command(published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    store, ch, clock = published, FakeDeviceChannel(), Clock()
    enrol(store, 1, prefix="bus", device_class="vehicle")
    eng = engine(store, keystore, ch, clock)
    dep = eng.create("tiny", "1.0.0", "all", Strategy(device_timeout_s=30 * 86400))
    eng.step(dep.id)
    old = ch.desired["bus-000"].command
    clock.t += 6 * 86400                                   # command nearly expired
    assert eng.record_status(StatusMessage("bus-000", True, "0.1.0", clock()))
    new = ch.desired["bus-000"].command
    assert new.seq > old.seq and new.expires > old.expires and new.body == old.body
    assert not eng.record_status(StatusMessage("ghost", True, "0.1.0", clock()))


def test_pause_resume_cancel_and_conflicts(published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    store, ch, clock = published, FakeDeviceChannel(), Clock()
    enrol(store, 4)
    eng = engine(store, keystore, ch, clock)
    dep = eng.create("tiny", "1.0.0", "all", Strategy(parse_phases("50%")))
    assert eng.pause(dep.id).status == "paused"
    eng.tick()
    assert ch.desired == {}
    with pytest.raises(ConflictError):
        eng.pause(dep.id)
    assert eng.resume(dep.id).status == "running"
    eng.tick()
    assert len(ch.desired) == 2
    assert eng.cancel(dep.id).status == "cancelled"
    assert {c.command.kind for c in ch.desired.values()} == {"cancel"}
    with pytest.raises(ConflictError):
        eng.resume(dep.id)
    with pytest.raises(NotFoundError):
        eng.pause("d-nope")


def test_rollback_sends_each_reached_device_back_to_its_previous_bundle(
        published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    store, ch, clock = published, FakeDeviceChannel(), Clock()
    ids = enrol(store, 3)
    eng = engine(store, keystore, ch, clock)
    d1 = eng.create("tiny", "1.0.0", "all", Strategy())
    eng.step(d1.id)
    for dev in ids:
        eng.record_state(_report(store, dev, d1.id, DevicePhase.HEALTHY, clock()))
    eng.step(d1.id)
    d2 = eng.create("tiny", "1.1.0", "all", Strategy())
    eng.step(d2.id)
    eng.record_state(_report(store, ids[0], d2.id, DevicePhase.HEALTHY, clock(), "1.1.0"))
    assert eng.rollback(d2.id).status == "rolled-back"
    for dev in ids:
        c = ch.desired[dev].command
        assert c.kind == "rollback" and c.body["to"] == {"name": "tiny", "version": "1.0.0"}
    with pytest.raises(ConflictError):
        eng.rollback(d2.id)


def test_deployment_rejections(published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    store, ch = published, FakeDeviceChannel()
    enrol(store, 2)
    enrol(store, 1, prefix="pi", target="arm64-cpu")
    eng = engine(store, keystore, ch)
    with pytest.raises(DeploymentRejected, match="selects no device"):
        eng.create("tiny", "1.0.0", "city=paris", Strategy())
    with pytest.raises(DeploymentRejected, match="no artifact for the target.*arm64-cpu: pi-000"):
        eng.create("tiny", "1.0.0", "all", Strategy())
    with pytest.raises(NotFoundError):
        eng.create("tiny", "9.9.9", "all", Strategy())
    assert store.list_deployments() == []
    strict = engine(store, keystore, ch, require_blessing=True)
    with pytest.raises(DeploymentRejected, match="not blessed for hardware class x86_64"):
        strict.create("tiny", "1.0.0", "target=x86-cpu", Strategy())
    store.put_blessing(Blessing("tiny", "1.0.0", "x86_64", True, {}, 1.0))
    assert strict.create("tiny", "1.0.0", "target=x86-cpu", Strategy()).status == "running"


def test_restart_mid_rollout_skips_nobody_and_repeats_nobody(published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    """A new engine on the same store (a restarted manager) continues where the old stopped."""
    store, clock = published, Clock()
    ids = enrol(store, 12)
    ch1 = FakeDeviceChannel()
    eng1 = engine(store, keystore, ch1, clock)
    dep = eng1.create("tiny", "1.0.0", "all", Strategy(max_per_minute=5))
    eng1.step(dep.id)
    assert len(ch1.desired) == 5
    # restart: the old engine is gone; a new one recovers and carries on
    ch2 = FakeDeviceChannel()
    eng2 = engine(store, keystore, ch2, clock)
    assert eng2.recover() == 5
    assert ch2.desired == ch1.desired                       # the same signed bytes, re-sent
    clock.t += 61
    eng2.step(dep.id)
    clock.t += 61
    eng2.step(dep.id)
    fresh = [d for d, _ in ch2.desired_log[5:]]
    assert sorted(set(ch1.desired) | set(fresh)) == ids
    assert len(fresh) == len(set(fresh)) == 7 and not set(fresh) & set(ch1.desired)


def test_status_counts_match_the_device_rows_without_loading_them(published: Store, keystore,  # type: ignore[no-untyped-def]
                                                                   monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    store, ch, clock = published, FakeDeviceChannel(), Clock()
    ids = enrol(store, 12)
    eng = engine(store, keystore, ch, clock)
    dep = eng.create("tiny", "1.0.0", "all", Strategy(parse_phases("50%"), bake_s=10,
                                                      abort_min_sample=1000))
    eng.step(dep.id)
    notified = sorted(ch.desired)
    for dev, phase in zip(notified, (DevicePhase.HEALTHY, DevicePhase.HEALTHY,
                                     DevicePhase.ACTIVATED, DevicePhase.FAILED,
                                     DevicePhase.DOWNLOADING), strict=False):
        assert eng.record_state(_report(store, dev, dep.id, phase, clock()))
    store.set_status(notified[-1], False, clock())         # one notified device went offline
    rows = store.deployment_devices(dep.id)
    expect: dict[str, int] = {}
    for r in rows:
        expect[r.state] = expect.get(r.state, 0) + 1
    assert len(rows) == len(ids) and len(expect) >= 4       # a mix of states to count

    def no_rows(*_a: object, **_k: object) -> None:
        raise AssertionError("status() must count in the store, not load device rows")

    monkeypatch.setattr(store, "deployment_devices", no_rows)
    st = eng.status(dep.id)
    assert st["counts"] == expect and list(st["counts"]) == sorted(expect)
    assert st["devices"] == 12
    assert st["progress"] == pytest.approx(3 / 12)
    assert st["waiting_offline"] == 1 and st["phases"] == 2
    assert st["id"] == dep.id and st["status"] == "running"


def test_status_of_unknown_deployment_is_not_found(published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    eng = engine(published, keystore, FakeDeviceChannel(), Clock())
    with pytest.raises(NotFoundError):
        eng.status("d-missing")

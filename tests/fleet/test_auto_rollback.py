"""``Strategy.auto_rollback``: an aborted deployment rolls back what it changed, by itself.

Real store, real keys, the fake channel (tests/fleet/fakes.py) recording the signed commands.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeops.protocol import DevicePhase, StateReport, check_command
from fleet.rollout import Strategy, parse_phases
from fleet.store import Store
from tests.fleet.fakes import FakeDeviceChannel
from tests.fleet.helpers import engine, enrol, publish, repository


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _report(store: Store, dev: str, dep: str, phase: DevicePhase, ts: float) -> StateReport:
    d = store.get_device(dev)
    assert d is not None
    active = ({"name": "tiny", "version": "1.0.0", "target": "x86-cpu", "slot": "b"}
              if phase in (DevicePhase.ACTIVATED, DevicePhase.HEALTHY) else None)
    return StateReport(dev, d.last_state_seq + 1, ts, phase, dep, "tiny@1.0.0", active=active)


@pytest.fixture
def published(store: Store, keystore, bundles: dict[str, Path]) -> Store:  # type: ignore[no-untyped-def]
    repo = repository(store, keystore)
    for b in bundles.values():
        publish(repo, keystore, b)
    return store


def _abort_with(store: Store, keystore, auto: bool):  # type: ignore[no-untyped-def]
    """Canary of 4: one healthy, one still installing, two failed → abort at 2 failures."""
    ch, clock = FakeDeviceChannel(), Clock()
    enrol(store, 10)
    eng = engine(store, keystore, ch, clock)
    dep = eng.create("tiny", "1.0.0", "all",
                     Strategy(parse_phases("40%"), abort_max_failures=2, auto_rollback=auto))
    eng.step(dep.id)
    canary = sorted(ch.desired)
    assert len(canary) == 4
    healthy, installing, *failed = canary
    eng.record_state(_report(store, healthy, dep.id, DevicePhase.HEALTHY, clock()))
    eng.record_state(_report(store, installing, dep.id, DevicePhase.INSTALLING, clock()))
    for dev in failed:
        eng.record_state(_report(store, dev, dep.id, DevicePhase.ROLLED_BACK, clock()))
    plan = eng.step(dep.id)
    assert plan.finish == "aborted"
    return eng, ch, dep, healthy, installing, failed


def test_abort_with_auto_rollback_rolls_back_activated_and_cancels_in_flight(
        published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    eng, ch, dep, healthy, installing, failed = _abort_with(published, keystore, auto=True)
    got = published.get_deployment(dep.id)
    assert got is not None and got.status == "rolled-back"
    assert "2 devices failed" in (got.reason or "") and "automatically" in (got.reason or "")
    mgr = keystore.public_key("manager")
    rb = check_command(ch.desired[healthy], device_id=healthy, manager_keys=[mgr], last_seq=0,
                       now=1_000_000.0)
    assert rb.kind == "rollback" and rb.body["deployment_id"] == dep.id
    cancel = check_command(ch.desired[installing], device_id=installing, manager_keys=[mgr],
                           last_seq=0, now=1_000_000.0)
    assert cancel.kind == "cancel"
    for dev in failed:           # rolled back on their own: the deploy was the last thing sent
        assert ch.desired[dev].command.kind == "deploy"
    sent = len(ch.desired_log)
    eng.tick()                   # nothing more: the deployment is finished
    assert len(ch.desired_log) == sent


def test_abort_without_auto_rollback_sends_nothing_more(published: Store, keystore) -> None:  # type: ignore[no-untyped-def]
    _eng, ch, dep, healthy, installing, _failed = _abort_with(published, keystore, auto=False)
    got = published.get_deployment(dep.id)
    assert got is not None and got.status == "aborted"
    assert ch.desired[healthy].command.kind == "deploy"
    assert ch.desired[installing].command.kind == "deploy"
    assert len(ch.desired_log) == 4


def test_auto_rollback_round_trips_through_json() -> None:
    s = Strategy(parse_phases("10%,100%"), auto_rollback=True)
    assert Strategy.from_dict(s.to_dict()) == s
    assert Strategy.from_dict({}).auto_rollback is False

"""Stateful property test: the real engine + store under random reports, ticks and operator
actions keeps its promises (one deploy command per device, waves in order, phases monotone,
nothing new notified unless running, aborts exactly at the threshold)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from edgeops.keys import KeyStore
from edgeops.protocol import DevicePhase, StateReport
from fleet.errors import ConflictError
from fleet.rollout import RolloutEngine, Strategy, parse_phases
from fleet.states import FAILURE_STATES
from fleet.store import Store, open_store
from tests.edgeops.bundles import make_bundle, make_keystore
from tests.fleet.fakes import FakeDeviceChannel
from tests.fleet.helpers import engine, enrol, publish, repository

N = 12
REPORTABLE = [DevicePhase.DOWNLOADING, DevicePhase.INSTALLING, DevicePhase.ACTIVATED,
              DevicePhase.HEALTHY, DevicePhase.FAILED, DevicePhase.DEFERRED]


@functools.cache
def _material() -> tuple[KeyStore, Path]:
    d = Path(tempfile.mkdtemp(prefix="edgeops-stateful-"))
    keys = make_keystore(d / "home")
    return keys, make_bundle(d, keys)


class RolloutMachine(RuleBasedStateMachine):
    store: Store
    eng: RolloutEngine

    @initialize(phases=st.sampled_from(["10%,50%", "1,2,5", "100%", "25%,75%"]),
                max_per_minute=st.one_of(st.none(), st.integers(1, 5)),
                max_failures=st.one_of(st.none(), st.integers(1, 4)))
    def setup(self, phases: str, max_per_minute: int | None, max_failures: int | None) -> None:
        keys, bundle = _material()
        self.dir = Path(tempfile.mkdtemp(prefix="edgeops-sm-"))
        self.store = open_store(str(self.dir / "f.db"), self.dir / "data")
        publish(repository(self.store, keys), keys, bundle)
        self.ids = enrol(self.store, N)
        self.t = 1_000_000.0
        self.ch = FakeDeviceChannel()
        self.eng = engine(self.store, keys, self.ch, lambda: self.t)
        self.strategy = Strategy(parse_phases(phases), max_per_minute=max_per_minute,
                                 abort_max_failures=max_failures, abort_min_sample=1000,
                                 device_timeout_s=600)
        self.dep = self.eng.create("tiny", "1.0.0", "all", self.strategy).id
        self.waves = {r.device_id: r.wave for r in self.store.deployment_devices(self.dep)}
        self.seq: dict[str, int] = {}
        self.max_phase = 0
        self.sent = 0
        self.abort_seen = False

    def _dep(self) -> Any:
        d = self.store.get_deployment(self.dep)
        assert d is not None
        return d

    @rule(dt=st.sampled_from([0.0, 1.0, 30.0, 61.0, 700.0]))
    def tick(self, dt: float) -> None:
        self.t += dt
        before = self._dep()
        self.eng.step(self.dep)
        new = self.ch.desired_log[self.sent:]
        self.sent = len(self.ch.desired_log)
        if before.status != "running":
            assert new == []                                  # paused/finished: nobody new
        after = self._dep()
        for device_id, _cmd in new:
            assert self.waves[device_id] <= after.phase_index

    @rule(i=st.integers(0, N - 1), phase=st.sampled_from(REPORTABLE))
    def report(self, i: int, phase: DevicePhase) -> None:
        dev = self.ids[i]
        if dev not in self.ch.desired:
            return                                            # devices act only when told
        self.seq[dev] = self.seq.get(dev, 0) + 1
        assert self.eng.record_state(StateReport(dev, self.seq[dev], self.t, phase, self.dep))

    @rule(i=st.integers(0, N - 1))
    def replay(self, i: int) -> None:
        dev = self.ids[i]
        if self.seq.get(dev):
            assert not self.eng.record_state(StateReport(dev, self.seq[dev], self.t,
                                                         DevicePhase.HEALTHY, self.dep))

    @rule(action=st.sampled_from(["pause", "resume"]))
    def operate(self, action: str) -> None:
        try:
            getattr(self.eng, action)(self.dep)
        except ConflictError:
            pass

    @invariant()
    def one_command_per_device_and_monotone_phases(self) -> None:
        if not hasattr(self, "dep"):
            return
        per_device: dict[str, int] = {}
        for device_id, _ in self.ch.desired_log:
            per_device[device_id] = per_device.get(device_id, 0) + 1
        assert all(n == 1 for n in per_device.values())
        d = self._dep()
        assert d.phase_index >= self.max_phase
        self.max_phase = d.phase_index
        counts = self.store.deployment_counts(self.dep)
        failures = sum(counts.get(s, 0) for s in FAILURE_STATES)
        # The threshold held when the deployment aborted. Checked once, at the first sight of
        # "aborted": afterwards a timed-out device that reports in converges (fleet/states.py),
        # so the failure count may legitimately drop below what triggered the abort.
        if (self.strategy.abort_max_failures is not None and d.status == "aborted"
                and not self.abort_seen):
            self.abort_seen = True
            assert failures >= self.strategy.abort_max_failures, (d.status, d.reason, counts)
        if d.status == "completed":
            assert sum(counts.values()) == N and counts.get("pending", 0) == 0

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()


RolloutMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=30,
                                            deadline=None)
TestRolloutMachine = RolloutMachine.TestCase

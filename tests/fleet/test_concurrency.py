"""Several managers on one database: the store's compare-and-set keeps them from doubling up."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from edgeops.keys import KeyStore
from edgeops.protocol import DevicePhase, StateReport
from fleet.rollout import Strategy
from fleet.states import FAILURE_STATES, apply_report
from fleet.store import Store, open_store
from tests.fleet.fakes import FakeDeviceChannel
from tests.fleet.helpers import engine, enrol, publish, repository


def test_two_managers_ticking_one_deployment_notify_each_device_once(
        store: Store, keystore: KeyStore, bundles: dict[str, Path], tmp_path: Path) -> None:
    publish(repository(store, keystore), keystore, bundles["1.0.0"])
    ids = enrol(store, 120)
    # a second store handle on the same database = a second manager process
    url = getattr(store, "url", None) or f"sqlite:///{store.path}"  # type: ignore[attr-defined]
    other = open_store(url, tmp_path / "data")
    try:
        ch1, ch2 = FakeDeviceChannel(), FakeDeviceChannel()
        e1, e2 = engine(store, keystore, ch1), engine(other, keystore, ch2)
        dep = e1.create("tiny", "1.0.0", "all", Strategy())
        barrier = threading.Barrier(2)

        def run(e: object) -> None:
            barrier.wait()
            e.step(dep.id)  # type: ignore[attr-defined]

        threads = [threading.Thread(target=run, args=(e,)) for e in (e1, e2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        sent = Counter(d for d, _ in ch1.desired_log + ch2.desired_log)
        assert sorted(sent) == ids and set(sent.values()) == {1}
        assert store.deployment_counts(dep.id) == {"notified": 120}
    finally:
        other.close()


def test_two_managers_recording_interleaved_reports_keep_seq_order(
        store: Store, tmp_path: Path) -> None:
    enrol(store, 1)
    url = getattr(store, "url", None) or f"sqlite:///{store.path}"  # type: ignore[attr-defined]
    other = open_store(url, tmp_path / "data")
    try:
        accepted: list[int] = []
        lock = threading.Lock()

        def feed(s: Store, seqs: range) -> None:
            for q in seqs:
                if s.record_state(StateReport("cam-000", q, float(q))):
                    with lock:
                        accepted.append(q)

        ts = [threading.Thread(target=feed, args=(s, range(start, 200, 2)))
              for s, start in ((store, 0), (other, 1))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        # no lost update: a smaller seq never overwrote a larger one that was accepted
        d = store.get_device("cam-000")
        assert d is not None and d.last_state_seq == max(accepted) >= 198
        assert len(set(accepted)) == len(accepted)
    finally:
        other.close()


@given(st.lists(st.sampled_from(list(DevicePhase)), max_size=30))
def test_device_state_machine_never_leaves_a_final_outcome(reports: list[DevicePhase]) -> None:
    state = "notified"
    for r in reports:
        new = apply_report(state, r)
        if state == "rolled-back":
            assert new is None
        if state == "healthy" and new is not None:
            assert new in FAILURE_STATES
        if new is not None:
            assert new != "pending"
            state = new

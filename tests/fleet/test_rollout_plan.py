"""Pure rollout decisions: phases, pacing, timeouts, abort thresholds (properties + scenarios)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeops.errors import UsageError
from fleet.rollout import Health, Strategy, assign_waves, decide, parse_phases
from fleet.store import Deployment, DeploymentDevice


def _dep(phase: int = 0, status: str = "running", started: float = 0.0) -> Deployment:
    return Deployment("d-1", "vc", "1.0.0", "all", {}, status, phase, started, 0.0, 0.0)


def _rows(waves: dict[str, int], state: str = "pending", **kw: object) -> list[DeploymentDevice]:
    return [DeploymentDevice("d-1", d, w, state, "x86-cpu", 0.0, **kw)  # type: ignore[arg-type]
            for d, w in sorted(waves.items())]


def test_parse_phases_percent_counts_and_errors() -> None:
    assert [str(p) for p in parse_phases("1%,10%,50%,100%")] == ["1%", "10%", "50%", "100%"]
    assert [str(p) for p in parse_phases("5,50")] == ["5", "50", "100%"]
    for bad in ("0%", "150%", "-3", "x", "50%,10%", ""):
        with pytest.raises(UsageError):
            parse_phases(bad)


def test_strategy_round_trips_and_rejects_nonsense() -> None:
    s = Strategy(parse_phases("10%,100%"), max_per_minute=30, bake_s=5, abort_max_failures=3)
    assert Strategy.from_dict(s.to_dict()) == s
    with pytest.raises(UsageError):
        Strategy.from_dict({"phasez": []})
    with pytest.raises(UsageError):
        Strategy(max_per_minute=0)
    with pytest.raises(UsageError):
        Strategy(abort_failure_pct=0)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 300),
       phases=st.lists(st.integers(1, 100), min_size=1, max_size=5).map(sorted))
def test_waves_partition_devices_monotonically(n: int, phases: list[int]) -> None:
    specs = parse_phases(",".join(f"{p}%" for p in phases))
    ids = [f"dev-{i}" for i in range(n)]
    waves = assign_waves(ids, specs, "seed")
    assert sorted(waves) == sorted(ids)                       # each device in exactly one wave
    assert all(0 <= w < len(specs) for w in waves.values())
    for i, spec in enumerate(specs):                          # cumulative reach honoured
        reached = sum(1 for w in waves.values() if w <= i)
        assert reached >= min(n, spec.reach(n)) if i < len(specs) - 1 else reached == n
    assert assign_waves(ids, specs, "seed") == waves          # stable across restarts


def test_notifies_only_the_current_wave_within_the_rate_limit() -> None:
    rows = _rows({"a": 0, "b": 0, "c": 0, "d": 1})
    plan = decide(_dep(), rows, Strategy(parse_phases("75%"), max_per_minute=2), now=100.0)
    assert plan.notify == ["a", "b"] and not plan.finish
    # two were notified 10 s ago: the minute's budget is spent
    rows2 = [replace(r, state="notified", notified_at=90.0) if r.device_id in "ab" else r
             for r in rows]
    assert decide(_dep(), rows2, Strategy(parse_phases("75%"), max_per_minute=2), 100.0
                  ).notify == []
    assert decide(_dep(), rows2, Strategy(parse_phases("75%"), max_per_minute=2), 151.0
                  ).notify == ["c"]


def test_phase_advances_after_bake_and_completes() -> None:
    s = Strategy(parse_phases("50%"), bake_s=30)
    rows = [*_rows({"a": 0}, "healthy"), *_rows({"b": 1})]
    rows = [replace(r, updated_at=100.0) for r in rows]
    assert decide(_dep(), rows, s, 110.0).advance_to is None        # baking
    assert decide(_dep(), rows, s, 131.0).advance_to == 1
    done = _rows({"a": 0, "b": 1}, "healthy")
    assert decide(_dep(phase=1), done, s, 200.0).finish == "completed"
    assert decide(_dep(status="paused"), rows, s, 500.0).idle


def test_offline_devices_stay_pending_until_their_timeout() -> None:
    s = Strategy(device_timeout_s=3600)
    rows = _rows({"bus-1": 0}, "notified", notified_at=0.0)
    plan = decide(_dep(), rows, s, 3599.0)
    assert plan.time_out == [] and plan.finish is None
    plan = decide(_dep(), rows, s, 3600.0)
    assert plan.time_out == ["bus-1"]
    assert decide(_dep(), _rows({"bus-1": 0}, "deferred", notified_at=0.0), s, 10.0).idle


@settings(max_examples=200, deadline=None)
@given(healthy=st.integers(0, 40), failed=st.integers(0, 40), pct=st.floats(1, 100),
       min_sample=st.integers(1, 20), max_failures=st.one_of(st.none(), st.integers(1, 30)))
def test_abort_exactly_when_a_threshold_is_crossed(healthy: int, failed: int, pct: float,
                                                   min_sample: int,
                                                   max_failures: int | None) -> None:
    s = Strategy(abort_failure_pct=pct, abort_min_sample=min_sample,
                 abort_max_failures=max_failures)
    rows = [*_rows({f"h{i}": 0 for i in range(healthy)}, "healthy"),
            *_rows({f"f{i}": 0 for i in range(failed)}, "failed"),
            *_rows({"later": 1})]
    plan = decide(_dep(), rows, s, 1.0)
    finished = healthy + failed
    expect = ((max_failures is not None and failed >= max_failures)
              or (finished >= min_sample and failed * 100.0 >= pct * finished))
    assert (plan.finish == "aborted") == expect
    if expect:
        assert plan.notify == [] and plan.reason


def test_health_criteria_from_telemetry_abort() -> None:
    s = Strategy(max_error_rate=0.01, max_latency_factor=2.0, min_inferences=100)
    rows = _rows({"a": 0}, "activated", notified_at=0.0)
    assert decide(_dep(), rows, s, 1.0, Health(50, 0.5, 100.0, 1.0)).finish is None  # sample
    assert decide(_dep(), rows, s, 1.0, Health(500, 0.02, 1.0, 1.0)).finish == "aborted"
    plan = decide(_dep(), rows, s, 1.0, Health(500, 0.0, 2.5, 1.0))
    assert plan.finish == "aborted" and "p95" in (plan.reason or "")
    assert decide(_dep(), rows, s, 1.0, Health(500, 0.0, 1.5, 1.0)).finish is None


@settings(max_examples=100, deadline=None)
@given(states=st.lists(st.sampled_from(["pending", "notified", "downloading", "healthy",
                                         "failed", "timed-out", "deferred"]),
                       min_size=1, max_size=30), phase=st.integers(0, 3))
def test_never_notifies_outside_the_current_phase_or_twice(states: list[str],
                                                            phase: int) -> None:
    rows = [DeploymentDevice("d-1", f"d{i}", i % 4, s, "x86-cpu", 0.0,
                             notified_at=None if s == "pending" else 0.0)
            for i, s in enumerate(states)]
    plan = decide(_dep(phase=phase), rows, Strategy(abort_failure_pct=100,
                                                    abort_min_sample=1000), 1.0)
    by_id = {r.device_id: r for r in rows}
    assert len(set(plan.notify)) == len(plan.notify)
    assert all(by_id[d].state == "pending" and by_id[d].wave <= phase for d in plan.notify)
    assert plan.advance_to in (None, phase + 1)

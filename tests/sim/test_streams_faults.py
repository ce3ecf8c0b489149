"""The simulator's pure parts: fleet profile, sensor signals, fault selection and parsing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeops.errors import UsageError
from edgeops.examples import FEATURES
from edgeops_sim.faults import FAULTS, FaultPlan, parse_faults
from edgeops_sim.streams import (
    KINDS,
    air_quality,
    bin_level,
    drift_level,
    observations,
    smart_city,
    traffic_rate,
    vehicle_online,
)


@given(st.integers(1, 400), st.integers(0, 5))
def test_smart_city_has_n_unique_devices_on_the_right_targets(n: int, seed: int) -> None:
    specs = smart_city(n, seed)
    assert len(specs) == n
    assert len({s.id for s in specs}) == n
    for s in specs:
        assert (s.device_class, s.target) == KINDS[s.kind]
    if n >= 4:
        assert {s.kind for s in specs} == set(KINDS)


def test_default_demo_fleet_composition() -> None:
    kinds = [s.kind for s in smart_city(20)]
    assert {k: kinds.count(k) for k in KINDS} == {"air-quality": 6, "bin-level": 4,
                                                  "traffic-camera": 6, "vehicle": 4}


def test_smart_city_rejects_an_empty_fleet() -> None:
    with pytest.raises(ValueError, match="at least one"):
        smart_city(0)


def test_traffic_has_rush_hours_and_quiet_nights() -> None:
    assert traffic_rate(8.0) > 2 * traffic_rate(12.0)
    assert traffic_rate(17.5) > 2 * traffic_rate(12.0)
    assert traffic_rate(3.0) < traffic_rate(12.0) / 2


def test_air_quality_drifts_in_episodes_only() -> None:
    hours = np.arange(0, 24 * 9, 0.25)
    levels = np.array([drift_level(h, 42) for h in hours])
    assert levels.max() > 0.9                       # an episode happens within 9 days
    assert (levels == 0).mean() > 0.8               # ... and is the exception
    h_peak = float(hours[levels.argmax()])
    assert air_quality(h_peak, 42)["pm25"] > air_quality(h_peak + 24 * 1.5, 42)["pm25"] + 10


def test_bins_fill_and_are_emptied_at_six() -> None:
    assert bin_level(6.0, 3) == 0.0
    assert bin_level(20.0, 3) > bin_level(10.0, 3) > 0
    assert bin_level(5.99, 3) > 0.3


def test_vehicles_are_offline_about_one_hour_in_eight() -> None:
    hours = np.arange(0, 24, 0.05)
    offline = np.mean([not vehicle_online(h, 7) for h in hours])
    assert 0.08 < offline < 0.17


def test_observations_follow_the_hour_and_drift() -> None:
    rng = np.random.default_rng(0)
    x = observations(rng, 50, 6.0, drift=0.0)
    y = observations(np.random.default_rng(0), 50, 6.0, drift=1.0)
    assert x.shape == (50, len(FEATURES)) and x.dtype == np.float32
    assert np.allclose(x[:, FEATURES.index("hour_sin")], 1.0)
    noise = FEATURES.index("noise_db")
    assert float((y[:, noise] - x[:, noise]).mean()) == pytest.approx(15.0, abs=1e-3)
    assert observations(rng, 0, 1.0).shape == (0, len(FEATURES))


@given(st.sets(st.sampled_from(FAULTS)))
def test_parse_faults_round_trip(faults: set[str]) -> None:
    assert parse_faults(",".join(sorted(faults))) == frozenset(faults)


def test_parse_faults_none_and_unknown() -> None:
    assert parse_faults(None) == frozenset()
    assert parse_faults("none") == frozenset()
    with pytest.raises(UsageError, match="unknown fault"):
        parse_faults("drop,earthquake")


def test_fault_plan_hits_about_its_share_and_is_stable() -> None:
    plan = FaultPlan(frozenset({"drop", "skew"}), share=0.25)
    ids = [s.id for s in smart_city(400)]
    hit = [i for i in ids if plan.has(i, "drop")]
    assert 0.18 < len(hit) / len(ids) < 0.32
    assert hit == [i for i in ids if plan.has(i, "drop")]
    assert not any(plan.has(i, "slow") for i in ids)            # not enabled
    skews = {plan.skew_for(i) for i in ids if plan.has(i, "skew")}
    assert skews == {90.0, -90.0}
    assert all(plan.skew_for(i) == 0.0 for i in ids if not plan.has(i, "skew"))


def test_fault_share_must_be_a_fraction() -> None:
    with pytest.raises(UsageError):
        FaultPlan(frozenset({"drop"}), share=0.0)

"""Drift injected into the simulator's observations (edgeops_sim/drift.py): parsing, timing,
and what each kind does to the readings a device feeds its model."""

from __future__ import annotations

import numpy as np
import pytest

from edgeops.errors import UsageError
from edgeops.examples import FEATURES
from edgeops_sim.drift import (
    ActiveDrift,
    DriftSpec,
    active_drift,
    drifted_observations,
    parse_drift,
)

NOISE = FEATURES.index("noise_db")
LENGTH = FEATURES.index("length_m")


def test_parse_reads_kinds_magnitudes_and_starts() -> None:
    assert parse_drift("") == () and parse_drift("none") == ()
    assert parse_drift("calibration:0.3@10m, spread:0.5@1.5h,classmix:0.2@30") == (
        DriftSpec("calibration", 0.3, 600.0), DriftSpec("spread", 0.5, 5400.0),
        DriftSpec("classmix", 0.2, 30.0))
    assert parse_drift(",".join(str(d) for d in parse_drift("spread:2@1m"))) == (
        DriftSpec("spread", 2.0, 60.0),)                # what shards receive round-trips


@pytest.mark.parametrize(("text", "words"), [
    ("wind:1", "unknown drift kind"),
    ("spread", "KIND:MAGNITUDE"),
    ("spread:1@soon", "KIND:MAGNITUDE"),
    ("spread:x", "not a number"),
    ("spread:-1", "not in 0..10"),
    ("spread:nan", "not in 0..10"),
    ("classmix:1.5", "not in 0..1"),
])
def test_bad_drift_is_one_line(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words) as e:
        parse_drift(text)
    assert "\n" not in e.value.message


def test_a_drift_starts_at_its_time_and_same_kinds_add_up() -> None:
    specs = parse_drift("calibration:0.3@10m,calibration:0.2@20m,classmix:0.8,classmix:0.8")
    assert active_drift(specs, 0.0) == ActiveDrift(0.0, 0.0, 1.0)
    assert active_drift(specs, 599.0, calibration=0.1) == ActiveDrift(0.1, 0.0, 1.0)
    assert active_drift(specs, 600.0).calibration == pytest.approx(0.3)
    assert active_drift(specs, 1200.0).calibration == pytest.approx(0.5)


def _obs(drift: ActiveDrift, n: int = 4000) -> np.ndarray:
    return drifted_observations(np.random.default_rng(5), n, 12.0, drift)


def test_calibration_shifts_only_the_noise_reading() -> None:
    base, shifted = _obs(ActiveDrift()), _obs(ActiveDrift(calibration=0.3))
    assert shifted.dtype == np.float32 and shifted.shape == base.shape
    assert float(shifted[:, NOISE].mean() - base[:, NOISE].mean()) == pytest.approx(4.5, abs=0.5)
    assert float(shifted[:, LENGTH].mean()) == pytest.approx(float(base[:, LENGTH].mean()),
                                                             rel=0.05)


def test_spread_widens_inputs_but_not_the_time_of_day() -> None:
    base, wide = _obs(ActiveDrift()), _obs(ActiveDrift(spread=1.0))
    assert float(wide[:, LENGTH].std()) == pytest.approx(2 * float(base[:, LENGTH].std()),
                                                         rel=0.1)
    hs = FEATURES.index("hour_sin")
    assert np.allclose(wide[:, hs], base[:, hs])


def test_classmix_moves_the_vehicle_mix() -> None:
    base, bikes = _obs(ActiveDrift()), _obs(ActiveDrift(classmix=0.8))
    # bicycles are the shortest vehicles: the length distribution moves down
    assert float(np.median(bikes[:, LENGTH])) < float(np.median(base[:, LENGTH])) - 1.0
    assert np.isfinite(bikes).all()
    assert _obs(ActiveDrift(classmix=1.0), 0).shape == (0, len(FEATURES))

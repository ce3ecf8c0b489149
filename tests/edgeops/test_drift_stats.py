"""The binned two-sample tests, corrections and persistence (edgeops/drift/stats.py, fleet monitor).

Checked against scipy where scipy has the same test; the error-rate claims are checked by
simulation with fixed seeds (deterministic, a few seconds).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeops.drift.features import build_reference, extract
from edgeops.drift.reference import DriftReference, FeatureBins
from edgeops.drift.stats import (
    benjamini_hochberg,
    bonferroni,
    chi2_sf,
    chi_square,
    compare,
    false_alarm_rate,
    g_test,
    js_distance,
    ks_binned,
    merge_sparse_bins,
    persistent,
    psi,
)
from fleet.drift.monitor import MonitorPolicy, Sketch, evaluate, window_verdict


@pytest.mark.parametrize("df", [1, 2, 5, 19, 63])
@pytest.mark.parametrize("x", [0.01, 0.5, 3.0, 19.0, 60.0, 250.0])
def test_chi2_sf_matches_scipy(x: float, df: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    want = float(stats.chi2.sf(x, df))
    assert chi2_sf(x, df) == pytest.approx(want, rel=1e-7, abs=1e-300)


def test_chi_square_and_g_match_scipy_contingency() -> None:
    stats = pytest.importorskip("scipy.stats")
    ref = np.array([30, 40, 50, 20, 10])
    live = np.array([20, 45, 60, 10, 15])
    table = np.vstack([ref, live])
    chi, p_chi, df_chi, _ = stats.chi2_contingency(table, correction=False)
    g, p_g, df_g, _ = stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
    assert chi_square(ref, live) == pytest.approx((chi, df_chi, p_chi))
    assert g_test(ref, live) == pytest.approx((g, df_g, p_g))


def test_sparse_bins_are_merged_until_each_cell_expects_five() -> None:
    r, v = merge_sparse_bins(np.array([0, 1, 2, 50, 0, 3, 40]), np.array([0, 0, 1, 45, 0, 2, 38]))
    share = min(r.sum(), v.sum()) / (r.sum() + v.sum())
    assert ((r + v) * share >= 5).all()
    assert r.sum() == 96 and v.sum() == 86          # nothing lost


def test_effect_sizes_have_known_values() -> None:
    same = np.array([10, 20, 30, 40])
    assert psi(same, same * 3) == pytest.approx(0.0)
    assert js_distance(same, same * 3) == pytest.approx(0.0)
    assert ks_binned(same, same) == 0.0
    assert js_distance(np.array([10, 0]), np.array([0, 10])) == pytest.approx(1.0)
    assert ks_binned(np.array([10, 0]), np.array([0, 10])) == pytest.approx(1.0)
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    assert psi(p * 100, q * 100) == pytest.approx(
        (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5))


def test_corrections_match_their_definitions() -> None:
    ps = [0.01, 0.04, 0.03, 0.20]
    assert bonferroni(ps) == pytest.approx([0.04, 0.16, 0.12, 0.80])
    # BH: sorted 0.01, 0.03, 0.04, 0.20 -> 0.04, 0.06, 0.0533, 0.20 -> monotone from the top
    assert benjamini_hochberg(ps) == pytest.approx([0.04, 0.0533333, 0.0533333, 0.20], rel=1e-5)
    assert benjamini_hochberg([]) == []


def test_persistence_needs_k_consecutive_windows() -> None:
    assert not persistent([True, False, True], 2)
    assert persistent([False, True, True], 2)
    assert not persistent([True], 2)
    assert false_alarm_rate(0.02, 2) == pytest.approx(4e-4)


def test_compare_refuses_counts_on_other_bins() -> None:
    with pytest.raises(ValueError, match="3 live bins against 4"):
        compare("f", "input", [1, 2, 3, 4], [1, 2, 3])


# -- error rates by simulation -----------------------------------------------------------------
def _uniform_reference(features: int, bins: int, n_ref: int, rng: np.random.Generator
                       ) -> DriftReference:
    p = np.full(bins, 1.0 / bins)
    return DriftReference(rules=(), samples=n_ref, features=tuple(
        FeatureBins(f"input:x[{j}]", "input", "quantile",
                    tuple(int(c) for c in rng.multinomial(n_ref, p)),
                    tuple(float(e) for e in range(1, bins)))
        for j in range(features)))


@pytest.mark.slow
@pytest.mark.parametrize("slow", [False, True], ids=["default", "alpha-0.01-x2"])
@pytest.mark.parametrize(("correction", "n_ref", "n_live"), [
    ("bh", 2000, 500), ("bonferroni", 2000, 500),
    ("bh", 200, 2250),              # a validation-sized reference against busy windows
])
def test_false_alarm_rate_on_stable_streams_is_at_most_the_stated_rate(
        correction: str, n_ref: int, n_live: int, slow: bool) -> None:
    """4,000 stable windows (8 references x 500 windows, 6 features of 20 bins). The default
    (one window at 0.0003): at most 1 alarm per 1,000 windows (1.2 expected at the bound).
    Alpha 0.01 with persistence 2: drifting windows at most alpha, alarms at most 1.5 per
    1,000 windows (the stated bound alpha**k = 0.1 per 1,000 assumes independent windows;
    sharing one reference per stream correlates them, which scaling live counts to 4x the
    reference keeps small)."""
    policy = (MonitorPolicy(alpha=0.01, persistence=2, correction=correction) if slow
              else MonitorPolicy(correction=correction))
    rng = np.random.default_rng(20261207)
    windows = flagged = alarms = 0
    p = np.full(20, 1 / 20)
    for _ in range(8):
        ref = _uniform_reference(6, 20, n_ref, rng)
        flags: list[bool] = []
        for _ in range(500):
            counts = {f.name: rng.multinomial(n_live, p) for f in ref.features}
            drifted, _rows = window_verdict(counts, ref, "input", policy)
            flags.append(bool(drifted))
            windows += 1
            flagged += bool(drifted)
            alarms += persistent(flags, policy.persistence) and not persistent(
                flags[:-1], policy.persistence)
    if slow:
        assert flagged / windows <= policy.alpha
        assert alarms <= 6, f"{alarms} alarms in {windows} stable windows"
    else:
        assert alarms <= 4, f"{alarms} alarms in {windows} stable windows"


@pytest.mark.slow
def test_without_scaling_a_small_reference_breaks_persistence() -> None:
    """Why max_live_to_reference exists: the same streams (20 references of 200 samples, 100
    windows of 2,250 live samples each), scaling switched off, flag windows in clusters and
    alarm above the goal of 1 per 1,000 windows; with the default scaling they do not."""
    p = np.full(20, 1 / 20)
    flagged, alarms = {}, {}
    for ratio in (4.0, 1e9):
        policy = MonitorPolicy(alpha=0.02, max_live_to_reference=ratio)
        rng, ref_rng = np.random.default_rng(1), np.random.default_rng(101)
        flagged[ratio] = alarms[ratio] = 0
        for _ in range(20):
            ref = _uniform_reference(6, 20, 200, ref_rng)
            flags: list[bool] = []
            for _ in range(100):
                counts = {f.name: rng.multinomial(2250, p) for f in ref.features}
                flags.append(bool(window_verdict(counts, ref, "input", policy)[0]))
                flagged[ratio] += flags[-1]
                alarms[ratio] += persistent(flags, 2) and not persistent(flags[:-1], 2)
    assert alarms[1e9] > 2 and alarms[4.0] == 0, alarms          # 2,000 windows each
    assert flagged[1e9] > 10 * max(1, flagged[4.0]), flagged
    ref = _uniform_reference(1, 20, 200, ref_rng)
    _, rows = window_verdict({"input:x[0]": rng.multinomial(2250, p)}, ref, "input",
                             MonitorPolicy())
    assert rows[0]["n_live"] == 2250 and rows[0]["n_effective"] == 4 * ref.features[0].total


def _window(ref: DriftReference, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
            ) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = {}
    for rule in ref.rules:
        src = inputs if rule.side == "input" else outputs
        for name, values in extract(rule, src[rule.tensor]).items():
            fb = ref.feature(name)
            assert fb is not None
            counts[name] = [int(c) for c in fb.bin_counts(values)]
    return counts


def _model(x: np.ndarray) -> np.ndarray:
    """A toy classifier: class 0 when x0 and x1 have the same sign."""
    s = x[:, 0] * x[:, 1]
    return np.stack([s, -s], axis=1)


def _mean_shift(ref_x: np.ndarray, live_x: np.ndarray) -> float:
    """Today's agent signal (device_agent/telemetry.py drift_record): |mean - mean_ref| / std_ref."""
    return float(np.max(np.abs(live_x.mean(axis=0) - ref_x.mean(axis=0)) / ref_x.std(axis=0)))


def test_spread_change_and_prediction_only_drift_are_found_where_mean_shift_sees_nothing() -> None:
    rng = np.random.default_rng(7)
    ref_x = rng.normal(size=(2000, 2))
    ref = build_reference({"x": ref_x}, {"y": _model(ref_x)})
    assert ref is not None

    def stream(make: object, windows: int = 3) -> list[Sketch]:
        out = []
        for w in range(windows):
            x = make(500)  # type: ignore[operator]
            out.append(Sketch("cam-1", (w + 0.5) * ref.window_s, _window(ref, {"x": x},
                                                                        {"y": _model(x)})))
        return out

    spread = evaluate("device:cam-1", "m@1", stream(lambda n: rng.normal(size=(n, 2)) * 1.5), ref)
    assert spread.data.status == "alarm"
    assert _mean_shift(ref_x, rng.normal(size=(1500, 2)) * 1.5) < 0.3   # threshold today: 3.0

    def correlated(n: int) -> np.ndarray:   # same N(0, 1) marginals, x1 follows x0
        x0 = rng.normal(size=n)
        return np.stack([x0, x0], axis=1)

    pred = evaluate("device:cam-1", "m@1", stream(correlated), ref)
    assert pred.prediction.status == "alarm"
    assert pred.data.status == "ok"          # inputs' marginals did not move: reported apart
    assert _mean_shift(ref_x, correlated(1500)) < 0.3

    stable = evaluate("device:cam-1", "m@1", stream(lambda n: rng.normal(size=(n, 2))), ref)
    assert stable.status == "ok"


def test_min_samples_withholds_any_verdict() -> None:
    rng = np.random.default_rng(3)
    ref_x = rng.normal(size=(1000, 2))
    ref = build_reference({"x": ref_x}, {})
    assert ref is not None
    x = rng.normal(size=(50, 2)) * 3                # obvious drift, but 50 samples
    v = evaluate("device:d", "m@1", [Sketch("d", 10.0, _window(ref, {"x": x}, {}))], ref,
                 MonitorPolicy(min_samples=200))
    assert v.data.status == "insufficient-data"
    assert v.prediction.status == "no-data"


def test_a_gap_between_windows_breaks_the_run() -> None:
    rng = np.random.default_rng(5)
    ref_x = rng.normal(size=(2000, 1))
    ref = build_reference({"x": ref_x}, {})
    assert ref is not None
    drifted = [Sketch("d", t * ref.window_s + 1, _window(ref, {"x": rng.normal(2, 1, (400, 1))},
                                                         {})) for t in (0, 2)]
    two = MonitorPolicy(alpha=0.01, persistence=2)
    assert evaluate("device:d", "m@1", drifted, ref, two).data.status == "drifting"
    joined = [*drifted, Sketch("d", 1 * ref.window_s + 1,
                               _window(ref, {"x": rng.normal(2, 1, (400, 1))}, {}))]
    assert evaluate("device:d", "m@1", joined, ref, two).data.status == "alarm"
    assert evaluate("device:d", "m@1", drifted, ref).data.status == "alarm"   # default: 1

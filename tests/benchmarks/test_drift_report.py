"""benchmarks/drift's reading of its numbers: goals, censored delays, the run without the
reference detectors' venv (as on CI)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from benchmarks import _drift_raw
from benchmarks._drift_report import goals, markdown

_FA_KEYS = ("tabular_device", "tabular_cohort", "images_device", "images_cohort",
            "tabular_device_sim_pinned_hour")


def _result(raw: bool) -> dict[str, Any]:
    def fa(ours: float, ks: float) -> dict[str, Any]:
        per = {"ours": ours, "ours_fast": 0.0, "mean_shift": 0.0, "flag_input": 0.0,
               "flag_output": 0.0}
        pct = {**per, "flag_input": 0.5, "flag_output": 0.4}
        windows = dict.fromkeys(per, 1000)
        if raw:
            per |= {"ks": ks, "ks_strict": 1.0, "evidently": 100.0, "evidently_any": 900.0}
            pct |= {"ks": ks / 10.0, "ks_strict": 0.1, "evidently": 10.0, "evidently_any": 90.0}
            windows |= {"ks": 100, "ks_strict": 100, "evidently": 30, "evidently_any": 30}
        return {"windows": windows, "per_1000": per, "in_alarm_pct": pct}

    def row(drift: str, scope: str, ours: list[int | None], ks: list[int | None],
            stream: str = "tabular") -> dict[str, Any]:
        delays = {"ours": ours, "ours_fast": [1] * len(ours), "mean_shift": [None] * len(ours),
                  "ks": ks if raw else [], "ks_strict": [None if d is None else d + 1 for d in ks]
                  if raw else [], "evidently": [None] if raw else [],
                  "evidently_any": [1] if raw else []}
        judged = {k: [4 if d is None else d for d in v] for k, v in delays.items()}
        judged["mean_shift"] = [20] * len(ours)
        return {"stream": stream, "drift": drift, "magnitude": 1.0, "gradual": False,
                "scope": scope, "devices": 1, "delays": delays, "judged": judged}

    versions = {"python": "3.11", "numpy": "2", "onnxruntime": "1", "cpus": "2",
                "machine": "x86_64", "loadavg_1m": "1.00"}
    versions |= ({"alibi_detect": "0.13.0", "evidently": "0.7.23", "driftref_python": "3.11",
                  "driftref_scipy": "1", "driftref_pandas": "2"} if raw else
                 {"alibi_detect": "not installed", "evidently": "not installed"})
    settings = {"window_s": 900.0, "sampled_per_window": 225, "horizon_windows": 20,
                "ramp_windows": 12, "seeds": {"tabular": 3, "images": 3},
                "cohort_devices": {"tabular": 10, "images": 4},
                "reference_samples": {"tabular": 2000, "images": 2000},
                "features_watched": {"tabular": 14, "images": 9}, "alpha": 0.01,
                "correction": "bh", "test": "chi2", "persistence": 2, "fast_alpha": 0.0005,
                "mean_shift_alert": 3.0}
    b = {"stream": "tabular", "requests_per_s": 1.0, "window_s": 900.0, "features": 14,
         "sketch_bytes_per_feature_window": 80.0, "sketch_bytes_per_day": 108_000,
         "raw_input_bytes_per_day": 4_147_200, "under_1pct_from_requests_per_s": 2.6,
         "mean_shift_bytes_per_day": 1_600_000}
    return {"versions": versions, "settings": settings, "wall_s": 1.0,
            "detection": [row("spread", "device", [2, 2, 2], [1, 1, 1]),
                          row("decorrelate", "device", [2, 2, 2], [None, None, None]),
                          row("calibration", "device", [None, None, None], [14, 15, 16]),
                          row("contrast", "device", [3, 3, 3], [2, 2, 2], "images")],
            "false_alarms": {k: fa(0.0, 50.0) for k in _FA_KEYS},
            "bytes": [b], "manager_cpu": {"cohort_of_1000_s": 0.06, "per_device_x1000_s": 3.6},
            "agent_us_per_request": {"mean_shift_observer": 1.0, "sketch_observer": 1.0,
                                     "sketch_every_request": 4.0}}


def test_goals_compare_with_the_faster_raw_detector_and_skip_alarms_at_chance() -> None:
    g = goals(_result(raw=True))
    # spread: 2 vs 1 is over 1.5x; contrast 3 vs 2 is within; decorrelate: no raw alarm
    assert g["rows_compared_with_raw"] == 2
    assert g["delay_over_1_5x_raw"]["ours"] == ["tabular spread 1 device: 2 vs 1"]
    assert g["delay_over_1_5x_raw"]["ours_fast"] == []
    # KSDrift at p_val 0.001 (one window later here) flags 0.1 % of no-drift windows: its
    # alarm at 16 is evidence, and ours never alarming there is a miss
    assert g["rows_compared_with_ks_same_budget"] == 3
    assert g["delay_over_1_5x_ks_same_budget"] == {
        "ours": ["tabular calibration 1 device: - vs 16"], "ours_fast": []}
    # KSDrift flags 5 % of no-drift windows: its median first false alarm is window 14, so an
    # alarm at 15 on a drift ours never sees is not evidence the drift was detectable
    assert g["raw_alarms_at_chance"] == ["tabular calibration 1 device: ks 15 (no-drift "
                                         "median 14)"]
    assert g["sketch_share_of_raw"] == {"tabular 1 req/s 15 min": 108_000 / 4_147_200}
    assert g["mean_shift_misses"]["tabular/spread/device"] == {"ours": 2.0, "mean_shift": None}


def test_a_false_alarm_rate_over_the_goal_is_reported_missed() -> None:
    r = _result(raw=True)
    r["false_alarms"]["images_cohort"]["per_1000"]["ours"] = 1.5
    r["goals"] = goals(r)
    md = markdown(r)
    assert "images cohort MISSED (1.5)" in md
    assert "tabular device met (0.0)" in md


def test_censored_delays_show_how_far_the_detector_ran() -> None:
    r = _result(raw=True)
    r["goals"] = goals(r)
    md = markdown(r)
    # Evidently stopped after 4 windows without an alarm; the mean shift ran all 20
    assert "| > 4 (0/1) / 1 (1/1) |" in md
    assert "| - (0/3) |" in md


def test_without_the_driftref_venv_the_raw_columns_say_not_installed(tmp_path: Path) -> None:
    assert _drift_raw.start(tmp_path / "absent") is None
    r = _result(raw=False)
    r["goals"] = goals(r)
    md = markdown(r)
    assert "Alibi Detect and Evidently: not installed" in md
    assert "| not installed | not installed |" in md
    assert "delay within 1.5x of the raw detectors: not checked (not installed)" in md
    assert goals(copy.deepcopy(r))["rows_compared_with_raw"] == 0


def test_bytes_show_each_encoding_and_the_record_before_the_packed_form() -> None:
    r = _result(raw=True)
    r["bytes"][0] |= {"sketch_bytes_per_day": 38_496, "raw_output_bytes_per_request": 20,
                      "record_bytes_by_encoding": {
                          "json_before": 1187, "json": 1146, "json_zlib": 669, "varint": 505,
                          "varint_zlib_default": 409, "varint_zlib": 401}}
    r["goals"] = goals(r)
    assert r["goals"]["sketch_share_of_raw_before"] == {
        "tabular 1 req/s 15 min": 1187 * 96 / 4_147_200}
    md = markdown(r)
    assert "| tabular | 1 | 15 min | 1,187 (2.75%) | 1,146 (2.65%) | 669 (1.55%) | 505 (1.17%) " \
           "| 409 (0.95%) | 401 (0.93%) |" in md
    assert "tabular 1 req/s 15 min 0.93% (met; JSON record before: 2.75%)" in md
    assert "would add 20 B per request (tabular)" in md


def test_the_previous_default_policy_is_the_second_column_when_the_run_has_it() -> None:
    r = _result(raw=True)
    for row in r["detection"]:
        row["delays"]["ours_slow"] = [3] * len(row["delays"]["ours"])
        row["judged"]["ours_slow"] = [3] * len(row["delays"]["ours"])
    for fa in r["false_alarms"].values():
        fa["per_1000"]["ours_slow"], fa["in_alarm_pct"]["ours_slow"] = 0.5, 0.1
    r["settings"] |= {"slow_alpha": 0.01, "slow_persistence": 2}
    r["goals"] = goals(r)
    assert r["goals"]["delay_over_1_5x_raw"]["ours_slow"] == ["tabular spread 1 device: 3 vs 1"]
    assert r["goals"]["delay_over_1_5x_ks_same_budget"]["ours_slow"] == []
    md = markdown(r)
    assert "| ours | ours, alpha 0.01 x 2 windows | mean shift |" in md
    assert "| 3 (3/3) |" in md and "| 0.5 (0.1 %) |" in md
    assert "before: alpha 0.01, 2 windows" in md
    assert "alpha 0.01 and 2 windows (the previous default): tabular device met (0.5)" in md

"""Drift detection: the fleet's sketch tests vs the agent's standardised mean shift.

Why: issue 18 replaces "alert when a feature's mean moved 3 standard deviations" with
two-sample tests on binned counts (docs/DRIFT.md). This measures, side by side in one run on
the same streams, what each detects, how fast, how often it cries wolf and what it sends:

* streams: the example vehicle classifier (`edgeops.examples`, 12 roadside-sensor features, 5
  classes) fed with `edgeops sim`'s observation generator (`edgeops_sim.streams`: vehicle
  readings plus the sensor calibration drift the simulator injects, `noise_db += 15 * d`), one
  device at 1 request/s, windows of 15 minutes, 1 request in 4 counted (225 per window); a
  cohort is 10 such devices merged. Hours are spread over the day within a window: the
  simulator pins one hour per batch, and the two time-of-day features then differ from the
  all-day reference in every window (a row below shows what that does to both detectors);
* drift types, onset after 4 clean windows: the simulator's calibration drift (abrupt, three
  magnitudes, and gradual over 12 windows); a mean-preserving spread change (speed 1.5x around
  its mean); a prediction-only drift (length readings swapped between vehicles: every input's
  distribution unchanged, the joint one and the predictions not);
* detectors: sketch = `fleet.drift.monitor` (chi-square, Benjamini-Hochberg, alpha 0.01, alarm
  after 2 consecutive drifting windows, min 200 samples); mean shift = per feature
  `|mean - mean_ref| / std_ref > 3` on the same sampled requests, alarm in the window it
  exceeds (the console's `drift_alert_shift`), computed per feature as it was meant to be
  (as shipped it compares one pooled mean per input tensor with a per-channel baseline list and
  reports no shift at all for bundles `edgeops build` writes);
* columns: detection delay in windows after onset (median over seeds; "-" never within 30
  windows), false alarms per 1,000 windows on no-drift streams, bytes per device per day, the
  manager's CPU to evaluate 1,000 devices, and the agent's added time per request.

Alibi Detect and Evidently (the issue's raw-data baselines) are not installed here and not run.

Run: ``python -m benchmarks.drift [--seeds 5] [--stable-windows 1000]`` →
benchmarks/results/drift.{json,md}. About 1-2 minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
WINDOW_S = 900.0
REQ_PER_S = 1.0
SAMPLE_EVERY = 4
PER_WINDOW = int(WINDOW_S * REQ_PER_S / SAMPLE_EVERY)      # 225 sampled requests
COHORT = 10
ONSET = 4
HORIZON = 30
SHIFT_ALERT = 3.0


class World:
    """The model, its reference and both detectors' state."""

    def __init__(self, work: Path) -> None:
        import onnxruntime as ort

        from edgeops.drift.features import build_reference
        from edgeops.examples import FEATURES, make_vehicle_classifier, vehicle_data

        ex = make_vehicle_classifier(work / "model")
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(str(ex.model), so, providers=["CPUExecutionProvider"])
        self.features = FEATURES
        x, _ = vehicle_data(2000, 12345)
        self.ref_x = x
        ref = build_reference({"features": x}, {"probabilities": self.predict(x)},
                              sample_every=SAMPLE_EVERY)
        assert ref is not None
        self.ref = ref
        self.mean, self.std = x.mean(0), x.std(0) + 1e-9

    def predict(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.sess.run(None, {"features": x.astype(np.float32)})[0]
        return out

    def counts(self, x: np.ndarray) -> dict[str, list[int]]:
        from edgeops.drift.features import extract

        y = self.predict(x)
        out: dict[str, list[int]] = {}
        for rule in self.ref.rules:
            for name, v in extract(rule, x if rule.side == "input" else y).items():
                fb = self.ref.feature(name)
                if fb is not None:
                    out[name] = [int(c) for c in fb.bin_counts(v)]
        return out

    def shift(self, x: np.ndarray) -> float:
        return float(np.max(np.abs(x.mean(0) - self.mean) / self.std))


def _sample(rng: np.random.Generator, n: int, drift: float, kind: str,
            pinned_hour: float | None = None) -> np.ndarray:
    from edgeops.examples import FEATURES, vehicle_data
    from edgeops_sim.streams import observations

    if pinned_hour is not None:            # exactly what the simulator feeds its agents
        return observations(rng, n, pinned_hour, drift if kind == "calibration" else 0.0)
    x, _ = vehicle_data(n, int(rng.integers(0, 2**31 - 1)))
    if kind == "calibration":
        x[:, FEATURES.index("noise_db")] += np.float32(15.0 * drift)
    elif kind == "spread":
        j = FEATURES.index("speed_kmh")
        m = x[:, j].mean()
        x[:, j] = m + (1.0 + 0.5 * drift) * (x[:, j] - m)
    elif kind == "decorrelate" and drift > 0:
        j = FEATURES.index("length_m")
        k = round(drift * n)
        idx = rng.choice(n, size=k, replace=False)
        x[idx, j] = x[rng.permutation(idx), j]
    return x


def _delay(world: World, kind: str, magnitude: float, gradual: bool, devices: int,
           seed: int) -> tuple[int | None, int | None]:
    """Windows after onset until each detector alarms (None: not within HORIZON)."""
    from fleet.drift.monitor import MonitorPolicy, Sketch, evaluate

    rng = np.random.default_rng(seed)
    policy = MonitorPolicy()
    sketches: list[Sketch] = []
    ours = mean = None
    for w in range(ONSET + HORIZON):
        level = 0.0 if w < ONSET else (
            magnitude * min(1.0, (w - ONSET + 1) / 12) if gradual else magnitude)
        x = _sample(rng, PER_WINDOW * devices, level, kind)
        sketches.append(Sketch("dev", (w + 0.5) * WINDOW_S, world.counts(x)))
        sketches = sketches[-3:]
        if w < ONSET:
            continue
        if mean is None and world.shift(x) > SHIFT_ALERT:
            mean = w - ONSET
        if ours is None and evaluate("g", "b", sketches, world.ref, policy).status == "alarm":
            ours = w - ONSET
        if ours is not None and mean is not None:
            break
    return ours, mean


def _false_alarms(world: World, windows: int, devices: int, seed: int,
                  pinned: bool = False, policy: Any = None) -> dict[str, float]:
    from edgeops.drift.stats import persistent
    from fleet.drift.monitor import MonitorPolicy, window_verdict

    rng = np.random.default_rng(seed)
    policy = policy or MonitorPolicy()
    data_flags: list[bool] = []
    pred_flags: list[bool] = []
    alarm_ours = alarm_mean = False
    ours = mean = in_ours = in_mean = 0
    for w in range(windows):
        hour = (w * WINDOW_S / 3600.0) % 24 if pinned else None
        x = _sample(rng, PER_WINDOW * devices, 0.0, "none", hour)
        counts = {k: np.asarray(v) for k, v in world.counts(x).items()}
        data_flags.append(bool(window_verdict(counts, world.ref, "input", policy)[0]))
        pred_flags.append(bool(window_verdict(counts, world.ref, "output", policy)[0]))
        # the group's status: either side in alarm (each side has its own persistence)
        now_ours = (persistent(data_flags, policy.persistence)
                    or persistent(pred_flags, policy.persistence))
        now_mean = world.shift(x) > SHIFT_ALERT
        ours += now_ours and not alarm_ours            # alarms raised (onsets)
        mean += now_mean and not alarm_mean
        in_ours += now_ours
        in_mean += now_mean
        alarm_ours, alarm_mean = now_ours, now_mean
    return {"sketch": 1000.0 * ours / windows, "mean_shift": 1000.0 * mean / windows,
            "sketch_windows_in_alarm_pct": 100.0 * in_ours / windows,
            "mean_shift_windows_in_alarm_pct": 100.0 * in_mean / windows}


def _bytes(world: World, req_per_s: float) -> dict[str, Any]:
    from device_agent.drift_sketch import DriftSketch
    from device_agent.telemetry import FeatureStats, drift_record

    rng = np.random.default_rng(3)
    s = DriftSketch(lambda: 0.0)
    s.set_reference("vehicle-classifier@1.0.0", world.ref)
    fs = FeatureStats()
    n = int(WINDOW_S * req_per_s)
    x = _sample(rng, n, 0.0, "none").astype(np.float32)
    y = world.predict(x)
    for i in range(n):
        s.observe({"features": x[i:i + 1]}, {"probabilities": y[i:i + 1]})
    for i in range(int(10 * req_per_s)):        # one 10 s telemetry interval
        fs.observe({"features": x[i:i + 1]})
    rec = s.take(WINDOW_S, "aq-001")
    assert rec is not None
    enc = len(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode())
    base = {"features": {"axis": 1, "mean": world.mean.tolist(), "std": world.std.tolist()}}
    old = drift_record(0.0, fs.drain(), base, "vehicle-classifier@1.0.0")
    old_b = len(json.dumps(old, sort_keys=True, separators=(",", ":")).encode()) if old else 0
    per_day = 86_400.0
    raw = 4 * len(world.features) * req_per_s * per_day
    return {"requests_per_s": req_per_s, "sketch_record_bytes": enc,
            "features": len(world.ref.features),
            "sketch_bytes_per_feature_window": round(enc / len(world.ref.features), 1),
            "sketch_bytes_per_day": int(enc * per_day / WINDOW_S),
            "mean_shift_record_bytes": old_b,
            "mean_shift_bytes_per_day": int(old_b * per_day / 10.0),
            "raw_input_bytes_per_day": int(raw)}


def _manager_cpu(world: World, reps: int) -> dict[str, float]:
    from fleet.drift.monitor import Sketch, evaluate

    rng = np.random.default_rng(4)
    one = [world.counts(_sample(rng, PER_WINDOW, 0.0, "none")) for _ in range(3)]
    sketches = [Sketch(f"d{i}", (w + 0.5) * WINDOW_S, one[w]) for i in range(1000)
                for w in range(3)]
    cohort, per_dev = [], []
    for _ in range(reps):
        t0 = time.process_time()
        evaluate("cohort", "b", sketches, world.ref)
        cohort.append(time.process_time() - t0)
        t0 = time.process_time()
        for i in range(1000):
            evaluate(f"d{i}", "b", sketches[3 * i: 3 * i + 3], world.ref)
        per_dev.append(time.process_time() - t0)
    return {"cohort_of_1000_s": round(statistics.median(cohort), 3),
            "per_device_x1000_s": round(statistics.median(per_dev), 2)}


def _hot_path(world: World, calls: int, reps: int) -> dict[str, float]:
    from device_agent.drift_sketch import DriftSketch
    from device_agent.telemetry import FeatureStats

    x = _sample(np.random.default_rng(5), 1, 0.0, "none").astype(np.float32)
    y = world.predict(x)
    inputs, outputs = {"features": x}, {"probabilities": y}
    fs = FeatureStats()                    # today's observer, 1 request in 8
    sk = DriftSketch(lambda: 0.0)
    sk.set_reference("m@1", world.ref)     # 1 request in 4
    every = DriftSketch(lambda: 0.0)
    from dataclasses import replace
    every.set_reference("m@1", replace(world.ref, sample_every=1))
    paths: dict[str, Callable[[], None]] = {
        "mean_shift_observer": lambda: fs.observe(inputs, 0.0, True),
        "sketch_observer": lambda: sk.observe(inputs, outputs),
        "sketch_every_request": lambda: every.observe(inputs, outputs)}
    out: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(reps):                  # interleaved
        for k, fn in paths.items():
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            out[k].append((time.perf_counter_ns() - t0) / calls / 1000.0)
    return {k: round(statistics.median(v), 2) for k, v in out.items()}


DRIFTS = (("calibration", 0.1, False), ("calibration", 0.3, False), ("calibration", 1.0, False),
          ("calibration", 1.0, True), ("spread", 1.0, False), ("decorrelate", 1.0, False),
          ("decorrelate", 0.3, False))
LABELS = {"calibration": "sim calibration drift (noise_db +15 x d)",
          "spread": "speed spread x1.5, mean kept", "decorrelate": "length swapped (share d)"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--stable-windows", type=int, default=1000)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp))
    rows = []
    for kind, mag, gradual in DRIFTS:
        for devices, scope in ((1, "device"), (COHORT, "cohort")):
            res = [_delay(world, kind, mag, gradual, devices, s) for s in range(args.seeds)]
            print(f"{kind} {mag} {'gradual' if gradual else 'abrupt'} {scope}: {res}",
                  file=sys.stderr)
            rows.append({"drift": kind, "magnitude": mag, "gradual": gradual, "scope": scope,
                         "sketch_delays": [r[0] for r in res],
                         "mean_shift_delays": [r[1] for r in res]})
    stable = {"device": _false_alarms(world, args.stable_windows, 1, 100),
              "cohort": _false_alarms(world, args.stable_windows // 2, COHORT, 200),
              "device_sim_pinned_hour": _false_alarms(world, 200, 1, 300, pinned=True)}
    result = {"benchmark": "drift", "versions": _versions(),
              "settings": {"window_s": WINDOW_S, "requests_per_s": REQ_PER_S,
                           "sample_every": SAMPLE_EVERY, "sampled_per_window": PER_WINDOW,
                           "cohort_devices": COHORT, "onset_window": ONSET,
                           "horizon_windows": HORIZON, "seeds": args.seeds,
                           "stable_windows": args.stable_windows, "alpha": 0.01,
                           "persistence": 2, "correction": "bh", "mean_shift_alert": 3.0,
                           "reference_samples": world.ref.samples,
                           "features_watched": len(world.ref.features)},
              "detection": rows, "false_alarms_per_1000_windows": stable,
              "bytes": [_bytes(world, 1.0), _bytes(world, 10.0)], "manager_cpu": _manager_cpu(world, 3),
              "agent_us_per_request": _hot_path(world, 20_000, 5),
              "wall_s": round(time.perf_counter() - t_start, 1)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drift.json").write_text(json.dumps(result, indent=2) + "\n")
    md = _markdown(result)
    (RESULTS / "drift.md").write_text(md)
    print(md)
    return 0


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "cpus": str(os.cpu_count()),
            "machine": platform.machine(),
            "loadavg_1m": f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"}


def _med(v: list[int | None]) -> str:
    hits = [d for d in v if d is not None]
    if len(hits) * 2 <= len(v):          # most seeds never alarmed
        return f"- ({len(hits)}/{len(v)})"
    vals = sorted(d if d is not None else math.inf for d in v)
    m = vals[len(vals) // 2]
    return f"{m:g} ({len(hits)}/{len(v)})"


def _markdown(r: dict[str, Any]) -> str:
    s, v = r["settings"], r["versions"]
    out = [f"### drift: sketch tests vs mean shift ({s['seeds']} seeds, windows of "
           f"{s['window_s'] / 60:.0f} min, {s['sampled_per_window']} sampled requests per device "
           "per window)", "",
           f"Python {v['python']}, numpy {v['numpy']}, ONNX Runtime {v['onnxruntime']}, "
           f"{v['cpus']} CPUs (load {v['loadavg_1m']}), {v['machine']}. Reference: "
           f"{s['reference_samples']} samples, {s['features_watched']} features. Sketch: "
           f"alpha {s['alpha']} BH, alarm after {s['persistence']} windows. Mean shift: alarm "
           f"when a feature's shift > {s['mean_shift_alert']}. Wall {r['wall_s']} s.", "",
           "Detection delay, windows after onset until the alarm (median; alarms/seeds; "
           "\"-\": most seeds no alarm within 30 windows):", "",
           "| drift | magnitude | onset | scope | sketch | mean shift |",
           "|---|---:|---|---|---:|---:|"]
    for row in r["detection"]:
        out.append(f"| {LABELS[row['drift']]} | {row['magnitude']} | "
                   f"{'gradual (12 windows)' if row['gradual'] else 'abrupt'} | {row['scope']} | "
                   f"{_med(row['sketch_delays'])} | {_med(row['mean_shift_delays'])} |")
    fa = r["false_alarms_per_1000_windows"]
    out += ["", "False alarms (alarms raised) per 1,000 windows, no drift, and the share of "
            "windows spent in alarm:", "",
            "| stream | sketch | mean shift | sketch, windows in alarm | mean shift, windows in "
            "alarm |", "|---|---:|---:|---:|---:|"]
    for k, label in (("device", f"one device ({s['stable_windows']} windows)"),
                     ("cohort", f"cohort of {s['cohort_devices']} ({s['stable_windows'] // 2} windows)"),
                     ("device_sim_pinned_hour", "one device, simulator's pinned hour per window "
                      "(200 windows)")):
        out.append(f"| {label} | {fa[k]['sketch']:.1f} | {fa[k]['mean_shift']:.1f} | "
                   f"{fa[k]['sketch_windows_in_alarm_pct']:.1f} % | "
                   f"{fa[k]['mean_shift_windows_in_alarm_pct']:.1f} % |")
    cpu, hot = r["manager_cpu"], r["agent_us_per_request"]
    out += ["", "Bytes per device per day (sketch: one record per 15-minute window; mean shift: "
            "one `drift` record per 10 s telemetry interval):", "",
            "| requests/s | features | sketch B per feature per window | sketch B/day | "
            "mean-shift B/day | raw float32 inputs B/day | sketch / raw |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for b in r["bytes"]:
        out.append(f"| {b['requests_per_s']:g} | {b['features']} | "
                   f"{b['sketch_bytes_per_feature_window']} | {b['sketch_bytes_per_day']:,} | "
                   f"{b['mean_shift_bytes_per_day']:,} | {b['raw_input_bytes_per_day']:,} | "
                   f"{b['sketch_bytes_per_day'] / b['raw_input_bytes_per_day']:.2%} |")
    out += ["", "Manager CPU (process time, median of 3) for 1,000 devices x 3 windows: "
            f"one cohort verdict {cpu['cohort_of_1000_s']} s; 1,000 per-device verdicts "
            f"{cpu['per_device_x1000_s']} s.", "",
            "Agent, added time per inference request (µs, median of 5 x 20,000 calls, "
            "interleaved, batch 1): today's mean-shift observer (1 in 8) "
            f"{hot['mean_shift_observer']}; sketch (1 in 4) {hot['sketch_observer']}; "
            f"sketch counting every request {hot['sketch_every_request']}.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())

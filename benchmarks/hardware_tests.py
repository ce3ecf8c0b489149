"""What the hardware suite's latency figure costs over the bare runtime, per target.

The suite times inference through the agent's own loader (``edgeops.runtime``) plus the
manifest-name mapping in ``hardware_tests.runtime``, because that is the code path a device
runs. This measures how far that figure sits above a bare runtime call on the same artifact
(the baseline): ONNX Runtime ``session.run`` and LiteRT ``set_tensor``/``invoke``/``get_tensor``.
It also records the wall time of one whole suite run per target.

Model: the example vehicle classifier (edgeops/examples.py, 12 → 64 → 64 → 5 MLP), built with
the real ``edgeops build`` for ``x86-cpu`` (INT8 QDQ), ``tflite-cpu`` (FP32) and, where
onnxruntime-gpu finds a GPU, ``cuda-gpu`` (FP16, on the CUDA provider). One thread,
batch of one (the first golden sample). Baseline and suite path alternate in each repeat; the
table gives medians over repeats of per-repeat p50/p95 and the ratio to the baseline.

Run: ``python -m benchmarks.hardware_tests [--quick]``; writes
results/hardware_tests.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeops.bundle import read_bundle
from edgeops.fsutil import atomic_write
from hardware_tests.runtime import load_model, runtime_versions
from hardware_tests.suite import load_golden

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CPU_TARGETS = ("x86-cpu", "tflite-cpu")
# On a CUDA machine (onnxruntime-gpu) the cuda-gpu artifact is measured too, on the CUDA
# provider (TensorRT, first in the profile, is optional on most images).
CUDA = "CUDAExecutionProvider"


def _targets() -> tuple[str, ...]:
    import onnxruntime as ort

    return CPU_TARGETS + (("cuda-gpu",) if CUDA in ort.get_available_providers() else ())


def _build(tmp: Path, targets: tuple[str, ...]) -> Path:
    from edgeops.examples import make_vehicle_classifier

    ex = make_vehicle_classifier(tmp / "model")
    env = {**os.environ, "EDGEOPS_HOME": str(tmp / "home"), "EDGEOPS_KEY_PASSPHRASE": "bench"}
    cli = [sys.executable, "-m", "edgeops.cli.main"]
    subprocess.run([*cli, "keys", "init"], env=env, check=True, capture_output=True)
    args = [*cli, "build", str(ex.model), "--name", "vehicle-classifier", "--version", "1.0.0",
            "--calibration", str(ex.calibration), "--validation", str(ex.validation),
            "--max-accuracy-drop", "0.03", "--sign-latency", "--out", str(tmp / "out"), "--json"]
    for t in targets:
        args += ["--target", t]
    subprocess.run(args, env=env, check=True, capture_output=True)
    return tmp / "out" / "vehicle-classifier-1.0.0.edgebundle"


def _bare(path: Path, runtime: str, provider: str) -> Callable[[Mapping[str, np.ndarray]], Any]:
    if runtime == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        sess = ort.InferenceSession(str(path), so,
                                    providers=list(dict.fromkeys([provider,
                                                                  "CPUExecutionProvider"])))
        return lambda feed: sess.run(None, dict(feed))
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    ins, outs = it.get_input_details(), it.get_output_details()

    def run(feed: Mapping[str, np.ndarray]) -> Any:
        for d, v in zip(ins, feed.values(), strict=True):
            it.set_tensor(d["index"], v)
        it.invoke()
        return [it.get_tensor(d["index"]) for d in outs]

    return run


def _times_ms(fn: Callable[[Any], Any], feed: Any, runs: int) -> tuple[float, float]:
    for _ in range(20):
        fn(feed)
    samples = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn(feed)
        samples[i] = time.perf_counter() - t0
    return float(np.percentile(samples, 50) * 1e3), float(np.percentile(samples, 95) * 1e3)


def _suite_seconds(bundle: Path, target: str, provider: str, tmp: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "hardware_tests"), "-q",
                    "-p", "no:cacheprovider", "--bundle", str(bundle), "--target", target,
                    "--provider", provider, "--latency-margin", "100"], cwd=tmp,
                   capture_output=True, check=False)
    return time.perf_counter() - t0


def measure(quick: bool, only: tuple[str, ...] = ()) -> dict[str, Any]:
    repeats, runs = (3, 300) if quick else (7, 2000)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        targets = tuple(t for t in _targets() if not only or t in only)
        bundle_path = _build(tmp, targets)
        bundle = read_bundle(bundle_path)
        for target in targets:
            entry = bundle.manifest.artifact_for(target)
            assert entry is not None and entry.golden is not None
            art = bundle.extract_file(entry.file.path, tmp / target / Path(entry.file.path).name)
            golden = load_golden(bundle.read_file(entry.golden.path), entry.golden.path)
            feed = golden.sample(0)
            names = [t.name for t in bundle.manifest.outputs]
            provider = CUDA if target == "cuda-gpu" else entry.providers[0]
            suite = load_model(art, entry, names, threads=1, provider=provider)
            bare = _bare(art, entry.runtime, provider)
            base, ours = [], []
            for r in range(repeats):
                order = [(base, bare), (ours, suite.run)]
                for sink, fn in (order if r % 2 == 0 else order[::-1]):
                    sink.append(_times_ms(fn, feed, runs))
            walls = [_suite_seconds(bundle_path, target, provider, tmp)
                     for _ in range(1 if quick else 3)]
            b50 = statistics.median(x[0] for x in base)
            b95 = statistics.median(x[1] for x in base)
            s50 = statistics.median(x[0] for x in ours)
            s95 = statistics.median(x[1] for x in ours)
            rows.append({"target": target, "runtime": entry.runtime, "provider": provider,
                         "precision": entry.precision,
                         "baseline_p50_ms": round(b50, 5), "baseline_p95_ms": round(b95, 5),
                         "suite_p50_ms": round(s50, 5), "suite_p95_ms": round(s95, 5),
                         "p50_ratio": round(s50 / b50, 3), "p95_ratio": round(s95 / b95, 3),
                         "p50_overhead_us": round((s50 - b50) * 1e3, 2),
                         "suite_wall_s_median": round(statistics.median(walls), 2),
                         "manifest_latency_budget_ms": entry.metrics.get("latency_budget_ms")})
    return {"benchmark": "hardware_tests", "repeats": repeats, "runs_per_repeat": runs,
            "not_measured": [] if "cuda-gpu" in targets else
            ["cuda-gpu: no CUDAExecutionProvider here (needs onnxruntime-gpu and a GPU)"],
            "threads": 1, "batch": 1, "rows": rows,
            "machine": {"platform": platform.platform(), "machine": platform.machine(),
                        "cpus": os.cpu_count(), "load_avg_at_end": list(os.getloadavg())},
            "versions": {"python": platform.python_version(), **runtime_versions()}}


def table(res: dict[str, Any]) -> str:
    v = res["versions"]
    lines = [
        "## hardware_tests: suite latency figure vs bare runtime call",
        "",
        f"Example vehicle classifier (12→64→64→5 MLP), batch 1, 1 thread; {res['repeats']} "
        f"repeats × {res['runs_per_repeat']} runs, medians of per-repeat percentiles. "
        f"onnxruntime {v.get('onnxruntime', '?')}, ai-edge-litert {v.get('ai-edge-litert', '?')},"
        f" numpy {v.get('numpy', '?')}, Python {v['python']}, {res['machine']['cpus']} CPUs "
        f"(shared; load avg at end {res['machine']['load_avg_at_end'][0]:.2f}).",
        "",
        "| target | provider | precision | bare p50 ms (baseline) | suite p50 ms | × | "
        "bare p95 ms | suite p95 ms | × | overhead p50 µs | whole suite s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['target']} | {r['provider']} | {r['precision']} | {r['baseline_p50_ms']:.4f} "
            f"| {r['suite_p50_ms']:.4f} | {r['p50_ratio']:.2f} | {r['baseline_p95_ms']:.4f} | "
            f"{r['suite_p95_ms']:.4f} | {r['p95_ratio']:.2f} | {r['p50_overhead_us']:.1f} | "
            f"{r['suite_wall_s_median']:.1f} |")
    lines += [f"\nNot measured: {n}" for n in res["not_measured"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and runs")
    ap.add_argument("--targets", default="",
                    help="comma-separated subset of the targets to measure (default: all found)")
    ap.add_argument("--suffix", default="",
                    help="write results/hardware_tests.SUFFIX.{json,md} (e.g. a GPU machine's "
                         "figures kept beside this machine's)")
    args = ap.parse_args(argv)
    res = measure(args.quick, tuple(t for t in args.targets.split(",") if t))
    md = table(res)
    stem = "hardware_tests" + (f".{args.suffix}" if args.suffix else "")
    atomic_write(RESULTS / f"{stem}.json",
                 json.dumps(res, indent=2, sort_keys=True).encode() + b"\n")
    atomic_write(RESULTS / f"{stem}.md", md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

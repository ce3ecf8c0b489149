"""Benchmark the TFLite backend on three real architectures, side by side with ONNX Runtime.

For each model (MobileNet-style classifier and segmenter with ConvTranspose/Resize from
benchmarks/models/, an audio 1D-CNN from benchmarks/models/tflite/; the GRU forecaster, which
the results file shows refused, converts since GRU is unrolled (not re-run here)) and each
precision (fp32, fp16, int8-dynamic for tflite-cpu; full-integer int8 per-tensor as for the Edge
TPU and per-axis-on-conv as for Ethos-U), in one run: conversion time and peak Python heap
(tracemalloc) and peak-RSS growth of :func:`converters.tflite.convert` (each conversion in a
fresh process, after its imports), artifact size next to the ONNX source, LiteRT
latency (XNNPACK, median/p95) next to ONNX Runtime FP32 latency on the same input and thread
count, and output agreement with ONNX Runtime FP32 on the validation set (max relative error,
cosine, top-1 agreement; per-pixel argmax agreement for the segmenter).

Goals from the issue: FP32 within 1e-4 relative; INT8 top-1 agreement >= 98% and cosine >= 0.98.

    python -m benchmarks.converter_tflite [--threads 1] [--runs 50] [--samples 200]

``--zoo [MODEL ...]`` instead runs the pretrained real-model zoo (tests/realzoo.py) through
edgeops and, beside it in the same run, onnx2tf from a separate benchmark-only venv with
TensorFlow (``--onnx2tf-venv``; absent: its columns are skipped): conversion time and peak
RSS, op and TRANSPOSE counts, LiteRT latency (1 thread, interleaved) and error against ONNX
Runtime; results in ``results/converter_tflite.zoo.{json,md}`` (see ``_tflite_zoo.py``).
Issue 23's goals: every model onnx2tf converts, edgeops converts; LiteRT latency <= onnx2tf's
(goal 10% below); conversion >= 4x faster without TensorFlow; FP32 error <= 1e-4.
``--zoo NAME ...`` re-runs only those models (``--zoo-rounds``: latency rounds, default 7)
and keeps the other rows of the results file.

``--zoo-int8 [MODEL ...]``: full-integer Edge TPU / Ethos-U builds of the OCR zoo models, before
(``--effort fast``) vs after the quantisation engine, on the task metric (issue 16; see
``_tflite_zoo_int8.py``); results in ``results/converter_tflite.zoo_int8.{json,md}``.

``--fullint-localise [MODEL]``: where a full-integer detector (default ``ocr-det-640``) loses
its mask IoU, by simulated quantisation of one part at a time, and what 16-bit activations would
buy (``_fullint_localise.py``); results in
``results/converter_tflite.issue16-fullintdbnet.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# name -> (model, calibration npz, validation npz); the first two come from
# benchmarks/models/make_models.py, the audio CNN from benchmarks/_tflite_models.py
MODELS: dict[str, tuple[Path, Path, Path]] = {
    name: (HERE / "models" / f"{name}.onnx", HERE / "models" / f"{name}.cal.npz",
           HERE / "models" / f"{name}.val.npz") for name in ("mobilenet", "segnet", "resnet", "gru")
}
MODELS["audio"] = (HERE / "models" / "tflite" / "audio.onnx",
                   HERE / "models" / "tflite" / "audio.calibration.npz",
                   HERE / "models" / "tflite" / "audio.validation.npz")
VARIANTS = [  # (label, precision, per_channel, int8 I/O, target it stands for)
    ("fp32", "fp32", True, False, "tflite-cpu"),
    ("fp16", "fp16", True, False, "tflite-cpu"),
    ("int8-dynamic", "int8-dynamic", True, False, "tflite-cpu"),
    ("int8 float I/O", "int8", True, False, "tflite-cpu"),
    ("int8 per-tensor", "int8", False, True, "edgetpu"),
    ("int8 per-axis conv", "int8", "conv-only", True, "ethos-u"),
]


def _goal(precision: str, row: dict[str, Any]) -> bool | None:
    """The issue's bars. Cosine is the mean over samples, as the build's accuracy gate reads
    it (edgeops/compare.py); the table shows the minimum beside it."""
    if precision == "fp32":
        return bool(row["max_rel_error"] <= 1e-4)
    if precision == "int8":
        return bool(row.get("top1_agreement", 1.0) >= 0.98 and row["cosine_mean"] >= 0.98)
    return None


def _paired_latency(fn_a: Any, fn_b: Any, runs: int) -> tuple[tuple[float, float],
                                                               tuple[float, float]]:
    """Latency of two callables timed alternately, so both see the same machine load."""
    for _ in range(5):
        fn_a()
        fn_b()
    ta, tb = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn_a()
        t1 = time.perf_counter()
        fn_b()
        t2 = time.perf_counter()
        ta.append((t1 - t0) * 1e3)
        tb.append((t2 - t1) * 1e3)
    return ((float(np.median(ta)), float(np.percentile(ta, 95))),
            (float(np.median(tb)), float(np.percentile(tb, 95))))


def _convert_child(path: str, precision: str, per_channel: object, io_int8: bool,
                   cal: np.ndarray, inp: str, target: str) -> dict[str, Any]:
    """Runs in a fresh process: conversion time, peak heap, and peak RSS over the imports
    (this process's own, VmHWM: ``ru_maxrss`` would carry the parent's across the spawn)."""
    import onnx.reference

    import converters.tflite._quant  # noqa: F401 - imports before the baseline RSS
    from benchmarks._rss import peak_rss_mib
    from converters.tflite import convert

    model = onnx.load(path)
    rss0 = peak_rss_mib()
    tracemalloc.start()
    t0 = time.perf_counter()
    res = convert(model, precision=precision, per_channel=per_channel,  # type: ignore[arg-type]
                  calibration=({inp: cal[i:i + 1]} for i in range(len(cal))), io_int8=io_int8,
                  target=target)
    conv_s = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss1 = peak_rss_mib()
    return {"model": res.model, "convert_s": conv_s, "peak_heap": peak,
            "peak_rss_kib": round(rss1 * 1024), "rss_before_kib": round(rss0 * 1024)}


def _agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    r = ref.reshape(ref.shape[0], -1).astype(np.float64)
    g = got.reshape(got.shape[0], -1).astype(np.float64)
    cos = (r * g).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1) + 1e-30)
    out = {"max_rel_error": float(np.abs(r - g).max() / max(np.abs(r).max(), 1e-12)),
           "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}
    if ref.ndim == 2 or ref.ndim == 4:
        out["top1_agreement"] = float((ref.argmax(1) == got.argmax(1)).mean())
    return out


def _ort_int8_baseline(path: Path, inp: str, cal: np.ndarray, val: np.ndarray,
                       ref: np.ndarray, threads: int, runs: int,
                       fp32_once: Any) -> dict[str, Any]:
    """ONNX Runtime's own static INT8 (QDQ, per-channel, minmax) on the same calibration data."""
    import tempfile

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter(range(len(cal)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self.it, None)
            return None if i is None else {inp: cal[i:i + 1]}

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.onnx"
        t0 = time.perf_counter()
        quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True)
        conv_s = time.perf_counter() - t0
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
        got = np.concatenate([sess.run(None, {inp: val[i:i + 1]})[0] for i in range(len(val))])
        x0 = val[:1]
        (p50, p95), (f50, _) = _paired_latency(lambda: sess.run(None, {inp: x0}), fp32_once,
                                               runs)
        size = out.stat().st_size
    return {"variant": "baseline: ORT int8 QDQ", "target": "x86-cpu/arm64-cpu (onnx)",
            "convert_s": round(conv_s, 3), "size_bytes": size,
            "litert_p50_ms": None, "ort_int8_p50_ms": round(p50, 3),
            "ort_int8_p95_ms": round(p95, 3), "ort_fp32_p50_ms": round(f50, 3),
            **{k: float(f"{v:.4g}") for k, v in _agreement(ref, got).items()}}


def bench_model(name: str, threads: int, runs: int, n_samples: int) -> list[dict[str, Any]]:
    import onnxruntime as ort

    from converters.tflite import compatibility_report, convert
    from converters.tflite._runtime import LiteRT
    from converters.tflite.convert import to_artifact_layout, to_onnx_layout
    from edgeops.errors import EdgeOpsError

    path, cal_path, val_path = MODELS[name]
    model = onnx.load(str(path))
    inp = model.graph.input[0].name
    with np.load(cal_path) as z:
        cal = z[inp].astype(np.float32)
    with np.load(val_path) as z:
        val = z[inp][:n_samples].astype(np.float32)
    try:
        convert(model)
    except EdgeOpsError as exc:   # a model the backend refuses: record the one-line error
        print(f"{name:10s} refused: {exc.diagnostics()}", flush=True)
        return [{"model": name, "refused": exc.diagnostics()}]
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run(None, {inp: val[i:i + 1]})[0] for i in range(len(val))])
    x0 = val[:1]

    def ort_once() -> object:
        return sess.run(None, {inp: x0})

    rows = []
    for label, precision, per_channel, io_int8, target in VARIANTS:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            child = pool.submit(_convert_child, str(path), precision, per_channel, io_int8,
                                cal, inp, target).result()
        conv_s, peak = child["convert_s"], child["peak_heap"]
        # the same conversion in this process, for the graph the report and NPU check read
        res = convert(model, precision=precision, per_channel=per_channel,
                      calibration=({inp: cal[i:i + 1]} for i in range(len(cal))),
                      io_int8=io_int8, target=target)
        assert res.model == child["model"], "conversion is not deterministic"
        rt = LiteRT(res.model, threads=threads)
        rec_in = res.io_layout[inp]
        rec_out = res.io_layout[res.output_names[0]]
        got = []
        for i in range(len(val)):
            (y,) = rt.run_float([to_artifact_layout(val[i:i + 1], rec_in)])
            got.append(to_onnx_layout(y, rec_out))
        agree = _agreement(ref, np.concatenate(got))
        feed = rt.quantise_inputs([to_artifact_layout(x0, rec_in)])
        (p50, p95), (ort_p50, ort_p95) = _paired_latency(
            lambda f=feed, r=rt: r.run(f), ort_once, runs)  # type: ignore[misc]
        row: dict[str, Any] = {
            "model": name, "variant": label, "target": target, "samples": len(val),
            "convert_s": round(conv_s, 3), "convert_peak_heap_mib": round(peak / 2**20, 1),
            "convert_peak_rss_mib": round(child["peak_rss_kib"] / 1024, 1),
            "convert_rss_growth_mib": round((child["peak_rss_kib"]
                                             - child["rss_before_kib"]) / 1024, 1),
            "size_bytes": len(res.model), "onnx_size_bytes": path.stat().st_size,
            "litert_p50_ms": round(p50, 3), "litert_p95_ms": round(p95, 3),
            "ort_fp32_p50_ms": round(ort_p50, 3), "ort_fp32_p95_ms": round(ort_p95, 3),
            "latency_ratio_vs_ort": round(p50 / ort_p50, 3),
            "transposes": res.graph.op_counts().get("TRANSPOSE", 0),
            "ops": len(res.graph.ops),
            **{k: float(f"{v:.4g}") for k, v in agree.items()},
        }
        row["goal_met"] = _goal(precision, row)
        if precision == "int8":
            if target in ("edgetpu", "ethos-u"):
                rep = compatibility_report(res.graph, target)
                row["npu"] = {"accelerator": rep["accelerator"], "npu_ops": rep["npu_ops"],
                              "total_ops": rep["total_ops"], "segments": rep["segments"],
                              "first_fallback": rep["first_fallback"]}
            row["float_ops"] = res.details.get("float_ops")
        rows.append(row)
        if label == "int8 per-axis conv":
            base = _ort_int8_baseline(path, inp, cal, val, ref, threads, runs, ort_once)
            base.update(model=name, onnx_size_bytes=path.stat().st_size, samples=len(val))
            rows.append(base)
            print(f"{name:10s} ORT int8 baseline    p50 {base['ort_int8_p50_ms']:.3f} ms  "
                  f"cos {base['cosine_min']:.5f}  top1 {base.get('top1_agreement', 1.0):.4f}")
        print(f"{name:10s} {label:19s} conv {conv_s:6.2f}s  size {len(res.model) / 1024:7.1f} KiB"
              f"  p50 {p50:7.3f} ms (ORT {ort_p50:.3f})  cos {agree['cosine_min']:.5f}"
              f"  top1 {agree.get('top1_agreement', float('nan')):.4f}", flush=True)
    return rows


def _markdown(doc: dict[str, Any]) -> str:
    lines = [f"# TFLite converter benchmark ({doc['machine']['litert']}, "
             f"{doc['params']['threads']} thread(s))", "",
             f"Machine: {doc['machine']['processor']} / {doc['machine']['python']}; "
             f"onnxruntime {doc['machine']['onnxruntime']}; {doc['params']['runs']} timed runs, "
             f"median; validation samples per model: up to {doc['params']['samples']} "
             "(the `samples` field of each JSON row). Load average (1 min) before/after: "
             f"{doc['load_average_1m']['before']}/{doc['load_average_1m']['after']} on "
             f"{doc['load_average_1m']['cpus']} CPUs: latencies on a loaded machine are noisy; "
             "compare the ratio column (paired runs), not absolute times.", "",
             "| model | variant | convert s | peak heap / process RSS MiB | size KiB (ONNX) |"
             " LiteRT p50 ms |"
             " ORT FP32 p50 ms | ratio | max rel err | cosine mean (min) | top-1 agree | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        if "refused" in r:
            lines.append(f"| {r['model']} | refused | {r['refused']} |" + " |" * 9)
            continue
        top1 = r.get("top1_agreement")
        goal = {True: "met", False: "MISSED", None: "-"}[r.get("goal_met")]
        if r["litert_p50_ms"] is None:      # the ONNX Runtime INT8 baseline row
            lines.append(
                f"| {r['model']} | {r['variant']} | {r['convert_s']:.2f} | - | "
                f"{r['size_bytes'] / 1024:.0f} ({r['onnx_size_bytes'] / 1024:.0f}) | "
                f"(ORT int8) {r['ort_int8_p50_ms']:.3f} | {r['ort_fp32_p50_ms']:.3f} | "
                f"{r['ort_int8_p50_ms'] / r['ort_fp32_p50_ms']:.2f} | "
                f"{r['max_rel_error']:.2e} | {r['cosine_mean']:.4f} ({r['cosine_min']:.4f}) | "
                f"{'-' if top1 is None else f'{top1:.4f}'} | baseline |")
            continue
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['convert_s']:.2f} | "
            f"{r['convert_peak_heap_mib']:.1f} / {r['convert_peak_rss_mib']:.0f} | "
            f"{r['size_bytes'] / 1024:.0f} "
            f"({r['onnx_size_bytes'] / 1024:.0f}) | {r['litert_p50_ms']:.3f} | "
            f"{r['ort_fp32_p50_ms']:.3f} | {r['latency_ratio_vs_ort']:.2f} | "
            f"{r['max_rel_error']:.2e} | {r['cosine_mean']:.4f} ({r['cosine_min']:.4f}) | "
            f"{'-' if top1 is None else f'{top1:.4f}'} | {goal} |")
    lines += ["", "convert s: cold conversion in a fresh process (imports excluded, first-use "
              "costs of onnx.reference and LiteRT included). peak heap: tracemalloc during the "
              "conversion; process RSS: peak resident size of that process (imports included; "
              "VmHWM, its own). "
              "ratio = LiteRT p50 / ONNX Runtime FP32 p50 (same input, same threads, timed "
              "alternately run by run so both see the same machine load). "
              "Goals: fp32 max relative error <= 1e-4; int8 top-1 agreement >= 0.98 and "
              "cosine >= 0.98, cosine averaged over samples as the build's accuracy gate "
              "reads it (the worst sample in brackets); segmenter: per-pixel argmax "
              "agreement.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--models", nargs="*",
                    default=["mobilenet", "resnet", "segnet", "audio", "gru"],
                    choices=sorted(MODELS))
    ap.add_argument("--zoo", nargs="*", default=None, metavar="MODEL",
                    help="instead: the real-model zoo (tests/realzoo.py) beside onnx2tf; "
                         "no names = every zoo model")
    ap.add_argument("--zoo-rounds", type=int, default=7,
                    help="interleaved latency rounds per zoo model (default 7)")
    ap.add_argument("--onnx2tf-venv", type=Path, default=Path("/work/onnx2tf-venv"),
                    help="venv with onnx2tf + TensorFlow; absent = onnx2tf columns skipped")
    ap.add_argument("--zoo-int8", nargs="*", default=None, metavar="MODEL",
                    help="instead: full-integer edgetpu/ethos-u builds of zoo models before vs "
                         "after the quantisation engine (issue 16; _tflite_zoo_int8.py)")
    ap.add_argument("--fullint-localise", nargs="?", const="ocr-det-640", default=None,
                    metavar="MODEL",
                    help="instead: where a full-integer detector loses its mask IoU "
                         "(_fullint_localise.py)")
    ap.add_argument("--zoo-int8-samples", type=int, default=None,
                    help="calibration (= validation) samples per model (default: per model)")
    args = ap.parse_args(argv)
    if args.zoo_int8 is not None:
        return _zoo_int8_main(args.zoo_int8, args.zoo_int8_samples)
    if args.fullint_localise is not None:
        return _localise_main(args.fullint_localise, args.zoo_int8_samples)
    if args.zoo is not None:
        return _zoo_main(args.zoo, args.onnx2tf_venv, args.zoo_rounds)
    # import the converter's lazy dependencies up front so the first conversion is not charged
    import os

    import onnx.reference  # noqa: F401

    import converters.tflite  # noqa: F401

    load_before = os.getloadavg()
    results = []
    for name in args.models:
        if not MODELS[name][0].exists():
            print(f"{name}: {MODELS[name][0]} missing (python -m benchmarks.models.make_models)")
            continue
        results.extend(bench_model(name, args.threads, args.runs, args.samples))
    doc = {
        "benchmark": "converter_tflite",
        "machine": {"processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "litert": f"ai-edge-litert {version('ai-edge-litert')}",
                    "onnxruntime": version("onnxruntime"), "onnx": version("onnx"),
                    "numpy": version("numpy")},
        "params": {"threads": args.threads, "runs": args.runs, "samples": args.samples},
        "load_average_1m": {"before": round(load_before[0], 2),
                            "after": round(os.getloadavg()[0], 2),
                            "cpus": os.cpu_count()},
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "converter_tflite.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / "converter_tflite.md").write_text(_markdown(doc))
    return 0


def _litert_machine() -> dict[str, Any]:
    """What a LiteRT-vs-ORT results file states about the machine, load before the run."""
    import os

    return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "litert": f"ai-edge-litert {version('ai-edge-litert')}",
            "onnxruntime": version("onnxruntime"), "load_before": round(os.getloadavg()[0], 2)}


def _localise_main(name: str, samples: int | None) -> int:
    import os
    import sys

    from benchmarks._fullint_localise import localise, markdown

    sys.path.insert(0, str(HERE.parent))          # tests.realzoo / tests.zoo_inputs
    machine = _litert_machine()
    res = localise(name, samples)
    machine["load_after"] = round(os.getloadavg()[0], 2)
    RESULTS.mkdir(exist_ok=True)
    stem = "converter_tflite.issue16-fullintdbnet"       # not with_suffix: the name has a dot
    doc = {"benchmark": f"converter_tflite --fullint-localise {name}", "machine": machine,
           "results": res}
    (RESULTS / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(res, machine)
    (RESULTS / f"{stem}.md").write_text(md)
    print(md)
    return 0


def _zoo_int8_main(names: list[str], samples: int | None) -> int:
    import os
    import sys

    from benchmarks._tflite_zoo_int8 import INT8_ZOO, bench_fullint, markdown

    sys.path.insert(0, str(HERE.parent))          # tests.realzoo / tests.zoo_inputs
    machine = _litert_machine()
    rows = bench_fullint(names or list(INT8_ZOO), samples)
    machine["load_after"] = round(os.getloadavg()[0], 2)
    RESULTS.mkdir(exist_ok=True)
    old = RESULTS / "converter_tflite.zoo_int8.json"
    if names and old.exists():                  # keep the other models' rows, marked as such
        prev = json.loads(old.read_text())
        kept = [{**r, "earlier_run": r.get("earlier_run", prev["machine"])}
                for r in prev.get("results", []) if r["model"] not in names]
        rows = [r for m in INT8_ZOO for r in kept + rows if r["model"] == m]
    doc = {"benchmark": "converter_tflite --zoo-int8", "machine": machine, "results": rows}
    (RESULTS / "converter_tflite.zoo_int8.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(rows, machine)
    (RESULTS / "converter_tflite.zoo_int8.md").write_text(md)
    print(md)
    return 0


def _zoo_main(names: list[str], venv: Path, rounds: int = 7) -> int:
    import os

    from benchmarks._tflite_zoo import ZOO_SHAPES, bench_zoo, markdown

    o2t = venv if (venv / "bin" / "onnx2tf").exists() else None
    machine = _litert_machine()
    if o2t is not None:
        import subprocess

        pip = subprocess.run([str(o2t / "bin" / "python"), "-m", "pip", "list",
                              "--format=json"], capture_output=True, text=True, check=False)
        vers = {p["name"].lower(): p["version"] for p in json.loads(pip.stdout or "[]")}
        machine["onnx2tf"] = (f"{vers.get('onnx2tf')} (tensorflow {vers.get('tensorflow')}, "
                              f"in {o2t})")
    RESULTS.mkdir(exist_ok=True)

    def write(rows: list[dict[str, Any]]) -> None:      # after every model: nothing lost
        machine["load_after"] = round(os.getloadavg()[0], 2)
        doc = {"benchmark": "converter_tflite --zoo", "machine": machine, "results": rows}
        (RESULTS / "converter_tflite.zoo.json").write_text(json.dumps(doc, indent=2) + "\n")
        (RESULTS / "converter_tflite.zoo.md").write_text(markdown(rows, machine))

    # a run of some models updates their rows and keeps the others from the previous run
    json_path = RESULTS / "converter_tflite.zoo.json"
    kept: list[dict[str, Any]] = []
    if names and json_path.exists():
        kept = [r for r in json.loads(json_path.read_text()).get("results", [])
                if r.get("model") not in names]
        if kept:
            machine["merged"] = (f"Rows of {', '.join(names)} from this run ({rounds} rounds); "
                                 "the others kept from earlier runs.")

    def merged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_name = {r["model"]: r for r in kept + rows}
        return [by_name[m] for m in ZOO_SHAPES if m in by_name]

    def write_merged(rows: list[dict[str, Any]]) -> None:
        write(merged(rows))

    write_merged(bench_zoo(names or list(ZOO_SHAPES), o2t, rounds=rounds,
                           progress=write_merged))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

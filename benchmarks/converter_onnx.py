"""x86-cpu INT8 benchmark: FP32 vs ONNX Runtime's stock quantize_static vs `edgeops build`.

    python -m benchmarks.converter_onnx [--threads 1] [--rounds 5] [--runs 20] [--models a,b]

Side by side in one run on one machine, for each model in benchmarks/models (PyTorch exports
with trained weights; see make_models.py):

* ``fp32``: the source model in ONNX Runtime (default session optimisations);
* ``stock``: ``quantize_static`` with its defaults except QDQ + per-channel (the stock
  recommendation), after the opset upgrade it needs (our models are opset 17: none), MinMax,
  the same calibration samples;
* ``edgeops``: the artifact `edgeops build --target x86-cpu` accepts (converters.build): 7-bit
  weights (``reduce_range``), exact on every x86 CPU;
* ``edgeops-vnni``: the same build for ``--target x86-cpu-vnni``: full 8-bit weights, which only
  a CPU with VNNI runs without saturating, so the cost of 7-bit weights on a VNNI CPU is the
  difference between the two rows (run on a CPU without VNNI, this row's accuracy is that
  CPU's saturating kernels: not what a VNNI device gets);
* ``edgeops-int8``: the same build with ``--no-perf-aware``: every node the accuracy budget
  allows is INT8 even where it measured slower, so the quantiser's accuracy is visible on a
  model whose perf-aware build stayed (partly) float.

Latency: batch 1, the stated intra-op threads, ``rounds`` interleaved rounds of ``runs`` runs
each (so drift hits all variants alike), median and p95 over all runs. Accuracy vs FP32 on the
validation set: cosine similarity (mean and min over samples), top-1 agreement and top-1
accuracy for classifiers, pixel agreement for segmentation. Results go to
benchmarks/results/converter_onnx.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeops.errors import EdgeOpsError

MODELS_DIR = Path(__file__).resolve().parent / "models"
RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("mobilenet", "resnet", "segnet", "gru")


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _outputs(sess: Any, x: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _cosine(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    r = ref.reshape(len(ref), -1).astype(np.float64)
    g = got.reshape(len(got), -1).astype(np.float64)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    return np.where(den > 0, (r * g).sum(1) / np.where(den > 0, den, 1), 0.0)


def _accuracy(name: str, ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None
              ) -> dict[str, float]:
    cos = _cosine(ref, got)
    out = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
           "max_abs_error": float(np.abs(ref - got).max())}
    if ref.ndim == 2 and ref.shape[1] > 1 and name != "gru":
        out["top1_agreement"] = float((ref.argmax(1) == got.argmax(1)).mean())
        if labels is not None:
            out["top1_accuracy"] = float((got.argmax(1) == labels).mean())
    if ref.ndim == 4:
        out["pixel_agreement"] = float((ref.argmax(1) == got.argmax(1)).mean())
    return out


def _stock(src: Path, cal: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import QuantFormat, quantize_static

    class Reader:
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= len(cal):
                return None
            self.i += 1
            return {"input": cal[self.i - 1:self.i]}

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    return out


def _ours(src: Path, name: str, work: Path, threads: int, perf_aware: bool = True,
          target: str = "x86-cpu") -> tuple[Path, dict[str, Any], float]:
    from converters.api import BuildRequest
    from converters.build import build

    req = BuildRequest(model=src, name=name, version="1.0.0", targets=(target,),
                       calibration=MODELS_DIR / f"{name}.cal.npz",
                       validation=MODELS_DIR / f"{name}.val.npz", threads=threads,
                       options={"perf_cache": False, "perf_aware": perf_aware})
    t0 = time.perf_counter()
    (art,) = build(req, lambda m: print(f"    {m}", file=sys.stderr), work).artifacts
    return art.path, art.details, time.perf_counter() - t0


def _latency(sessions: dict[str, Any], x: np.ndarray, rounds: int, runs: int, batch: int = 1,
             warmup: int = 3) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {k: [] for k in sessions}
    feeds = {k: {s.get_inputs()[0].name: x[:batch]} for k, s in sessions.items()}
    for s_name, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[s_name])
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feeds[k])
                times[k].append((time.perf_counter() - t0) * 1000)
    return {k: {"p50_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)),
                "runs": len(v)} for k, v in times.items()}


def _cpu() -> dict[str, Any]:
    from converters.onnx_quant import cpu_facts
    from hardware_tests.machine import cpu_model

    return {"model": cpu_model(), **cpu_facts()}


def run(models: tuple[str, ...], threads: int, rounds: int, runs: int) -> dict[str, Any]:
    import onnx
    import onnxruntime

    result: dict[str, Any] = {
        "threads": threads, "rounds": rounds, "runs_per_round": runs, "batch": 1,
        "cpu": _cpu(), "versions": {"onnxruntime": onnxruntime.__version__,
                                    "onnx": onnx.__version__, "numpy": np.__version__,
                                    "python": platform.python_version()},
        "models": {}, "loadavg_start": list(os.getloadavg())}
    for name in models:
        print(f"== {name}", file=sys.stderr)
        src = MODELS_DIR / f"{name}.onnx"
        with np.load(MODELS_DIR / f"{name}.cal.npz") as z:
            cal = z["input"].astype(np.float32)
        with np.load(MODELS_DIR / f"{name}.val.npz") as z:
            val = z["input"].astype(np.float32)
            labels = z["labels"] if "labels" in z.files else None
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            stock = _stock(src, cal, Path(tmp) / "stock.onnx")
            stock_s = time.perf_counter() - t0
            try:
                ours, details, ours_s = _ours(src, name, Path(tmp) / "work", threads)
                full, full_details, full_s = _ours(src, name, Path(tmp) / "work-int8", threads,
                                                   perf_aware=False)
                vnni, vnni_details, vnni_s = _ours(src, name, Path(tmp) / "work-vnni", threads,
                                                   target="x86-cpu-vnni")
            except EdgeOpsError as exc:       # recorded, not hidden: the gate refused it
                print(f"   edgeops build failed: {exc.diagnostics()}", file=sys.stderr)
                result["models"][name] = {"edgeops_error": exc.diagnostics()}
                continue
            paths = {"fp32": src, "stock": stock, "edgeops": ours, "edgeops-int8": full,
                     "edgeops-vnni": vnni}
            sessions = {k: _session(p, threads) for k, p in paths.items()}
            ref = _outputs(sessions["fp32"], val)
            acc = {k: _accuracy(name, ref, _outputs(s, val), labels) for k, s in sessions.items()}
            lat = _latency(sessions, val, rounds, runs)
            sizes = {k: p.stat().st_size for k, p in paths.items()}
        entry: dict[str, dict[str, Any]] = {
            k: {"size_bytes": sizes[k], **lat[k], **acc[k],
                "speedup_vs_fp32": lat["fp32"]["p50_ms"] / lat[k]["p50_ms"]}
            for k in paths}
        for k, d, secs in (("edgeops", details, ours_s), ("edgeops-int8", full_details, full_s),
                           ("edgeops-vnni", vnni_details, vnni_s)):
            entry[k]["float_nodes"] = len(d.get("float_nodes", {}))
            entry[k]["float_node_reasons"] = sorted(
                {v.split(":")[0] for v in d.get("float_nodes", {}).values()})
            entry[k]["quantised_nodes"] = d.get("quantised_nodes")
            entry[k]["plan"] = d.get("plan", {}).get("reason")
            entry[k]["reduce_range"] = d.get("plan", {}).get("reduce_range")
            entry[k]["build_s"] = secs
            entry[k]["performance"] = d.get("performance")
        entry["stock"]["build_s"] = stock_s
        entry["goals"] = {
            "edgeops_at_least_as_fast_as_stock":
                lat["edgeops"]["p50_ms"] <= lat["stock"]["p50_ms"] * 1.02,
            "edgeops_at_least_as_accurate_as_stock":
                acc["edgeops"]["cosine_mean"] >= acc["stock"]["cosine_mean"] - 1e-4,
            # like for like: stock writes 8-bit weights, as x86-cpu-vnni does
            "edgeops_vnni_at_least_as_accurate_as_stock":
                acc["edgeops-vnni"]["cosine_mean"] >= acc["stock"]["cosine_mean"] - 1e-4,
        }
        result["models"][name] = entry
        print(f"   fp32 {lat['fp32']['p50_ms']:.3f} ms  stock {lat['stock']['p50_ms']:.3f} ms "
              f"(cos {acc['stock']['cosine_mean']:.4f})  edgeops {lat['edgeops']['p50_ms']:.3f}"
              f" ms (cos {acc['edgeops']['cosine_mean']:.4f})", file=sys.stderr)
    result["loadavg_end"] = list(os.getloadavg())
    return result


def markdown(r: dict[str, Any]) -> str:
    cpu = r["cpu"]
    isa = "VNNI" if cpu["vnni"] else ("AVX-512, no VNNI" if cpu["avx512"] else "AVX2, no VNNI")
    lines = [
        "## ONNX converter, x86 INT8: FP32 vs stock quantize_static vs edgeops", "",
        f"CPU: {cpu['model']} ({isa}); {r['threads']} intra-op thread(s), batch 1; "
        f"latency = median (p95) of {r['rounds']}×{r['runs_per_round']} interleaved runs. "
        f"onnxruntime {r['versions']['onnxruntime']}, onnx {r['versions']['onnx']}, "
        f"numpy {r['versions']['numpy']}, Python {r['versions']['python']}. Machine load "
        f"average (1 min) {r['loadavg_start'][0]:.1f} at start, {r['loadavg_end'][0]:.1f} at "
        "end: other work shared the cores, so p95 is noisy; the interleaved medians compare.",
        "",
        "| model | variant | size KiB | p50 ms (p95) | speedup vs FP32 | cosine mean / min "
        "| top-1 agree | top-1 acc / pixel agree | float nodes |",
        "|---|---|---|---|---|---|---|---|---|"]
    for name, e in r["models"].items():
        if "edgeops_error" in e:
            lines.append(f"| {name} | edgeops | build refused: {e['edgeops_error']} |||||||")
            continue
        for k in ("fp32", "stock", "edgeops", "edgeops-int8", "edgeops-vnni"):
            if k not in e:          # results written before the row existed
                continue
            v = e[k]
            extra = v.get("top1_accuracy", v.get("pixel_agreement"))
            lines.append(
                f"| {name} | {k} | {v['size_bytes'] / 1024:.0f} | {v['p50_ms']:.3f} "
                f"({v['p95_ms']:.3f}) | {v['speedup_vs_fp32']:.2f}× | {v['cosine_mean']:.4f} / "
                f"{v['cosine_min']:.4f} | {v.get('top1_agreement', '-')} | "
                f"{'-' if extra is None else f'{extra:.3f}'} | "
                f"{v.get('float_nodes', '-') if k.startswith('edgeops') else '-'} |")
    lines += ["", "Goals per model (edgeops vs stock): " + "; ".join(
        f"{n}: faster-or-equal {'yes' if e['goals']['edgeops_at_least_as_fast_as_stock'] else 'NO'}"
        f", as-accurate {'yes' if e['goals']['edgeops_at_least_as_accurate_as_stock'] else 'NO'}"
        + (f" (edgeops-vnni, 8-bit like stock: "
           f"{'yes' if e['goals']['edgeops_vnni_at_least_as_accurate_as_stock'] else 'NO'})"
           if "edgeops_vnni_at_least_as_accurate_as_stock" in e["goals"] else "")
        for n, e in r["models"].items() if "goals" in e),
        "", "Performance-aware pass (edgeops row): " + "; ".join(
            _perf_line(n, e["edgeops"]) for n, e in r["models"].items() if "edgeops" in e),
        "", "edgeops-int8 = the same build with --no-perf-aware (INT8 wherever the accuracy "
        "budget allows, even where measured slower): the quantiser's accuracy on its own. "
        "edgeops and edgeops-int8 are --target x86-cpu (7-bit weights, exact on every x86 CPU); "
        "edgeops-vnni is --target x86-cpu-vnni (8-bit weights, for CPUs with VNNI only). stock "
        "writes 8-bit weights too: on a CPU without VNNI it runs saturating kernels.", ""]
    return "\n".join(lines)


def _perf_line(name: str, v: dict[str, Any]) -> str:
    p = v.get("performance")
    if not p:
        return f"{name}: not run"
    first = p.get("first_speedup")
    return (f"{name}: {p['outcome']}" + (f" (INT8 measured {first:.2f}× FP32 in the pass)"
                                        if first is not None else "")
            + f", {p.get('comparisons', 0)} comparisons, {p.get('measured_s', 0):.1f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    r = run(tuple(args.models.split(",")), args.threads, args.rounds, args.runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "converter_onnx.json").write_text(json.dumps(r, indent=2, sort_keys=True) + "\n")
    md = markdown(r)
    (RESULTS / "converter_onnx.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

"""Pretrained models from PyPI wheels: FP32 vs ONNX Runtime's stock quantize_static vs ours.

    python -m benchmarks.converter_zoo [--models ocr-cls,magika] [--samples 8] [--rounds 5]
                                       [--runs 5] [--threads 1] [--no-perf-aware] [--merge]

``--merge`` keeps the models of the last results file that this run does not measure (each
row marked with the settings of the run that measured it), so a slow model need not be rerun
with every table.

For each model of the real-model zoo (tests/realzoo.py: pinned wheels, cached under
~/.cache/edgeops-test-models; inputs from tests/zoo_inputs.py, made of the photos, scans and
text the test suite uses), side by side in one run on one machine:

* ``fp32``: the source model in ONNX Runtime (default session optimisations);
* ``stock``: ``quantize_static`` with QDQ + per-channel (the stock recommendation) after the
  opset-13 upgrade it needs, MinMax, the same calibration samples;
* ``edgeops``: what ``edgeops build --target x86-cpu`` (default settings) accepts, or the one
  line it refuses with, and how long the build took.

Accuracy vs FP32 on the validation samples: the task metric the build's gate reads (the task
``auto`` infers, or the one named per model below), computed the same way for stock and ours,
what else that metric measured (``task_details``; for a dense detection head the cosine of
its class-score channels, shown in the table: it was a ``> 0.9`` assertion on YOLOv8n in
tests/converters/test_zoo_real.py, a quality figure, so it is measured here),
and the raw cosine (over each sample's whole first output, mean over samples) that a naive gate
would have read. Latency: batch 1, ``threads`` intra-op threads, ``rounds`` interleaved rounds
of ``runs`` runs each, medians. Results go to benchmarks/results/converter_zoo.{json,md}.
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# model -> --task (None: auto)
MODELS: dict[str, str | None] = {"ocr-cls": None, "magika": None, "ocr-det": "text-detection",
                                 "ocr-det-small": None, "ocr-rec": None, "name-encoder": None,
                                 "yolov8-doc": None, "quantised-encoder": None,
                                 "nucleus-seg-256": "segmentation"}
# model -> input size where the zoo's default is not the one issue 16 measures at
SIZES: dict[str, dict[str, int]] = {"ocr-det": {"size": 640}}


def _source(name: str) -> Path:
    """The zoo model's .onnx: a pinned file, or one made from it (tests/realzoo_made.py)."""
    from tests.realzoo import model_path
    from tests.realzoo_made import nucleus_seg

    return nucleus_seg(256) if name == "nucleus-seg-256" else model_path(name)


def _session(path: Path | bytes, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so,
                                providers=["CPUExecutionProvider"])


def _feeds(data: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(data.values())))
    return [{k: v[i:i + 1] for k, v in data.items()} for i in range(n)]


def _run(sess: Any, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    from edgeops.golden import stack_outputs

    names = [o.name for o in sess.get_outputs()]
    per: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for f in feeds:
        for n, v in zip(names, sess.run(names, f), strict=True):
            per[n].append(np.asarray(v))
    return {n: stack_outputs(v) for n, v in per.items()}


def _raw_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    r = ref.reshape(len(ref), -1).astype(np.float64)
    g = got.reshape(len(got), -1).astype(np.float64)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    return float(np.where(den > 0, (r * g).sum(1) / np.where(den > 0, den, 1), 0.0).mean())


def _stock(src: Path, feeds: list[dict[str, np.ndarray]], out: Path) -> Path:
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_static

    m = onnx.load(str(src))
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        m = onnx.version_converter.convert_version(m, 13)
    up = out.with_suffix(".src.onnx")
    onnx.save_model(m, str(up))
    it = iter(feeds)

    class Reader:
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(it, None)

    quantize_static(str(up), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    return out


def _ours(src: Path, cal: Path, task: str | None, work: Path, threads: int, perf_aware: bool,
          effort: str = "default", target: str = "x86-cpu") -> tuple[Any, float]:
    from converters.api import BuildRequest
    from converters.build import build

    req = BuildRequest(model=src, name="zoo", version="1.0.0", targets=(target,),
                       calibration=cal, threads=threads,
                       options={"perf_aware": perf_aware, "effort": effort,
                                **({"task": task} if task else {})})
    t0 = time.perf_counter()
    (art,) = build(req, lambda m: print(f"    {m}", file=sys.stderr), work).artifacts
    return art, time.perf_counter() - t0


def _latency(sessions: dict[str, Any], feed: dict[str, np.ndarray], rounds: int, runs: int
             ) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, feed)
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feed)
                times[k].append((time.perf_counter() - t0) * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}


def one(name: str, samples: int, threads: int, rounds: int, runs: int, perf_aware: bool,
        effort: str = "default", target: str = "x86-cpu") -> dict[str, Any]:
    import onnx

    from converters.tasks import infer_task, task_score
    from edgeops.errors import EdgeOpsError
    from tests.zoo_inputs import INPUTS

    src = _source(name)
    data = INPUTS[name](samples, **SIZES.get(name, {}))
    feeds = _feeds(data)
    entry: dict[str, Any] = {"samples": samples}
    with tempfile.TemporaryDirectory(prefix="edgeops-zoo-") as tmp:
        cal = Path(tmp) / "cal.npz"
        np.savez(cal, **data)
        sessions: dict[str, Any] = {"fp32": _session(src, threads)}
        ref = _run(sessions["fp32"], feeds)
        spec = infer_task(onnx.load(str(src)), ref, {k: v.shape for k, v in feeds[0].items()},
                          MODELS.get(name) or "auto")
        entry["task"] = {"task": spec.task, "inferred": spec.inferred, "why": spec.why}
        try:
            t0 = time.perf_counter()
            stock = _stock(src, feeds, Path(tmp) / "stock.onnx")
            entry["stock"] = {"build_s": time.perf_counter() - t0}
            sessions["stock"] = _session(stock, threads)
        except Exception as exc:            # recorded: the stock quantiser fails on some
            entry["stock"] = {"error": str(exc).splitlines()[0][:200]}
        try:
            art, secs = _ours(src, cal, MODELS.get(name), Path(tmp) / "work", threads,
                              perf_aware, effort, target)
            entry["edgeops"] = {"build_s": secs, "precision": art.precision,
                                "float_nodes": len(art.details.get("float_nodes", {})),
                                "quantised_nodes": art.details.get("quantised_nodes"),
                                "quantisation_passes": art.details.get("quantisation_passes"),
                                **({"pass": art.details["pass"]} if "pass" in art.details
                                   else {})}
            sessions["edgeops"] = _session(art.path, threads)
        except EdgeOpsError as exc:          # the gate refused: recorded, not hidden
            entry["edgeops"] = {"error": exc.diagnostics()}
        except Exception as exc:            # a converter bug: recorded too
            entry["edgeops"] = {"error": f"{type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0][:200]}"}
        first = next(iter(ref))
        for k, s in sessions.items():
            out = ref if k == "fp32" else _run(s, feeds)
            score = task_score(spec, ref, out)
            entry.setdefault(k, {}).update({
                "task_metric": score.metric, "task_value": score.value,
                "task_drop": score.drop, "task_details": score.details,
                "raw_cosine": _raw_cosine(ref[first], out[first])})
        lat = _latency(sessions, feeds[0], rounds, runs)
        for k, v in lat.items():
            entry[k].update({"p50_ms": v, "speedup_vs_fp32": lat["fp32"] / v})
    return entry


def run(models: list[str], samples: int, threads: int, rounds: int, runs: int,
        perf_aware: bool, effort: str = "default", target: str = "x86-cpu") -> dict[str, Any]:
    import onnx
    import onnxruntime

    from converters.onnx_quant import cpu_facts

    result: dict[str, Any] = {
        "threads": threads, "rounds": rounds, "runs_per_round": runs, "samples": samples,
        "perf_aware": perf_aware, "effort": effort, "target": target, "cpu": cpu_facts(),
        "input_sizes": SIZES,
        "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "loadavg_start": list(os.getloadavg()), "models": {}}
    for name in models:
        print(f"== {name}", file=sys.stderr)
        result["models"][name] = one(name, samples, threads, rounds, runs, perf_aware, effort,
                                     target)
    result["loadavg_end"] = list(os.getloadavg())
    return result


def _cell(v: dict[str, Any], key: str, fmt: str) -> str:
    return "-" if key not in v else format(v[key], fmt)


_RUN_KEYS = ("threads", "rounds", "runs_per_round", "samples", "perf_aware", "loadavg_start",
             "loadavg_end", "versions", "cpu")


def _earlier(run: dict[str, Any]) -> str:
    # The header states this run's ISA; a row from a run on another CPU must say its own.
    isa = "" if "cpu" not in run else "VNNI, " if run["cpu"].get("vnni") else "no VNNI, "
    return (f"[earlier run: {isa}perf-aware {'on' if run['perf_aware'] else 'off'}, "
            f"{run['samples']} samples, {run['rounds']}×{run['runs_per_round']} runs]")


def merged(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """``new`` plus the models only ``old`` measured, each tagged with ``old``'s settings."""
    out = {**new, "models": dict(new["models"])}
    for name, e in old.get("models", {}).items():
        if name not in out["models"]:
            out["models"][name] = {**e, "earlier_run": e.get("earlier_run") or {
                k: old[k] for k in _RUN_KEYS if k in old}}
    return out


def _sizes(sizes: dict[str, dict[str, int]]) -> str:
    return "".join(f"; {k} input {v['size']}x{v['size']}" for k, v in sizes.items())


def _short(error: str) -> str:
    """A refusal without the layers it names (either wording) or its hint."""
    return error.split("; most sensitive")[0].split("; limited by")[0].split(" (hint:")[0]


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "## Converter on pretrained models: FP32 vs stock quantize_static vs edgeops "
        f"({r.get('target', 'x86-cpu')} INT8)", "",
        f"{r['threads']} intra-op thread(s), batch 1, latency = median of {r['rounds']}×"
        f"{r['runs_per_round']} interleaved runs; {r['samples']} real samples per model "
        "(calibration = validation); onnxruntime "
        f"{r['versions']['onnxruntime']}, onnx {r['versions']['onnx']}, numpy "
        f"{r['versions']['numpy']}, Python {r['versions']['python']}; "
        f"{'VNNI' if r['cpu'].get('vnni') else 'no VNNI'}; "
        f"perf-aware pass {'on' if r['perf_aware'] else 'off'}"
        f"{'; edgeops effort ' + r['effort'] if 'effort' in r else ''}"
        f"{_sizes(r.get('input_sizes', {}))}"
        ". Load average "
        f"{r['loadavg_start'][0]:.1f} → {r['loadavg_end'][0]:.1f} (shared cores).", "",
        "| model | task (how chosen) | variant | p50 ms | speedup | task metric vs FP32 "
        "| raw cosine | build s | note |",
        "|---|---|---|---:|---:|---|---:|---:|---|"]
    for name, e in r["models"].items():
        task = f"{e['task']['task']} ({'auto' if e['task']['inferred'] else '--task'})"
        if "earlier_run" in e:
            task += " " + _earlier(e["earlier_run"])
        for k in ("fp32", "stock", "edgeops"):
            v = e.get(k, {})
            metric = (f"{v['task_metric']} {v['task_value']:.4f}" if "task_value" in v else "-")
            if "class_score_cosine" in v.get("task_details", {}):   # detection: the class scores
                metric += f", class-score cosine {v['task_details']['class_score_cosine']:.4f}"
            note = _short(v.get("error", ""))
            note = (f"{'refused' if ' dropped ' in note else 'failed'}: {note}" if note
                    else "")
            if k == "edgeops" and "float_nodes" in v:
                note = f"{v['float_nodes']} node(s) float, {v['quantised_nodes']} quantised"
            if k == "edgeops" and v.get("pass") == "prequantised":
                note = "already quantised: shipped as it is (pass: prequantised)"
            lines.append(f"| {name} | {task} | {k} | {_cell(v, 'p50_ms', '.2f')} | "
                         f"{_cell(v, 'speedup_vs_fp32', '.2f')}"
                         f"{'×' if 'speedup_vs_fp32' in v else ''} | {metric} | "
                         f"{_cell(v, 'raw_cosine', '.4f')} | {_cell(v, 'build_s', '.1f')} | "
                         f"{note.replace('|', '/')} |")
    fast = r.get("effort_fast_same_machine")
    if fast:   # the same models built with --effort fast (no pass) in a parallel run
        lines += ["", "Same machine, same settings, `--effort fast` (MinMax, no engine pass), "
                  "run alongside: " + "; ".join(
                      f"{k}: {_short(v.get('error', '')) or 'built'}"
                      for k, v in fast.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(ROOT))             # tests.realzoo / tests.zoo_inputs
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-perf-aware", dest="perf_aware", action="store_false")
    ap.add_argument("--effort", choices=("fast", "default", "max"), default="default",
                    help="edgeops' quantisation effort (fast: MinMax only, no passes)")
    ap.add_argument("--target", default="x86-cpu", choices=("x86-cpu", "x86-cpu-vnni"),
                    help="edgeops' target (x86-cpu-vnni: 8-bit weights, VNNI CPUs only)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the last results' models that this run does not measure")
    ap.add_argument("--markdown-only", action="store_true",
                    help="rewrite converter_zoo.md from the last converter_zoo.json")
    args = ap.parse_args(argv)
    # Another target's table is a variant of this benchmark (benchmarks/README.md shows both).
    stem = "converter_zoo" if args.target == "x86-cpu" else f"converter_zoo.{args.target}"
    if args.markdown_only:
        md = markdown(json.loads((RESULTS / f"{stem}.json").read_text()))
        (RESULTS / f"{stem}.md").write_text(md)
        print(md)
        return
    r = run(args.models.split(","), args.samples, args.threads, args.rounds, args.runs,
            args.perf_aware, args.effort, args.target)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.merge and (RESULTS / f"{stem}.json").exists():
        r = merged(r, json.loads((RESULTS / f"{stem}.json").read_text()))
    (RESULTS / f"{stem}.json").write_text(json.dumps(r, indent=2, sort_keys=True,
                                                     default=str) + "\n")
    md = markdown(r)
    (RESULTS / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

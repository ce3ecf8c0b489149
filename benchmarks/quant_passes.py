"""INT8 engine passes, one at a time: the task metric of the fully quantised model per pass.

    python -m benchmarks.quant_passes [--models ocr-rec,ocr-det-small] [--samples 6]
                                      [--variants fast,mse_ranges,...,default]

For each real zoo model (tests/realzoo.py, inputs from tests/zoo_inputs.py), ``edgeops build
--target x86-cpu`` is run once per variant with the gate opened (``max_accuracy_drop`` 0.99)
and the performance-aware pass off, so nothing goes float except the post-processing tail:
what is measured is what the pass itself does to accuracy, not what the fallback loops hide.
Variants: ``fast`` (MinMax, no pass: the baseline, same run), each pass alone, ``default``
and ``max`` (the efforts' pass lists); ``--target x86-cpu-vnni`` for 8-bit weights. Metric:
the task metric the build's gate reads, on the same samples (calibration = validation, as in
converter_zoo). Results in benchmarks/results/quant_passes.*.
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
VARIANTS = ("fast", "mse_ranges", "cross_layer_equalisation", "bias_correction", "smoothquant",
            "adaround", "default", "max")


def one(name: str, samples: int, variants: list[str], target: str = "x86-cpu"
        ) -> dict[str, Any]:
    import onnx

    from benchmarks.converter_zoo import MODELS, _feeds, _run, _session, _source
    from converters.api import BuildRequest
    from converters.build import build
    from converters.tasks import infer_task, task_score
    from tests.zoo_inputs import INPUTS

    src = _source(name)
    data = INPUTS[name](samples)
    feeds = _feeds(data)
    ref = _run(_session(src, 1), feeds)
    task = MODELS.get(name)
    spec = infer_task(onnx.load(str(src)), ref, {k: v.shape for k, v in feeds[0].items()},
                      task or "auto")
    out: dict[str, Any] = {"task": spec.task, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="edgeops-qp-") as tmp:
        cal = Path(tmp) / "cal.npz"
        np.savez(cal, **data)
        for v in variants:
            opts: dict[str, Any] = {"perf_aware": False, **({"task": task} if task else {})}
            opts.update({"effort": v} if v in ("fast", "default", "max")
                        else {"quant_passes": v})
            req = BuildRequest(model=src, name="qp", version="1.0.0", targets=(target,),
                               calibration=cal, max_accuracy_drop=0.99, options=opts)
            work = Path(tmp) / v
            t0 = time.perf_counter()
            try:
                (art,) = build(req, lambda _m: None, work).artifacts
            except Exception as exc:           # recorded, not hidden
                out["variants"][v] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                continue
            secs = time.perf_counter() - t0
            score = task_score(spec, ref, _run(_session(art.path, 1), feeds))
            passes = art.details.get("quantisation_passes", {})
            out["variants"][v] = {
                "metric": score.metric, "value": score.value, "build_s": secs,
                "quantised_nodes": art.details.get("quantised_nodes"),
                "passes": {k: p["detail"] for k, p in passes.items()
                           if isinstance(p, dict)}}
            print(f"  {name} {v}: {score.metric} {score.value:.4f} ({secs:.0f} s)",
                  file=sys.stderr)
    return out


def markdown(r: dict[str, Any]) -> str:
    lines = [f"## INT8 engine passes one at a time ({r.get('target', 'x86-cpu')}, everything "
             "but the tail quantised)",
             "",
             f"{r['samples']} real samples per model (calibration = validation); gate opened, "
             "performance-aware pass off; onnxruntime "
             f"{r['versions']['onnxruntime']}, numpy {r['versions']['numpy']}, Python "
             f"{r['versions']['python']}. Load average {r['loadavg_start'][0]:.1f} → "
             f"{r['loadavg_end'][0]:.1f} (shared cores). `fast` = MinMax, no pass (baseline).",
             "", "| model | task | variant | task metric vs FP32 | vs fast | build s | what the "
             "pass did |", "|---|---|---|---|---:|---:|---|"]
    for name, e in r["models"].items():
        base = e["variants"].get("fast", {}).get("value")
        for v, x in e["variants"].items():
            if "error" in x:
                lines.append(f"| {name} | {e['task']} | {v} | - | - | - | failed: "
                             f"{x['error'].replace('|', '/')} |")
                continue
            did = "; ".join(f"{k}: {d}" for k, d in x["passes"].items()) or "-"
            delta = f"{x['value'] - base:+.4f}" if base is not None else "-"
            lines.append(f"| {name} | {e['task']} | {v} | {x['metric']} {x['value']:.4f} | "
                         f"{delta} | {x['build_s']:.0f} | {did.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ocr-rec,ocr-det-small")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--target", default="x86-cpu",
                    help="target profile built (x86-cpu: 7-bit weights; x86-cpu-vnni: 8-bit)")
    args = ap.parse_args(argv)
    import onnxruntime

    r: dict[str, Any] = {"samples": args.samples, "target": args.target,
                         "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
                         "loadavg_start": list(os.getloadavg()),
                         "versions": {"onnxruntime": onnxruntime.__version__,
                                      "numpy": np.__version__,
                                      "python": platform.python_version()},
                         "models": {}}
    for name in args.models.split(","):
        print(f"== {name}", file=sys.stderr)
        r["models"][name] = one(name, args.samples, args.variants.split(","), args.target)
    r["loadavg_end"] = list(os.getloadavg())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quant_passes.json").write_text(json.dumps(r, indent=2, sort_keys=True) + "\n")
    md = markdown(r)
    (RESULTS / "quant_passes.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

"""Full-integer TFLite builds of zoo models, before vs after the quantisation engine (issue 16).

    python -m benchmarks.converter_tflite --zoo-int8 [MODEL ...] [--zoo-int8-samples N]

Per model and target (``edgetpu``: per-tensor weights; ``ethos-u``: per-channel conv weights),
in one run on one machine, ``edgeops build`` twice with the same data:

* ``before``: ``--effort fast``: MinMax ranges from the float graph in LiteRT and plain
  symmetric int8 weights, exactly the full-integer path before the engine fed it;
* ``after``: the default effort: conv-bias folding, equalisation and bias correction on the
  prepared ONNX graph, MSE ranges, every candidate validated and the best kept on the task
  metric;
* ``max``: ``--effort max``: the default plus AdaRound's weight rounding on the TFLite
  writer's own grid (per tensor on Edge TPU), itself kept only where it scores better.

Calibration and validation are disjoint: for the classifier, alternate pairs of its real
inputs (tests/zoo_inputs.py); for the detectors, distinct random windows of the printed-text
scans (two seeds); the task metric (top-1 agreement for the direction classifier, mask
IoU at the DB threshold for the detectors) is read in LiteRT against FP32 in ONNX Runtime, as
the build's gate reads it. The budget is set to 0.99 so that every artifact is measured; the
``gate at 1%`` column says whether the default budget would have accepted it. Issue 16's
goals: hard-swish classifier top-1 agreement >= 0.97, DBNet-style detector mask IoU >= 0.85.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INT8_ZOO", "bench_fullint", "markdown"]

# model -> (input name, spatial size fed to tests/zoo_inputs or None, --task, samples per half)
INT8_ZOO: dict[str, tuple[str, int | None, str | None, int]] = {
    "ocr-cls": ("x", None, None, 48),
    "ocr-det-small": ("x", 320, "text-detection", 8),
    "ocr-det": ("x", 320, "text-detection", 8),
    "ocr-det-640": ("x", 640, "text-detection", 8),
}
TARGETS = ("edgetpu", "ethos-u")
# a model measured at another input size: the zoo file it is made of
_FILE = {"ocr-det-640": "ocr-det"}
# row label -> --effort
EFFORTS = (("before", "fast"), ("after", "default"), ("max", "max"))


def _text_windows(n: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """Square windows (40-80% of the short side, random offsets) of the two printed-text scans,
    resized to ``size``, normalised as tests/zoo_inputs.ocr_det does (its windows are 50-100%
    of the short side; these results were measured with 40-80%)."""
    from tests.zoo_inputs import _MEAN, _STD, text_windows

    x_ = (text_windows(n, size, seed, scale=(0.4, 0.8)) / 255.0 - _MEAN) / _STD
    return {"x": x_.transpose(0, 3, 1, 2).astype(np.float32)}


def _data(name: str, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    from tests.zoo_inputs import INPUTS

    _, size, _, _ = INT8_ZOO[name]
    if size is not None:                       # the detectors: distinct windows per half
        return _text_windows(n, size, seed=1), _text_windows(n, size, seed=2)
    both = INPUTS[name](2 * n, size) if size else INPUTS[name](2 * n)
    # pairs alternate between the halves: the classifier's inputs alternate upright / upside
    # down, so each half gets both classes
    cal = (np.arange(2 * n) // 2) % 2 == 0
    return ({k: v[cal] for k, v in both.items()}, {k: v[~cal] for k, v in both.items()})


def _one(name: str, target: str, effort: str, cal: Path, val: Path, shape: tuple[int, ...],
         work: Path) -> dict[str, Any]:
    from converters.api import BuildRequest
    from converters.build import build
    from edgeops.errors import EdgeOpsError
    from tests.realzoo import model_path

    inp, _, task, _ = INT8_ZOO[name]
    req = BuildRequest(model=model_path(_FILE.get(name, name)), name="zoo", version="1.0.0",
                       targets=(target,),
                       calibration=cal, validation=val, input_shapes={inp: shape},
                       max_accuracy_drop=0.99, threads=1,
                       options={"effort": effort, **({"task": task} if task else {})})
    t0 = time.perf_counter()
    try:
        (art,) = build(req, lambda m: print(f"    {m}", file=sys.stderr), work).artifacts
    except EdgeOpsError as exc:
        return {"error": exc.diagnostics(), "build_s": round(time.perf_counter() - t0, 1)}
    acc = art.metrics["accuracy"]
    passes = art.details.get("quantisation_passes", {})
    used = [k for k, o in passes.items()
            if isinstance(o, dict) and o.get("status") == "applied" and o.get("used", True)]
    folded = art.details.get("graph_passes", {}).get("conv_bias_adds_folded")
    if folded:
        used.insert(0, f"{folded} conv-bias Adds folded")
    return {"build_s": round(time.perf_counter() - t0, 1), "metric": acc["gate_metric"],
            "value": acc.get("task", {}).get("value"), "drop": acc["drop"],
            "gate_1pct": acc["drop"] <= 0.01, "used": used,
            "choices": {k: o.get("gate_drop_by_choice") for k, o in passes.items()
                        if isinstance(o, dict) and "gate_drop_by_choice" in o},
            "graph_passes": art.details.get("graph_passes", {})}


def bench_fullint(names: list[str], samples: int | None = None) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        n_default = INT8_ZOO[name][3]
        n = samples or n_default
        cal_data, val_data = _data(name, n)
        shape = (1, *next(iter(cal_data.values())).shape[1:])
        with tempfile.TemporaryDirectory(prefix="edgeops-int8-zoo-") as tmp:
            cal, val = Path(tmp) / "cal.npz", Path(tmp) / "val.npz"
            np.savez(cal, **cal_data)
            np.savez(val, **val_data)
            for target in TARGETS:
                row: dict[str, Any] = {"model": name, "target": target, "input": list(shape),
                                       "samples": {"calibration": n, "validation": n}}
                for label, effort in EFFORTS:
                    print(f"== {name} {target} {label}", file=sys.stderr)
                    row[label] = _one(name, target, effort, cal, val, shape,
                                      Path(tmp) / f"{target}-{label}")
                rows.append(row)
    return rows


def _cell(v: dict[str, Any]) -> str:
    if "error" in v:
        return f"error: {v['error'][:80]}"
    return f"{v['metric']} {v['value']:.4f}" if v.get("value") is not None else "-"


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = ["## Full-integer TFLite on zoo models: before vs after the quantisation engine", "",
             f"{machine.get('processor')}, {machine.get('cpus')} CPUs (shared), "
             f"{machine.get('litert')}, onnxruntime {machine.get('onnxruntime')}; LiteRT 1 thread; "
             f"load average {machine.get('load_before')} -> {machine.get('load_after')}. "
             "Before = `--effort fast` (MinMax, plain int8 weights: the path before issue 16); "
             "after = default effort; max = `--effort max` (AdaRound on the writer's grid). "
             "Calibration and validation disjoint, real inputs.", "",
             "| model (input) | target | samples cal/val | before | after | max | gate at 1% "
             "before/after/max | after: chosen | max: chosen | build s before/after/max |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, a, x = r["before"], r["after"], r.get("max", {})
        note = " [earlier run]" if "earlier_run" in r else ""
        lines.append(
            f"| {r['model']} ({'x'.join(map(str, r['input'][2:]))}){note} | {r['target']} | "
            f"{r['samples']['calibration']}/{r['samples']['validation']} | {_cell(b)} | "
            f"{_cell(a)} | {_cell(x) if x else 'not run'} | "
            f"{'/'.join(_gate(v) for v in (b, a, x))} | {', '.join(a.get('used', [])) or '-'} | "
            f"{', '.join(x.get('used', [])) or '-'} | "
            f"{b.get('build_s')}/{a.get('build_s')}/{x.get('build_s', '-')} |")
    lines += ["", "Every candidate's gate drop (after), as recorded in the artifact's "
              "`details.quantisation_passes`: the best with and without equalisation, then "
              "ranges x bias correction within the equalisation variant kept. The `minmax` "
              "candidate is not the `before` artifact: its ranges were calibrated on the "
              "bias-corrected graph, as on the ONNX path.", ""]
    for label in ("after", "max"):
        for r in rows:
            ch = r.get(label, {}).get("choices", {})
            table = {**ch.get("cross_layer_equalisation", {}), **ch.get("mse_ranges", {})}
            if table:
                lines.append(f"* {r['model']} {r['target']} ({label}): " + ", ".join(
                    f"{k} {v:.4f}" for k, v in table.items()))
    return "\n".join(lines) + "\n"


def _gate(v: dict[str, Any]) -> str:
    return "-" if not v else "pass" if v.get("gate_1pct") else "fail"

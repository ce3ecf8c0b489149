"""Build time and outcome of ``edgeops build`` on pretrained models, per CPU target.

    python -m benchmarks.mixed_precision [--models ocr-rec,ocr-cls,nucleus-seg-256]
        [--targets x86-cpu,x86-cpu-vnni] [--samples 8] [--threads 1] [--out FILE]

What issue 16's "mixed precision by measurement" changes is the accuracy loop's cost and what it
settles on: one build per (model, target), default settings, a fresh ``$EDGEOPS_HOME`` per run
(so no per-machine perf cache from an earlier build is reused), and for each: wall time of the
build, accepted or the refusal line, the gate's metric and drop, how many nodes went float (and
why), uint16, the accuracy details the build recorded, and the artifact's speed-up over FP32
as the build's own acceptance measured it (p50, ``threads`` threads). The script uses only
``converters.build``'s public API, so the same file measures an older tree (run it with that
tree first on ``PYTHONPATH``) for the before/after table in benchmarks/README.md.
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
DEFAULT_MODELS = "ocr-rec,ocr-cls,nucleus-seg-256"
TASKS: dict[str, str | None] = {"nucleus-seg-256": "segmentation"}


def _accuracy_step_s(stages: list[tuple[float, str]], end: float) -> float | None:
    """Seconds from the progress line that opens the accuracy step ("... dropped X%; ...")
    to the end of the build: the step the change replaces (both trees print that line)."""
    start = next((t for t, m in stages if " dropped " in m), None)
    return None if start is None else round(end - start, 1)


def one(name: str, target: str, samples: int, threads: int, perf_aware: bool = True
        ) -> dict[str, Any]:
    from benchmarks.converter_zoo import _source
    from converters.api import BuildRequest
    from converters.build import build
    from edgeops.errors import EdgeOpsError
    from tests.zoo_inputs import INPUTS

    src = _source(name)
    data = INPUTS[name](samples)
    with tempfile.TemporaryDirectory(prefix="edgeops-mixprec-") as tmp:
        os.environ["EDGEOPS_HOME"] = str(Path(tmp) / "home")
        cal = Path(tmp) / "cal.npz"
        np.savez(cal, **data)
        task = TASKS.get(name)
        req = BuildRequest(model=src, name="zoo", version="1.0.0", targets=(target,),
                           calibration=cal, threads=threads,
                           options={"perf_aware": perf_aware,
                                    **({"task": task} if task else {})})
        t0 = time.perf_counter()
        stages: list[tuple[float, str]] = []

        def progress(m: str) -> None:
            stages.append((time.perf_counter() - t0, m))
            print(f"    {stages[-1][0]:7.1f}s {m}", file=sys.stderr)

        try:
            (art,) = build(req, progress, Path(tmp) / "work").artifacts
        except EdgeOpsError as exc:
            end = time.perf_counter() - t0
            return {"build_s": round(end, 1), "outcome": "refused",
                    "accuracy_step_s": _accuracy_step_s(stages, end),
                    "error": exc.diagnostics()}
        secs = time.perf_counter() - t0
        floats = art.details.get("float_nodes", {})
        acc = art.metrics["accuracy"]
        return {"build_s": round(secs, 1), "outcome": "accepted",
                "accuracy_step_s": _accuracy_step_s(stages, secs),
                "metric": acc["gate_metric"], "drop": acc["drop"],
                "task": acc.get("task"),
                "float_nodes": len(floats),
                "float_reasons": sorted({v.split(":")[0] for v in floats.values()}),
                "accuracy_float": sum(v.startswith("accuracy") for v in floats.values()),
                "quantised_nodes": art.details.get("quantised_nodes"),
                "mixed_precision": art.details.get("mixed_precision"),
                "speedup_vs_fp32": art.metrics["latency"].get("speedup_vs_fp32")}


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--targets", default="x86-cpu,x86-cpu-vnni")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-perf-aware", dest="perf_aware", action="store_false",
                    help="skip the performance-aware pass (isolates the accuracy step)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results"
                    / "mixed_precision.json")
    ap.add_argument("--against", type=Path, default=None,
                    help="results JSON of the same script run on the tree before the change "
                         "(same machine, alongside): shown as the 'before' rows")
    ap.add_argument("--markdown-only", action="store_true",
                    help="rewrite the .md from --out (and --against) without building")
    a = ap.parse_args(argv)
    if a.markdown_only:
        _write_md(a.out, json.loads(a.out.read_text()), a.against)
        return
    import onnxruntime

    from converters.onnx_plan import cpu_facts

    result: dict[str, Any] = {
        "threads": a.threads, "samples": a.samples, "cpu": cpu_facts(),
        "perf_aware": a.perf_aware,
        "versions": {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "loadavg_start": list(os.getloadavg()), "builds": {}}
    for name in a.models.split(","):
        for target in a.targets.split(","):
            print(f"== {name} {target}", file=sys.stderr)
            result["builds"][f"{name} {target}"] = one(name, target, a.samples, a.threads,
                                                          a.perf_aware)
            print(json.dumps(result["builds"][f"{name} {target}"], default=str)[:600],
                  file=sys.stderr)
    result["loadavg_end"] = list(os.getloadavg())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    _write_md(a.out, result, a.against)


def _write_md(out: Path, after: dict[str, Any], against: Path | None) -> None:
    before = json.loads(against.read_text()) if against else None
    v = after["versions"]
    lines = [
        "## Accuracy-aware step: mixed precision by measurement vs the doubling loop"
        + ("" if after.get("perf_aware", True) else " (performance-aware pass off)"), "",
        f"`edgeops build`, default settings, {after['samples']} real samples per model "
        f"(calibration = validation), speed-up = the build's own p50 vs FP32, "
        f"{after['threads']} thread(s); onnxruntime {v['onnxruntime']}, numpy {v['numpy']}, "
        f"Python {v['python']}; {'VNNI' if after['cpu'].get('vnni') else 'no VNNI'}. "
        f"Load average {after['loadavg_start'][0]:.1f} → {after['loadavg_end'][0]:.1f} "
        "(2 shared cores; the 'before' rows come from `--against`, a run of the older tree: "
        "build seconds compare only between runs started together).", "",
        "| model | target | tree | build s | accuracy step s | outcome | gate drop | "
        "float (accuracy) | measured layers | speed-up | note |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---|"]
    for key in after["builds"]:
        model, target = key.split(" ")
        for tree, run in (("before", before), ("after", after)):
            if run is None or key not in run["builds"]:
                continue
            b = run["builds"][key]
            mp = b.get("mixed_precision") or {}
            note = b.get("error", "").split(" (hint:")[0]
            if b["outcome"] == "accepted" and mp:
                note = (f"estimated {mp.get('first', {}).get('estimated_drop', 0):.2%}, "
                        f"verified {mp.get('verified_drop', 0):.2%}"
                        + ("; corrected once" if "correction" in mp else ""))
            measured = mp.get("measured_layers", "-") if tree == "after" else "-"
            step = b.get("accuracy_step_s")
            step_s = "-" if step is None else f"{step:.1f}"
            lines.append(
                f"| {model} | {target} | {tree} | {b['build_s']:.1f} | {step_s} | {b['outcome']} | "
                f"{b['drop']:.2%} | {b['float_nodes']} ({b['accuracy_float']}) | {measured} | "
                f"{b['speedup_vs_fp32']:.2f}× | {note.replace('|', '/')} |"
                if b["outcome"] == "accepted" else
                f"| {model} | {target} | {tree} | {b['build_s']:.1f} | {step_s} | refused | - | - | "
                f"{measured} | - | {note.replace('|', '/')} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""x86-cpu (no VNNI) INT8: 7-bit weights everywhere vs the per-layer exact bit split (issue 16).

    python -m benchmarks.x86_bit_split [--models ocr-cls,ocr-rec] [--threads 1]
                                       [--rounds 5] [--runs 5]

For each model of the real-model zoo (tests/realzoo.py, inputs from tests/zoo_inputs.py:
calibration on the test suite's sample count, validation on the samples after those, held out),
in
one run on one machine, ``edgeops build --target x86-cpu`` with ``--no-perf-aware`` and:

* ``before``: option ``bit_split="w7a8"`` (7-bit weights on every layer: the previous default);
* ``after``: the default (the split chosen on the task metric, converters/x86_bits).

Each twice: with a budget of 99 % (nothing floated: the task metric of the fully quantised
model, and its speed) and with the 1 % budget (the gate as users run it: built or refused, how
many nodes went float). Latency: batch 1, ``threads`` intra-op threads, ``rounds`` interleaved
rounds of ``runs`` runs each against the FP32 source, medians. Every artifact is also put
through the saturation checker (converters/x86_exact). Results go to
benchmarks/results/x86_bit_split.{json,md}.
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

from benchmarks.converter_zoo import _feeds, _latency, _session, _source

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLES = {"ocr-cls": 12, "ocr-rec": 6}          # calibration, as tests/converters/test_zoo_real.py
HELD_OUT = {"ocr-cls": 48, "ocr-rec": 24}        # validation: the samples after those
EFFORT = {"ocr-cls": "default", "ocr-rec": "fast"}


def _build(src: Path, cal: Path, val: Path, work: Path, budget: float, effort: str,
           split: str | None) -> tuple[Any, str, float]:
    from converters.api import BuildRequest
    from converters.build import build
    from edgeops.errors import EdgeOpsError

    req = BuildRequest(model=src, name="zoo", version="1.0.0", targets=("x86-cpu",),
                       calibration=cal, validation=val, max_accuracy_drop=budget, threads=1,
                       options={"perf_aware": False, "effort": effort,
                                **({"bit_split": split} if split else {})})
    t0 = time.perf_counter()
    try:
        (art,) = build(req, lambda m: print(f"    {m}", file=sys.stderr), work).artifacts
    except EdgeOpsError as exc:
        return None, str(exc), time.perf_counter() - t0
    return art, "", time.perf_counter() - t0


def _row(art: Any, refused: str, secs: float) -> dict[str, Any]:
    if art is None:
        return {"built": False, "refused": refused, "build_s": round(secs, 1)}
    import onnx

    from converters.x86_exact import saturation_violations

    acc = art.metrics["accuracy"]
    split = art.details["plan"].get("bit_split", {})
    layers = split.get("layers", {})
    return {"built": True, "build_s": round(secs, 1), "gate_metric": acc["gate_metric"],
            "drop": acc["drop"],
            "float_nodes": sum(str(v).startswith("accuracy")
                               for v in art.details["float_nodes"].values()),
            "policy": split.get("policy"),
            "score_by_policy": split.get("score_by_policy"),
            "layers_8bit_weights": sum(v["weight_bits"] == 8 for v in layers.values()),
            "layers": len(layers),
            "checker_violations": len(saturation_violations(onnx.load(str(art.path))))}


def one(name: str, threads: int, rounds: int, runs: int) -> dict[str, Any]:
    from tests.zoo_inputs import INPUTS

    src = _source(name)
    every = INPUTS[name](SAMPLES[name] + HELD_OUT[name])
    data = {k: v[:SAMPLES[name]] for k, v in every.items()}
    held = {k: v[SAMPLES[name]:] for k, v in every.items()}
    out: dict[str, Any] = {"calibration_samples": SAMPLES[name],
                           "validation_samples": HELD_OUT[name], "effort": EFFORT[name]}
    with tempfile.TemporaryDirectory() as tmp:
        cal, val = Path(tmp) / "data.npz", Path(tmp) / "val.npz"
        np.savez(cal, **data)
        np.savez(val, **held)
        sessions: dict[str, Any] = {"fp32": _session(src, threads)}
        for label, split in (("before", "w7a8"), ("after", None)):
            for budget in (0.99, 0.01):
                key = f"{label}@{budget:.0%}"
                print(f"  {name} {key}", file=sys.stderr)
                art, refused, secs = _build(src, cal, val, Path(tmp) / key, budget,
                                            EFFORT[name], split)
                out[key] = _row(art, refused, secs)
                if art is not None:
                    sessions[key] = _session(art.path, threads)
        lat = _latency(sessions, _feeds(data)[0], rounds, runs)
    out["latency_ms"] = {k: round(v, 3) for k, v in lat.items()}
    out["speedup_vs_fp32"] = {k: round(lat["fp32"] / v, 2) for k, v in lat.items()
                              if k != "fp32"}
    return out


def markdown(r: dict[str, Any]) -> str:
    lines = [f"{r['threads']} intra-op thread(s), batch 1, latency = median of interleaved runs; "
             f"onnxruntime {r['onnxruntime']}, {r['machine']}; perf-aware pass off. "
             f"Load average: {r.get('load', 'not recorded')}.", "",
             "| model | samples (calibration + held-out validation) | effort | build | policy chosen "
             "| task-metric drop vs FP32 | drop by policy | nodes float | 8-bit-weight layers "
             "| speed vs FP32 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        for key in ("before@99%", "after@99%", "before@1%", "after@1%"):
            row = m[key]
            head = (f"| {name} | {m.get('calibration_samples')} + {m.get('validation_samples')} "
                    f"| {m['effort']} | {key} |")
            if not row["built"]:
                lines.append(f"{head} | refused: {row['refused'][:110]} | | | | |")
                continue
            by = ", ".join(f"{p} {v['drop']:.2%}" for p, v in
                           (row.get("score_by_policy") or {}).items())
            lines.append(f"{head} {row['policy']} | {row['gate_metric']} {row['drop']:.2%} | "
                         f"{by} | {row['float_nodes']} | {row['layers_8bit_weights']}/"
                         f"{row['layers']} | {m['speedup_vs_fp32'].get(key, '')}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ocr-cls,ocr-rec")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args(argv)
    load = os.getloadavg()
    r = {"threads": a.threads, "onnxruntime": ort.__version__,
         "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
         "models": {m: one(m, a.threads, a.rounds, a.runs) for m in a.models.split(",")}}
    r["load"] = f"{load[0]:.1f} → {os.getloadavg()[0]:.1f} (shared cores)"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "x86_bit_split.json").write_text(json.dumps(r, indent=1))
    (RESULTS / "x86_bit_split.md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()

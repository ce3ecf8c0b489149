"""A/B of the two ways mixed precision lifts layers out of INT8 (issue 16, by hand, not in
``make bench``): for every set of layers the build's search verifies, the model quantised with
the set **excluded** (its producers stay fused INT8) and the same model with the set
**bypassed** (converters/qdq_bypass: the set reads its producers' float outputs), each scored
on the task metric and timed interleaved against the FP32 source in one process.

    PYTHONPATH=. python -m benchmarks._mixed_lift_ab 0.10 [x86-cpu-vnni] [ocr-det-640]

Writes ``benchmarks/results/mixed_lift_ab.<model>.<target>.<budget>.json``: per verified set,
layers lifted, gate drop excluded / bypassed, speed vs FP32 (median of 9 interleaved round
ratios, quartiles), how many layers ORT re-quantises on load (must be 0), and what shipped.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.converter_zoo import MODELS, RESULTS, _interleaved, _session, _source


def main(argv: list[str]) -> None:
    import onnx

    import converters.onnx_mixed as om
    from converters.api import BuildRequest
    from converters.build import build
    from converters.onnx_utils import save_model
    from converters.ort_float import runtime_quantised
    from converters.qdq_bypass import bypass_layers
    from converters.validate import gate_drop, run_onnx
    from tests.zoo_inputs import INPUTS

    budget = float(argv[0])
    target = argv[1] if len(argv) > 1 else "x86-cpu-vnni"
    name = argv[2] if len(argv) > 2 else "ocr-det-640"
    tmp = Path(tempfile.mkdtemp(prefix="edgeops-lift-ab-"))
    sets: list[dict[str, Any]] = []
    real = om.recover

    def recover(ctx: Any, **kw: Any) -> Any:
        make = kw["make"]

        def measure(model: Path) -> float:
            rep = ctx.data.accuracy_report(run_onnx(model, ctx.data.validation,
                                                    states=ctx.data.states))
            return float(gate_drop(rep, ctx.data.gate_metric)[1])

        def wrapped(exclude: set[str], wide: set[str] | None = None) -> Path:
            path = make(exclude, wide)
            lift = exclude - kw["already_float"]
            k = len(sets)
            excl = save_model(onnx.load(str(path)), tmp / f"excl{k}.onnx")
            byp = save_model(bypass_layers(onnx.load(str(path)), kw["float_model"], lift),
                             tmp / f"byp{k}.onnx")
            sets.append({"layers": len(lift), "drop_excluded": measure(excl),
                         "drop_bypassed": measure(byp),
                         "excluded_requantised_by_ort": len(runtime_quantised(
                             onnx.load(str(excl))))})
            print(json.dumps(sets[-1]), file=sys.stderr, flush=True)
            return path

        kw["make"] = wrapped
        return real(ctx, **kw)

    om.recover = recover
    src = _source(name)
    data = INPUTS[name](8)
    np.savez(tmp / "cal.npz", **data)
    req = BuildRequest(model=src, name="ab", version="1.0.0", targets=(target,),
                       calibration=tmp / "cal.npz", max_accuracy_drop=budget,
                       options={"perf_aware": False, "effort": "default",
                                **({"task": MODELS[name]} if MODELS.get(name) else {})})
    result: dict[str, Any] = {"model": name, "target": target, "budget": budget, "samples": 8,
                              "threads": 1, "load_before": os.getloadavg()[0]}
    try:
        (art,) = build(req, lambda m: print("  ", m, file=sys.stderr, flush=True),
                       tmp / "work").artifacts
        mp = art.details.get("mixed_precision", {})
        result["shipped"] = {"drop": art.metrics.get("accuracy", {}).get("drop"),
                             "float_nodes": len(art.details.get("float_nodes", {})),
                             "lift": mp.get("lift")}
    except Exception as exc:      # the gate's refusal is a result here
        result["refused"] = str(exc)
    feed = {k: v[:1] for k, v in data.items()}
    for k, row in enumerate(sets):
        sessions = {"fp32": _session(src, 1), "bypassed": _session(tmp / f"byp{k}.onnx", 1),
                    "excluded": _session(tmp / f"excl{k}.onnx", 1)}
        t = _interleaved(sessions, feed, 9, 3, round_budget_s=0.4)
        row["speed_vs_fp32"] = {v: {"median": round(t[v]["speedup_vs_fp32"], 3),
                                    "quartiles": [round(q, 3) for q in
                                                  t[v]["speedup_quartiles"]],
                                    "p50_ms": round(t[v]["p50_ms"], 2)}
                                for v in ("fp32", "excluded", "bypassed")}
        print(json.dumps(row), file=sys.stderr, flush=True)
    result["sets"] = sets
    result["load_after"] = os.getloadavg()[0]
    out = RESULTS / f"mixed_lift_ab.{name}.{target}.{budget:g}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main(sys.argv[1:])
    print(f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)

"""Runs inside the benchmark-only NNCF venv: one quantisation, then exits (never imports edgeops).

Why a separate process: NNCF 3.4 and its dependency tree (scikit-learn, scipy, networkx,
openvino-telemetry, ...) stay out of the project's environment; benchmarks/_nncf.py starts this
script with that venv's Python, one process per build, so the process's peak RSS is the build's
peak memory (imports included, as for the other builders of benchmarks/converter_zoo.py).

Request: one JSON object as the only argument::

    {"model": src.onnx, "calibration": cal.npz, "out": q.onnx, "preset": "performance"|"mixed",
     "fast_bias_correction": true, "model_type": null|"transformer"}

Answer: one JSON object on the last line of stdout: ``build_s`` (nncf.quantize and the save,
imports excluded), ``import_s``, ``peak_rss_mib`` and ``versions``; or ``{"error": "..."}``.
The calibration set is every sample of the npz (``subset_size`` = its length), one sample per
batch, the way the other quantisers of the benchmark read it.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from typing import Any


def _peak_rss_mib() -> float:
    """Own peak RSS (VmHWM): ``ru_maxrss`` would carry the parent's across fork and exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def quantise(req: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    import nncf
    import numpy as np
    import onnx

    t1 = time.perf_counter()
    with np.load(req["calibration"]) as z:
        data = {k: z[k] for k in z.files}
    n = len(next(iter(data.values())))
    feeds = [{k: v[i:i + 1] for k, v in data.items()} for i in range(n)]
    model = onnx.load(req["model"])
    kwargs: dict[str, Any] = {
        "preset": nncf.QuantizationPreset(req["preset"]), "subset_size": n,
        "fast_bias_correction": bool(req.get("fast_bias_correction", True))}
    if req.get("model_type") == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    q = nncf.quantize(model, nncf.Dataset(feeds), **kwargs)
    onnx.save(q, req["out"])
    return {"build_s": time.perf_counter() - t1, "import_s": t1 - t0,
            "peak_rss_mib": _peak_rss_mib(),
            "versions": {p: version(p) for p in ("nncf", "onnx", "onnxruntime", "numpy")}}


def main() -> int:
    try:
        resp = quantise(json.loads(sys.argv[1]))
    except Exception as exc:          # reported to the benchmark, which shows it in the row
        resp = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
                if str(exc).strip() else type(exc).__name__}
    sys.stdout.write("\n" + json.dumps(resp) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

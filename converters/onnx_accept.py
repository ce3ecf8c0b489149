"""Acceptance of an ONNX artifact: the one way every ONNX pass's output becomes a build result.

Each pass (FP32 graph optimisation, FP16, static/dynamic INT8, a prequantised source, the FP32
artifact shipped when nothing quantises) hands a model file to :func:`accept`, which loads and
runs it on the validation samples, compares with the FP32 reference, applies the accuracy gate,
measures latency against the FP32 source, derives the golden-check tolerance from measured
run-to-run behaviour, and writes the golden file.

A leaf below the passes and the dispatcher (converters/onnx_backend), so the import graph runs
one way: dispatcher -> passes -> accept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converters.api import BackendContext, BuiltArtifact, timed_on_target
from converters.data import SampleSet
from converters.onnx_perf import MIN_GAIN
from converters.ort_session import exact_products, open_session
from converters.validate import (
    accuracy_section,
    check_gate,
    gate_drop,
    latency_ms,
    run_onnx,
    write_golden,
)
from edgeops.errors import ConversionError
from edgeops.golden import sample_output

__all__ = ["LATENCY_RUNS", "accept", "measure_latency", "nice_ceil", "tolerance_for"]

LATENCY_RUNS = 30
LATENCY_WARMUP = 3
# Floors of the on-device golden tolerance, relative to the largest golden output magnitude:
# another CPU/ISA legitimately differs by float rounding (fp32), half-precision rounding (fp16)
# or one requantisation step (int).
_TOLERANCE_FLOOR = {"fp32": 1e-5, "fp16": 1e-3, "int8": 1e-2, "int8-dynamic": 1e-2,
                    "int16": 1e-3}
_RTOL = {"fp32": 1e-4, "fp16": 1e-2, "int8": 2e-2, "int8-dynamic": 2e-2, "int16": 5e-3}


def nice_ceil(x: float) -> float:
    """Round up to 1, 2 or 5 times a power of ten (stable across rebuilds)."""
    if x <= 0:
        return 0.0
    p = 10 ** math.floor(math.log10(x))
    return float(f"{next(m * p for m in (1, 2, 5, 10) if m * p >= x * (1 - 1e-12)):.1g}")


def tolerance_for(path: Path, ctx: BackendContext, golden_in: SampleSet,
                  golden_out: dict[str, np.ndarray]) -> dict[str, float]:
    """atol/rtol for the device's golden check, from measured run-to-run differences.

    The artifact is re-run with another thread count and with graph optimisations off (what a
    different CPU effectively does: other kernels, other summation order); the largest
    difference, doubled, or the precision's floor, whichever is larger, rounded up to 1-2-5.
    """
    import onnxruntime as ort

    diffs = [0.0]
    for threads, level in ((2, None), (1, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        if level is not None:
            so.graph_optimization_level = level
        exact_products(so)      # the golden outputs are exact (converters/ort_session)
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        for i in range(len(golden_in)):
            got = sess.run(names, golden_in.sample(i))
            for n, g in zip(names, got, strict=True):
                a = sample_output(np.asarray(g), golden_out[n], i)
                if np.issubdtype(a.dtype, np.number):
                    diffs.append(float(np.abs(a.astype(np.float64)
                                              - golden_out[n][i].astype(np.float64)).max()))
    scale = max((float(np.abs(v.astype(np.float64)).max()) for v in golden_out.values()
                 if v.size and np.issubdtype(v.dtype, np.number)), default=1.0)
    floor = _TOLERANCE_FLOOR.get(ctx.precision, 1e-3) * max(scale, 1e-6)
    return {"atol": nice_ceil(max(2 * max(diffs), floor)),
            "rtol": _RTOL.get(ctx.precision, 1e-2)}


def _fp32_latency(ctx: BackendContext) -> dict[str, Any]:
    """The FP32 source's latency on this target's providers, measured once per build."""
    memo = ctx.data.cache.fp32_latency
    key = (ctx.request.threads, ctx.profile.providers)
    if key not in memo:
        memo[key] = measure_latency(ctx.data.model_path, ctx)
    return memo[key]


def measure_latency(path: Path, ctx: BackendContext) -> dict[str, Any]:
    """p50/p95 on the best of the profile's providers this machine has, and which one that was.

    A cuda-gpu artifact timed on a CPU-only build machine runs on CPUExecutionProvider: that
    figure describes the build machine, not the target, and is never signed as the target's
    budget (converters/package.py); the recorded ``provider`` says which it is.
    """
    sess = open_session(Path(path), ctx.profile.providers, ctx.request.threads, timing=True)
    feed = ctx.data.validation.sample(0)
    lat: dict[str, Any] = dict(latency_ms(lambda: sess.run(None, feed), warmup=LATENCY_WARMUP,
                                          runs=LATENCY_RUNS))
    lat["provider"] = sess.get_providers()[0]
    return lat


def accept(ctx: BackendContext, path: Path, details: dict[str, Any], *,
           gate: bool = True) -> BuiltArtifact:
    """Load, run, compare, gate, time and golden-check an artifact; raise if it is not fit."""
    val = ctx.data.validation
    try:
        outputs = run_onnx(path, val, providers=ctx.profile.providers, states=ctx.data.states)
    except Exception as exc:
        # An artifact ONNX Runtime cannot load or run is a converter bug, never an output.
        raise ConversionError(f"target {ctx.profile.name}: the {ctx.precision} artifact does not "
                              f"run in ONNX Runtime ({str(exc).splitlines()[0]})",
                              hint="report this as an edgeops bug; use --precision fp32 meanwhile"
                              ) from None
    report = ctx.data.accuracy_report(outputs)
    gate_metric = ctx.data.gate_metric
    if gate:
        check_gate(report, ctx.request.max_accuracy_drop, ctx.profile.name, gate_metric)
    metric, drop = gate_drop(report, gate_metric, ctx.profile.name)
    n_golden = min(ctx.request.golden_samples, len(val))
    golden_in = _carried_golden(path, val.head(n_golden), ctx.data.states)
    golden_out = {k: v[:n_golden] if v.shape[0] == len(val) else v for k, v in outputs.items()}
    golden_path = ctx.workdir / "golden.npz"
    write_golden(golden_path, golden_in.arrays, golden_out)
    tolerance = tolerance_for(path, ctx, golden_in, golden_out)
    lat = measure_latency(path, ctx)
    base = _fp32_latency(ctx)
    size = path.stat().st_size
    latency: dict[str, Any] = {
        "p50_ms": round(lat["p50"], 4), "p95_ms": round(lat["p95"], 4),
        "fp32_p50_ms": round(base["p50"], 4), "fp32_p95_ms": round(base["p95"], 4),
        "speedup_vs_fp32": round(base["p50"] / lat["p50"], 3) if lat["p50"] else None,
        "threads": ctx.request.threads, "runs": LATENCY_RUNS, "provider": lat["provider"]}
    metrics: dict[str, Any] = {
        "size_bytes": size,
        "source_size_bytes": ctx.data.source.size,
        "accuracy": accuracy_section(report, metric, drop),
        "validation_samples": len(val),
        "latency": latency,
    }
    if not timed_on_target(ctx.profile.runtime, ctx.profile.providers, lat["provider"]):
        latency["warnings"] = [
            f"{ctx.profile.name}: latency measured on {lat['provider']} (this machine has no "
            f"{' or '.join(p for p in ctx.profile.providers if p != 'CPUExecutionProvider')}): "
            "a build-machine figure for the report only, never signed into the manifest; run "
            "the hardware suite on the device for the target's figure"]
    speedup = latency["speedup_vs_fp32"]
    # Warn past the perf pass's own noise margin only, and never for an artifact that the pass
    # left all float (it *is* the FP32 graph: any gap there is timing noise).
    if ctx.precision != "fp32" and speedup is not None and speedup < 1 / (1 + MIN_GAIN) \
            and details.get("quantised_nodes", 1) > 0 \
            and ctx.profile.providers == ("CPUExecutionProvider",):
        # Measured on the build machine: the user must know before shipping a slower model.
        # Kept with the latency (report only), as it varies run to run.
        latency["warnings"] = [
            f"{ctx.profile.name}: the {ctx.precision} artifact ran {1 / speedup:.2f}x slower "
            "than FP32 on the build machine (too little compute for INT8 to pay off); "
            "consider --precision fp32"]
    return BuiltArtifact(target=ctx.profile.name, path=path, format="onnx",
                         runtime=ctx.profile.runtime, providers=ctx.profile.providers,
                         precision=ctx.precision, golden_path=golden_path, metrics=metrics,
                         tolerance=tolerance, details=details)


def _carried_golden(path: Path, golden: SampleSet, states: Mapping[str, str]) -> SampleSet:
    """Golden inputs of a sequence hold the states the artifact itself carried, so the device
    gets the same outputs replaying them in order (carrying its own) or one by one."""
    if not states:
        return golden
    from converters.data import to_sample
    from converters.feeds import carry

    sess = open_session(Path(path), ("CPUExecutionProvider",), 1)
    names = list(states)
    fed = [f for f, _ in carry(lambda f: dict(zip(names, sess.run(names, f), strict=True)),
                               golden, states)]
    arrays = dict(golden.arrays)
    for i in states.values():
        arrays[i] = np.stack([to_sample(f[i], golden.batch_axes.get(i, 0)) for f in fed])
    return SampleSet(arrays, dict(golden.batch_axes))

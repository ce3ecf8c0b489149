"""The ``tflite`` backend: convert, run in LiteRT against the FP32 reference, gate, report.

Called by converters/build.py with a :class:`BackendContext`. Nothing reaches ``ctx.workdir``
until the model converted cleanly; the artifact and golden file are written atomically, and
the artifact is removed again if it fails to run or misses the accuracy gate.

Golden data (``golden.npz``) is in the *artifact's* I/O form, what a device feeds and reads back
without conversion: inputs/outputs in the artifact layout (``details["io_layout"]``: NHWC unless
``--keep-io-layout``) and dtype (int8 for full-integer targets, raw quantised values; the scale
and zero point are in ``details["io_quantization"]``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.api import BackendContext, BuiltArtifact
from converters.quant import passes_for
from converters.tflite._attribution import layer_errors, limiting_layers
from converters.tflite._fusion_perf import NPU_REWRITES, measured_rewrites
from converters.tflite._runtime import LiteRT, litert_version
from converters.tflite.convert import ConversionResult, convert, to_artifact_layout, to_onnx_layout
from converters.tflite.fullint import FullIntPlan, build_best, describe
from converters.tflite.npu import compatibility_report
from converters.validate import (
    accuracy_section,
    check_gate,
    gate_drop,
    latency_ms,
    task_note,
    write_golden,
)
from edgeops.errors import AccuracyGateError, ConversionError, EdgeOpsError
from edgeops.fsutil import atomic_write
from edgeops.golden import stack_outputs

__all__ = ["LATENCY_RUNS", "tflite_backend"]

LATENCY_RUNS = 30
LATENCY_WARMUP = 3
# On-device golden tolerance: float rounding (fp32), half-precision weights (fp16), hybrid
# activation quantisation (int8-dynamic); full-integer outputs are allowed two quantisation
# steps (raw int8 units for int8 I/O, the dequantised step for float I/O).
_RTOL = {"fp32": 1e-4, "fp16": 1e-2, "int8-dynamic": 2e-2}
_INT8_ATOL_STEPS = 2.0
ATTRIBUTION_SAMPLES = 4          # validation samples the per-layer error is measured on


def _needed(drop: float) -> float:
    """The smallest budget, rounded up to 0.01 %, that ``drop`` passes."""
    return math.ceil(drop * 1e4) / 1e4


@dataclass
class _Run:
    """An artifact run on the validation samples: what the gate and the golden file need."""

    rt: LiteRT
    outputs: dict[str, np.ndarray]               # ONNX layout, float, stacked over samples
    raw_in: list[list[np.ndarray]]               # the artifact's own I/O per sample
    raw_out: list[list[np.ndarray]]
    float_inputs: list[list[np.ndarray]] = field(default_factory=list)


def _run_all(rt: LiteRT, res: ConversionResult, samples: Any) -> _Run:
    """ONNX-layout float outputs stacked over samples, plus raw artifact I/O per sample."""
    per: dict[str, list[np.ndarray]] = {n: [] for n in res.output_names}
    run = _Run(rt, {}, [], [])
    for s in samples.iter_samples():
        feeds = [to_artifact_layout(np.asarray(s[n]), res.io_layout[n]) for n in res.input_names]
        if len(run.float_inputs) < ATTRIBUTION_SAMPLES:
            run.float_inputs.append(feeds)
        q = rt.quantise_inputs(feeds)
        out = rt.run(q)
        run.raw_in.append(q)
        run.raw_out.append(out)
        for n, y in zip(res.output_names, rt.dequantise_outputs(out), strict=True):
            per[n].append(to_onnx_layout(y, res.io_layout[n]))
    run.outputs = {n: stack_outputs(v) for n, v in per.items()}
    return run


def _validate(ctx: BackendContext, res: ConversionResult) -> _Run:
    try:
        return _run_all(LiteRT(res.model, threads=ctx.request.threads), res, ctx.data.validation)
    except EdgeOpsError:
        raise
    except Exception as exc:
        raise ConversionError(f"target {ctx.profile.name}: the {ctx.precision} TFLite artifact "
                              f"does not run in LiteRT ({str(exc).splitlines()[0]})",
                              hint="report this as an edgeops bug; use an ONNX target "
                                   "meanwhile") from None


def _rewrites_for(ctx: BackendContext) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The fused builtins to emit: measured in LiteRT here for the CPU target; for an NPU the
    ones whose ops are on its op list (a CPU timing says nothing about the accelerator)."""
    if ctx.profile.static_shapes:
        return NPU_REWRITES, {"rule": "ops on the NPU op list", "enabled": list(NPU_REWRITES)}
    d = measured_rewrites(ctx.request.threads,
                          use_cache=bool(ctx.request.options.get("perf_cache", True)))
    return tuple(d["enabled"]), {"rule": "measured in LiteRT on the build machine", **d}


def tflite_backend(ctx: BackendContext) -> BuiltArtifact:
    full_int = ctx.precision == "int8"
    cal = ctx.data.calibration
    ctx.progress(f"{ctx.profile.name}: lowering ONNX to TFLite ({ctx.precision})"
                 + (f", calibrating on {len(cal)} samples" if full_int else ""))
    rewrites, fusion_info = _rewrites_for(ctx)
    plan = _full_int_plan(ctx) if full_int else None
    evidence: _Run | None = None
    limits: Callable[[], str] | None = None
    if plan is not None:        # full integer, also at --effort fast (one candidate, MinMax)
        res, evidence, limits = _engine_build(ctx, plan, rewrites)
    else:
        res = convert(
            ctx.data.model, precision=ctx.precision, input_shapes=ctx.request.input_shapes,
            keep_io_layout=ctx.request.keep_io_layout, require_static=ctx.profile.static_shapes,
            target=ctx.profile.name, rewrites=rewrites)
    res.details["fusion_decision"] = fusion_info
    path = ctx.workdir / "model.tflite"
    atomic_write(path, res.model)
    try:
        return _accept(ctx, path, res, evidence, limits)
    except BaseException:
        for leftover in (path, ctx.workdir / "golden.npz"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise


def _full_int_plan(ctx: BackendContext) -> FullIntPlan:
    """The engine's passes for this build's effort (``--effort``, ``quant_passes``)."""
    effort = str(ctx.request.options.get("effort") or "default")
    opts = ctx.profile.options
    return FullIntPlan(per_channel=opts.get("per_channel", True),
                       io_int8=opts.get("io_dtype") == "int8",
                       method=ctx.request.calibration_method,
                       passes=passes_for(effort, ctx.request.options.get("quant_passes")),
                       effort=effort)


def _engine_build(ctx: BackendContext, plan: FullIntPlan, rewrites: tuple[str, ...]
                  ) -> tuple[ConversionResult, _Run, Callable[[], str]]:
    """Quantise every candidate, validate each in LiteRT, keep the best on the task metric."""
    ctx.progress(f"{ctx.profile.name}: quantisation passes (effort {plan.effort}): "
                 f"{', '.join(plan.passes) or 'none (MinMax ranges)'}")

    def evaluate(res: ConversionResult) -> tuple[float, _Run]:
        run = _validate(ctx, res)
        report = ctx.data.accuracy_report(run.outputs)
        return gate_drop(report, ctx.data.gate_metric, ctx.profile.name)[1], run

    chosen, cands = build_best(ctx.data.model, ctx.data.calibration, plan, evaluate,
                               input_shapes=ctx.request.input_shapes,
                               keep_io_layout=ctx.request.keep_io_layout,
                               require_static=ctx.profile.static_shapes,
                               target=ctx.profile.name, rewrites=rewrites)
    ctx.progress(f"{ctx.profile.name}: chose {describe(chosen)}")

    def limits() -> str:
        float_model = cands.float_model(chosen.bias, chosen.adaround)
        errors = layer_errors(float_model, chosen.result.model, chosen.result.graph,
                              chosen.evidence.float_inputs[:ATTRIBUTION_SAMPLES])
        return limiting_layers(errors)

    return chosen.result, chosen.evidence, limits


def _accept(ctx: BackendContext, path: Path, res: ConversionResult, run: _Run | None = None,
            limits: Callable[[], str] | None = None) -> BuiltArtifact:
    val = ctx.data.validation
    threads = ctx.request.threads
    if run is None:
        ctx.progress(f"{ctx.profile.name}: running the artifact in LiteRT on {len(val)} "
                     "validation samples")
        run = _validate(ctx, res)
    rt, outputs, raw_in, raw_out = run.rt, run.outputs, run.raw_in, run.raw_out
    # the build decides which outputs are class scores and which metric gates (as for the
    # ONNX targets), so a [n, k] regression output is not gated on top-1 agreement
    report = ctx.data.accuracy_report(outputs)
    gate_metric = ctx.data.gate_metric
    metric, drop = gate_drop(report, gate_metric, ctx.profile.name)
    if limits is not None and drop > ctx.request.max_accuracy_drop:
        # full integer: nothing can go float, so say what limits it and what it would take
        raise AccuracyGateError(
            f"target {ctx.profile.name}: {metric} dropped {drop:.2%} vs FP32"
            f"{task_note(report, metric)}, over the {ctx.request.max_accuracy_drop:.2%} budget "
            f"with every layer in int8; limited by {limits()}; the budget would have to be "
            f"{_needed(drop):.2%} (--max-accuracy-drop {_needed(drop):.4g})",
            hint="an ONNX target can keep these layers float; or give more representative "
                 "calibration data")
    check_gate(report, ctx.request.max_accuracy_drop, ctx.profile.name, gate_metric)
    n_golden = min(ctx.request.golden_samples, len(val))
    golden_in = {n: stack_outputs([raw_in[i][k] for i in range(n_golden)])
                 for k, n in enumerate(res.input_names)}
    golden_out = {n: stack_outputs([raw_out[i][k] for i in range(n_golden)])
                  for k, n in enumerate(res.output_names)}
    golden_path = ctx.workdir / "golden.npz"
    write_golden(golden_path, golden_in, golden_out)
    first = raw_in[0]
    lat = latency_ms(lambda: rt.run(first), warmup=LATENCY_WARMUP, runs=LATENCY_RUNS)
    io_dtype = "int8" if any(d["dtype"] == np.int8 for d in rt.inputs) else "float32"
    if ctx.precision == "int8" and io_dtype == "int8":
        tolerance = {"atol": _INT8_ATOL_STEPS, "rtol": 0.0}      # raw int8 steps
    elif ctx.precision == "int8":
        # float I/O around an int8 graph: two steps of the widest output quantisation
        steps = [float(t.quant.scale[0]) for n in res.output_names
                 if (t := res.graph.tensors.get(n + "__int8")) is not None and t.quant]
        tolerance = {"atol": _INT8_ATOL_STEPS * max(steps, default=1e-2), "rtol": 0.0}
    else:
        peak = max(float(np.abs(v).max()) for v in golden_out.values()) or 1.0
        rtol = _RTOL[ctx.precision]
        tolerance = {"atol": rtol * peak, "rtol": rtol}
    metrics: dict[str, Any] = {
        "size_bytes": path.stat().st_size,
        "source_size_bytes": ctx.data.source.size,
        "accuracy": accuracy_section(report, metric, drop),
        "validation_samples": len(val),
        "latency": {"p50_ms": round(lat["p50"], 4), "p95_ms": round(lat["p95"], 4),
                    "threads": threads, "runs": LATENCY_RUNS, "runtime": litert_version(),
                    "delegate": "XNNPACK (LiteRT default)"},
    }
    npu = ctx.profile.options.get("npu")
    if npu:
        metrics["npu_compatibility"] = compatibility_report(res.graph, str(npu))
    details = {
        "writer": "edgeops flatbuffer writer (no TensorFlow)",
        "io_layout": res.io_layout,
        "io_dtype": io_dtype,
        "golden": {"layout": "artifact", "dtype": io_dtype,
                   "note": "inputs/outputs exactly as the artifact takes and returns them"},
        "keep_io_layout": ctx.request.keep_io_layout,
        **res.details,
    }
    return BuiltArtifact(target=ctx.profile.name, path=path, format="tflite",
                         runtime=ctx.profile.runtime, providers=ctx.profile.providers,
                         precision=ctx.precision, golden_path=golden_path, metrics=metrics,
                         tolerance=tolerance, details=details)

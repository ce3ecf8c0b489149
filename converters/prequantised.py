"""Models that arrive already quantised: recognised before anything runs, never re-quantised.

Some packages ship INT8 models (ONNX Runtime's ``quantize_dynamic`` output with
``DynamicQuantizeLinear`` + ``ConvInteger``/``MatMulInteger``, QOperator ``QLinear*`` graphs,
QDQ graphs). Fed to a quantiser again they fail deep inside it (a ``KeyError`` for a scale
that the calibrator never saw) or quantise twice. The quantised operators are found from the
graph, subgraphs included; the INT8 precisions ship the model as it is, after the usual
validation (``pass: prequantised``), and what the others cannot do is said in one line.
What the shipped weights need from the device's CPU is read from them (converters/int8_weights)
and recorded as ``plan.target_isa``, as our own builds record it, so the device agent refuses
8-bit u8s8 weights on an x86 CPU without VNNI (edgeops/cpu.py) instead of saturating them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from converters.api import BackendContext, BuiltArtifact
from converters.int8_weights import SATURATION_FREE_PEAK, U8S8Weights, u8s8_weights
from converters.model_check import iter_nodes
from edgeops.cpu import X86_VNNI_ISA
from edgeops.errors import ConfigError, UnsupportedModelError
from edgeops.targets import TargetProfile

__all__ = ["INT8_PRECISIONS", "check_prequantised_targets", "quantised_ops", "ship_as_is",
           "shipped_plan"]

INT8_PRECISIONS = ("int8", "int8-dynamic", "int16")
_DYNAMIC = {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
            "DynamicQuantizeLSTM", "QAttention", "MatMulIntegerToFloat"}


def quantised_ops(model: Any) -> dict[str, int]:
    """``{op type: count}`` of the quantised operators in ``model`` (empty: a float model).

    QOperator (``QLinear*``), integer (``ConvInteger``...), dynamic and QDQ forms count; a lone
    ``QuantizeLinear``/``DequantizeLinear`` at the edge (a float model with a quantised input
    or output) counts only as part of a pair.
    """
    ops: Counter[str] = Counter()
    qdq: Counter[str] = Counter()
    for _, node in iter_nodes(model.graph):
        t = node.op_type
        if t.startswith(("QLinear", "QGemm")) or t in _DYNAMIC:
            ops[t] += 1
        elif t in ("QuantizeLinear", "DequantizeLinear"):
            qdq[t] += 1
    if qdq["QuantizeLinear"] and qdq["DequantizeLinear"]:
        ops.update(qdq)
    return dict(sorted(ops.items()))


def _summary(ops: dict[str, int]) -> str:
    return ", ".join(f"{n} x{c}" for n, c in ops.items())


def check_prequantised_targets(ops: dict[str, int],
                               targets: list[tuple[TargetProfile, str]]) -> None:
    """Refuse, before any work, what cannot be done with an already-quantised model."""
    if not ops:
        return
    for profile, precision in targets:
        if profile.format != "onnx":
            raise UnsupportedModelError(
                f"target {profile.name}: the model is already quantised ({_summary(ops)}); "
                f"lowering a quantised ONNX graph to {profile.format} is not supported",
                hint=f"build {profile.name} from the float model, or pick an ONNX target "
                     "(x86-cpu ships it as-is)")
        if precision == "fp16":
            raise UnsupportedModelError(
                f"target {profile.name}: the model is already quantised ({_summary(ops)}); "
                "FP16 cannot be applied to integer weights",
                hint=f"use --precision {profile.name}=int8 to ship it as-is, or convert the "
                     "float model to fp16")


def shipped_plan(profile: TargetProfile, weights: U8S8Weights) -> tuple[dict[str, Any], str]:
    """``details.plan`` for shipping weights as they are to ``profile`` (empty when the
    profile names no CPU), and a warning ("" for none) when only VNNI CPUs compute them."""
    from converters.onnx_plan import target_isa

    try:
        isa = target_isa(profile.name, dict(profile.options))
    except ConfigError:             # not a CPU profile (a GPU's): no CPU kernels to match
        return {}, ""
    plan: dict[str, Any] = {"target_isa": isa, "u8s8_weight_peak": weights.peak,
                            "reason": "shipped as it is: read from its weights"}
    if isa not in ("x86_64", X86_VNNI_ISA):
        return plan, ""
    if not weights.needs_vnni:
        plan.update(target_isa="x86_64", reason=(
            f"shipped as it is: no int8 weight above |q| {SATURATION_FREE_PEAK} meets uint8 "
            "activations, exact on every x86 CPU"))
        return plan, ""
    where = ", ".join(weights.nodes[:3]) + (", ..." if len(weights.nodes) > 3 else "")
    plan.update(target_isa=X86_VNNI_ISA, reason=(
        f"shipped as it is: int8 weights up to |q| {weights.peak} meet uint8 activations "
        f"({len(weights.nodes)} node(s): {where}); without VNNI, x86 u8s8 kernels saturate "
        f"above |q| {SATURATION_FREE_PEAK}"))
    if profile.options.get("vnni") is True:
        return plan, ""
    return plan, (f"{profile.name}: the shipped model's int8 weights (up to |q| {weights.peak}"
                  " against uint8 activations) are exact only on x86 CPUs with VNNI; devices "
                  "without it refuse this artifact (build the float model with edgeops for "
                  "7-bit weights that every x86 CPU runs)")


def ship_as_is(ctx: BackendContext) -> BuiltArtifact:
    """The source model, unchanged, as the INT8 artifact, once it passes validation."""
    import shutil

    from converters.onnx_accept import accept

    ops = dict(ctx.data.prequantised)
    ctx.progress(f"{ctx.profile.name}: the model is already quantised ({_summary(ops)}); "
                 "shipping it as-is")
    out = ctx.workdir / "model.onnx"
    if ctx.data.source.external_data:
        import onnx

        onnx.save_model(ctx.data.model, str(out))
    else:
        shutil.copyfile(ctx.data.model_path, out)
    plan, warning = shipped_plan(ctx.profile, u8s8_weights(ctx.data.model))
    if warning:
        ctx.progress(warning)
    return accept(ctx, out, {"pass": "prequantised", "quantised_ops": ops,
                             "requested_precision": ctx.precision,
                             "reason": "the source model is already quantised; re-quantising "
                                       "would fail or quantise twice",
                             **({"plan": plan} if plan else {}),
                             **({"warnings": [warning]} if warning else {})})

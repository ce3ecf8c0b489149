"""Models that arrive already quantised: recognised before anything runs, never re-quantised.

Some packages ship INT8 models (ONNX Runtime's ``quantize_dynamic`` output with
``DynamicQuantizeLinear`` + ``ConvInteger``/``MatMulInteger``, QOperator ``QLinear*`` graphs,
QDQ graphs). Fed to a quantiser again they fail deep inside it (a ``KeyError`` for a scale
that the calibrator never saw) or quantise twice. The quantised operators are found from the
graph, subgraphs included; the INT8 precisions ship the model as it is, after the usual
validation (``pass: prequantised``), and what the others cannot do is said in one line.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from converters.api import BackendContext, BuiltArtifact
from converters.model_check import iter_nodes
from edgeops.errors import UnsupportedModelError
from edgeops.targets import TargetProfile

__all__ = ["INT8_PRECISIONS", "check_prequantised_targets", "quantised_ops", "ship_as_is"]

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
    return accept(ctx, out, {"pass": "prequantised", "quantised_ops": ops,
                             "requested_precision": ctx.precision,
                             "reason": "the source model is already quantised; re-quantising "
                                       "would fail or quantise twice"})

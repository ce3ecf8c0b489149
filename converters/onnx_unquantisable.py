"""Nodes INT8 cannot touch, and what a build ships when that is every node.

scikit-learn exports (skl2onnx) are mostly ``ai.onnx.ml`` operators: ``Scaler``,
``LinearClassifier``, ``TreeEnsembleClassifier``/``Regressor``, ``Normalizer`` and so on.
ONNX Runtime's quantiser has no QDQ form for any of them (its registries list ONNX-domain ops
only), so they stay float in an INT8 artifact, each recorded in ``float_nodes`` with that reason;
an ONNX-domain ``MatMul``/``Gemm`` beside them (an MLP's layers) is still quantised.

When quantisation leaves *no* node quantised (a tree ensemble, a linear model), an "INT8"
artifact would be the float graph under a false name. The build ships the FP32 artifact instead,
recorded as ``fp32`` with the requested precision, the reason per node and a warning; a target
that offers no FP32 (an NPU that runs quantised graphs only) refuses the model, naming the nodes.

The performance-aware pass can leave every node float too (INT8 not faster on this CPU); when
the rewritten float graph is not faster than the source either, :func:`ship_source` ships the
source model byte for byte, recorded the same way (``fp32``, the requested precision, why).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from converters.api import BackendContext, BuiltArtifact
from edgeops.errors import UnsupportedModelError

__all__ = ["ML_DOMAIN", "any_quantised", "ship_fp32", "ship_source", "type_ml_outputs",
           "unquantisable_nodes"]

ML_DOMAIN = "ai.onnx.ml"
# What ORT's dynamic quantiser leaves in a model where it quantised something.
_DYNAMIC_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
                "QAttention", "DynamicQuantizeLSTM"}


def unquantisable_nodes(model: Any) -> dict[str, str]:
    """``{node name: reason}`` for every ``ai.onnx.ml`` node (unnamed ones by op and index)."""
    out: dict[str, str] = {}
    for i, n in enumerate(model.graph.node):
        if n.domain == ML_DOMAIN:
            out[n.name or f"{n.op_type}_{i}"] = (
                f"not quantisable: {ML_DOMAIN}::{n.op_type} has no quantised (QDQ) form in "
                "ONNX Runtime")
    return out


def any_quantised(path: Path) -> bool:
    """Whether the quantiser's output at ``path`` quantised any computation.

    A QDQ pair around an ``ai.onnx.ml`` node (QNN's config quantises graph inputs and outputs
    whatever consumes them) quantises nothing: the node still computes in float.
    """
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    dequantised = {o for n in m.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return any(n.op_type in _DYNAMIC_OPS or (
        n.domain != ML_DOMAIN and n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and any(i in dequantised for i in n.input)) for n in m.graph.node)


def ship_fp32(ctx: BackendContext, model: Any) -> BuiltArtifact:
    """The FP32 artifact in place of an INT8 one that quantised nothing (see module doc)."""
    from converters.onnx_accept import accept
    from converters.onnx_fp32 import optimise_fp32

    reasons = unquantisable_nodes(model)
    ops = sorted({f"{n.domain or 'ai.onnx'}::{n.op_type}" if n.domain else n.op_type
                  for n in model.graph.node})
    why = (f"ONNX Runtime quantises none of this model's operators ({', '.join(ops)})")
    if "fp32" not in ctx.profile.precisions:
        raise UnsupportedModelError(
            f"target {ctx.profile.name} runs quantised models only, and {why}: "
            + "; ".join(f"node '{n}' ({r.split(': ', 1)[1]})" for n, r in reasons.items()),
            hint="pick a CPU target (x86-cpu, arm64-cpu) for this model")
    ctx.progress(f"{ctx.profile.name}: nothing to quantise; shipping FP32")
    fp32 = replace(ctx, precision="fp32")
    path, details = optimise_fp32(fp32)
    warning = (f"{ctx.profile.name}: {ctx.precision} requested, FP32 shipped: {why}")
    return accept(fp32, path, {"pass": "ort-graph-optimisation", **details,
                               "requested_precision": ctx.precision,
                               "reason": f"nothing to quantise: {why}",
                               "float_nodes": dict(sorted(reasons.items())),
                               "quantised_nodes": 0, "warnings": [warning]})


def ship_source(ctx: BackendContext, why: str, details: dict[str, Any]) -> BuiltArtifact:
    """The source model, byte for byte, as the artifact (validated and timed like any other):
    the user's own model, exact, never slower than itself."""
    import shutil

    from converters.onnx_accept import accept

    out = ctx.workdir / "model.onnx"
    shutil.copyfile(ctx.data.model_path, out)
    warning = f"{ctx.profile.name}: {ctx.precision} requested, FP32 shipped: {why}"
    return accept(replace(ctx, precision="fp32"), out, {
        **details, "pass": "fp32-source", "requested_precision": ctx.precision, "reason": why,
        "quantised_nodes": 0, "warnings": [*details.get("warnings", []), warning]})


def type_ml_outputs(path: Path, sample: dict[str, Any]) -> bool:
    """Give the outputs of ``ai.onnx.ml`` nodes the tensor types shape inference leaves out.

    ONNX shape inference types no output of e.g. ``Scaler``, so everything after it (an MLP's
    MatMul/Add/Softmax in a scikit-learn pipeline) stays untyped and ORT's calibrator skips
    those tensors, after which its quantiser fails ("Only an existing tensor can be modified").
    One ONNX Runtime run on ``sample`` reads the real element types; shape inference then
    carries them on. Rewrites ``path`` in place; False when nothing was missing.
    """
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(path))
    graph = m.graph
    known = {v.name for v in (*graph.value_info, *graph.input, *graph.output)} \
        | {t.name for t in graph.initializer}
    missing = [o for n in graph.node if n.domain == ML_DOMAIN for o in n.output
               if o and o not in known]
    if not missing:
        return False
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in missing)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for name, value in zip(missing, sess.run(missing, sample), strict=True):
        if hasattr(value, "dtype"):               # sequences/maps stay untyped
            graph.value_info.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), None))
    m = onnx.shape_inference.infer_shapes(m)
    onnx.save_model(m, str(path))
    return True

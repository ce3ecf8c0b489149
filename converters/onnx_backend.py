"""The ``onnx`` backend: one ONNX artifact per target, accepted only after ONNX Runtime runs it.

Precision picks the pass (FP32 graph optimisation in converters/onnx_fp32, FP16 in onnx_fp16,
static QDQ INT8/INT16 and dynamic INT8 in onnx_quant, a prequantised source shipped as it is);
every pass hands back a model file and :func:`converters.onnx_accept.accept` does the rest the
same way for all. This module only dispatches: nothing below it imports it.
"""

from __future__ import annotations

from converters.api import BackendContext, BuiltArtifact, register_backend
from converters.onnx_accept import accept
from converters.onnx_fp32 import optimise_fp32

__all__ = ["onnx_backend"]


def onnx_backend(ctx: BackendContext) -> BuiltArtifact:
    from converters.prequantised import INT8_PRECISIONS, ship_as_is

    if ctx.data.prequantised and ctx.precision in INT8_PRECISIONS:
        return ship_as_is(ctx)
    if ctx.precision == "fp32":
        path, details = optimise_fp32(ctx)
        return accept(ctx, path, {"pass": "ort-graph-optimisation", **details})
    if ctx.precision == "fp16":
        from converters.onnx_fp16 import convert_fp16

        path, details = convert_fp16(ctx)
        return accept(ctx, path, details)
    from converters.onnx_quant import quantise

    built: BuiltArtifact = quantise(ctx)
    return built


register_backend("onnx", onnx_backend)

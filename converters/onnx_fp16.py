"""FP16 pass for GPU targets: half the bytes, I/O kept FP32, numerically unsafe ops kept FP32.

Ops whose FP16 result overflows or loses too much (exponentials, reductions that sum many
values, normalisations, index arithmetic) stay FP32 with casts around them, on top of
ONNX Runtime's own block list of ops that have no FP16 kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.api import BackendContext
from converters.onnx_utils import save_model

__all__ = ["UNSAFE_FP16_OPS", "convert_fp16"]

UNSAFE_FP16_OPS = ("Exp", "Log", "Pow", "Softmax", "LogSoftmax", "ReduceSum", "ReduceMean",
                   "ReduceProd", "ReduceL2", "ReduceLogSumExp", "LayerNormalization",
                   "InstanceNormalization", "Range", "CumSum", "Erf", "Sqrt", "Reciprocal",
                   "Div", "Loop", "If", "Scan")


def convert_fp16(ctx: BackendContext) -> tuple[Path, dict[str, Any]]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    keep_io = bool(ctx.profile.options.get("keep_io_types", True))
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(UNSAFE_FP16_OPS))
    source = ctx.data.source
    # ONNX shape inference in memory serialises the model, which fails over 2 GB: such a model
    # is shape-inferred from its file instead, then converted.
    model = convert_float_to_float16(
        _shapes_from_disk(source.path, ctx.workdir) if source.large else ctx.data.model,
        keep_io_types=keep_io, op_block_list=block, disable_shape_infer=source.large)
    kept = sorted({n.op_type for n in ctx.data.model.graph.node if n.op_type in block})
    out = save_model(model, ctx.workdir / "model.onnx")
    return out, {"pass": "fp16", "io_types": "fp32" if keep_io else "fp16",
                 "float_nodes": {n.name or f"{n.op_type}#{i}": "numerically unsafe in fp16"
                                 for i, n in enumerate(ctx.data.model.graph.node)
                                 if n.op_type in kept},
                 "fp32_op_types": kept}


def _shapes_from_disk(path: Path, workdir: Path) -> Any:
    """The source with inferred shapes, for models over 2 GB (weights read from beside it)."""
    import onnx

    out = workdir / "shapes.onnx"
    onnx.shape_inference.infer_shapes_path(str(path), str(out))
    model = onnx.load(str(out), load_external_data=False)
    out.unlink()
    onnx.load_external_data_for_model(model, str(path.parent))
    return model

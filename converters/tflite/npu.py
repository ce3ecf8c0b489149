"""What an NPU would take of a TFLite graph, judged before anyone reaches the hardware.

The Edge TPU compiler maps ops in graph order and hands *everything after* the first op it
cannot take to the CPU; it needs static shapes, int8 tensors and at most three dimensions
larger than 1. Arm's Vela compiler (Ethos-U) instead cuts the graph into NPU and CPU segments;
it takes tensors of rank <= 4 with batch 1 and per-axis quantisation only on convolutions.
The rules here are the documented ones, applied to the graph we wrote; the report says which
ops run where and why, so a fallback is a build-time fact, not a field surprise.
"""

from __future__ import annotations

from typing import Any

from converters.tflite._ir import Graph, Op

__all__ = ["EDGETPU_OPS", "ETHOSU_OPS", "compatibility_report", "dynamic_ops"]

EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PAD", "PRELU", "QUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "SOFTMAX", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "HARD_SWISH",
})
ETHOSU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PAD", "PRELU", "QUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "SOFTMAX", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
_CONV = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"}
# ops that compute shapes or data-dependent sizes at run time; NPU compilers reject them
_DYNAMIC_KINDS = {"SHAPE", "RANGE", "FILL", "WHERE", "UNIQUE", "BROADCAST_ARGS",
                  "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5", "DYNAMIC_UPDATE_SLICE"}
# ops whose shape-giving input is static only when it is a constant (input index); GATHER is
# not one: its output shape is the indices' shape, whatever ids (tokens, bytes) they hold
_SHAPE_INPUT = {"RESHAPE": 1, "BROADCAST_TO": 1, "RESIZE_BILINEAR": 1,
                "RESIZE_NEAREST_NEIGHBOR": 1, "STRIDED_SLICE": 1, "PAD": 1, "PADV2": 1,
                "MIRROR_PAD": 1, "SLICE": 1, "TRANSPOSE": 1}


def dynamic_ops(g: Graph) -> list[Op]:
    """Ops whose output shape or size is computed at run time (none after a static build)."""
    out = []
    for op in g.ops:
        idx = _SHAPE_INPUT.get(op.kind)
        if op.kind in _DYNAMIC_KINDS or (idx is not None and len(op.inputs) > idx
                                         and op.inputs[idx] and not g.is_const(op.inputs[idx])):
            out.append(op)
    return out


def _tensors(g: Graph, op: Op) -> list[str]:
    return [n for n in op.inputs + op.outputs if n]


def _edgetpu_reason(g: Graph, op: Op) -> str | None:
    if op.kind not in EDGETPU_OPS:
        return f"{op.kind} is not an Edge TPU op"
    for n in _tensors(g, op):
        t = g.tensors[n]
        if t.data is None and t.dtype not in ("int8", "uint8"):
            return f"tensor {n} is {t.dtype}, not int8"
        if t.data is None and sum(1 for d in t.shape if d > 1) > 3:
            return f"tensor {n} {list(t.shape)} has more than 3 dimensions larger than 1"
        if t.quant is not None and t.quant.per_channel and t.data is None:
            return f"tensor {n} is per-axis quantised"
    return None


def _ethosu_reason(g: Graph, op: Op) -> str | None:
    if op.kind not in ETHOSU_OPS:
        return f"{op.kind} is not an Ethos-U op"
    for n in _tensors(g, op):
        t = g.tensors[n]
        if t.data is None and t.dtype not in ("int8", "int16"):
            return f"tensor {n} is {t.dtype}, not int8"
        if len(t.shape) > 4:
            return f"tensor {n} has rank {len(t.shape)} (at most 4)"
        if t.data is None and len(t.shape) == 4 and t.shape[0] != 1:
            return f"tensor {n} has batch {t.shape[0]} (batch 1 only)"
        if t.quant is not None and t.quant.per_channel and op.kind not in _CONV:
            return f"tensor {n} is per-axis quantised outside a convolution"
    return None


def compatibility_report(g: Graph, npu: str) -> dict[str, Any]:
    """Which ops the accelerator takes, where the graph falls back to the CPU, and why."""
    if npu not in ("edgetpu", "ethos-u"):
        raise ValueError(f"unknown NPU {npu!r}")
    check = _edgetpu_reason if npu == "edgetpu" else _ethosu_reason
    reasons = [check(g, op) for op in g.ops]
    placement: list[str] = []
    if npu == "edgetpu":
        first = next((i for i, r in enumerate(reasons) if r), None)
        placement = ["npu" if first is None or i < first else "cpu" for i in range(len(g.ops))]
    else:
        placement = ["cpu" if r else "npu" for r in reasons]
    segments = sum(1 for i, p in enumerate(placement) if i == 0 or p != placement[i - 1])
    unsupported = [{"index": i, "op": op.kind, "onnx_node": op.source, "reason": r}
                   for i, (op, r) in enumerate(zip(g.ops, reasons, strict=True)) if r]
    first_fb = unsupported[0] if unsupported else None
    cpu_ops: dict[str, int] = {}
    for op, p in zip(g.ops, placement, strict=True):
        if p == "cpu":
            cpu_ops[op.kind] = cpu_ops.get(op.kind, 0) + 1
    npu_count = placement.count("npu")
    return {
        "accelerator": npu,
        "total_ops": len(g.ops),
        "npu_ops": npu_count,
        "cpu_ops": len(g.ops) - npu_count,
        "fully_mapped": npu_count == len(g.ops),
        "dynamic_ops": len(dynamic_ops(g)),
        "segments": segments,
        "first_fallback": first_fb,
        "unsupported": unsupported,
        "cpu_op_counts": cpu_ops,
        "rule": ("ops after the first unsupported one run on the CPU" if npu == "edgetpu"
                 else "unsupported ops run on the CPU; the graph is cut into segments"),
    }

"""What an already-quantised graph's integer weights need from an x86 CPU, read from the graph.

Our own INT8 builds choose their weights from the target (converters/onnx_plan: 7-bit weights
for ``x86-cpu``, 8-bit only for ``x86-cpu-vnni``) and record that as ``plan.target_isa``,
which the device agent checks (edgeops/cpu.py). A model that arrives quantised
(converters/prequantised) ships as it is, so the need has to be read from its weights: ONNX
Runtime's x86 u8s8 kernels without VNNI add pairs of uint8 x int8 products in a *saturating*
int16 (``vpmaddubsw``), exact only while ``2 * 255 * |w| <= 32767``, i.e. ``|w| <= 64``
(:data:`SATURATION_FREE_PEAK`). A weight beyond that, met by uint8 activations, needs VNNI.
uint8 weights run on u8u8 kernels, which widen to 16 bits first and never saturate. int8
activations go to ORT's s8s8 kernels, which this rule does not describe (a pair of int8
products stays within ``2 * 128 * 127 = 32512`` in any case), so they are not counted.

Which input of which operator is the weight and which the activation is a table over the
operator types (QOperator, integer, dynamic and QDQ forms); pure on ``onnx.ModelProto``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SATURATION_FREE_PEAK", "U8S8Weights", "u8s8_weights"]

SATURATION_FREE_PEAK = 64       # 2 * 255 * 64 = 32640 <= 32767: no int16 pair saturates

# op type -> (activation input, its zero-point input or None, weight input); activations that
# an op quantises itself at run time (dynamic) are uint8.
_INTEGER_OPS: dict[str, tuple[int | None, int | None, int]] = {
    "QLinearConv": (0, 2, 3), "QLinearMatMul": (0, 2, 3), "QGemm": (0, 2, 3),
    "ConvInteger": (0, 2, 1), "MatMulInteger": (0, 2, 1), "MatMulIntegerToFloat": (0, 4, 1),
    "QAttention": (0, 6, 1), "DynamicQuantizeMatMul": (None, None, 1),
    "DynamicQuantizeLSTM": (None, None, 1),
}
_QDQ_COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_UINT8 = 2      # onnx.TensorProto.UINT8
_INT8 = 3       # onnx.TensorProto.INT8


@dataclass(frozen=True)
class U8S8Weights:
    """The int8 weights that meet uint8 activations: their largest ``|q|`` and where."""

    peak: int                       # 0: no int8 weight meets a uint8 activation
    nodes: tuple[str, ...]          # the nodes whose weights exceed SATURATION_FREE_PEAK

    @property
    def needs_vnni(self) -> bool:
        """Whether an x86 CPU without VNNI would saturate (compute wrongly) on them."""
        return self.peak > SATURATION_FREE_PEAK


def _activation_type(tensor: str, zero_point: str | None, inits: Mapping[str, Any],
                     producers: Mapping[str, Any], types: Mapping[str, int]) -> int:
    """The element type of a quantised activation; uint8 when the graph does not say
    (the ONNX default of QuantizeLinear, and the type on which a wrong guess refuses more)."""
    if zero_point and zero_point in inits:
        return int(inits[zero_point].data_type)
    if tensor in types:
        return types[tensor]
    p = producers.get(tensor)
    if p is not None and p.op_type == "QuantizeLinear" and len(p.input) > 2 \
            and p.input[2] in inits:
        return int(inits[p.input[2]].data_type)
    return _UINT8


def u8s8_weights(model: Any) -> U8S8Weights:
    """The int8 weights of ``model``'s top-level graph that meet uint8 activations."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info)
             if v.type.tensor_type.elem_type}
    peak, nodes = 0, []

    def weigh(node: Any, weight: str, activation: str | None, zero_point: str | None) -> None:
        nonlocal peak
        w = inits.get(weight)
        if w is None or w.data_type != _INT8:
            return
        if activation is not None and _activation_type(
                activation, zero_point, inits, producers, types) != _UINT8:
            return
        q = int(np.abs(numpy_helper.to_array(w).astype(np.int16)).max(initial=0))
        peak = max(peak, q)
        if q > SATURATION_FREE_PEAK:
            nodes.append(node.name or node.op_type)

    for n in g.node:
        spec = _INTEGER_OPS.get(n.op_type)
        if spec is not None:
            act, zp, wt = spec
            if wt < len(n.input):
                weigh(n, n.input[wt], n.input[act] if act is not None else None,
                      n.input[zp] if zp is not None and zp < len(n.input) else None)
            continue
        if n.op_type not in _QDQ_COMPUTE:
            continue
        dqs: list[Any] = [producers.get(i) for i in n.input[:2]]
        if len(dqs) < 2 or not all(d is not None and d.op_type == "DequantizeLinear"
                                   for d in dqs):
            continue
        a, w = dqs if dqs[1].input[0] in inits else dqs[::-1]
        if w.input[0] in inits and a.input[0] not in inits:
            weigh(n, w.input[0], a.input[0], a.input[2] if len(a.input) > 2 else None)
    return U8S8Weights(peak, tuple(nodes))

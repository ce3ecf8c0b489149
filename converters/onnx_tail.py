"""The post-processing tail of a graph, kept in float, and graph outputs kept unquantised.

A detector's head concatenates box coordinates in pixels with class probabilities in [0, 1];
quantised, that Concat shares one 8-bit range between both, and every probability below a few
hundredths of the pixel range rounds to zero. The same holds wherever an output is assembled
from quantities of different scales. So, by default, the ops *after the last compute op*
(Conv/ConvTranspose/MatMul/Gemm) on each path to a graph output stay float when they only
rearrange (reshape, transpose, slice, split, concatenate, gather), decode (elementwise
arithmetic, exp, clip, min/max) or normalise (sigmoid, softmax): exactly what a head does after
its last convolution. They are found by walking back from every graph output through such ops,
stopping at compute ops and at anything else. Nothing here knows a model, layer or node name.

:func:`unquantise_outputs` then removes the QuantizeLinear/DequantizeLinear pair that still sits
on a graph output made directly by a compute op, so no graph output is rounded to 8 bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["TAIL_OPS", "postprocessing_tail", "unquantise_outputs"]

COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
TAIL_OPS = frozenset({
    # rearrange
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split",
    "Concat", "Gather", "GatherElements", "Expand", "Tile", "Cast", "Shape",
    # decode boxes
    "Add", "Sub", "Mul", "Div", "Exp", "Pow", "Sqrt", "Clip", "Max", "Min", "Neg", "Abs",
    # normalise
    "Sigmoid", "Softmax", "LogSoftmax", "HardSigmoid",
})


def postprocessing_tail(model: Any) -> dict[str, str]:
    """``{node name: reason}`` for every node of the post-processing tail (see module doc)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    tail: dict[str, str] = {}
    stack = [(o.name, o.name) for o in model.graph.output]
    seen: set[str] = set()
    while stack:
        tensor, output = stack.pop()
        node = producers.get(tensor)
        if node is None or node.name in seen or node.op_type not in TAIL_OPS:
            continue
        seen.add(node.name)
        tail[node.name] = (f"post-processing: {node.op_type} after the last compute op on the "
                           f"path to output '{output}' (kept float so the output is not rounded "
                           "into a range shared with values of another scale)")
        stack.extend((i, output) for i in node.input if i and i not in inits)
    return tail


def unquantise_outputs(path: Path) -> list[str]:
    """Rewrite ``path`` so no graph output passes through Q/DQ; returns the outputs freed."""
    import onnx

    m = onnx.load(str(path))
    g = m.graph
    producers = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    freed = []
    for name in sorted(outputs):
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in outputs:
            continue
        ident = onnx.helper.make_node("Identity", [q.input[0]], [name], name=f"{dq.name}_float")
        g.node.insert(list(g.node).index(dq), ident)
        g.node.remove(dq)
        freed.append(name)
    if not freed:
        return []
    used = {i for n in g.node for i in n.input} | outputs
    for n in [n for n in g.node if n.op_type == "QuantizeLinear" and n.output[0] not in used]:
        g.node.remove(n)
    onnx.save_model(m, str(path))
    return freed

"""Keep a float layer of a QDQ artifact float where ONNX Runtime would quantise it on load.

ONNX Runtime (1.20 and later) runs a level-1 graph transformer, ``WeightBiasQuantization``
(onnxruntime/core/optimizer/qdq_transformer/weight_bias_quantization.cc), on every session
with optimisations on (the default). A ``Conv``, ``ConvTranspose`` or ``Gemm`` whose input
comes from a ``DequantizeLinear`` with one scale, whose output leads unbranched (through
``Relu``/``Clip`` at most) to a ``QuantizeLinear`` and whose weight is a float initializer is
"completed": ORT inserts a **symmetric per-tensor int8** quantisation of its weight and an int32
bias, and the QDQ fusions then run it as an INT8 kernel. That is exactly the shape of a layer
``quantize_static`` left float (``nodes_to_exclude``) between quantised neighbours. So every
layer the build kept float, for accuracy or speed, ran per-tensor INT8 instead, worse than the
per-channel INT8 it replaced (measured: a DBNet whose 14 depthwise convolutions were kept float
lost mask IoU 0.81 -> 0.31 on one sample; its artifact said "float"), and on x86 CPUs without
VNNI with full 8-bit weights that the exact bit split never checked.

:func:`keep_float` breaks the pattern without changing what the layer computes: the layer gets
its own ``DequantizeLinear`` of the same quantised tensor with the one scale repeated along the
channel axis (``axis=1``), a per-axis form the transformer does not take; the values are the
same, bit for bit. :func:`runtime_quantised` is the check: it lets ORT optimise the model and
names every layer with a float weight that came out with a quantised one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["keep_float", "runtime_quantised"]

_WEIGHTED = ("Conv", "ConvTranspose", "Gemm")
_PASS_THROUGH = ("Relu", "Clip")          # what the transformer's output path may cross
_FLOAT = 1                                 # onnx.TensorProto.FLOAT


def _consumers(model: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


def _leads_to_quantize(node: Any, consumers: dict[str, list[Any]]) -> bool:
    """The transformer's output rule: one consumer each step, Relu/Clip allowed, ends at Q."""
    current = node
    while len(current.output) == 1:
        users = consumers.get(current.output[0], [])
        if len(users) != 1:
            return False
        if users[0].op_type == "QuantizeLinear":
            return True
        if users[0].op_type not in _PASS_THROUGH:
            return False
        current = users[0]
    return False


def _channels(models: list[Any], tensor: str) -> int | None:
    """The size of axis 1 of ``tensor`` from the first of ``models`` whose shapes give it."""
    for model in models:
        for vi in (*model.graph.value_info, *model.graph.input, *model.graph.output):
            if vi.name == tensor:
                dims = vi.type.tensor_type.shape.dim
                if len(dims) > 1 and dims[1].dim_value > 0:
                    return int(dims[1].dim_value)
    return None


def keep_float(model: Any) -> list[str]:
    """Give every float-weight Conv/ConvTranspose/Gemm that ORT would quantise on load its own
    per-axis ``DequantizeLinear`` input (same values); return the names of the layers changed.

    ``model`` is changed in place. A layer whose channel count the graph's shapes do not give
    is left as it was (:func:`runtime_quantised` then names it).
    """
    import onnx
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = _consumers(model)
    shaped: list[Any] = [model]          # shape inference only when the graph lacks a shape
    changed: list[str] = []
    inserts: list[tuple[Any, Any]] = []
    for node in model.graph.node:
        if node.op_type not in _WEIGHTED or len(node.input) < 2:
            continue
        weight = inits.get(node.input[1])
        dq = producer.get(node.input[0])
        if weight is None or weight.data_type != _FLOAT or dq is None \
                or dq.op_type != "DequantizeLinear" or len(dq.input) < 2:
            continue
        scale = inits.get(dq.input[1])
        if scale is None or int(np.prod(scale.dims)) != 1 \
                or not _leads_to_quantize(node, consumers):
            continue
        channels = _channels(shaped, node.input[0])
        if channels is None and len(shaped) == 1:
            shaped.append(onnx.shape_inference.infer_shapes(model))
            channels = _channels(shaped, node.input[0])
        if channels is None:
            continue
        s = numpy_helper.to_array(scale).reshape(())
        names = [f"{node.name}_float_input_scale"]
        tensors = [numpy_helper.from_array(np.full(channels, s, s.dtype), names[0])]
        if len(dq.input) > 2 and dq.input[2] in inits:
            z = numpy_helper.to_array(inits[dq.input[2]]).reshape(())
            names.append(f"{node.name}_float_input_zero_point")
            tensors.append(numpy_helper.from_array(np.full(channels, z, z.dtype), names[1]))
        model.graph.initializer.extend(tensors)
        out = f"{node.name}_float_input"
        inserts.append((node, helper.make_node("DequantizeLinear", [dq.input[0], *names], [out],
                                               name=f"{node.name}_float_input_dq", axis=1)))
        node.input[0] = out
        changed.append(node.name)
    for node, dq_node in inserts:                 # topological: just before its consumer
        nodes = list(model.graph.node)
        model.graph.node.insert(nodes.index(node), dq_node)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    dead = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
            and n.output[0] not in used]
    for n in dead:                                # the DQs the changed layers alone read
        model.graph.node.remove(n)
    return changed


def runtime_quantised(model: Any) -> list[str]:
    """Layers with a float weight in ``model`` that ONNX Runtime's basic optimisations give a
    quantised one (what the CPU provider then runs as INT8): empty when the artifact runs as
    written."""
    import onnx
    import onnxruntime as ort

    inits = {i.name: i for i in model.graph.initializer}
    floats = {n.name for n in model.graph.node if n.op_type in _WEIGHTED and len(n.input) > 1
              and n.input[1] in inits and inits[n.input[1]].data_type == _FLOAT}
    if not floats:
        return []
    with tempfile.TemporaryDirectory(prefix="edgeops-ortopt-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(Path(tmp) / "basic.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        seen = onnx.load(so.optimized_model_filepath, load_external_data=False)
    producer = {o: n for n in seen.graph.node for o in n.output}
    return sorted(n.name for n in seen.graph.node if n.name in floats and len(n.input) > 1
                  and n.input[1] in producer
                  and producer[n.input[1]].op_type == "DequantizeLinear")

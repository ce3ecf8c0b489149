"""Make an ONNX graph static and constant-folded before it is lowered to TFLite ops.

TFLite kernels want static shapes and constant weights, while exported ONNX graphs carry shape
arithmetic (Shape→Gather→Concat→Reshape), Constant nodes, BatchNormalization after Conv and,
for pre-quantised models, QuantizeLinear/DequantizeLinear pairs. This module fixes the input
shapes, evaluates every node whose inputs are known (with ONNX's reference evaluator, so the
semantics are ONNX's own), folds BatchNormalization into the preceding Conv, and strips QDQ pairs
while remembering their scales as quantisation hints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from edgeops.errors import UnsupportedModelError

__all__ = ["Prepared", "prepare"]

_NO_FOLD = {"QuantizeLinear", "DequantizeLinear", "RandomNormal", "RandomUniform",
            "RandomNormalLike", "RandomUniformLike", "Multinomial"}


@dataclass
class Prepared:
    """A static, folded ONNX graph plus what the lowering needs to know about it."""

    graph: onnx.GraphProto
    opset: int
    consts: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype[np.generic]]
    input_shapes: dict[str, tuple[int, ...]]
    quant_hints: dict[str, tuple[float, int]] = field(default_factory=dict)  # QDQ scale, zp


def _dims(vi: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in t.shape.dim)


def fix_input_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]],
                     *, require_static: bool, target: str) -> dict[str, tuple[int, ...]]:
    """Resolve every graph input to a static shape; errors name the dims left dynamic."""
    inits = {i.name for i in model.graph.initializer}
    unknown = sorted(set(input_shapes) - {i.name for i in model.graph.input})
    if unknown:
        raise UnsupportedModelError(f"--input-shape names unknown inputs {unknown}",
                                    hint="use the model's input names")
    fixed: dict[str, tuple[int, ...]] = {}
    dynamic: list[str] = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = _dims(vi) or ()
        if vi.name in input_shapes:
            shape = tuple(int(d) for d in input_shapes[vi.name])
            if len(shape) != len(dims) or any(d is not None and d != s
                                              for d, s in zip(dims, shape, strict=True)):
                raise UnsupportedModelError(
                    f"--input-shape {vi.name}={'x'.join(map(str, shape))} does not fit the "
                    f"model's shape {'x'.join('?' if d is None else str(d) for d in dims)}",
                    hint="keep the rank and the static dims, fix only the dynamic ones")
        else:
            # a dynamic batch becomes 1 (samples are fed one at a time), as in converters/build
            if any(d is None for d in dims[1:]):
                dynamic.append(f"{vi.name} {'x'.join('?' if d is None else str(d) for d in dims)}")
                continue
            shape = tuple(1 if d is None else d for d in dims)   # dynamic batch → 1
        fixed[vi.name] = shape
    if dynamic:
        why = "needs static shapes" if require_static else "writes static shapes (TFLite)"
        raise UnsupportedModelError(
            f"target {target} {why}; dynamic dims in: {', '.join(dynamic)}",
            hint="fix them with " + " ".join(
                f"--input-shape {d.split(' ')[0]}="
                + "x".join("1" if i == 0 and v == "?" else ("N" if v == "?" else v)
                           for i, v in enumerate(d.split(" ")[1].split("x")))
                for d in dynamic) + " (N: the size to build for)")
    for vi in model.graph.input:
        if vi.name in fixed:
            shp = vi.type.tensor_type.shape
            del shp.dim[:]
            for d in fixed[vi.name]:
                shp.dim.add().dim_value = d
    return fixed


def _eval_node(node: onnx.NodeProto, inputs: list[np.ndarray | None], opset: int,
               domain_opsets: list[onnx.OperatorSetIdProto]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    names = [n if n else "" for n in node.input]
    feeds = {n: v for n, v in zip(names, inputs, strict=True) if n and v is not None}
    g = helper.make_graph(
        [node], "fold",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in feeds.items()],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
         for o in node.output if o])
    m = helper.make_model(g, opset_imports=list(domain_opsets))
    out = ReferenceEvaluator(m).run(None, feeds)
    return [np.asarray(o) for o in out]


def _fold_bn(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray],
             outputs: set[str]) -> list[onnx.NodeProto]:
    """Conv→BatchNormalization becomes one Conv with scaled weights and shifted bias."""
    users: dict[str, int] = {}
    for n in nodes:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    by_out = {o: n for n in nodes for o in n.output}
    drop: set[int] = set()
    for n in nodes:
        if n.op_type != "BatchNormalization" or (len(n.output) > 1 and any(n.output[1:])):
            continue
        conv = by_out.get(n.input[0])
        if (conv is None or conv.op_type not in ("Conv", "ConvTranspose")
                or users.get(conv.output[0], 0) != 1 or conv.output[0] in outputs
                or not all(i in consts for i in n.input[1:5])
                or conv.input[1] not in consts):
            continue
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (consts[i].astype(np.float64) for i in n.input[1:5])
        k = gamma / np.sqrt(var + eps)
        w = consts[conv.input[1]].astype(np.float64)
        if conv.op_type == "Conv":
            w2 = w * k.reshape(-1, *([1] * (w.ndim - 1)))
        else:   # ConvTranspose weight: [C_in, C_out/group, ...]; only group 1 folded
            if next((a.i for a in conv.attribute if a.name == "group"), 1) != 1:
                continue
            w2 = w * k.reshape(1, -1, *([1] * (w.ndim - 2)))
        b = consts[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] \
            else np.zeros(k.shape)
        b2 = (b - mean) * k + beta
        wn, bn = conv.input[1] + "__bnfold", conv.output[0] + "__bnbias"
        consts[wn], consts[bn] = w2.astype(np.float32), b2.astype(np.float32)
        data = conv.input[0]
        del conv.input[:]
        conv.input.extend([data, wn, bn])
        conv.output[0] = n.output[0]
        drop.add(id(n))
    return [n for n in nodes if id(n) not in drop]


def prepare(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]], *,
            require_static: bool, target: str) -> Prepared:
    """Copy, fix shapes, fold constants/BN/QDQ and infer every tensor's static shape."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    fixed = fix_input_shapes(model, input_shapes, require_static=require_static, target=target)
    g = model.graph
    for o in g.output:          # declared output dims may be symbolic: let inference decide
        o.type.tensor_type.ClearField("shape")
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    nodes = list(g.node)
    out_names = {o.name for o in g.output}
    quant_hints: dict[str, tuple[float, int]] = {}
    inferred = _infer(model)
    changed = True
    while changed:
        changed = False
        kept: list[onnx.NodeProto] = []
        for n in nodes:
            if n.op_type == "Constant":
                consts[n.output[0]] = _eval_node(n, [], opset, list(model.opset_import))[0]
                changed = True
                continue
            if n.op_type == "Shape" and n.input[0] in inferred:
                shp = inferred[n.input[0]]
                if all(d is not None for d in shp):
                    start = next((a.i for a in n.attribute if a.name == "start"), 0)
                    end = next((a.i for a in n.attribute if a.name == "end"), None)
                    consts[n.output[0]] = np.array(shp, np.int64)[start:end]
                    changed = True
                    continue
            if (n.op_type not in _NO_FOLD and n.domain in ("", "ai.onnx")
                    and all((not i) or i in consts for i in n.input) and n.input):
                try:
                    vals = _eval_node(n, [consts.get(i) if i else None for i in n.input], opset,
                                      list(model.opset_import))
                except Exception:
                    vals = None
                if vals is not None:
                    for o, v in zip(n.output, vals, strict=False):
                        consts[o] = v
                    changed = True
                    continue
            if n.op_type == "DequantizeLinear" and n.input[0] in consts and all(
                    (not i) or i in consts for i in n.input):
                consts[n.output[0]] = _dequantize(n, consts)
                changed = True
                continue
            kept.append(n)
        nodes = kept
        if changed:
            _rewrite(g, nodes, consts)
            inferred = _infer(model)
    # QDQ on activations: Q→DQ becomes identity, the scale becomes a hint for the quantiser.
    alias: dict[str, str] = {}
    kept = []
    by_out = {o: n for n in nodes for o in n.output}
    for n in nodes:
        if n.op_type == "DequantizeLinear":
            q = by_out.get(n.input[0])
            if q is not None and q.op_type == "QuantizeLinear" and q.input[1] in consts:
                scale = float(np.asarray(consts[q.input[1]]).ravel()[0])
                zp_arr = consts.get(q.input[2]) if len(q.input) > 2 and q.input[2] else None
                zp = int(np.asarray(zp_arr).ravel()[0]) if zp_arr is not None else 0
                if zp_arr is not None and zp_arr.dtype == np.uint8:
                    zp -= 128                       # uint8 ranges map to int8 with zp-128
                quant_hints[q.input[0]] = (scale, zp)
                alias[n.output[0]] = q.input[0]
                continue
        kept.append(n)
    nodes = kept
    for n in nodes:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
    for o in g.output:
        if o.name in alias:
            src = alias[o.name]
            nodes.append(helper.make_node("Identity", [src], [o.name]))
            if src in quant_hints:
                quant_hints[o.name] = quant_hints[src]
    nodes = [n for n in nodes if not (n.op_type == "QuantizeLinear"
                                      and not _used(n.output[0], nodes, out_names))]
    # BatchNormalization folding
    nodes = _fold_bn(nodes, consts, out_names)
    _rewrite(g, nodes, consts)
    inferred = _infer(model)
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, np.dtype[np.generic]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        d = _dims(vi)
        if d is not None:
            static = [x for x in d if x is not None]
            if len(static) == len(d):
                shapes[vi.name] = tuple(static)
        et = vi.type.tensor_type.elem_type
        if et:
            dtypes[vi.name] = np.dtype(helper.tensor_dtype_to_np_dtype(et))
    for k, v in consts.items():
        shapes[k] = tuple(v.shape)
        dtypes[k] = v.dtype
    return Prepared(g, opset, consts, shapes, dtypes, fixed, quant_hints)


def _dequantize(n: onnx.NodeProto, consts: dict[str, np.ndarray]) -> np.ndarray:
    """DequantizeLinear on a constant (per-tensor or per-axis), in numpy."""
    q = consts[n.input[0]].astype(np.float64)
    scale = np.asarray(consts[n.input[1]], np.float64)
    zp = np.asarray(consts[n.input[2]], np.float64) if len(n.input) > 2 and n.input[2] \
        else np.zeros_like(scale)
    if scale.ndim == 1 and scale.size > 1:
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    out: np.ndarray = ((q - zp) * scale).astype(np.float32)
    return out


def _used(name: str, nodes: list[onnx.NodeProto], outputs: set[str]) -> bool:
    return name in outputs or any(name in n.input for n in nodes)


def _rewrite(g: onnx.GraphProto, nodes: list[onnx.NodeProto],
             consts: dict[str, np.ndarray]) -> None:
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(numpy_helper.from_array(np.asarray(v), k)
                         for k, v in consts.items() if k in used)
    keep_inputs = [i for i in g.input if i.name not in consts]
    del g.input[:]
    g.input.extend(keep_inputs)
    del g.value_info[:]


def _infer(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise UnsupportedModelError(f"ONNX shape inference failed: {exc}",
                                    hint="check the model with onnx.checker") from None
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    out: dict[str, tuple[int | None, ...]] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + \
            list(inferred.graph.output):
        d = _dims(vi)
        if d is not None:
            out[vi.name] = d
    # keep graph outputs' inferred types too
    for o in model.graph.output:
        match = next((x for x in inferred.graph.output if x.name == o.name), None)
        if match is not None:
            o.CopyFrom(match)
    return out

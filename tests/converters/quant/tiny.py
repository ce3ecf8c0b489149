"""Tiny graphs for the quantisation passes' unit tests (seeded: same bytes every run)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.data import SampleSet

__all__ = ["conv_chain", "layer_error", "matmul_outliers", "rounding_net", "run", "samples",
           "smooth_samples"]


def _model(nodes: list[Any], inits: list[Any], x_shape: list[int], y: str,
           opset: int = 13) -> onnx.ModelProto:
    g = h.make_graph(nodes, "tiny", [h.make_tensor_value_info("x", T.FLOAT, x_shape)],
                     [h.make_tensor_value_info(y, T.FLOAT, None)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def conv_chain(act: str = "Relu", *, depthwise: bool = True, c: int = 8) -> onnx.ModelProto:
    """conv(3->c) -> act -> [depthwise conv c->c] -> act -> conv(c->4): two or three pairs.

    Channel scales differ by orders of magnitude, as they do after BatchNorm folding.
    """
    rng = np.random.default_rng(7)
    spread = np.logspace(-2, 1, c).astype(np.float32)
    w1 = rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * spread[:, None, None, None]
    w2 = rng.standard_normal((c, 1, 3, 3)).astype(np.float32) * spread[::-1, None, None, None]
    w3 = rng.standard_normal((4, c, 1, 1)).astype(np.float32) * 0.3
    inits = [nh.from_array(w1, "w1"), nh.from_array(rng.standard_normal(c).astype(np.float32)
                                                    * spread, "b1"),
             nh.from_array(w3, "w3"), nh.from_array(np.zeros(4, np.float32), "b3")]

    def act_node(i: str, o: str) -> Any:
        if act == "LeakyRelu":
            return h.make_node("LeakyRelu", [i], [o], alpha=0.1, name=f"act_{o}")
        return h.make_node(act, [i], [o], name=f"act_{o}")

    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             act_node("c1", "a1")]
    last = "a1"
    if depthwise:
        inits += [nh.from_array(w2, "w2"), nh.from_array(
            rng.standard_normal(c).astype(np.float32), "b2")]
        nodes += [h.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1],
                              group=c, name="dw"), act_node("c2", "a2")]
        last = "a2"
    nodes.append(h.make_node("Conv", [last, "w3", "b3"], ["y"], name="project"))
    return _model(nodes, inits, [1, 3, 12, 12], "y")


def matmul_outliers(layernorm: bool) -> onnx.ModelProto:
    """[LayerNorm ->] two MatMuls sharing an input with two outlier channels (x 40)."""
    rng = np.random.default_rng(3)
    k = 16
    gamma = np.ones(k, np.float32)
    gamma[[2, 9]] = 40.0
    inits = [nh.from_array(rng.standard_normal((k, 8)).astype(np.float32) * 0.2, "wa"),
             nh.from_array(rng.standard_normal((k, 8)).astype(np.float32) * 0.2, "wb"),
             nh.from_array(gamma, "gamma"),
             nh.from_array(rng.standard_normal(k).astype(np.float32) * 0.1, "beta")]
    if layernorm:
        nodes = [h.make_node("LayerNormalization", ["x", "gamma", "beta"], ["t"], axis=-1,
                             name="ln")]
    else:
        nodes = [h.make_node("Mul", ["x", "gamma"], ["t0"], name="scale"),
                 h.make_node("Add", ["t0", "beta"], ["t"], name="shift")]
    nodes += [h.make_node("MatMul", ["t", "wa"], ["ya"], name="qa"),
              h.make_node("MatMul", ["t", "wb"], ["yb"], name="qb"),
              h.make_node("Add", ["ya", "yb"], ["y"], name="sum")]
    return _model(nodes, inits, [1, 6, k], "y", opset=17)


def rounding_net() -> onnx.ModelProto:
    """Every layer shape the rounding pass handles: strided/padded, dilated depthwise, grouped
    with SAME padding, 1-D, Gemm (transB) and MatMul; correlated weights per channel."""
    rng = np.random.default_rng(11)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    inits = [nh.from_array(w(8, 3, 3, 3), "w1"), nh.from_array(w(8), "b1"),
             nh.from_array(w(8, 1, 3, 3), "w2"), nh.from_array(w(8), "b2"),
             nh.from_array(w(8, 4, 3, 3), "w3"),
             nh.from_array(w(6, 8, 3), "w4"),
             nh.from_array(w(5, 6), "w5"), nh.from_array(w(5), "b5"),
             nh.from_array(w(5, 4), "w6"),
             nh.from_array(np.array([1, 8, -1], np.int64), "shape3"),
             nh.from_array(np.array([1, -1], np.int64), "shape2")]
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2],
                         name="conv_strided"),
             h.make_node("Relu", ["c1"], ["a1"], name="r1"),
             h.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[2, 2, 2, 2], dilations=[2, 2],
                         group=8, name="conv_depthwise"),
             h.make_node("Relu", ["c2"], ["a2"], name="r2"),
             h.make_node("Conv", ["a2", "w3"], ["c3"], group=2, auto_pad="SAME_UPPER",
                         strides=[2, 2], name="conv_grouped"),
             h.make_node("Reshape", ["c3", "shape3"], ["t3"], name="to1d"),
             h.make_node("Conv", ["t3", "w4"], ["c4"], pads=[1, 1], name="conv_1d"),
             h.make_node("ReduceMean", ["c4"], ["p4"], axes=[2], keepdims=0, name="pool"),
             h.make_node("Gemm", ["p4", "w5", "b5"], ["g5"], transB=1, name="dense"),
             h.make_node("Relu", ["g5"], ["a5"], name="r5"),
             h.make_node("Reshape", ["a5", "shape2"], ["f5"], name="flat"),
             h.make_node("MatMul", ["f5", "w6"], ["y"], name="head")]
    return _model(nodes, inits, [1, 3, 16, 16], "y")


def smooth_samples(model: onnx.ModelProto, n: int = 8, seed: int = 0) -> SampleSet:
    """Spatially correlated inputs (neighbouring pixels alike, as in photos)."""
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).standard_normal((n, *shape[1:])).astype(np.float32)
    for ax in range(2, x.ndim):
        x = (x + np.roll(x, 1, ax) + np.roll(x, 2, ax)) / 3
    return SampleSet({"x": x.astype(np.float32)})


def samples(model: onnx.ModelProto, n: int = 6, seed: int = 0) -> SampleSet:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).standard_normal((n, *shape[1:])).astype(np.float32)
    return SampleSet({"x": x})


def run(model: onnx.ModelProto, data: SampleSet) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in data.iter_samples()])


def layer_error(model: onnx.ModelProto, node: str, weight: str, value: np.ndarray,
                data: SampleSet) -> float:
    """||y_layer(value) - y_layer(weight as in model)||^2 measured in ONNX Runtime on ``data``,
    every other layer as it is in ``model``."""
    from converters.quant._stats import stream_tensors

    out = next(n.output[0] for n in model.graph.node if n.name == node)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for i in probe.graph.initializer:
        if i.name == weight:
            i.CopyFrom(nh.from_array(value.astype(np.float32), weight))
    ref: list[np.ndarray] = []
    got: list[np.ndarray] = []
    stream_tensors(model, [out], data.iter_samples(), lambda a: ref.append(a[out]))
    stream_tensors(probe, [out], data.iter_samples(), lambda a: got.append(a[out]))
    return float(sum(np.sum((g.astype(np.float64) - r) ** 2)
                     for g, r in zip(got, ref, strict=True)))

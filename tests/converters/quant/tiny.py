"""Tiny graphs for the quantisation passes' unit tests (seeded: same bytes every run)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.data import SampleSet

__all__ = ["conv_chain", "matmul_outliers", "run", "samples"]


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

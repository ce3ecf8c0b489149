"""Test model zoo: small ONNX models built with onnx.helper at test time.

Each builder returns an ``onnx.ModelProto`` shaped like a real export's awkward corner: old and
new opsets, dynamic batch/height/width/sequence dims, ``Constant`` nodes, ``If`` and ``Loop``
subgraphs, recurrent state as input and output, external data, custom/unknown ops.
Weights are seeded so every run builds the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

__all__ = ["convnet", "external_data", "gru_stateful", "if_model", "loop_model", "outlier_mlp",
           "save", "unsupported_ops"]


def _w(rng: np.random.Generator, shape: tuple[int, ...], name: str, scale: float = 0.3
       ) -> onnx.TensorProto:
    return nh.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def convnet(opset: int = 13, *, dynamic_hw: bool = False, width: int = 8, size: int = 16,
            constant_node: bool = True) -> onnx.ModelProto:
    """Conv-BN-free classifier: conv, relu, conv, add (Constant), GAP, flatten, Gemm."""
    rng = np.random.default_rng(opset)
    hw: list[int | str] = ["H", "W"] if dynamic_hw else [size, size]
    inits = [_w(rng, (width, 3, 3, 3), "w1"), nh.from_array(np.zeros(width, np.float32), "b1"),
             _w(rng, (width, width, 3, 3), "w2", 0.15),
             nh.from_array(np.zeros(width, np.float32), "b2"),
             _w(rng, (10, width), "wf"), nh.from_array(np.zeros(10, np.float32), "bf")]
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2")]
    if constant_node:
        nodes += [h.make_node("Constant", [], ["k"], name="const",
                              value=nh.from_array(np.full((1,), 0.1, np.float32), "kv")),
                  h.make_node("Add", ["c2", "k"], ["a2"], name="add_const")]
    else:
        nodes += [h.make_node("Identity", ["c2"], ["a2"], name="ident")]
    nodes += [h.make_node("Relu", ["a2"], ["r2"], name="relu2"),
              h.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
              h.make_node("Flatten", ["g"], ["f"], name="flatten"),
              h.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1, name="fc")]
    graph = h.make_graph(nodes, "convnet",
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, *hw])],
                         [h.make_tensor_value_info("logits", T.FLOAT, ["N", 10])], inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)],
                     producer_name="edgeops-zoo")
    m.ir_version = min(m.ir_version, 7 if opset < 15 else 8)
    onnx.checker.check_model(m)
    return m


def gru_stateful(opset: int = 14, hidden: int = 8, features: int = 4) -> onnx.ModelProto:
    """A GRU over [seq, batch, features] with its state as input ``h0`` and output ``hn``."""
    rng = np.random.default_rng(7)
    inits = [_w(rng, (1, 3 * hidden, features), "W"), _w(rng, (1, 3 * hidden, hidden), "R"),
             nh.from_array(np.zeros((1, 6 * hidden), np.float32), "B"),
             _w(rng, (hidden, 1), "wo")]
    nodes = [h.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["y", "hn"],
                         hidden_size=hidden, name="gru"),
             h.make_node("MatMul", ["hn", "wo"], ["forecast"], name="head")]
    graph = h.make_graph(nodes, "gru",
                         [h.make_tensor_value_info("x", T.FLOAT, ["seq", 1, features]),
                          h.make_tensor_value_info("h0", T.FLOAT, [1, 1, hidden])],
                         [h.make_tensor_value_info("forecast", T.FLOAT, [1, 1, 1]),
                          h.make_tensor_value_info("hn", T.FLOAT, [1, 1, hidden])], inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def if_model(opset: int = 13) -> onnx.ModelProto:
    """Branches on the sign of the input's sum: two subgraphs, each a MatMul."""
    rng = np.random.default_rng(3)
    wa, wb = _w(rng, (6, 4), "wa"), _w(rng, (6, 4), "wb")
    then_g = h.make_graph([h.make_node("MatMul", ["x", "wa"], ["ta"], name="then_mm")], "then",
                          [], [h.make_tensor_value_info("ta", T.FLOAT, ["N", 4])])
    else_g = h.make_graph([h.make_node("MatMul", ["x", "wb"], ["tb"], name="else_mm")], "else",
                          [], [h.make_tensor_value_info("tb", T.FLOAT, ["N", 4])])
    nodes = [h.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
             h.make_node("Constant", [], ["zero"], name="zero",
                         value=nh.from_array(np.array(0.0, np.float32), "z")),
             h.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
             h.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g,
                         name="branch")]
    graph = h.make_graph(nodes, "if", [h.make_tensor_value_info("x", T.FLOAT, ["N", 6])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])], [wa, wb])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def loop_model(opset: int = 13, steps: int = 3) -> onnx.ModelProto:
    """Applies ``x <- tanh(x @ w)`` ``steps`` times in a Loop."""
    rng = np.random.default_rng(5)
    w = _w(rng, (5, 5), "w")
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"], name="keep"),
         h.make_node("MatMul", ["v_in", "w"], ["mm"], name="body_mm"),
         h.make_node("Tanh", ["mm"], ["v_out"], name="body_tanh")],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("v_in", T.FLOAT, ["N", 5])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []),
         h.make_tensor_value_info("v_out", T.FLOAT, ["N", 5])])
    nodes = [h.make_node("Constant", [], ["trip"], name="trip",
                         value=nh.from_array(np.array(steps, np.int64), "t")),
             h.make_node("Constant", [], ["cond"], name="cond",
                         value=nh.from_array(np.array(True), "c")),
             h.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body, name="loop")]
    graph = h.make_graph(nodes, "loop", [h.make_tensor_value_info("x", T.FLOAT, ["N", 5])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 5])], [w])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def outlier_mlp(depth: int = 4, width: int = 16, outlier: float = 300.0) -> onnx.ModelProto:
    """A MatMul chain over [N, 4, width] (not classifier-shaped, so the gate reads cosine).

    ``mm1`` blows one channel of its output up by ``outlier`` and ``mm2`` scales it back, so in
    FP32 nothing changes, but quantising ``mm2``'s input per tensor crushes the other channels:
    ``mm2`` is the one node that must stay float.
    """
    rng = np.random.default_rng(11)
    inits, nodes, prev = [], [], "x"
    for i in range(depth):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        if i == 1:
            w[:, 3] *= outlier
        if i == 2:
            w[3, :] /= outlier
        inits.append(nh.from_array(w, f"w{i}"))
        nodes.append(h.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        prev = f"m{i}"
    graph = h.make_graph(nodes, "mlp",
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, width])],
                         [h.make_tensor_value_info(prev, T.FLOAT, ["N", 4, width])], inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def unsupported_ops() -> onnx.ModelProto:
    """Two nodes no runtime knows (a custom domain op and a misspelt op) among good ones."""
    nodes = [h.make_node("Relu", ["x"], ["a"], name="ok_relu"),
             h.make_node("FancyNorm", ["a"], ["b"], domain="com.example", name="fancy1"),
             h.make_node("Reluu", ["b"], ["y"], name="typo_relu")]
    graph = h.make_graph(nodes, "bad", [h.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 4])])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13),
                                              h.make_opsetid("com.example", 1)])


def save(model: onnx.ModelProto, path: Path, *, external: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=f"{path.name}.data",
                        size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def external_data(path: Path) -> Path:
    """The convnet with every weight in a ``.data`` file beside it."""
    return save(convnet(13), path, external=True)

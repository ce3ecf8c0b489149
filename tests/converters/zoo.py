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

__all__ = ["convnet", "dense_biases", "external_data", "gru_stateful", "if_model", "loop_model",
           "outlier_mlp", "paddle2onnx_mobilenet_block", "save", "tf2onnx_convnet",
           "unsupported_ops"]


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


def dense_biases(bias_shape: tuple[int, ...] = (1, 12), batch: int | str = "N", *,
                 fused: bool = False, opset: int = 13) -> onnx.ModelProto:
    """Two dense layers (MatMul + Add) whose first bias has ``bias_shape``, as Keras/JAX export
    a dense layer's bias (``[1, N]``); ORT's optimiser fuses each pair into a Gemm that keeps
    the bias' shape. ``fused`` writes the Gemms directly (``bias_shape`` may then vary along
    rows: ``(batch, 12)``). Input ``x`` is ``[batch, 16]``, output ``logits`` ``[batch, 5]``."""
    rng = np.random.default_rng(16)
    inits = [_w(rng, (16, 12), "w1"), _w(rng, bias_shape, "b1", 1.0), _w(rng, (12, 5), "w2"),
             _w(rng, (1, 5), "b2", 1.0)]
    if fused:
        nodes = [h.make_node("Gemm", ["x", "w1", "b1"], ["d1"], name="dense1"),
                 h.make_node("Relu", ["d1"], ["r1"], name="relu1"),
                 h.make_node("Gemm", ["r1", "w2", "b2"], ["logits"], name="dense2")]
    else:
        nodes = [h.make_node("MatMul", ["x", "w1"], ["m1"], name="dense1"),
                 h.make_node("Add", ["m1", "b1"], ["d1"], name="dense1_bias"),
                 h.make_node("Relu", ["d1"], ["r1"], name="relu1"),
                 h.make_node("MatMul", ["r1", "w2"], ["m2"], name="dense2"),
                 h.make_node("Add", ["m2", "b2"], ["logits"], name="dense2_bias")]
    graph = h.make_graph(nodes, "dense_biases",
                         [h.make_tensor_value_info("x", T.FLOAT, [batch, 16])],
                         [h.make_tensor_value_info("logits", T.FLOAT, [batch, 5])], inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)],
                     producer_name="edgeops-zoo")
    m.ir_version = 7
    onnx.checker.check_model(m)
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


def tf2onnx_convnet(opset: int = 13, size: int = 16, width: int = 8) -> onnx.ModelProto:
    """A Keras-style NHWC classifier as tf2onnx (``python -m tf2onnx.convert --saved-model``)
    exports it, with the quirks of that exporter:

    * the image input stays NHWC (``[unk__N, H, W, 3]``) and a ``Transpose`` (perm 0,3,1,2)
      feeds the NCHW ``Conv``; the head transposes back to NHWC and reduces over axes 1, 2
      (tf2onnx README, ``--inputs-as-nchw``, and onnx/tensorflow-onnx PR #1979);
    * every tensor is named after its TF op and output port, ``name:0``
      (``--inputs input_1:0`` in onnx/tensorflow-onnx issues #931 and #2175); the signature's
      output comes out of ``Identity`` nodes (``Identity:0``), here a chain of two;
    * the unknown batch dim is a ``unk__N`` dim_param, the symbol ONNX shape inference
      materialises for unknown dims (onnx/defs/shape_inference ``createNew("unk__")``);
    * opset 13, tf2onnx's default;
    * ``Conv`` with TF ``SAME`` padding written as explicit, asymmetric pads when the shapes
      are known (``pad // 2`` before, the rest after: stride 2 gives pads 0,0,1,1) and as
      ``auto_pad=SAME_UPPER`` otherwise (tf2onnx's conv ``add_padding``).
    """
    rng = np.random.default_rng(13)
    pre = "StatefulPartitionedCall/model/"
    inits = [_w(rng, (width, 3, 3, 3), f"{pre}conv2d/Conv2D/ReadVariableOp:0"),
             nh.from_array((rng.standard_normal(width) * 0.1).astype(np.float32),
                           f"{pre}conv2d/BiasAdd/ReadVariableOp:0"),
             _w(rng, (width, width, 3, 3), f"{pre}conv2d_1/Conv2D/ReadVariableOp:0", 0.15),
             nh.from_array(np.zeros(width, np.float32), f"{pre}conv2d_1/BiasAdd/ReadVariableOp:0"),
             _w(rng, (width, 10), f"{pre}dense/MatMul/ReadVariableOp:0", 8.0),
             nh.from_array(np.zeros(10, np.float32), f"{pre}dense/BiasAdd/ReadVariableOp:0")]
    nodes = [
        h.make_node("Transpose", ["input_1:0"], [f"{pre}conv2d/BiasAdd__6:0"], perm=[0, 3, 1, 2],
                    name=f"{pre}conv2d/BiasAdd__6"),
        h.make_node("Conv", [f"{pre}conv2d/BiasAdd__6:0", f"{pre}conv2d/Conv2D/ReadVariableOp:0",
                             f"{pre}conv2d/BiasAdd/ReadVariableOp:0"], [f"{pre}conv2d/BiasAdd:0"],
                    strides=[2, 2], pads=[0, 0, 1, 1], kernel_shape=[3, 3], dilations=[1, 1],
                    name=f"{pre}conv2d/BiasAdd"),
        h.make_node("Relu", [f"{pre}conv2d/BiasAdd:0"], [f"{pre}conv2d/Relu:0"],
                    name=f"{pre}conv2d/Relu"),
        h.make_node("Conv", [f"{pre}conv2d/Relu:0", f"{pre}conv2d_1/Conv2D/ReadVariableOp:0",
                             f"{pre}conv2d_1/BiasAdd/ReadVariableOp:0"],
                    [f"{pre}conv2d_1/BiasAdd:0"], auto_pad="SAME_UPPER", kernel_shape=[3, 3],
                    strides=[2, 2], name=f"{pre}conv2d_1/BiasAdd"),
        h.make_node("Transpose", [f"{pre}conv2d_1/BiasAdd:0"], [f"{pre}conv2d_1/BiasAdd__12:0"],
                    perm=[0, 2, 3, 1], name=f"{pre}conv2d_1/BiasAdd__12"),
        h.make_node("ReduceMean", [f"{pre}conv2d_1/BiasAdd__12:0"],
                    [f"{pre}global_average_pooling2d/Mean:0"], axes=[1, 2], keepdims=0,
                    name=f"{pre}global_average_pooling2d/Mean"),
        h.make_node("MatMul", [f"{pre}global_average_pooling2d/Mean:0",
                               f"{pre}dense/MatMul/ReadVariableOp:0"], [f"{pre}dense/MatMul:0"],
                    name=f"{pre}dense/MatMul"),
        h.make_node("Add", [f"{pre}dense/MatMul:0", f"{pre}dense/BiasAdd/ReadVariableOp:0"],
                    [f"{pre}dense/BiasAdd:0"], name=f"{pre}dense/BiasAdd"),
        h.make_node("Softmax", [f"{pre}dense/BiasAdd:0"], [f"{pre}dense/Softmax:0"], axis=-1,
                    name=f"{pre}dense/Softmax"),
        h.make_node("Identity", [f"{pre}dense/Softmax:0"], ["StatefulPartitionedCall:0"],
                    name="StatefulPartitionedCall"),
        h.make_node("Identity", ["StatefulPartitionedCall:0"], ["Identity:0"], name="Identity"),
    ]
    graph = h.make_graph(nodes, "tf2onnx",
                         [h.make_tensor_value_info("input_1:0", T.FLOAT,
                                                   ["unk__612", size, size, 3])],
                         [h.make_tensor_value_info("Identity:0", T.FLOAT, ["unk__613", 10])],
                         inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], producer_name="tf2onnx",
                     producer_version="1.16.1 15c810")
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m


def paddle2onnx_mobilenet_block(opset: int = 11, size: int = 16, width: int = 8
                                ) -> onnx.ModelProto:
    """A MobileNet-style block as paddle2onnx exports a Paddle inference model, with the quirks
    of that exporter:

    * opset 11 or 9 exports (its mappers go back to opset 7; op_list.md in
      PaddlePaddle/Paddle2ONNX lists ``batch_norm``, ``relu6``, ``reshape2`` from opset 1-5);
    * the input keeps the ``InputSpec`` name, ``x``, with a ``p2o.DynamicDimension.0`` batch;
      outputs are named after the ``scale`` op that ``save_inference_model`` appends,
      ``save_infer_model/scale_0.tmp_1`` (PaddlePaddle/Paddle issues #31975 and #16483,
      PaddleDetection issue #9459), made here by an ``Identity`` (scale 1.0);
    * ``relu6`` is ``Clip(0, 6)``: min/max as constant inputs from opset 11, attributes before
      (``Relu6Mapper`` calls ``helper_->Clip(..., 0.0, threshold)``);
    * ``BatchNormalization`` kept unfused after a bias-less ``Conv``, and the depthwise conv as
      a grouped ``Conv``;
    * ``Reshape`` to ``[0, -1]`` (0 copies the batch dim) from a shape initializer, before a
      ``MatMul`` + ``Add`` fully connected layer.
    """
    rng = np.random.default_rng(opset)
    c = width

    def bn(prefix: str, ch: int) -> list[onnx.TensorProto]:
        return [nh.from_array((1 + 0.1 * rng.standard_normal(ch)).astype(np.float32),
                              f"{prefix}_scale"),
                nh.from_array((0.1 * rng.standard_normal(ch)).astype(np.float32),
                              f"{prefix}_offset"),
                nh.from_array((0.1 * rng.standard_normal(ch)).astype(np.float32),
                              f"{prefix}_mean"),
                nh.from_array((0.5 + rng.random(ch)).astype(np.float32), f"{prefix}_variance")]

    inits = [_w(rng, (c, 3, 3, 3), "conv2d_0.w_0"), *bn("batch_norm_0.w", c),
             _w(rng, (c, 1, 3, 3), "depthwise_conv2d_0.w_0"), *bn("batch_norm_1.w", c),
             _w(rng, (c, c, 1, 1), "conv2d_1.w_0", 0.3), *bn("batch_norm_2.w", c),
             nh.from_array(np.array([0, -1], np.int64), "reshape2_0.shape"),
             _w(rng, (c, 10), "linear_0.w_0"), nh.from_array(np.zeros(10, np.float32),
                                                              "linear_0.b_0")]
    if opset >= 11:
        inits += [nh.from_array(np.array(0.0, np.float32), "relu6_min"),
                  nh.from_array(np.array(6.0, np.float32), "relu6_max")]

    def relu6(i: int, src: str) -> onnx.NodeProto:
        out = f"relu6_{i}.tmp_0"
        if opset >= 11:
            return h.make_node("Clip", [src, "relu6_min", "relu6_max"], [out], name=f"p2o.Clip.{i}")
        return h.make_node("Clip", [src], [out], min=0.0, max=6.0, name=f"p2o.Clip.{i}")

    def bn_node(i: int, src: str) -> onnx.NodeProto:
        w = f"batch_norm_{i}.w"
        return h.make_node("BatchNormalization", [src, f"{w}_scale", f"{w}_offset", f"{w}_mean",
                                                  f"{w}_variance"], [f"batch_norm_{i}.tmp_2"],
                           epsilon=1e-5, momentum=0.9, name=f"p2o.BatchNormalization.{i}")

    nodes = [
        h.make_node("Conv", ["x", "conv2d_0.w_0"], ["conv2d_0.tmp_0"], strides=[2, 2],
                    pads=[1, 1, 1, 1], group=1, dilations=[1, 1], kernel_shape=[3, 3],
                    name="p2o.Conv.0"),
        bn_node(0, "conv2d_0.tmp_0"), relu6(0, "batch_norm_0.tmp_2"),
        h.make_node("Conv", ["relu6_0.tmp_0", "depthwise_conv2d_0.w_0"],
                    ["depthwise_conv2d_0.tmp_0"], pads=[1, 1, 1, 1], group=c, strides=[1, 1],
                    dilations=[1, 1], kernel_shape=[3, 3], name="p2o.Conv.1"),
        bn_node(1, "depthwise_conv2d_0.tmp_0"), relu6(1, "batch_norm_1.tmp_2"),
        h.make_node("Conv", ["relu6_1.tmp_0", "conv2d_1.w_0"], ["conv2d_1.tmp_0"],
                    pads=[0, 0, 0, 0], group=1, strides=[1, 1], dilations=[1, 1],
                    kernel_shape=[1, 1], name="p2o.Conv.2"),
        bn_node(2, "conv2d_1.tmp_0"), relu6(2, "batch_norm_2.tmp_2"),
        h.make_node("GlobalAveragePool", ["relu6_2.tmp_0"], ["pool2d_0.tmp_0"],
                    name="p2o.GlobalAveragePool.0"),
        h.make_node("Reshape", ["pool2d_0.tmp_0", "reshape2_0.shape"], ["reshape2_0.tmp_0"],
                    name="p2o.Reshape.0"),
        h.make_node("MatMul", ["reshape2_0.tmp_0", "linear_0.w_0"], ["linear_0.tmp_0"],
                    name="p2o.MatMul.0"),
        h.make_node("Add", ["linear_0.tmp_0", "linear_0.b_0"], ["linear_0.tmp_1"],
                    name="p2o.Add.0"),
        h.make_node("Softmax", ["linear_0.tmp_1"], ["softmax_0.tmp_0"], axis=1,
                    name="p2o.Softmax.0"),
        h.make_node("Identity", ["softmax_0.tmp_0"], ["save_infer_model/scale_0.tmp_1"],
                    name="p2o.Identity.0"),
    ]
    graph = h.make_graph(nodes, "paddle-infer",
                         [h.make_tensor_value_info("x", T.FLOAT,
                                                   ["p2o.DynamicDimension.0", 3, size, size])],
                         [h.make_tensor_value_info("save_infer_model/scale_0.tmp_1", T.FLOAT,
                                                   ["p2o.DynamicDimension.1", 10])], inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)],
                     producer_name="PaddlePaddle", producer_version="1.0")
    m.ir_version = 6 if opset >= 11 else 4
    onnx.checker.check_model(m)
    return m

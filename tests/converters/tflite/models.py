"""Tiny ONNX graphs for the TFLite backend tests, built with onnx.helper (seeded weights)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

__all__ = ["OP_CASES", "W", "feed", "graph", "mobilenet_block", "ort_run", "segmenter"]


def W(rng: np.random.Generator, name: str, *shape: int, scale: float = 0.3,
      positive: bool = False) -> onnx.TensorProto:
    a = rng.standard_normal(shape) * scale
    if positive:
        a = np.abs(a) + 0.5
    return nh.from_array(a.astype(np.float32), name)


def graph(nodes: Sequence[onnx.NodeProto], inputs: dict[str, Sequence[int | str]],
          outputs: Sequence[str], inits: Sequence[onnx.TensorProto] = (), opset: int = 17
          ) -> onnx.ModelProto:
    """A model whose output types/shapes come from ONNX shape inference."""
    g = h.make_graph(list(nodes), "t",
                     [h.make_tensor_value_info(k, T.FLOAT, list(v)) for k, v in inputs.items()],
                     [h.make_tensor_value_info(o, T.FLOAT, None) for o in outputs],
                     list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], producer_name="tflite-tests")
    m.ir_version = 8
    inf = onnx.shape_inference.infer_shapes(m)
    vis = {v.name: v for v in list(inf.graph.value_info) + list(inf.graph.output)}
    del m.graph.output[:]
    m.graph.output.extend(vis[o] for o in outputs)
    return m


def feed(m: onnx.ModelProto, seed: int = 0, n: int = 1,
         shapes: dict[str, Sequence[int]] | None = None) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = {}
        for vi in m.graph.input:
            dims = (shapes or {}).get(vi.name) or [d.dim_value or 1
                                                   for d in vi.type.tensor_type.shape.dim]
            s[vi.name] = rng.standard_normal(dims).astype(np.float32)
        out.append(s)
    return out


def ort_run(m: onnx.ModelProto, sample: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [np.asarray(x) for x in sess.run(None, sample)]


def _case(nodes: Sequence[onnx.NodeProto], shape: Sequence[int],
          inits: Sequence[onnx.TensorProto] = (), opset: int = 17,
          out: str = "y") -> onnx.ModelProto:
    return graph(nodes, {"x": shape}, [out], inits, opset)


def _op_cases() -> dict[str, onnx.ModelProto]:
    r = np.random.default_rng(7)
    n = h.make_node
    x4 = [1, 4, 8, 8]
    c: dict[str, onnx.ModelProto] = {}
    c["conv_same"] = _case([n("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], x4,
                           [W(r, "w", 6, 4, 3, 3), W(r, "b", 6)])
    c["conv_stride2_explicit_pad"] = _case(
        [n("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])], x4,
        [W(r, "w", 6, 4, 3, 3)])
    c["conv_dilated_valid"] = _case([n("Conv", ["x", "w"], ["y"], dilations=[2, 2])], x4,
                                    [W(r, "w", 5, 4, 3, 3)])
    c["conv_depthwise"] = _case([n("Conv", ["x", "w", "b"], ["y"], group=4, pads=[1, 1, 1, 1])],
                                x4, [W(r, "w", 8, 1, 3, 3), W(r, "b", 8)])
    c["conv_grouped"] = _case([n("Conv", ["x", "w"], ["y"], group=2)], x4,
                              [W(r, "w", 6, 2, 1, 1)])
    c["conv1d"] = _case([n("Conv", ["x", "w", "b"], ["y"], pads=[2, 2], strides=[2])],
                        [1, 4, 32], [W(r, "w", 6, 4, 5), W(r, "b", 6)])
    c["conv_transpose"] = _case(
        [n("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
           output_padding=[1, 1])], x4, [W(r, "w", 4, 3, 3, 3), W(r, "b", 3)])
    c["conv_transpose_k2"] = _case([n("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])], x4,
                                   [W(r, "w", 4, 3, 2, 2)])
    c["conv_bn_relu"] = _case(
        [n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         n("BatchNormalization", ["c", "g", "be", "m", "v"], ["bn"]), n("Relu", ["bn"], ["y"])],
        x4, [W(r, "w", 6, 4, 3, 3), W(r, "g", 6, positive=True), W(r, "be", 6), W(r, "m", 6),
             W(r, "v", 6, positive=True)])
    c["batchnorm_alone"] = _case([n("BatchNormalization", ["x", "g", "be", "m", "v"], ["y"])],
                                 x4, [W(r, "g", 4, positive=True), W(r, "be", 4), W(r, "m", 4),
                                      W(r, "v", 4, positive=True)])
    c["gemm"] = _case([n("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5, beta=2.0)],
                      [1, 16], [W(r, "w", 10, 16), W(r, "b", 10)])
    c["matmul_const"] = _case([n("MatMul", ["x", "w"], ["y"])], [1, 5, 16],
                              [W(r, "w", 16, 7)])
    c["matmul_dynamic"] = graph([n("MatMul", ["x", "z"], ["y"])],
                                {"x": [1, 5, 16], "z": [1, 16, 3]}, ["y"])
    for op in ("Add", "Sub", "Mul", "Div"):
        c[f"{op.lower()}_broadcast_const"] = _case(
            [n("Conv", ["x", "w"], ["c"]), n(op, ["c", "k"], ["y"])], x4,
            [W(r, "w", 4, 4, 1, 1), W(r, "k", 4, 1, 1, positive=op == "Div")])
        c[f"{op.lower()}_two_tensors"] = graph(
            [n("Conv", ["x", "w"], ["c"]), n(op, ["c", "z"], ["y"])],
            {"x": x4, "z": [1, 4, 1, 8]}, ["y"], [W(r, "w", 4, 4, 1, 1)])
    c["div_by_tensor"] = graph([n("Div", ["x", "z"], ["y"])], {"x": [1, 6], "z": [1, 6]}, ["y"])
    c["relu"] = _case([n("Relu", ["x"], ["y"])], x4)
    c["clip_relu6"] = _case([n("Clip", ["x", "lo", "hi"], ["y"])], x4,
                            [nh.from_array(np.array(0, np.float32), "lo"),
                             nh.from_array(np.array(6, np.float32), "hi")])
    c["clip_range"] = _case([n("Clip", ["x", "lo", "hi"], ["y"])], x4,
                            [nh.from_array(np.array(-0.5, np.float32), "lo"),
                             nh.from_array(np.array(0.7, np.float32), "hi")])
    c["clip_opset6"] = _case([n("Clip", ["x"], ["y"], min=-1.0, max=1.0)], x4, opset=6)
    c["leaky_relu"] = _case([n("LeakyRelu", ["x"], ["y"], alpha=0.2)], x4)
    c["prelu"] = _case([n("Conv", ["x", "w"], ["c"]), n("PRelu", ["c", "s"], ["y"])], x4,
                       [W(r, "w", 4, 4, 1, 1), W(r, "s", 4, 1, 1)])
    c["sigmoid"] = _case([n("Sigmoid", ["x"], ["y"])], x4)
    c["hard_sigmoid"] = _case([n("HardSigmoid", ["x"], ["y"], alpha=0.25, beta=0.4)], x4)
    c["hard_swish"] = _case([n("Conv", ["x", "w"], ["c"]), n("HardSwish", ["c"], ["y"])], x4,
                            [W(r, "w", 4, 4, 1, 1)])
    c["tanh"] = _case([n("Tanh", ["x"], ["y"])], x4)
    c["softmax_last"] = _case([n("Softmax", ["x"], ["y"], axis=-1)], [1, 10])
    c["softmax_channels"] = _case([n("Conv", ["x", "w"], ["c"]),
                                   n("Softmax", ["c"], ["y"], axis=1)], x4,
                                  [W(r, "w", 4, 4, 1, 1)])
    c["softmax_middle_3d"] = _case([n("Softmax", ["x"], ["y"], axis=1)], [1, 5, 7])
    c["maxpool"] = _case([n("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], x4)
    c["maxpool_pad"] = _case([n("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                pads=[1, 1, 1, 1])], x4)
    c["avgpool_same"] = _case([n("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                 pads=[1, 1, 1, 1])], x4)
    c["avgpool_1d"] = _case([n("AveragePool", ["x"], ["y"], kernel_shape=[4], strides=[4])],
                            [1, 3, 16])
    c["global_avgpool"] = _case([n("GlobalAveragePool", ["x"], ["y"])], x4)
    c["concat_channels"] = _case(
        [n("Conv", ["x", "w1"], ["a"]), n("Conv", ["x", "w2"], ["b"]),
         n("Concat", ["a", "b"], ["y"], axis=1)], x4,
        [W(r, "w1", 3, 4, 1, 1), W(r, "w2", 5, 4, 1, 1)])
    c["reshape_flatten"] = _case(
        [n("Conv", ["x", "w"], ["c"]), n("Flatten", ["c"], ["y"])], x4, [W(r, "w", 4, 4, 1, 1)])
    c["reshape_shape_arith"] = _case(
        [n("Conv", ["x", "w"], ["c"]), n("Shape", ["c"], ["s"]),
         n("Gather", ["s", "i0"], ["b"], axis=0), n("Unsqueeze", ["b", "ax"], ["b1"]),
         n("Concat", ["b1", "m1"], ["ns"], axis=0), n("Reshape", ["c", "ns"], ["y"])], x4,
        [W(r, "w", 4, 4, 1, 1), nh.from_array(np.array(0, np.int64), "i0"),
         nh.from_array(np.array([0], np.int64), "ax"),
         nh.from_array(np.array([-1], np.int64), "m1")])
    c["squeeze_unsqueeze"] = _case(
        [n("GlobalAveragePool", ["x"], ["g"]), n("Squeeze", ["g", "ax"], ["s"]),
         n("Unsqueeze", ["s", "ax0"], ["y"])], x4,
        [nh.from_array(np.array([2, 3], np.int64), "ax"),
         nh.from_array(np.array([0], np.int64), "ax0")])
    c["transpose_pair"] = _case(
        [n("Conv", ["x", "w"], ["c"]), n("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
         n("Relu", ["t"], ["r"]), n("Transpose", ["r"], ["u"], perm=[0, 3, 1, 2]),
         n("Conv", ["u", "w2"], ["y"])], x4, [W(r, "w", 4, 4, 1, 1), W(r, "w2", 4, 4, 1, 1)])
    c["transpose_out"] = _case([n("Transpose", ["x"], ["y"], perm=[0, 3, 1, 2])], x4)
    c["pad_constant"] = _case([n("Conv", ["x", "w"], ["c"]), n("Pad", ["c", "p", "v"], ["y"])],
                              x4, [W(r, "w", 4, 4, 1, 1),
                                   nh.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64),
                                                 "p"),
                                   nh.from_array(np.array(0.5, np.float32), "v")])
    c["pad_reflect"] = _case([n("Pad", ["x", "p"], ["y"], mode="reflect")], x4,
                             [nh.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "p")])
    c["resize_nearest"] = _case(
        [n("Resize", ["x", "", "s"], ["y"], mode="nearest",
           coordinate_transformation_mode="asymmetric", nearest_mode="floor")], x4,
        [nh.from_array(np.array([1, 1, 2, 2], np.float32), "s")])
    c["resize_bilinear_half_pixel"] = _case(
        [n("Resize", ["x", "", "s"], ["y"], mode="linear")], x4,
        [nh.from_array(np.array([1, 1, 2, 2], np.float32), "s")])
    c["resize_bilinear_align"] = _case(
        [n("Resize", ["x", "", "", "sz"], ["y"], mode="linear",
           coordinate_transformation_mode="align_corners")], x4,
        [nh.from_array(np.array([1, 4, 13, 11], np.int64), "sz")])
    c["slice"] = _case([n("Conv", ["x", "w"], ["c"]),
                        n("Slice", ["c", "st", "en", "ax", "sp"], ["y"])], x4,
                       [W(r, "w", 4, 4, 1, 1), nh.from_array(np.array([1, 1, 0], np.int64), "st"),
                        nh.from_array(np.array([3, 7, 100], np.int64), "en"),
                        nh.from_array(np.array([1, 2, 3], np.int64), "ax"),
                        nh.from_array(np.array([1, 2, 3], np.int64), "sp")])
    c["slice_reverse"] = _case([n("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], [1, 10],
                               [nh.from_array(np.array([-1], np.int64), "st"),
                                nh.from_array(np.array([-(2**62)], np.int64), "en"),
                                nh.from_array(np.array([1], np.int64), "ax"),
                                nh.from_array(np.array([-1], np.int64), "sp")])
    c["reduce_mean_keep"] = _case([n("ReduceMean", ["x"], ["y"], axes=[2, 3])], x4, opset=13)
    c["reduce_mean_drop"] = _case([n("Conv", ["x", "w"], ["c"]),
                                   n("ReduceMean", ["c", "ax"], ["y"], keepdims=0)], x4,
                                  [W(r, "w", 4, 4, 1, 1),
                                   nh.from_array(np.array([2, 3], np.int64), "ax")], opset=18)
    c["constant_node"] = _case([n("Constant", [], ["k"], value=W(r, "kv", 1, 4, 1, 1)),
                                n("Conv", ["x", "w"], ["c"]), n("Mul", ["c", "k"], ["y"])], x4,
                               [W(r, "w", 4, 4, 1, 1)])
    return c


OP_CASES = _op_cases()


def mobilenet_block(size: int = 16) -> onnx.ModelProto:
    """Stem conv-BN-relu6, depthwise + pointwise with hardswish, GAP, Gemm, softmax."""
    r = np.random.default_rng(11)
    n = h.make_node
    nodes = [
        n("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1], strides=[2, 2]),
        n("BatchNormalization", ["c0", "g0", "b0", "m0", "v0"], ["n0"]),
        n("Clip", ["n0", "lo", "hi"], ["r0"]),
        n("Conv", ["r0", "wd", "bd"], ["d1"], pads=[1, 1, 1, 1], group=8),
        n("HardSwish", ["d1"], ["h1"]),
        n("Conv", ["h1", "wp", "bp"], ["p1"]),
        n("Add", ["p1", "r0"], ["s1"]),
        n("GlobalAveragePool", ["s1"], ["g"]),
        n("Flatten", ["g"], ["f"]),
        n("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
        n("Softmax", ["logits"], ["prob"], axis=1),
    ]
    inits = [W(r, "w0", 8, 3, 3, 3), W(r, "g0", 8, positive=True), W(r, "b0", 8),
             W(r, "m0", 8), W(r, "v0", 8, positive=True),
             nh.from_array(np.array(0, np.float32), "lo"),
             nh.from_array(np.array(6, np.float32), "hi"),
             W(r, "wd", 8, 1, 3, 3), W(r, "bd", 8), W(r, "wp", 8, 8, 1, 1), W(r, "bp", 8),
             W(r, "wf", 10, 8, scale=1.0), W(r, "bf", 10)]
    return graph(nodes, {"x": ["N", 3, size, size]}, ["prob"], inits, opset=14)


def segmenter(size: int = 16) -> onnx.ModelProto:
    """Encoder-decoder: strided conv, maxpool, bilinear resize, ConvTranspose, concat skip."""
    r = np.random.default_rng(12)
    n = h.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["e1"], pads=[1, 1, 1, 1]), n("Relu", ["e1"], ["e1r"]),
        n("MaxPool", ["e1r"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p1", "w2", "b2"], ["e2"], pads=[1, 1, 1, 1]), n("Relu", ["e2"], ["e2r"]),
        n("ConvTranspose", ["e2r", "wt", "bt"], ["u1"], strides=[2, 2]),
        n("Concat", ["u1", "e1r"], ["cat"], axis=1),
        n("Conv", ["cat", "w3", "b3"], ["d"], pads=[1, 1, 1, 1]),
        n("Resize", ["e2r", "", "sc"], ["up"], mode="linear"),
        n("Conv", ["up", "w4"], ["aux"]),
        n("Add", ["d", "aux"], ["y"]),
    ]
    inits = [W(r, "w1", 8, 3, 3, 3), W(r, "b1", 8), W(r, "w2", 16, 8, 3, 3, scale=0.2),
             W(r, "b2", 16), W(r, "wt", 16, 8, 2, 2, scale=0.2), W(r, "bt", 8),
             W(r, "w3", 4, 16, 3, 3, scale=0.2), W(r, "b3", 4),
             nh.from_array(np.array([1, 1, 2, 2], np.float32), "sc"),
             W(r, "w4", 4, 16, 1, 1)]
    return graph(nodes, {"x": [1, 3, size, size]}, ["y"], inits, opset=13)

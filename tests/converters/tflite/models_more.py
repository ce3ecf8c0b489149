"""Tiny graphs for the ops real exports use beyond convolutions (issue 23), with onnx.helper.

Most cases start with a Conv so the op under test meets a channels-last tensor and its axis
arguments must be mapped through the layout. ``FUSION_CASES`` hold the exporters' decomposed
activations with the single builtin each must become.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tests.converters.tflite.models import W, graph

__all__ = ["FUSION_CASES", "MORE_CASES", "i64"]

X4 = [1, 4, 8, 8]


def i64(name: str, *v: int) -> onnx.TensorProto:
    return nh.from_array(np.array(v, np.int64), name)


def f32(name: str, v: float | list[float]) -> onnx.TensorProto:
    return nh.from_array(np.array(v, np.float32), name)


def _conv_then(nodes: list[onnx.NodeProto], outs: list[str], inits: list[onnx.TensorProto],
               opset: int = 17, shape: list[int] | None = None, cout: int = 6
               ) -> onnx.ModelProto:
    r = np.random.default_rng(3)
    conv = h.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1])
    return graph([conv, *nodes], {"x": shape or X4}, outs,
                 [W(r, "cw", cout, (shape or X4)[1], 3, 3), *inits], opset)


def _more_cases() -> dict[str, onnx.ModelProto]:
    n = h.make_node
    r = np.random.default_rng(11)
    c: dict[str, onnx.ModelProto] = {}
    # Split: every opset form, even and uneven, on the channel axis of an NHWC tensor
    c["split_opset11_attr"] = _conv_then([n("Split", ["c"], ["a", "b"], axis=1, split=[2, 4])],
                                         ["a", "b"], [], opset=11)
    c["split_opset13_input"] = _conv_then([n("Split", ["c", "sp"], ["a", "b", "d"], axis=1)],
                                          ["a", "b", "d"], [i64("sp", 1, 2, 3)], opset=13)
    c["split_opset13_even"] = _conv_then([n("Split", ["c"], ["a", "b"], axis=1)], ["a", "b"], [],
                                         opset=13)
    c["split_opset18_num_outputs"] = _conv_then(
        [n("Split", ["c"], ["a", "b", "d"], axis=2, num_outputs=3)], ["a", "b", "d"], [],
        opset=18)
    c["split_opset18_uneven"] = _conv_then(   # 8 rows in 3 parts: 3, 3, 2
        [n("Split", ["c"], ["a", "b", "d"], axis=-1, num_outputs=3)], ["a", "b", "d"], [],
        opset=18)
    # YOLO DFL decode: reshape to (1, 4, 16, A), softmax over 16, weighted sum by a 1x1 conv
    c["dfl_decode"] = graph(
        [n("Reshape", ["x", "s1"], ["r"]), n("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3]),
         n("Softmax", ["t"], ["sm"], axis=1), n("Conv", ["sm", "proj"], ["cv"]),
         n("Reshape", ["cv", "s2"], ["y"])],
        {"x": [1, 64, 20]}, ["y"],
        [i64("s1", 1, 4, 16, 20), i64("s2", 1, 4, 20),
         nh.from_array(np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1), "proj")])
    c["slice_steps_channels"] = _conv_then(
        [n("Slice", ["c", "st", "en", "ax", "sp"], ["y"])], ["y"],
        [i64("st", 0, 1), i64("en", 6, 8), i64("ax", 1, 3), i64("sp", 2, 3)])
    c["max_min_nary"] = _conv_then(
        [n("Split", ["c"], ["a", "b"], axis=1), n("Max", ["a", "b", "k"], ["m"]),
         n("Min", ["m", "b"], ["y"])], ["y"], [f32("k", 0.1)], opset=13)
    # transformer encoder pieces
    c["layer_norm_last_axis"] = graph(
        [n("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)],
        {"x": [1, 10, 16]}, ["y"], [W(r, "g", 16, positive=True), W(r, "b", 16)])
    c["layer_norm_two_axes_no_bias"] = graph(
        [n("LayerNormalization", ["x", "g"], ["y"], axis=1)], {"x": [1, 5, 6]}, ["y"],
        [W(r, "g", 5, 6, positive=True)])
    c["layer_norm_decomposed"] = graph(   # ReduceMean/Sub/Pow/Sqrt/Div as paddle exports it
        [n("ReduceMean", ["x"], ["m"], axes=[-1]), n("Sub", ["x", "m"], ["d"]),
         n("Pow", ["d", "two"], ["p"]), n("ReduceMean", ["p"], ["v"], axes=[-1]),
         n("Add", ["v", "eps"], ["ve"]), n("Sqrt", ["ve"], ["s"]), n("Div", ["d", "s"], ["nrm"]),
         n("Mul", ["nrm", "g"], ["sc"]), n("Add", ["sc", "b"], ["y"])],
        {"x": [1, 12, 16]}, ["y"],
        [f32("two", 2.0), f32("eps", 1e-5), W(r, "g", 16), W(r, "b", 16)], opset=13)
    c["gelu_op_opset20"] = _conv_then([n("Gelu", ["c"], ["y"])], ["y"], [], opset=20)
    c["gelu_tanh_opset20"] = _conv_then([n("Gelu", ["c"], ["y"], approximate="tanh")], ["y"], [],
                                        opset=20)
    c["matmul_batch_4d"] = graph([n("MatMul", ["x", "z"], ["y"])],
                                 {"x": [1, 2, 5, 8], "z": [1, 2, 8, 3]}, ["y"])
    c["matmul_batch_broadcast_const"] = graph([n("MatMul", ["x", "w"], ["y"])],
                                              {"x": [2, 5, 8]}, ["y"], [W(r, "w", 2, 8, 3)])
    c["attention_softmax"] = graph(
        [n("MatMul", ["q", "kt"], ["s"]), n("Mul", ["s", "scale"], ["ss"]),
         n("Softmax", ["ss"], ["a"], axis=-1), n("MatMul", ["a", "v"], ["y"])],
        {"q": [1, 2, 6, 4], "kt": [1, 2, 4, 6], "v": [1, 2, 6, 4]}, ["y"], [f32("scale", 0.5)])
    c["where_const_condition"] = _conv_then(
        [n("Where", ["cond", "c", "alt"], ["y"])], ["y"],
        [nh.from_array(np.arange(8)[None, None, None, :] % 3 == 0, "cond"), f32("alt", -1.0)])
    c["expand_channels"] = graph([n("Expand", ["x", "shp"], ["y"])], {"x": [1, 1, 4, 4]}, ["y"],
                                 [i64("shp", 1, 3, 4, 4)])
    c["gather_const_indices"] = _conv_then(
        [n("Gather", ["c", "idx"], ["y"], axis=1)], ["y"], [i64("idx", 4, 0, -1)])
    c["gather_scalar_index"] = graph([n("Gather", ["x", "i"], ["y"], axis=1)], {"x": [1, 5, 7]},
                                     ["y"], [nh.from_array(np.array(2, np.int64), "i")])
    # shape arithmetic an exporter leaves: Shape/Gather/Range/Expand fold when shapes are fixed
    c["range_expand_folded"] = graph(
        [n("Shape", ["x"], ["s"]), n("Gather", ["s", "i2"], ["w"], axis=0),
         n("Cast", ["w"], ["wf"], to=T.FLOAT),
         n("Range", ["zero", "wf", "one"], ["rg"]), n("Shape", ["x"], ["s2"]),
         n("Expand", ["rg", "s2"], ["grid"]), n("Add", ["x", "grid"], ["y"])],
        {"x": [1, 3, 5, 7]}, ["y"],
        [nh.from_array(np.array(3, np.int64), "i2"), f32("zero", 0.0), f32("one", 1.0)])
    # reductions and elementwise math of classifier tails and normalisations
    c["reduce_sum_drop"] = _conv_then([n("ReduceSum", ["c", "ax"], ["y"], keepdims=0)], ["y"],
                                      [i64("ax", 1)], opset=13)
    c["reduce_max_keep"] = _conv_then([n("ReduceMax", ["c"], ["y"], axes=[2, 3])], ["y"], [],
                                      opset=13)
    c["global_max_pool"] = _conv_then([n("GlobalMaxPool", ["c"], ["y"])], ["y"], [])
    c["exp_log_neg_abs"] = _conv_then(
        [n("Abs", ["c"], ["a"]), n("Exp", ["a"], ["e"]), n("Log", ["e"], ["l"]),
         n("Neg", ["l"], ["y"])], ["y"], [])
    c["reciprocal_sqrt"] = _conv_then(
        [n("Abs", ["c"], ["a"]), n("Add", ["a", "one"], ["a1"]), n("Sqrt", ["a1"], ["s"]),
         n("Reciprocal", ["s"], ["y"])], ["y"], [f32("one", 1.0)])
    c["pow_cube"] = _conv_then([n("Pow", ["c", "e"], ["y"])], ["y"], [f32("e", 3.0)])
    c["softplus"] = _conv_then([n("Softplus", ["c"], ["y"])], ["y"], [])
    c["cast_float_noop"] = _conv_then([n("Cast", ["c"], ["y"], to=T.FLOAT)], ["y"], [])
    # layout: an encoder after a conv stem, and attention with k^T
    c["conv_to_encoder_tokens"] = graph(   # (1, C, 1, W) -> (1, C, W) -> (1, W, C) tokens
        [n("Conv", ["x", "cw"], ["c"]), n("Reshape", ["c", "s"], ["r"]),
         n("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
         n("LayerNormalization", ["t", "g"], ["ln"], axis=-1), n("MatMul", ["ln", "w1"], ["m1"]),
         n("Add", ["t", "m1"], ["res"]), n("MatMul", ["res", "w2"], ["y"])],
        {"x": [1, 4, 1, 10]}, ["y"],
        [W(r, "cw", 8, 4, 1, 1), i64("s", 1, 8, 10), W(r, "g", 8, positive=True),
         W(r, "w1", 8, 8), W(r, "w2", 8, 5)])
    c["attention_k_transposed"] = graph(
        [n("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), n("MatMul", ["q", "kt"], ["s"]),
         n("Softmax", ["s"], ["a"], axis=-1), n("MatMul", ["a", "v"], ["y"])],
        {"q": [1, 2, 6, 4], "k": [1, 2, 6, 4], "v": [1, 2, 6, 4]}, ["y"])
    # Resize variants of segmentation heads
    c["resize_nearest_sizes_half_pixel"] = _conv_then(
        [n("Resize", ["c", "", "", "sz"], ["y"], mode="nearest",
           coordinate_transformation_mode="asymmetric", nearest_mode="floor")], ["y"],
        [i64("sz", 1, 6, 16, 24)])
    c["resize_linear_pytorch_half_pixel"] = _conv_then(
        [n("Resize", ["c", "", "s"], ["y"], mode="linear",
           coordinate_transformation_mode="pytorch_half_pixel")], ["y"],
        [f32("s", [1, 1, 2, 2])])
    c["resize_linear_downscale"] = _conv_then(
        [n("Resize", ["c", "", "s"], ["y"], mode="linear")], ["y"], [f32("s", [1, 1, 0.5, 0.5])])
    return c


def _fusion_cases() -> dict[str, tuple[onnx.ModelProto, str]]:
    """Decomposed activations as exporters write them, and the builtin each must become."""
    n = h.make_node
    c: dict[str, tuple[onnx.ModelProto, str]] = {}
    c["hswish_x_times_hardsigmoid"] = (_conv_then(
        [n("HardSigmoid", ["c"], ["hs"], alpha=1 / 6, beta=0.5), n("Mul", ["c", "hs"], ["y"])],
        ["y"], []), "HARD_SWISH")
    c["hswish_hardsigmoid_times_x"] = (_conv_then(
        [n("HardSigmoid", ["c"], ["hs"], alpha=1 / 6, beta=0.5), n("Mul", ["hs", "c"], ["y"])],
        ["y"], []), "HARD_SWISH")
    c["hswish_clip_div6_paddle"] = (_conv_then(   # (x * Clip(x + 3, 0, 6)) / 6
        [n("Add", ["c", "three"], ["a"]), n("Clip", ["a", "lo", "hi"], ["cl"]),
         n("Mul", ["c", "cl"], ["m"]), n("Div", ["m", "six"], ["y"])], ["y"],
        [f32("three", 3.0), f32("lo", 0.0), f32("hi", 6.0), f32("six", 6.0)]), "HARD_SWISH")
    c["hswish_x_times_clip_over_6"] = (_conv_then(   # x * (Clip(3 + x, 0, 6) / 6)
        [n("Add", ["three", "c"], ["a"]), n("Clip", ["a", "lo", "hi"], ["cl"]),
         n("Div", ["cl", "six"], ["d"]), n("Mul", ["c", "d"], ["y"])], ["y"],
        [f32("three", 3.0), f32("lo", 0.0), f32("hi", 6.0), f32("six", 6.0)]), "HARD_SWISH")
    c["hswish_times_one_sixth"] = (_conv_then(   # (x * Clip(x + 3, 0, 6)) * (1/6)
        [n("Add", ["c", "three"], ["a"]), n("Clip", ["a", "lo", "hi"], ["cl"]),
         n("Mul", ["cl", "c"], ["m"]), n("Mul", ["m", "sixth"], ["y"])], ["y"],
        [f32("three", 3.0), f32("lo", 0.0), f32("hi", 6.0), f32("sixth", 1 / 6)]), "HARD_SWISH")
    c["gelu_erf_paddle"] = (_conv_then(   # (x * (1 + erf(x / sqrt 2))) * 0.5
        [n("Div", ["c", "sq2"], ["d"]), n("Erf", ["d"], ["e"]), n("Add", ["e", "one"], ["a"]),
         n("Mul", ["c", "a"], ["m"]), n("Mul", ["m", "half"], ["y"])], ["y"],
        [f32("sq2", float(np.sqrt(2.0))), f32("one", 1.0), f32("half", 0.5)], opset=14), "GELU")
    c["gelu_erf_torch"] = (_conv_then(   # (x * 0.5) * (1 + erf(x * 1/sqrt 2))
        [n("Mul", ["c", "isq2"], ["d"]), n("Erf", ["d"], ["e"]), n("Add", ["one", "e"], ["a"]),
         n("Mul", ["c", "half"], ["h"]), n("Mul", ["h", "a"], ["y"])], ["y"],
        [f32("isq2", float(1 / np.sqrt(2.0))), f32("one", 1.0), f32("half", 0.5)], opset=14),
        "GELU")
    c["gelu_erf_half_inside"] = (_conv_then(   # x * ((1 + erf(x / sqrt 2)) * 0.5)
        [n("Div", ["c", "sq2"], ["d"]), n("Erf", ["d"], ["e"]), n("Add", ["e", "one"], ["a"]),
         n("Mul", ["a", "half"], ["ah"]), n("Mul", ["c", "ah"], ["y"])], ["y"],
        [f32("sq2", float(np.sqrt(2.0))), f32("one", 1.0), f32("half", 0.5)], opset=14), "GELU")
    return c


MORE_CASES = _more_cases()
FUSION_CASES = _fusion_cases()

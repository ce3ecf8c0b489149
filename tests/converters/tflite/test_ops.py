"""Every listed ONNX op, lowered to TFLite and run in LiteRT, matches ONNX Runtime FP32."""

from __future__ import annotations

import numpy as np
import pytest

from converters.tflite import convert
from converters.tflite._runtime import LiteRT
from converters.tflite.convert import to_artifact_layout, to_onnx_layout
from tests.converters.tflite.models import OP_CASES, feed, mobilenet_block, ort_run, segmenter

RTOL = 1e-4          # the FP32 bar, relative to the output's magnitude


def _max_rel_err(model, keep_io: bool, seed: int = 0) -> tuple[float, object]:
    res = convert(model, precision="fp32", keep_io_layout=keep_io)
    rt = LiteRT(res.model)
    worst = 0.0
    for s in feed(model, seed, n=2):
        ref = ort_run(model, s)
        got = rt.run_float([to_artifact_layout(s[n], res.io_layout[n]) for n in res.input_names])
        for name, r, g in zip(res.output_names, ref, got, strict=True):
            g = to_onnx_layout(g, res.io_layout[name])
            assert g.shape == r.shape, name
            worst = max(worst, float(np.abs(r - g).max() / max(np.abs(r).max(), 1e-6)))
    return worst, res


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_matches_onnxruntime(case: str) -> None:
    err, _ = _max_rel_err(OP_CASES[case], keep_io=False)
    assert err <= RTOL, f"{case}: relative error {err:.2e}"


@pytest.mark.parametrize("case", ["conv_same", "conv_transpose", "resize_bilinear_half_pixel",
                                  "concat_channels", "slice", "conv1d"])
def test_keep_io_layout_matches_onnxruntime(case: str) -> None:
    err, res = _max_rel_err(OP_CASES[case], keep_io=True)
    assert err <= RTOL
    assert all(rec["perm_from_onnx"] == list(range(len(rec["perm_from_onnx"])))
               for rec in res.io_layout.values())


def _no_cancelling_pairs(res) -> None:
    g = res.graph
    for op in g.ops:
        if op.kind == "TRANSPOSE":
            prev = g.producer(op.inputs[0])
            assert prev is None or prev.kind != "TRANSPOSE"


def test_model_transposes_become_free_relabelling() -> None:
    _, res = _max_rel_err(OP_CASES["transpose_pair"], keep_io=False)
    assert res.graph.op_counts().get("TRANSPOSE", 0) == 0


def test_nhwc_chain_has_no_transpose_and_fuses_activation() -> None:
    _, res = _max_rel_err(OP_CASES["conv_bn_relu"], keep_io=False)
    counts = res.graph.op_counts()
    assert counts == {"CONV_2D": 1}                       # BN folded, Relu fused
    conv = res.graph.ops[0]
    assert conv.options["fusedActivationFunction"] == 1
    assert res.io_layout["x"]["layout"] == "NHWC"


def test_keep_io_layout_adds_only_the_boundary_transposes() -> None:
    _, res = _max_rel_err(OP_CASES["conv_bn_relu"], keep_io=True)
    assert res.graph.op_counts().get("TRANSPOSE", 0) == 2
    _no_cancelling_pairs(res)


def test_flatten_after_global_pool_needs_no_transpose() -> None:
    err, res = _max_rel_err(mobilenet_block(), keep_io=False)
    assert err <= RTOL
    assert "TRANSPOSE" not in res.graph.op_counts()
    assert res.graph.op_counts()["DEPTHWISE_CONV_2D"] == 1


def test_segmenter_with_resize_and_conv_transpose() -> None:
    err, res = _max_rel_err(segmenter(), keep_io=False)
    assert err <= RTOL
    counts = res.graph.op_counts()
    assert counts.get("TRANSPOSE_CONV") == 1 and counts.get("RESIZE_BILINEAR") == 1
    assert "TRANSPOSE" not in counts
    _no_cancelling_pairs(res)


def test_dynamic_batch_defaults_to_one_and_input_shape_fixes_dims() -> None:
    m = mobilenet_block()
    res = convert(m, input_shapes={"x": (1, 3, 16, 16)})
    assert LiteRT(res.model).inputs[0]["shape"].tolist() == [1, 16, 16, 3]
    res = convert(m)
    assert LiteRT(res.model).inputs[0]["shape"].tolist() == [1, 16, 16, 3]


def test_1d_conv_chain_keeps_one_reshape_pair_and_fuses_relu() -> None:
    from onnx import helper as h

    from tests.converters.tflite.models import W, graph

    r = np.random.default_rng(5)
    n = h.make_node
    m = graph([n("Conv", ["x", "w1"], ["a"], pads=[1, 1]), n("Relu", ["a"], ["b"]),
               n("MaxPool", ["b"], ["c"], kernel_shape=[2], strides=[2]),
               n("Conv", ["c", "w2"], ["d"], pads=[1, 1]), n("Relu", ["d"], ["y"])],
              {"x": [1, 2, 32]}, ["y"], [W(r, "w1", 4, 2, 3), W(r, "w2", 4, 4, 3)])
    err, res = _max_rel_err(m, keep_io=False)
    assert err <= RTOL
    counts = res.graph.op_counts()
    assert counts.get("RESHAPE") == 2 and "RELU" not in counts     # in once, out once
    assert all(op.options.get("fusedActivationFunction") == 1
               for op in res.graph.ops if op.kind == "CONV_2D")


def test_weight_buffers_are_16_byte_aligned() -> None:
    from ai_edge_litert import schema_py_generated as schema

    res = convert(mobilenet_block())
    model = schema.Model.GetRootAsModel(res.model, 0)
    base = np.frombuffer(res.model, np.uint8).ctypes.data
    checked = 0
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength() >= 16:
            assert (buf.DataAsNumpy().ctypes.data - base) % 16 == 0
            checked += 1
    assert checked >= 5


@pytest.mark.parametrize("case", ["transpose_out", "concat_channels", "conv_bn_relu"])
@pytest.mark.parametrize("keep_io", [False, True])
def test_artifact_io_tensors_carry_onnx_names(case: str, keep_io: bool) -> None:
    m = OP_CASES[case]
    res = convert(m, keep_io_layout=keep_io)
    rt = LiteRT(res.model)
    assert [d["name"] for d in rt.inputs] == [i.name for i in m.graph.input]
    assert [d["name"] for d in rt.outputs] == [o.name for o in m.graph.output]

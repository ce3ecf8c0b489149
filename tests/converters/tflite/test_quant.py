"""Precisions: FP16 weights, dynamic-range INT8, full-integer INT8 per NPU rules, QDQ folding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.tflite import convert
from converters.tflite._runtime import LiteRT
from converters.tflite.convert import to_artifact_layout, to_onnx_layout
from edgeops.compare import compare_outputs
from tests.converters.tflite.models import (
    OP_CASES,
    W,
    feed,
    graph,
    mobilenet_block,
    ort_run,
    segmenter,
)


def _compare(model: onnx.ModelProto, res, samples) -> list:
    rt = LiteRT(res.model)
    refs: dict[str, list[np.ndarray]] = {n: [] for n in res.output_names}
    gots: dict[str, list[np.ndarray]] = {n: [] for n in res.output_names}
    for s in samples:
        got = rt.run_float([to_artifact_layout(s[n], res.io_layout[n]) for n in res.input_names])
        for name, r, g in zip(res.output_names, ort_run(model, s), got, strict=True):
            refs[name].append(r)
            gots[name].append(to_onnx_layout(g, res.io_layout[name]))
    return compare_outputs({k: np.concatenate(v) for k, v in refs.items()},
                           {k: np.concatenate(v) for k, v in gots.items()})


def _wide_model() -> onnx.ModelProto:
    """Weights big enough (>= 1024 elements) for dynamic-range quantisation to apply."""
    r = np.random.default_rng(3)
    n = h.make_node
    return graph([n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), n("Relu", ["c"], ["r"]),
                  n("GlobalAveragePool", ["r"], ["g"]), n("Flatten", ["g"], ["f"]),
                  n("Gemm", ["f", "fw", "fb"], ["y"], transB=1)],
                 {"x": [1, 16, 8, 8]}, ["y"],
                 [W(r, "w", 32, 16, 3, 3, scale=0.1), W(r, "b", 32),
                  W(r, "fw", 40, 32, scale=0.3), W(r, "fb", 40)])


def test_fp16_stores_half_weights_and_stays_close() -> None:
    m = _wide_model()
    res = convert(m, precision="fp16")
    fp32 = convert(m, precision="fp32")
    assert len(res.model) < 0.6 * len(fp32.model)
    assert any(t.dtype == "float16" for t in res.graph.tensors.values())
    assert res.graph.op_counts()["DEQUANTIZE"] >= 2
    met = _compare(m, res, feed(m, 1, n=4))
    assert min(x.cosine for x in met) > 0.9999


def test_dynamic_int8_uses_hybrid_kernels() -> None:
    m = _wide_model()
    res = convert(m, precision="int8-dynamic")
    conv = next(op for op in res.graph.ops if op.kind == "CONV_2D")
    w = res.graph.tensors[conv.inputs[1]]
    assert w.dtype == "int8" and w.quant is not None and w.quant.scale.size == 32  # per-channel
    assert res.graph.tensors[conv.inputs[0]].dtype == "float32"                    # hybrid
    assert res.details["weights"]["hybrid"] == 2
    met = _compare(m, res, feed(m, 2, n=4))
    assert min(x.cosine for x in met) > 0.99


def _int8(model, per_channel, n_cal=32):
    cal = feed(model, 5, n=n_cal)
    return convert(model, precision="int8", calibration=cal, per_channel=per_channel)


@pytest.mark.parametrize("per_channel", [False, "conv-only"])
def test_full_int8_mobilenet_agrees(per_channel: object) -> None:
    m = mobilenet_block()
    res = _int8(m, per_channel)
    rt = LiteRT(res.model)
    assert rt.inputs[0]["dtype"] == np.int8 and rt.outputs[0]["dtype"] == np.int8
    assert res.details["float_ops"] == []
    met = _compare(m, res, feed(m, 9, n=16))
    assert met[0].cosine >= 0.98
    assert met[0].top1_agreement is not None and met[0].top1_agreement >= 0.9


def test_full_int8_segmenter_agrees() -> None:
    m = segmenter()
    res = _int8(m, "conv-only")
    met = _compare(m, res, feed(m, 9, n=6))
    assert met[0].cosine >= 0.98


def test_edgetpu_rule_every_tensor_per_tensor() -> None:
    res = _int8(mobilenet_block(), False)
    assert all(t.quant.scale.size == 1 for t in res.graph.tensors.values()
               if t.quant is not None and t.dtype == "int8")


def test_ethosu_rule_per_axis_only_on_conv_ops() -> None:
    res = _int8(mobilenet_block(), "conv-only")
    g = res.graph
    per_axis_users = set()
    for op in g.ops:
        for name in op.inputs:
            t = g.tensors.get(name)
            if t is not None and t.quant is not None and t.quant.scale.size > 1:
                per_axis_users.add(op.kind)
    assert per_axis_users and per_axis_users <= {"CONV_2D", "DEPTHWISE_CONV_2D",
                                                 "TRANSPOSE_CONV"}
    fc = next(op for op in g.ops if op.kind == "FULLY_CONNECTED")
    assert g.tensors[fc.inputs[1]].quant.scale.size == 1


def test_bias_is_int32_at_input_times_weight_scale() -> None:
    res = _int8(mobilenet_block(), "conv-only")
    g = res.graph
    conv = next(op for op in g.ops if op.kind == "CONV_2D")
    x, w, b = (g.tensors[n] for n in conv.inputs)
    assert b.dtype == "int32"
    np.testing.assert_allclose(b.quant.scale, x.quant.scale[0] * w.quant.scale, rtol=1e-6)


def test_fixed_output_ranges_for_softmax_and_concat_requantised() -> None:
    res = _int8(mobilenet_block(), False)
    g = res.graph
    sm = next(op for op in g.ops if op.kind == "SOFTMAX")
    q = g.tensors[sm.outputs[0]].quant
    assert float(q.scale[0]) == pytest.approx(1 / 256) and int(q.zero_point[0]) == -128


def test_float_island_for_op_without_int8_kernel() -> None:
    m = graph([h.make_node("Div", ["x", "z"], ["y"])], {"x": [1, 6], "z": [1, 6]}, ["y"])
    cal = [{"x": np.random.default_rng(i).standard_normal((1, 6)).astype(np.float32),
            "z": (np.random.default_rng(i + 99).random((1, 6)) + 1).astype(np.float32)}
           for i in range(16)]
    res = convert(m, precision="int8", calibration=cal, per_channel=False)
    assert res.details["float_ops"] == ["DIV"]
    met = _compare(m, res, cal[:4])
    assert met[0].cosine > 0.98


def _qdq_model() -> onnx.ModelProto:
    """A QDQ export: int8 weights behind DequantizeLinear, Q/DQ pairs on activations."""
    r = np.random.default_rng(4)
    w = (r.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32)
    ws = np.float32(np.abs(w).max() / 127)
    n = h.make_node
    inits = [nh.from_array(np.clip(np.round(w / ws), -127, 127).astype(np.int8), "wq"),
             nh.from_array(np.array(ws, np.float32), "ws"),
             nh.from_array(np.array(0, np.int8), "wz"),
             nh.from_array(np.array(0.05, np.float32), "xs"),
             nh.from_array(np.array(3, np.int8), "xz"),
             nh.from_array(np.array(0.07, np.float32), "ys"),
             nh.from_array(np.array(-10, np.int8), "yz")]
    nodes = [n("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             n("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             n("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
             n("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
             n("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             n("DequantizeLinear", ["cq", "ys", "yz"], ["y"])]
    return graph(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits, opset=13)


def test_qdq_graph_folds_into_tflite_quantisation() -> None:
    m = _qdq_model()
    res = convert(m, precision="int8", calibration=feed(m, 1, n=4), per_channel=False)
    g = res.graph
    assert res.details["qdq_hints_used"] == 2
    assert "QUANTIZE" not in res.graph.op_counts() and "DEQUANTIZE" not in res.graph.op_counts()
    xq = g.tensors[g.inputs[0]].quant
    assert float(xq.scale[0]) == pytest.approx(0.05) and int(xq.zero_point[0]) == 3
    yq = g.tensors[g.outputs[0]].quant
    assert float(yq.scale[0]) == pytest.approx(0.07) and int(yq.zero_point[0]) == -10
    # the QDQ model's own float semantics are reproduced within a quantisation step
    met = _compare(m, res, feed(m, 2, n=4))
    assert met[0].cosine > 0.99
    # and an fp32 conversion of the same QDQ graph folds the weights to float
    fp = convert(m, precision="fp32")
    assert set(fp.graph.op_counts()) == {"CONV_2D"}


def test_percentile_calibration_ignores_a_single_outlier() -> None:
    m = mobilenet_block(size=64)
    cal = feed(m, 6, n=8, shapes={"x": (1, 3, 64, 64)})
    cal[3]["x"][0, 0, 0, :3] = 80.0               # three wild pixels in one sample
    scale = {}
    for method in ("minmax", "percentile"):
        res = convert(m, precision="int8", calibration=cal, per_channel=False,
                      calibration_method=method)
        scale[method] = float(res.graph.tensors[res.graph.inputs[0]].quant.scale[0])
        assert res.details["calibration_method"] == method
    assert scale["percentile"] < 0.5 * scale["minmax"]


_INT8_SKIP = {"div_two_tensors"}   # random divisors near zero: no int8 range can hold the result


@pytest.mark.parametrize("case", sorted(set(OP_CASES) - _INT8_SKIP))
def test_every_op_case_runs_full_int8(case: str) -> None:
    m = OP_CASES[case]
    res = convert(m, precision="int8", calibration=feed(m, 1, n=16), per_channel="conv-only")
    met = _compare(m, res, feed(m, 2, n=4))
    assert min(x.cosine for x in met) >= 0.99, case


def test_full_int8_with_float_io_keeps_onnx_names() -> None:
    m = mobilenet_block()
    res = convert(m, precision="int8", calibration=feed(m, 5, n=16), io_int8=False)
    rt = LiteRT(res.model)
    assert rt.inputs[0]["dtype"] == np.float32 and rt.outputs[0]["dtype"] == np.float32
    assert [d["name"] for d in rt.inputs] == ["x"] and [d["name"] for d in rt.outputs] == ["prob"]
    g = res.graph
    assert g.ops[0].kind == "QUANTIZE" and g.ops[-1].kind == "DEQUANTIZE"
    assert g.tensors["x__int8"].dtype == "int8" and res.details["io_quantization"] == {}
    met = _compare(m, res, feed(m, 9, n=8))
    assert met[0].cosine >= 0.98

"""NPU compatibility reports: where Edge TPU and Ethos-U would fall back to the CPU, and why."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper as h

from converters.tflite import compatibility_report, convert
from tests.converters.tflite.models import W, feed, graph, mobilenet_block


def _int8(model, per_channel=False, **kw):
    return convert(model, precision="int8", calibration=feed(model, 3, n=8),
                   per_channel=per_channel, **kw)


def test_mobilenet_maps_fully_on_both_npus() -> None:
    m = mobilenet_block()
    for npu, pc in (("edgetpu", False), ("ethos-u", "conv-only")):
        rep = compatibility_report(_int8(m, pc).graph, npu)
        assert rep["fully_mapped"], rep["unsupported"]
        assert rep["segments"] == 1 and rep["first_fallback"] is None


def _leaky_middle():
    r = np.random.default_rng(1)
    n = h.make_node
    return graph([n("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
                  n("LeakyRelu", ["a"], ["b"], alpha=0.1, name="leaky"),
                  n("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1]), n("Relu", ["c"], ["y"])],
                 {"x": [1, 3, 8, 8]}, ["y"], [W(r, "w1", 4, 3, 3, 3), W(r, "w2", 4, 4, 3, 3)])


def test_edgetpu_sends_everything_after_first_unsupported_op_to_cpu() -> None:
    res = _int8(_leaky_middle())
    rep = compatibility_report(res.graph, "edgetpu")
    kinds = [op.kind for op in res.graph.ops]
    first = kinds.index("LEAKY_RELU")
    assert rep["first_fallback"]["op"] == "LEAKY_RELU"
    assert rep["first_fallback"]["onnx_node"] == "leaky"
    assert rep["npu_ops"] == first and rep["cpu_ops"] == len(kinds) - first
    assert rep["cpu_op_counts"].get("CONV_2D") == 1     # the conv after it is lost too
    assert not rep["fully_mapped"]


def test_ethosu_takes_the_same_graph_whole() -> None:
    rep = compatibility_report(_int8(_leaky_middle(), "conv-only").graph, "ethos-u")
    assert rep["fully_mapped"]


def test_edgetpu_more_than_three_non_unit_dims_falls_back() -> None:
    # batch 2: four dimensions larger than 1 on a 4D activation
    r = np.random.default_rng(2)
    g = graph([h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
              {"x": [2, 3, 8, 8]}, ["y"], [W(r, "w", 4, 3, 3, 3)])
    res = convert(g, precision="int8", calibration=[{"x": s["x"]} for s in feed(g, 1, n=4)],
                  per_channel=False)
    rep = compatibility_report(res.graph, "edgetpu")
    assert "more than 3 dimensions" in rep["first_fallback"]["reason"]
    rep_u = compatibility_report(res.graph, "ethos-u")
    assert "batch 2" in rep_u["first_fallback"]["reason"]



def test_ethosu_per_axis_outside_conv_is_reported() -> None:
    res = _int8(mobilenet_block(), True)          # per-axis everywhere, as Ethos-U forbids
    fc = next(op for op in res.graph.ops if op.kind == "FULLY_CONNECTED")
    w = res.graph.tensors[fc.inputs[1]]
    w.quant.scale = np.repeat(w.quant.scale, w.shape[0])          # force per-axis on FC
    w.quant.zero_point = np.zeros(w.shape[0], np.int64)
    rep = compatibility_report(res.graph, "ethos-u")
    assert rep["first_fallback"]["op"] == "FULLY_CONNECTED"
    assert "per-axis" in rep["first_fallback"]["reason"]


def test_float_tensors_are_not_npu_work() -> None:
    rep = compatibility_report(convert(mobilenet_block()).graph, "edgetpu")
    assert rep["npu_ops"] == 0 and "float32" in rep["first_fallback"]["reason"]


def test_unknown_npu_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown NPU"):
        compatibility_report(convert(mobilenet_block()).graph, "tpu-v9")

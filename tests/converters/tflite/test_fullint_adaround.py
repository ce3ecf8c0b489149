"""AdaRound fed to the full-integer TFLite writer (issue 16): its integers are the ones written."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper as nh

from converters.quant._gram import layers
from converters.quant.adaround import Grid
from converters.tflite._passes import run_graph_passes, writer_grid
from converters.tflite._prep import prepare
from converters.tflite._quant import _sym_quant
from converters.tflite._runtime import _interpreter_module
from converters.tflite.convert import base_details, full_int8_result, lower_prepared
from tests.converters.quant import tiny


def _written_weights(model: bytes) -> list[tuple[np.ndarray, np.ndarray]]:
    """(int8 weight, its scales) of every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED in
    the .tflite, read back by LiteRT's own interpreter."""
    it = _interpreter_module().Interpreter(model_content=model)
    it.allocate_tensors()
    details = {d["index"]: d for d in it.get_tensor_details()}
    out = []
    for op in it._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            idx = int(op["inputs"][1])
            out.append((it.get_tensor(idx), details[idx]["quantization_parameters"]["scales"]))
    return out


def _onnx_layout(w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """A written TFLite weight (OHWI, 1HWC depthwise, [out, in] FC) in ONNX's layout."""
    for perm in ((0, 3, 1, 2), (3, 0, 1, 2)):
        if w.ndim == 4 and tuple(np.transpose(w, perm).shape) == shape:
            return np.transpose(w, perm)
    if w.ndim == 2 and w.shape != shape and w.T.shape == shape:   # MatMul's [in, out]
        return w.T
    return w if w.shape == shape else None


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_written_weights_are_adarounds_integers_and_beat_round_to_nearest(
        per_channel: bool) -> None:
    m = tiny.conv_chain("Relu")
    data = tiny.smooth_samples(m, n=8)
    prep = prepare(m, {}, require_static=False, target="edgetpu")
    done = run_graph_passes(prep, m.opset_import, ("adaround",), data, per_channel)
    assert done.outcomes[0].status == "applied", done.outcomes[0].detail
    ada = done.adaround
    assert ada is not None and len(ada.done) == 3          # conv, depthwise, 1x1 projection
    assert "TFLite writer" in done.outcomes[0].data["grid"]
    # the prepared graph after the passes: the reference each layer's error is measured in
    rounded = onnx.helper.make_model(prep.graph, opset_imports=list(m.opset_import))
    low = lower_prepared(prep)
    ranges = {t: (-8.0, 8.0) for t, v in low.graph.tensors.items() if v.data is None}
    res = full_int8_result(low, ranges, per_channel=per_channel, io_int8=True,
                           method="minmax", details=base_details(low, "int8"))
    written = _written_weights(res.model)
    for d in ada.done:
        q = d.layer.unmatrix(d.q.astype(np.float64)).astype(np.int8)
        match = [(s, w) for w, s in written
                 if (ow := _onnx_layout(w, q.shape)) is not None and np.array_equal(ow, q)]
        assert match, f"{d.layer.node}: AdaRound's integers are not the ones written"
        scales = match[0][0]
        # bit-exact on the writer's grid: its scales are the ones AdaRound rounded on
        grid: Grid = ada.weight_grid.grid(d.layer, d.layer.matrix(d.original))
        assert np.array_equal(np.broadcast_to(scales.astype(np.float32), grid.scale.shape),
                              grid.scale)
        assert (len(scales) == 1) is (not per_channel)
        # the layer's output error (ONNX Runtime, calibration data, FP32 upstream): AdaRound's
        # written weights against the writer's round-to-nearest of the original weights
        sc = scales.reshape((-1, *[1] * (q.ndim - 1))) if len(scales) > 1 else scales[0]
        axis = 0 if per_channel else None
        near_q, near = _sym_quant(d.original, axis)
        near_w = near_q * (near.scale.reshape((-1, *[1] * (q.ndim - 1))) if axis == 0
                           else near.scale[0])
        e_ada = tiny.layer_error(rounded, d.layer.node, d.layer.weight, q * sc, data)
        e_near = tiny.layer_error(rounded, d.layer.node, d.layer.weight, near_w, data)
        assert e_ada < e_near, (d.layer.node, e_ada, e_near)


def test_writer_grid_refuses_integers_its_rounding_would_not_reproduce() -> None:
    m = tiny.conv_chain("Relu")
    la = layers(m)[0][0]
    w = la.matrix(nh.to_array(next(i for i in m.graph.initializer if i.name == la.weight)))
    wg = writer_grid(False)
    g = wg.grid(la, w)
    q = np.clip(np.round(w / g.scale[:, None]), -127, 127)
    assert np.array_equal(_sym_quant(wg.on_grid(la, w, q, g), None)[0], q)
    bad = q.copy()
    bad[~g.fixed] = np.clip(bad[~g.fixed] + 200, -127, 127)   # past the largest weight
    with pytest.raises(ArithmeticError):
        wg.on_grid(la, w, bad, Grid(g.scale * 0.5, 127, g.fixed))


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_without_adaround_max_offers_the_default_efforts_very_candidates(
        per_channel: bool) -> None:
    """Was: max's candidates without AdaRound were its own graph with the weights put back,
    bias correction measured behind AdaRound's upstream rounding, and scored below default's
    (ocr-cls Edge TPU 0.979 vs 1.000). Now they are default's, byte for byte, plus AdaRound's."""
    from converters.quant.engine import DEFAULT_PASSES, MAX_PASSES
    from converters.tflite.fullint import Candidates, FullIntPlan

    m = tiny.conv_chain("Relu")
    data = tiny.smooth_samples(m, n=8)
    plain = Candidates(m, data, FullIntPlan(per_channel=per_channel, passes=DEFAULT_PASSES))
    ada = Candidates(m, data, FullIntPlan(per_channel=per_channel, passes=MAX_PASSES,
                                          effort="max"))
    assert ada.adaround is not None and ada.adaround.done and ada.bias is not None
    for ranges in ("minmax", "mse_ranges"):
        for bias in (True, False):
            assert ada.build(ranges, bias, False).model == plain.build(ranges, bias).model
            assert ada.build(ranges, bias, True).model != plain.build(ranges, bias).model
    assert [o.name for o in ada.outcomes] == [*MAX_PASSES]

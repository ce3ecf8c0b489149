"""A layer ``quantize_static`` leaves float stays float in ONNX Runtime (converters/ort_float).

The model: three convolutions; the middle one has output channels whose weight ranges differ
1000-fold (what a depthwise layer after equalisation can look like), so the per-tensor int8
weights ORT's ``WeightBiasQuantization`` gives it on load round the small channels to zero.
It is excluded from quantisation, as the build's float fallbacks exclude layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.ort_float import keep_float, runtime_quantised

C = 8


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w_mid = rng.standard_normal((C, C, 3, 3)).astype(np.float32) * 0.2
    w_mid[: C // 2] *= 1e-3                      # half the channels 1000x smaller
    inits = [numpy_helper.from_array(a, n) for n, a in (
        ("w0", rng.standard_normal((C, 3, 3, 3)).astype(np.float32) * 0.3),
        ("b0", np.zeros(C, np.float32)),
        ("w1", w_mid), ("b1", rng.standard_normal(C).astype(np.float32) * 1e-3),
        ("w2", rng.standard_normal((C, C, 1, 1)).astype(np.float32) * 0.3),
        ("b2", np.zeros(C, np.float32)))]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["a"], name="conv0", pads=[1] * 4),
             helper.make_node("Relu", ["a"], ["ar"], name="relu0"),
             helper.make_node("Conv", ["ar", "w1", "b1"], ["m"], name="mid", pads=[1] * 4),
             helper.make_node("Conv", ["m", "w2", "b2"], ["y"], name="conv2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _data() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(8)]


def _quantise(tmp: Path, exclude: list[str]) -> onnx.ModelProto:
    """The model quantised QDQ u8s8 per channel with ``exclude`` float, as the build does."""
    import onnxruntime.quantization as oq

    onnx.save(_model(), tmp / "f.onnx")
    samples = iter([{"x": x} for x in _data()])

    class Reader(oq.CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(samples, None)

    oq.quantize_static(str(tmp / "f.onnx"), str(tmp / "q.onnx"), Reader(),
                       quant_format=oq.QuantFormat.QDQ, activation_type=oq.QuantType.QUInt8,
                       weight_type=oq.QuantType.QInt8, per_channel=True,
                       nodes_to_exclude=exclude)
    return onnx.load(str(tmp / "q.onnx"))


@pytest.fixture(scope="module")
def excluded(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    return _quantise(tmp_path_factory.mktemp("ortfloat"), ["mid"])


def _run(model: onnx.ModelProto, level: ort.GraphOptimizationLevel) -> np.ndarray:
    from converters.ort_session import exact_products

    so = ort.SessionOptions()
    so.graph_optimization_level = level
    exact_products(so)      # full 8-bit weights: exact u8s8 products without VNNI too
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": x})[0] for x in _data()])


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def test_onnx_runtime_quantises_an_excluded_conv_on_load(excluded: onnx.ModelProto) -> None:
    # What the fix is for (if an ORT upgrade drops the transformer, this says so).
    assert runtime_quantised(excluded) == ["mid"]
    as_written = _run(excluded, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    as_run = _run(excluded, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    err = np.abs(as_run - as_written).max() / np.abs(as_written).max()
    assert err > 1e-3, err


def test_keep_float_makes_the_runtime_run_the_layer_float(excluded: onnx.ModelProto) -> None:
    model = _copy(excluded)
    assert keep_float(model) == ["mid"]
    onnx.checker.check_model(model)
    assert runtime_quantised(model) == []
    as_written = _run(model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    as_run = _run(model, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    np.testing.assert_allclose(as_run, as_written, rtol=1e-4, atol=1e-5 * np.abs(as_written).max())


def test_keep_float_changes_no_value(excluded: onnx.ModelProto) -> None:
    model = _copy(excluded)
    keep_float(model)
    before = _run(excluded, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    after = _run(model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    assert np.array_equal(before, after)
    # the quantised layers are untouched, and nothing is left dangling
    assert keep_float(model) == []
    used = {i for n in model.graph.node for i in n.input} | {"y"}
    assert all(o in used for n in model.graph.node for o in n.output)


def test_keep_float_leaves_a_fully_quantised_model_alone(tmp_path: Path) -> None:
    q = _quantise(tmp_path, [])
    before = q.SerializeToString()
    assert keep_float(q) == [] and q.SerializeToString() == before
    assert runtime_quantised(q) == []


def test_the_build_refuses_an_artifact_the_runtime_would_requantise(
        excluded: onnx.ModelProto, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from converters.onnx_quant import _check_runs_as_declared
    from edgeops.errors import ConversionError

    onnx.save(excluded, tmp_path / "q.onnx")
    ctx = SimpleNamespace(profile=SimpleNamespace(name="x86-cpu"))
    with pytest.raises(ConversionError, match=r"x86-cpu: ONNX Runtime would quantise 1 "
                                              r"layer\(s\) this artifact keeps float \(mid\)"):
        _check_runs_as_declared(ctx, tmp_path / "q.onnx")      # type: ignore[arg-type]
    fixed = _copy(excluded)
    keep_float(fixed)
    onnx.save(fixed, tmp_path / "fixed.onnx")
    _check_runs_as_declared(ctx, tmp_path / "fixed.onnx")      # type: ignore[arg-type]

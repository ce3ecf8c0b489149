"""Bad input for the TFLite targets: one clear error line each, non-zero exit, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper as h

from converters.tflite import convert
from edgeops.errors import UnsupportedModelError, UsageError
from tests.converters import zoo
from tests.converters.conftest import listing
from tests.converters.tflite.models import W, graph, mobilenet_block


def _build(cli, model: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return cli("build", model, "--name", "m", "--version", "1.0.0", "--out", out, *extra)


def _assert_refused(res, out: Path, code: int, *needles: str) -> str:  # type: ignore[no-untyped-def]
    assert res.code == code, res.err
    lines = [ln for ln in res.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.err
    assert "Traceback" not in res.err
    for n in needles:
        assert n in lines[0], lines[0]
    assert listing(out) == []
    return lines[0]


def _two_unsupported() -> onnx.ModelProto:
    r = np.random.default_rng(0)
    n = h.make_node
    return graph([n("Conv", ["x", "w"], ["c"], name="conv"), n("Erf", ["c"], ["e"], name="erf1"),
                  n("Resize", ["e", "", "s"], ["u"], mode="cubic", name="cubic_up"),
                  n("Relu", ["u"], ["y"])], {"x": [1, 3, 8, 8]}, ["y"],
                 [W(r, "w", 4, 3, 1, 1),
                  onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")])


def test_unsupported_ops_listed_all_at_once_by_the_library() -> None:
    with pytest.raises(UnsupportedModelError) as ei:
        convert(_two_unsupported())
    msg = ei.value.message
    assert "erf1 (Erf outside GELU" in msg and "cubic_up (Resize mode=cubic)" in msg
    assert msg.startswith("2 node(s)")


@pytest.mark.parametrize("target", ["tflite-cpu", "edgetpu", "ethos-u"])
def test_unsupported_ops_cli(cli, keys_home: Path, tmp_path: Path, target: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "m.onnx"
    onnx.save(_two_unsupported(), str(p))
    out = tmp_path / "out"
    _assert_refused(_build(cli, p, out, "--target", target), out, 1, "Erf", "Resize mode=cubic")


def test_dynamic_dims_without_input_shape_fail_for_npu_targets_in_the_library() -> None:
    m = zoo.convnet(13, dynamic_hw=True)
    with pytest.raises(UnsupportedModelError) as ei:
        convert(m, precision="int8", require_static=True, target="edgetpu", calibration=[])
    assert "needs static shapes" in ei.value.message and "x" in ei.value.message
    assert "--input-shape" in ei.value.hint
    assert "--input-shape x=" in ei.value.hint and "xNxN" in ei.value.hint   # names the input
    # tflite-cpu also writes static shapes, and says so
    with pytest.raises(UnsupportedModelError, match="writes static shapes"):
        convert(m, target="tflite-cpu")
    # a dynamic batch alone becomes 1, as converters/build feeds samples one at a time
    res = convert(mobilenet_block(), require_static=True, target="ethos-u")
    assert res.graph.tensors[res.graph.inputs[0]].shape[0] == 1


@pytest.mark.parametrize("target", ["edgetpu", "ethos-u"])
def test_dynamic_dims_without_input_shape_cli(cli, keys_home: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                              target: str) -> None:
    p = zoo.save(zoo.convnet(13, dynamic_hw=True), tmp_path / "dyn.onnx")
    out = tmp_path / "out"
    _assert_refused(_build(cli, p, out, "--target", target), out, 2, "static shapes",
                    "--input-shape")


def test_dynamic_dims_fixed_by_input_shape(cli, keys_home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = zoo.save(zoo.convnet(13, dynamic_hw=True), tmp_path / "dyn.onnx")
    out = tmp_path / "out"
    res = _build(cli, p, out, "--target", "edgetpu", "--input-shape", "x=1x3x16x16",
                 "--max-accuracy-drop", "0.5")
    assert res.code == 0, res.err
    assert any(f.endswith(".edgebundle") for f in listing(out))


def test_input_shape_contradicting_the_model_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="does not fit"):
        convert(mobilenet_block(), input_shapes={"x": (1, 3, 32, 32)})
    with pytest.raises(UnsupportedModelError, match="unknown inputs"):
        convert(mobilenet_block(), input_shapes={"nope": (1,)})


def test_int8_without_calibration_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="calibration"):
        convert(mobilenet_block(), precision="int8")
    with pytest.raises(UsageError, match="precision"):
        convert(mobilenet_block(), precision="int4")


@pytest.mark.parametrize("problem", ["nan", "wrong_key", "wrong_shape", "empty"])
def test_bad_calibration_data(cli, keys_home: Path, tmp_path: Path, problem: str) -> None:  # type: ignore[no-untyped-def]
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
    arrays = {"x": x}
    if problem == "nan":
        x[2, 0, 0, 0] = np.nan
    elif problem == "wrong_key":
        arrays = {"image": x}
    elif problem == "wrong_shape":
        arrays = {"x": x[:, :, :8, :8]}
    else:
        arrays = {"x": x[:0]}
    cal = tmp_path / "cal.npz"
    np.savez(cal, **arrays)
    out = tmp_path / "out"
    needle = {"nan": "NaN", "wrong_key": "missing", "wrong_shape": "shape",
              "empty": "empty"}[problem]
    _assert_refused(_build(cli, p, out, "--target", "edgetpu", "--calibration", cal), out, 1,
                    "calibration", needle)


def test_accuracy_gate_failure_writes_nothing(cli, keys_home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = zoo.save(zoo.outlier_mlp(), tmp_path / "mlp.onnx")
    out = tmp_path / "out"
    res = _build(cli, p, out, "--target", "ethos-u", "--max-accuracy-drop", "0.0")
    line = _assert_refused(res, out, 1, "ethos-u")
    assert "dropped" in line


def test_attribute_level_problems_are_named_together() -> None:
    r = np.random.default_rng(1)
    n = h.make_node
    m = graph([n("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], dilations=[2, 2], name="dil_pool"),
               n("ConvTranspose", ["p", "w"], ["t"], dilations=[2, 2], name="dil_tconv"),
               n("Flatten", ["t"], ["f"]),
               n("Gemm", ["f", "z"], ["y"], name="gemm_dynamic_b")],
              {"x": [1, 2, 8, 8], "z": [18, 3]}, ["y"], [W(r, "w", 2, 2, 3, 3)])
    with pytest.raises(UnsupportedModelError) as ei:
        convert(m)
    msg = ei.value.message
    assert msg.startswith("3 node(s)")
    for needle in ("dil_pool (MaxPool with dilations)", "dil_tconv (ConvTranspose with dilations)",
                   "gemm_dynamic_b (Gemm with transA or non-constant B)"):
        assert needle in msg


def _attribute_combinations() -> onnx.ModelProto:
    """Supported op types with inputs/attributes the lowering does not take, float I/O only."""
    r = np.random.default_rng(2)
    n = h.make_node
    return graph([n("Abs", ["x"], ["ax"]), n("Sigmoid", ["x"], ["sx"]),
                  n("Pow", ["ax", "e"], ["p"], name="pow_runtime_exponent"),
                  n("LayerNormalization", ["p", "g"], ["ln", "ln_mean"], axis=-1,
                    name="ln_with_mean"),
                  n("ReduceMax", ["sx"], ["mx"], keepdims=0, name="rmax"),
                  n("Cast", ["mx"], ["mh"], to=onnx.TensorProto.FLOAT16, name="cast_to_half"),
                  n("Cast", ["mh"], ["mb"], to=onnx.TensorProto.BOOL, name="bool_of_half"),
                  n("Where", ["mb", "sx", "x"], ["y"]),
                  n("ReduceSum", ["sx", "no_axes"], ["sm"], keepdims=1,
                    noop_with_empty_axes=1, name="rsum_noop")],
                 {"x": [1, 2, 4, 4], "e": [1]}, ["ln", "y", "sm"],
                 [W(r, "g", 4), onnx.numpy_helper.from_array(np.zeros(0, np.int64), "no_axes")])


def test_unlowerable_attribute_combinations_named_together() -> None:
    with pytest.raises(UnsupportedModelError) as ei:
        convert(_attribute_combinations())
    msg = ei.value.message
    assert msg.startswith("5 node(s)"), msg
    for needle in ("pow_runtime_exponent (Pow with a non-constant exponent)",
                   "ln_with_mean (LayerNormalization with Mean/InvStdDev outputs)",
                   "cast_to_half (Cast to FLOAT16)", "bool_of_half (Cast from float16)",
                   "rsum_noop (ReduceSum noop_with_empty_axes=1)"):
        assert needle in msg
    assert "x86-cpu" in ei.value.hint


def test_unlowerable_attribute_combinations_cli(cli, keys_home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "m.onnx"
    onnx.save(_attribute_combinations(), str(p))
    out = tmp_path / "out"
    _assert_refused(_build(cli, p, out, "--target", "tflite-cpu"), out, 1,
                    "Pow with a non-constant exponent", "Cast to FLOAT16",
                    "ReduceSum noop_with_empty_axes=1")


def test_where_with_a_runtime_bool_input_lowers_to_select() -> None:
    g = h.make_graph([h.make_node("Where", ["c", "x", "z"], ["y"], name="where_rt")], "t",
                     [h.make_tensor_value_info("c", onnx.TensorProto.BOOL, [1, 4]),
                      h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4]),
                      h.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 4])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    res = convert(m)
    assert res.graph.op_counts() == {"SELECT_V2": 1}
    assert res.graph.tensors[res.graph.inputs[0]].dtype == "bool"


@pytest.mark.parametrize("target", ["tflite-cpu", "ethos-u"])
def test_shape_that_stays_dynamic_is_named_with_the_hint(target: str) -> None:
    """Input shapes fixed, but a Reshape's target shape is data: every such node, one error."""
    n = h.make_node
    m = graph([n("ReduceMax", ["s"], ["k"], keepdims=1, name="rmax"),
               n("Cast", ["k"], ["ki"], to=onnx.TensorProto.INT64, name="to_int"),
               n("Concat", ["one", "ki"], ["shape"], axis=0, name="shape_of_data"),
               n("Reshape", ["x", "shape"], ["r"], name="reshape_by_data"),
               n("Relu", ["r"], ["y"], name="relu_after")],
              {"x": [1, 12], "s": [1]}, ["y"],
              [onnx.numpy_helper.from_array(np.array([1], np.int64), "one")])
    with pytest.raises(UnsupportedModelError) as ei:
        convert(m, require_static=target != "tflite-cpu", target=target)
    msg, hint = ei.value.message, ei.value.hint
    assert "reshape_by_data (Reshape with an output shape that is not static)" in msg
    assert "relu_after (Relu with an output shape that is not static)" in msg
    assert "--input-shape" in hint and "x86-cpu" in hint

"""Bool logic, NaN tests, GatherND and DepthToSpace (issue 23: minilm, nucleus-seg) against
ONNX Runtime, on tiny graphs; the refusals name the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.tflite import convert
from converters.tflite._runtime import LiteRT
from converters.tflite.convert import to_artifact_layout, to_onnx_layout
from edgeops.errors import UnsupportedModelError
from tests.converters.tflite.models import ort_run
from tests.converters.tflite.test_ops_int import _typed

_RNG = np.random.default_rng(11)


def _x(*shape: int) -> np.ndarray:
    return _RNG.standard_normal(shape).astype(np.float32)


def _cases() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    ids = np.array([[0, 3, 0, 7, 1, 0]], np.int64)
    x = _x(1, 6)
    x[0, 2] = 0.0
    nan = _x(2, 5)
    nan[0, 1] = nan[1, 4] = np.nan
    return {
        # minilm's mask: Cast(int64 mask, BOOL) -> x != 0, back to float
        "cast_int64_to_bool": (_typed(
            [h.make_node("Cast", ["ids"], ["b"], to=T.BOOL),
             h.make_node("Cast", ["b"], ["y"], to=T.FLOAT)],
            {"ids": (T.INT64, (1, 6))}, ["y"]), {"ids": ids}),
        "cast_float_to_bool_where": (_typed(
            [h.make_node("Cast", ["x"], ["b"], to=T.BOOL),
             h.make_node("Where", ["b", "x", "neg"], ["y"])],
            {"x": (T.FLOAT, (1, 6))}, ["y", "b"],
            [nh.from_array(np.array(-7.0, np.float32), "neg")]), {"x": x}),
        # And/Or/Xor of two comparisons, each output bool
        "and_or_xor": (_typed(
            [h.make_node("Greater", ["x", "zero"], ["pos"]),
             h.make_node("Less", ["x", "half"], ["small"]),
             h.make_node("And", ["pos", "small"], ["a"]),
             h.make_node("Or", ["pos", "small"], ["o"]),
             h.make_node("Xor", ["pos", "small"], ["xo"])],
            {"x": (T.FLOAT, (2, 8))}, ["a", "o", "xo"],
            [nh.from_array(np.array(0.0, np.float32), "zero"),
             nh.from_array(np.array(0.5, np.float32), "half")]), {"x": _x(2, 8)}),
        # IsNaN guarding a softmax's output as the exporters write it
        "isnan_where": (_typed(
            [h.make_node("IsNaN", ["x"], ["isn"]),
             h.make_node("Where", ["isn", "zero", "x"], ["y"])],
            {"x": (T.FLOAT, (2, 5))}, ["y", "isn"],
            [nh.from_array(np.array(0.0, np.float32), "zero")]), {"x": nan}),
        # GatherND with constant indices (one negative), full and partial index tuples
        "gather_nd_const": (_typed(
            [h.make_node("GatherND", ["x", "i2"], ["y2"]),
             h.make_node("GatherND", ["x", "i1"], ["y1"])],
            {"x": (T.FLOAT, (3, 4, 5))}, ["y2", "y1"],
            [nh.from_array(np.array([[0, 1], [2, -1], [1, 3]], np.int64), "i2"),
             nh.from_array(np.array([[2], [0]], np.int64), "i1")]), {"x": _x(3, 4, 5)}),
        # minilm's form: a bool mask gathered by computed int64 indices
        "gather_nd_bool_computed": (_typed(
            [h.make_node("Cast", ["m"], ["b"], to=T.BOOL),
             h.make_node("GatherND", ["b", "idx"], ["g"]),
             h.make_node("Cast", ["g"], ["y"], to=T.FLOAT)],
            {"m": (T.INT64, (2, 6)), "idx": (T.INT64, (4, 2))}, ["y"]),
            {"m": np.array([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 0]], np.int64),
             "idx": np.array([[0, 0], [0, 2], [1, 5], [1, 3]], np.int64)}),
    }


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_logic_op_matches_onnxruntime(case: str) -> None:
    m, feeds = CASES[case]
    res = convert(m, precision="fp32")
    got = LiteRT(res.model).run([feeds[n] for n in res.input_names])
    ref = ort_run(m, feeds)
    for o, r, g in zip(res.output_names, ref, got, strict=True):
        assert g.shape == r.shape and g.dtype == r.dtype, o
        if r.dtype == np.bool_:
            assert np.array_equal(g, r), o
        else:
            np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6, err_msg=o)


def test_logic_ops_become_one_builtin_each() -> None:
    counts = convert(CASES["and_or_xor"][0], precision="fp32").graph.op_counts()
    assert counts == {"GREATER": 1, "LESS": 1, "LOGICAL_AND": 1, "LOGICAL_OR": 1,
                      "NOT_EQUAL": 1}, counts
    counts = convert(CASES["isnan_where"][0], precision="fp32").graph.op_counts()
    assert counts == {"NOT_EQUAL": 1, "SELECT_V2": 1}, counts


def _conv_d2s(mode: str, name: str = "d2s") -> onnx.ModelProto:
    w = _x(8, 2, 3, 3)
    return _typed([h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                   h.make_node("DepthToSpace", ["c"], ["d"], blocksize=2, mode=mode, name=name),
                   h.make_node("Relu", ["d"], ["y"])],
                  {"x": (T.FLOAT, (1, 2, 5, 6))}, ["y"], [nh.from_array(w, "w")])


@pytest.mark.parametrize(("mode", "keep_io"), [("DCR", False), ("DCR", True), ("CRD", False)])
def test_depth_to_space_matches_onnxruntime(mode: str, keep_io: bool) -> None:
    m = _conv_d2s(mode)
    res = convert(m, precision="fp32", keep_io_layout=keep_io)
    counts = res.graph.op_counts()
    assert counts.get("DEPTH_TO_SPACE") == 1, counts
    # DCR is the builtin's own channel order; CRD reorders the channels with one TRANSPOSE
    assert counts.get("TRANSPOSE", 0) == (mode == "CRD") + 2 * keep_io, counts
    x = _x(1, 2, 5, 6)
    ref = ort_run(m, {"x": x})[0]
    got = LiteRT(res.model).run([to_artifact_layout(x, res.io_layout["x"])])[0]
    got = to_onnx_layout(got, res.io_layout["y"])
    assert got.shape == ref.shape == (1, 2, 10, 12)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_unlowered_forms_refused_naming_each_node() -> None:
    """DepthToSpace in a mode ONNX does not define, GatherND with batch_dims."""
    m = _conv_d2s("XYZ", name="odd_upsample")
    with pytest.raises(UnsupportedModelError) as ei:
        convert(m, precision="fp32")
    assert "odd_upsample (DepthToSpace mode=XYZ)" in ei.value.message, ei.value.message
    g = _typed([h.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1, name="batched")],
               {"x": (T.FLOAT, (2, 4, 3))}, ["y"],
               [nh.from_array(np.array([[1], [3]], np.int64), "i")])
    with pytest.raises(UnsupportedModelError) as ei:
        convert(g, precision="fp32")
    assert "batched (GatherND batch_dims!=0)" in ei.value.message, ei.value.message

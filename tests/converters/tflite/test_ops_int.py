"""Integer and bool data paths (issue 23, magika and token models) against ONNX Runtime.

Byte and token ids enter as int32/int64, are compared (one-hot), cast, masked and used as
GATHER indices into embedding tables; the artifact keeps int64 inputs and computes in int32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.tflite import convert
from converters.tflite._runtime import LiteRT
from edgeops.errors import UnsupportedModelError
from tests.converters.tflite.models import ort_run

_RNG = np.random.default_rng(7)


def _typed(nodes: Sequence[onnx.NodeProto], inputs: dict[str, tuple[int, Sequence[int]]],
           outputs: Sequence[str], inits: Sequence[onnx.TensorProto] = ()) -> onnx.ModelProto:
    g = h.make_graph(list(nodes), "t",
                     [h.make_tensor_value_info(k, t, list(s)) for k, (t, s) in inputs.items()],
                     [h.make_tensor_value_info(o, T.UNDEFINED, None) for o in outputs],
                     list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)], producer_name="tflite-tests")
    m.ir_version = 8
    inf = onnx.shape_inference.infer_shapes(m)
    vis = {v.name: v for v in list(inf.graph.value_info) + list(inf.graph.output)}
    del m.graph.output[:]
    m.graph.output.extend(vis[o] for o in outputs)
    return m


def _table(name: str, *shape: int) -> onnx.TensorProto:
    return nh.from_array(_RNG.standard_normal(shape).astype(np.float32), name)


def _cases() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    ids32 = np.array([[0, 3, 9, 10, 3, 256 % 11, 1, 2, 7, 7, 0, 5, 4, 8, 6, 10]], np.int32)
    ids64 = np.array([[4, 0, 11, 7, 3, 3]], np.int64)
    x = _RNG.standard_normal((1, 6)).astype(np.float32)
    return {
        # magika's one-hot: Reshape, Equal against a range, Cast bool->float, MatMul
        "one_hot_matmul": (_typed(
            [h.make_node("Reshape", ["ids", "shp"], ["r"]),
             h.make_node("Equal", ["r", "rng"], ["eq"]),
             h.make_node("Cast", ["eq"], ["oh"], to=T.FLOAT),
             h.make_node("MatMul", ["oh", "w"], ["y"])],
            {"ids": (T.INT32, (1, 16))}, ["y"],
            [nh.from_array(np.array([1, 16, 1], np.int64), "shp"),
             nh.from_array(np.arange(11, dtype=np.int32).reshape(1, 1, 11), "rng"),
             _table("w", 11, 4)]), {"ids": ids32}),
        # an embedding lookup by token ids from the graph input
        "gather_token_ids": (_typed(
            [h.make_node("Gather", ["emb", "ids"], ["y"], axis=0)],
            {"ids": (T.INT64, (1, 6))}, ["y"], [_table("emb", 12, 5)]), {"ids": ids64}),
        # a padding mask computed from the ids: Equal, Not, Where, Cast bool->float
        "mask_where_not": (_typed(
            [h.make_node("Equal", ["ids", "pad"], ["is_pad"]),
             h.make_node("Not", ["is_pad"], ["keep"]),
             h.make_node("Where", ["keep", "x", "neg"], ["masked"]),
             h.make_node("Cast", ["keep"], ["kf"], to=T.FLOAT),
             h.make_node("Mul", ["masked", "kf"], ["y"])],
            {"ids": (T.INT64, (1, 6)), "x": (T.FLOAT, (1, 6))}, ["y"],
            [nh.from_array(np.array(3, np.int64), "pad"),
             nh.from_array(np.array(-1.5, np.float32), "neg")]), {"ids": ids64, "x": x}),
        # ids cast int64 -> int32 -> float, scaled; Greater/Less on floats
        "cast_chain_compare": (_typed(
            [h.make_node("Cast", ["ids"], ["i32"], to=T.INT32),
             h.make_node("Cast", ["i32"], ["f"], to=T.FLOAT),
             h.make_node("Greater", ["f", "x"], ["gt"]),
             h.make_node("Less", ["f", "x"], ["lt"]),
             h.make_node("Cast", ["gt"], ["gtf"], to=T.FLOAT),
             h.make_node("Cast", ["lt"], ["ltf"], to=T.FLOAT),
             h.make_node("Sub", ["gtf", "ltf"], ["d"]),
             h.make_node("Mul", ["d", "f"], ["y"])],
            {"ids": (T.INT64, (1, 6)), "x": (T.FLOAT, (1, 6))}, ["y"]),
            {"ids": ids64, "x": (x * 5).astype(np.float32)}),
    }


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_integer_path_matches_onnxruntime(case: str) -> None:
    m, feeds = CASES[case]
    res = convert(m, precision="fp32")
    rt = LiteRT(res.model)
    got = rt.run([feeds[n] for n in res.input_names])
    ref = ort_run(m, feeds)
    for r, g in zip(ref, got, strict=True):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_int64_input_stays_int64_and_computes_in_int32() -> None:
    res = convert(CASES["gather_token_ids"][0], precision="fp32")
    g = res.graph
    assert g.tensors[g.inputs[0]].dtype == "int64"
    gather = next(op for op in g.ops if op.kind == "GATHER")
    assert g.tensors[gather.inputs[1]].dtype == "int32"
    assert g.op_counts() == {"CAST": 1, "GATHER": 1}


def test_one_hot_is_equal_cast_fully_connected() -> None:
    res = convert(CASES["one_hot_matmul"][0], precision="fp32")
    assert res.graph.op_counts() == {"RESHAPE": 1, "EQUAL": 1, "CAST": 1, "FULLY_CONNECTED": 1}


def test_cast_to_unlowered_type_refused_naming_each_node() -> None:
    m = _typed([h.make_node("Cast", ["x"], ["a"], to=T.FLOAT16, name="to_half"),
                h.make_node("Cast", ["x"], ["b"], to=T.INT8, name="to_int8"),
                h.make_node("Cast", ["a"], ["c"], to=T.FLOAT),
                h.make_node("Cast", ["b"], ["d"], to=T.FLOAT),
                h.make_node("Add", ["c", "d"], ["y"])],
               {"x": (T.FLOAT, (1, 4))}, ["y"])
    with pytest.raises(UnsupportedModelError) as ei:
        convert(m, precision="fp32")
    msg = ei.value.message
    assert "to_half (Cast to FLOAT16)" in msg and "to_int8 (Cast to INT8)" in msg, msg


def test_full_int8_max_with_a_constant_first_operand() -> None:
    """magika's Max(eps, variance): the constant comes first; int8 used to KeyError on it."""
    m = _typed([h.make_node("Mul", ["x", "x"], ["sq"]),
                h.make_node("Max", ["eps", "sq"], ["y"])],
               {"x": (T.FLOAT, (1, 8))}, ["y"], [nh.from_array(np.array(0.05, np.float32), "eps")])
    rng = np.random.default_rng(5)
    cal = [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(8)]
    res = convert(m, precision="int8", calibration=iter(cal))
    assert res.graph.op_counts().get("MAXIMUM") == 1
    x = cal[0]["x"]
    got = LiteRT(res.model).run_float([x])[0]
    ref = np.maximum(0.05, x * x)
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()

"""Property tests: layout bookkeeping and broadcasting hold for arbitrary shapes and perms."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.tflite import convert
from converters.tflite._ir import Graph
from converters.tflite._runtime import LiteRT
from converters.tflite.convert import to_artifact_layout, to_onnx_layout
from tests.converters.tflite.models import graph, ort_run

_dims = st.lists(st.integers(1, 4), min_size=4, max_size=4)


@settings(deadline=None)      # a shared, loaded machine: no per-example time limit
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=5),
       perm_seed=st.integers(0, 10_000))
def test_layout_round_trip(shape: list[int], perm_seed: int) -> None:
    perm = list(np.random.default_rng(perm_seed).permutation(len(shape)))
    rec = {"perm_from_onnx": perm}
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    y = to_artifact_layout(x, rec)
    assert y.shape == tuple(shape[p] for p in perm)
    np.testing.assert_array_equal(to_onnx_layout(y, rec), x)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x_shape=_dims, mask=st.lists(st.booleans(), min_size=4, max_size=4),
       op=st.sampled_from(["Add", "Sub", "Mul"]), perm_seed=st.integers(0, 1000),
       const_rank=st.integers(1, 4))
def test_broadcast_after_conv_and_model_transpose(x_shape: list[int], mask: list[bool],
                                                  op: str, perm_seed: int,
                                                  const_rank: int) -> None:
    """Conv (channels-last) → Transpose (free relabel) → broadcast op with a constant."""
    c = x_shape[1]
    rng = np.random.default_rng(perm_seed)
    perm = [int(p) for p in rng.permutation(4)]
    t_shape = [x_shape[p] for p in perm]
    k_shape = [d if keep else 1 for d, keep in zip(t_shape, mask, strict=True)][4 - const_rank:]
    nodes = [h.make_node("Conv", ["x", "w"], ["c"]),
             h.make_node("Transpose", ["c"], ["t"], perm=perm),
             h.make_node(op, ["t", "k"], ["y"])]
    inits = [nh.from_array(rng.standard_normal((c, c, 1, 1)).astype(np.float32), "w"),
             nh.from_array(rng.standard_normal(k_shape).astype(np.float32), "k")]
    m = graph(nodes, {"x": x_shape}, ["y"], inits, opset=13)
    res = convert(m)
    assert "TRANSPOSE" not in [o.kind for o in res.graph.ops[:-1]]  # at most one, at the end
    x = rng.standard_normal(x_shape).astype(np.float32)
    (ref,) = ort_run(m, {"x": x})
    (got,) = LiteRT(res.model).run_float([to_artifact_layout(x, res.io_layout["x"])])
    got = to_onnx_layout(got, res.io_layout["y"])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(ref).max()))


@settings(deadline=None)
@given(p1_seed=st.integers(0, 1000), p2_seed=st.integers(0, 1000))
def test_cancel_transposes_removes_only_identity_pairs(p1_seed: int, p2_seed: int) -> None:
    p1 = np.random.default_rng(p1_seed).permutation(4).astype(np.int32)
    p2 = np.random.default_rng(p2_seed).permutation(4).astype(np.int32)
    g = Graph()
    x = g.add_tensor("x", (2, 3, 4, 5))
    a = g.add_tensor("a", tuple((2, 3, 4, 5)[i] for i in p1))
    b = g.add_tensor("b", tuple(g.tensors[a].shape[i] for i in p2))
    y = g.add_tensor("y", g.tensors[b].shape)
    g.add_op("TRANSPOSE", [x, g.add_const("p1", p1)], [a])
    g.add_op("TRANSPOSE", [a, g.add_const("p2", p2)], [b])
    g.add_op("RELU", [b], [y])
    g.inputs, g.outputs = [x], [y]
    removed = g.cancel_transposes()
    identity = list(p1[p2]) == [0, 1, 2, 3]
    assert removed == (1 if identity else 0)
    relu = next(op for op in g.ops if op.kind == "RELU")
    if identity:
        assert relu.inputs == [x] and g.op_counts() == {"RELU": 1}


_KINDS = st.sampled_from(["ADD", "MUL", "SUB", "MAXIMUM", "MINIMUM"])


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
       kinds=st.lists(_KINDS, min_size=1, max_size=5), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(["float32", "float16", "int8", "int32"]))
def test_flatbuffer_round_trip(shape: list[int], kinds: list[str], seed: int,
                               dtype: str) -> None:
    """Whatever graph we write, the schema reads back the same tensors, buffers and ops."""
    from ai_edge_litert import schema_py_generated as schema

    from converters.tflite._ir import Quant
    from converters.tflite._writer import write_flatbuffer

    rng = np.random.default_rng(seed)
    g = Graph()
    cur = g.add_tensor("x", tuple(shape))
    g.inputs = [cur]
    for i, kind in enumerate(kinds):
        c = g.add_const(f"c{i}", (rng.standard_normal(shape) * 10).astype(dtype))
        if dtype == "int8":
            g.tensors[c].quant = Quant(np.array([0.5], np.float32), np.array([3]), 0)
        out = g.add_tensor(f"t{i}", tuple(shape))
        g.add_op(kind, [cur, c], [out])
        cur = out
    g.outputs = [cur]
    model = schema.ModelT.InitFromPackedBuf(write_flatbuffer(g), 0)
    (sg,) = model.subgraphs
    names = [t.name.decode() for t in sg.tensors]
    assert names == list(g.tensors)
    for tt, t in zip(sg.tensors, g.tensors.values(), strict=True):
        assert list(tt.shape) == list(t.shape)
        if t.data is not None:
            raw = bytes(np.asarray(model.buffers[tt.buffer].data, np.uint8))
            assert raw == t.data.tobytes()
        if t.quant is not None:
            assert list(tt.quantization.scale) == [0.5]
            assert list(tt.quantization.zeroPoint) == [3]
    codes = [model.operatorCodes[op.opcodeIndex].builtinCode for op in sg.operators]
    assert codes == [getattr(schema.BuiltinOperator, k) for k in kinds]
    assert [names[i] for i in sg.inputs] == ["x"]
    assert [names[i] for i in sg.outputs] == [g.outputs[0]]
    for op, ir_op in zip(sg.operators, g.ops, strict=True):
        assert [names[i] for i in op.inputs] == ir_op.inputs

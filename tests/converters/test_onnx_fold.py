"""converters/onnx_fold: element-wise chains folded before INT8, exact in FP32, found by shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.onnx_fold import fold_affine, fold_elementwise, fuse_hard_swish

C = 8


def _const(name: str, value: Any) -> onnx.TensorProto:
    return nh.from_array(np.asarray(value, np.float32), name)


def _model(nodes: list[Any], inits: list[Any], opset: int = 13) -> onnx.ModelProto:
    g = h.make_graph(nodes, "tiny", [h.make_tensor_value_info("x", T.FLOAT, [1, C, 10, 10])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, C, 10, 10])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _run(model: onnx.ModelProto, x: np.ndarray | None = None) -> np.ndarray:
    import onnxruntime as ort

    if x is None:
        x = np.random.default_rng(0).standard_normal((1, C, 10, 10)).astype(np.float32) * 4
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"x": x})[0])


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _hard_swish(form: str) -> tuple[list[Any], list[Any]]:
    """x -> one of the decomposed hard-swish forms -> y."""
    inits = [_const("three", 3.0), _const("zero", 0.0), _const("six", 6.0),
             _const("sixth", 1 / 6)]
    nodes = [h.make_node("Add", ["x", "three"], ["a"], name="plus3"),
             h.make_node("Clip", ["a", "zero", "six"], ["c"], name="relu6")]
    if form == "mul-div":
        nodes += [h.make_node("Mul", ["x", "c"], ["m"], name="times"),
                  h.make_node("Div", ["m", "six"], ["y"], name="div6")]
    elif form == "mul-sixth":
        nodes += [h.make_node("Mul", ["c", "x"], ["m"], name="times"),
                  h.make_node("Mul", ["m", "sixth"], ["y"], name="sixth6")]
    else:                                                    # "div-mul": clip / 6, then x *
        nodes += [h.make_node("Div", ["c", "six"], ["d"], name="div6"),
                  h.make_node("Mul", ["x", "d"], ["y"], name="times")]
    return nodes, inits


@pytest.mark.parametrize("form", ["mul-div", "mul-sixth", "div-mul"])
def test_hard_swish_forms_become_x_times_hard_sigmoid_and_stay_exact(form: str) -> None:
    src = _model(*_hard_swish(form))
    out, fused = fuse_hard_swish(src)
    assert len(fused) == 1
    assert _ops(out) == ["HardSigmoid", "Mul"]
    gate, mul = out.graph.node
    assert sorted(mul.input) == sorted(["x", gate.output[0]]) and gate.input[0] == "x"
    assert not out.graph.initializer                      # the constants went with the chain
    onnx.checker.check_model(out)
    np.testing.assert_allclose(_run(out), _run(src), rtol=1e-6, atol=1e-6)


def test_hard_swish_needs_every_constant_and_the_same_input() -> None:
    nodes, inits = _hard_swish("mul-div")
    wrong_offset = _model(nodes, [_const("three", 2.0), *inits[1:]])
    assert fuse_hard_swish(wrong_offset)[1] == []
    nodes2 = [*nodes[:2], h.make_node("Mul", ["c", "c"], ["m"], name="times"), nodes[3]]
    assert fuse_hard_swish(_model(nodes2, inits))[1] == []           # c * c: not x * gate
    # An intermediate read elsewhere too cannot disappear.
    nodes3 = [*nodes[:3], h.make_node("Div", ["m", "six"], ["d"], name="div6"),
              h.make_node("Add", ["d", "m"], ["y"], name="reuse")]
    assert fuse_hard_swish(_model(nodes3, inits))[1] == []
    wrong_clip = _model(nodes, [*inits[:2], _const("six", 5.0), inits[3]])
    assert fuse_hard_swish(wrong_clip)[1] == []


def _affine_chain(next_pads: int, next_group: int) -> onnx.ModelProto:
    """conv -> *k1 -> +b1 -> HardSwish form -> *k2 -> +b2 -> conv (padded or not)."""
    rng = np.random.default_rng(5)
    hs_nodes, hs_inits = _hard_swish("mul-div")
    rename = {"x": "t", "y": "h"}
    for n in hs_nodes:
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    inits = [*hs_inits,
             _const("w1", rng.standard_normal((C, C, 3, 3)) * 0.3), _const("b1", rng.standard_normal(C)),
             _const("k1", [1.7]), _const("s1", rng.standard_normal((1, C, 1, 1))),
             _const("k2", rng.uniform(0.5, 2, (C, 1, 1))), _const("s2", [0.4]),
             _const("w2", rng.standard_normal((C, C // next_group, 3, 3)) * 0.3)]
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
             h.make_node("Mul", ["k1", "c1"], ["m1"], name="scale1"),
             h.make_node("Add", ["m1", "s1"], ["t"], name="shift1"), *hs_nodes,
             h.make_node("Mul", ["h", "k2"], ["m2"], name="scale2"),
             h.make_node("Sub", ["m2", "s2"], ["t2"], name="shift2"),
             h.make_node("Conv", ["t2", "w2"], ["y"], pads=[next_pads] * 4, group=next_group,
                         name="conv2")]
    return _model(nodes, inits)


@pytest.mark.parametrize(("pads", "group"), [(0, 1), (1, 1), (1, C)])
def test_affine_ops_fold_into_the_convs_around_them(pads: int, group: int) -> None:
    src = _affine_chain(pads, group)
    out, done = fold_elementwise(src)
    assert len(done["hard_swish_fused"]) == 1
    ops = _ops(out)
    if pads:      # k2*h - s2 before a padded conv: the shift stays (padding sees it), k2 goes
        assert ops == ["Conv", "HardSigmoid", "Mul", "Add", "Conv"], ops
        assert sorted(done["affine_folded_into_conv"]) == ["scale1", "scale2", "shift1"]
    else:
        assert ops == ["Conv", "HardSigmoid", "Mul", "Conv"], ops
        assert sorted(done["affine_folded_into_conv"]) == ["scale1", "scale2", "shift1",
                                                           "shift2"]
    names = [n.name for n in out.graph.node if n.op_type == "Conv"]
    assert names == ["conv1", "conv2"]                    # the convs keep their names
    onnx.checker.check_model(out)
    want = _run(src)        # exact up to float32 rounding, which differs by CPU (AVX2, AVX-512)
    np.testing.assert_allclose(_run(out), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_affine_fold_leaves_what_is_not_per_channel_or_is_shared() -> None:
    rng = np.random.default_rng(1)
    inits = [_const("w", rng.standard_normal((C, C, 1, 1))), _const("b", np.zeros(C)),
             _const("spatial", rng.standard_normal((1, 1, 10, 10))), _const("k", [2.0])]
    # Conv -> Mul by a map over height and width: not a per-channel constant.
    spatial = _model([h.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
                      h.make_node("Mul", ["c", "spatial"], ["y"], name="map")], inits)
    assert fold_affine(spatial)[1] == []
    # Conv output read twice: folding would change the other reader.
    shared = _model([h.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
                     h.make_node("Mul", ["c", "k"], ["m"], name="scale"),
                     h.make_node("Add", ["m", "c"], ["y"], name="res")], inits)
    assert fold_affine(shared)[1] == []
    # Add before a padded conv with no Mul to trade it against: stays.
    padded = _model([h.make_node("Add", ["x", "k"], ["a"], name="shift"),
                     h.make_node("Conv", ["a", "w", "b"], ["y"], pads=[0, 0, 0, 0],
                                 kernel_shape=[1, 1], name="conv1x1")], inits)
    out, done = fold_affine(padded)                       # unpadded: it folds
    assert done == ["shift"] and _ops(out) == ["Conv"]
    np.testing.assert_allclose(_run(out), _run(padded), rtol=1e-5, atol=1e-5)
    w3 = _const("w", rng.standard_normal((C, C, 3, 3)))
    padded3 = _model([h.make_node("Add", ["x", "k"], ["a"], name="shift"),
                      h.make_node("Conv", ["a", "w", "b"], ["y"], pads=[1, 1, 1, 1],
                                  name="conv3x3")], [w3, *inits[1:]])
    assert fold_affine(padded3)[1] == []
    # A Mul by zero cannot be traded across the Add (b / 0).
    zero = _model([h.make_node("Mul", ["x", "z"], ["m"], name="scale"),
                   h.make_node("Add", ["m", "k"], ["a"], name="shift"),
                   h.make_node("Conv", ["a", "w", "b"], ["y"], pads=[1, 1, 1, 1],
                               name="conv3x3")], [w3, *inits[1:], _const("z", [0.0])])
    assert fold_affine(zero)[1] == []


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_batch_norm_after_a_conv_or_conv_transpose_folds(op: str) -> None:
    rng = np.random.default_rng(4)
    cout = 6
    shape = (C, cout, 2, 2) if op == "ConvTranspose" else (cout, C, 3, 3)
    inits = [_const("w", rng.standard_normal(shape)), _const("b", rng.standard_normal(cout)),
             _const("gamma", rng.uniform(0.5, 2, cout)), _const("beta", rng.standard_normal(cout)),
             _const("mean", rng.standard_normal(cout)), _const("var", rng.uniform(0.1, 3, cout))]
    kw = {"strides": [2, 2]} if op == "ConvTranspose" else {"pads": [1, 1, 1, 1]}
    g = h.make_graph([h.make_node(op, ["x", "w", "b"], ["c"], name="conv", **kw),
                      h.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"],
                                  ["y"], epsilon=1e-3, name="bn")], "bn",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, C, 10, 10])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    src = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    src.ir_version = 8
    out, done = fold_affine(src)
    assert done == ["bn"] and _ops(out) == [op]
    np.testing.assert_allclose(_run(out), _run(src), rtol=1e-5, atol=1e-5)
    # A ConvTranspose with groups keeps its BatchNormalization (its channel layout differs).
    if op == "ConvTranspose":
        grouped = onnx.ModelProto()
        grouped.CopyFrom(src)
        grouped.graph.node[0].attribute.append(h.make_attribute("group", 2))
        grouped.graph.initializer[0].CopyFrom(_const("w", rng.standard_normal((C, cout // 2, 2, 2))))
        assert fold_affine(grouped)[1] == []


def test_int8_build_quantises_the_folded_graph(tmp_path: Path) -> None:
    """Through a real build: the rewrites are recorded and the artifact has no Clip/Div left."""
    import onnxruntime as ort

    from converters.api import BuildRequest
    from converters.build import build

    src = tmp_path / "m.onnx"
    onnx.save_model(_affine_chain(1, 1), str(src))
    req = BuildRequest(model=src, name="m", version="1.0.0", targets=("x86-cpu",),
                       precision="int8", max_accuracy_drop=0.5,
                       options={"perf_aware": False, "effort": "fast"})
    (art,) = build(req, lambda _m: None, tmp_path / "work").artifacts
    passes = art.details["graph_passes"]
    assert len(passes["hard_swish_fused"]) == 1
    assert sorted(passes["affine_folded_into_conv"]) == ["scale1", "scale2", "shift1"]
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(art.path), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "QLinearConv" in ops and "QLinearMul" in ops, ops      # x * HardSigmoid(x) in int8
    assert not {"Clip", "Div"} & set(ops), ops
    assert art.metrics["accuracy"]["summary"]["cosine_min"] > 0.99


def test_a_tensor_a_subgraph_reads_is_not_folded_away() -> None:
    """An If branch reading the Conv's output sees it unscaled: the Mul must stay."""
    rng = np.random.default_rng(2)
    branch = h.make_graph([h.make_node("Identity", ["c"], ["r"])], "branch", [],
                          [h.make_tensor_value_info("r", T.FLOAT, None)])
    inits = [_const("w", rng.standard_normal((C, C, 1, 1))), _const("k", [2.0]),
             nh.from_array(np.array(True), "cond")]
    m = _model([h.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                h.make_node("Mul", ["c", "k"], ["m"], name="scale"),
                h.make_node("If", ["cond"], ["y0"], then_branch=branch, else_branch=branch,
                            name="if"),
                h.make_node("Add", ["m", "y0"], ["y"], name="sum")], inits)
    assert fold_affine(m)[1] == []

"""Ops of real exports (issue 23) against ONNX Runtime, fused builtins, measured fusion choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper as h

from converters.onnx_perf import Timing
from converters.tflite import compatibility_report, convert
from converters.tflite._fuse import FUSIONS
from converters.tflite._fusion_perf import ALWAYS, MEASURED, decide, measured_rewrites, micro_graphs
from converters.tflite._ir_fuse import IR_REWRITES
from converters.tflite._runtime import LiteRT
from converters.tflite._writer import write_flatbuffer
from edgeops.errors import UnsupportedModelError
from tests.converters.tflite.models import OP_CASES, W, graph
from tests.converters.tflite.models_more import FUSION_CASES, MORE_CASES, _conv_then, f32
from tests.converters.tflite.test_ops import RTOL, _max_rel_err

ALL = tuple(FUSIONS + IR_REWRITES)


@pytest.mark.parametrize("case", sorted(MORE_CASES))
def test_real_export_op_matches_onnxruntime(case: str) -> None:
    err, res = _max_rel_err(MORE_CASES[case], keep_io=False)
    assert err <= RTOL, f"{case}: relative error {err:.2e}"
    assert "TRANSPOSE" not in res.graph.op_counts() or case.startswith(("dfl", "attention_s"))


@pytest.mark.parametrize("case", ["split_opset13_input", "layer_norm_last_axis",
                                  "gather_const_indices", "reduce_sum_drop"])
def test_real_export_op_with_onnx_io_layout(case: str) -> None:
    err, _ = _max_rel_err(MORE_CASES[case], keep_io=True)
    assert err <= RTOL


def test_split_is_one_op_on_the_channels_last_axis() -> None:
    even = convert(MORE_CASES["split_opset13_even"])
    uneven = convert(MORE_CASES["split_opset11_attr"])
    assert even.graph.op_counts() == {"CONV_2D": 1, "SPLIT": 1}
    assert uneven.graph.op_counts() == {"CONV_2D": 1, "SPLIT_V": 1}
    sv = next(op for op in uneven.graph.ops if op.kind == "SPLIT_V")
    axis = uneven.graph.tensors[sv.inputs[2]].data
    assert axis is not None and int(axis.ravel()[0]) == 3          # ONNX axis 1 held in NHWC


def test_shape_arithmetic_folds_to_constants_and_nothing_dynamic_remains() -> None:
    res = convert(MORE_CASES["range_expand_folded"], require_static=True, target="ethos-u")
    assert res.graph.op_counts() == {"ADD": 1}
    rep = compatibility_report(res.graph, "ethos-u")
    assert rep["dynamic_ops"] == 0


def test_layer_norm_uses_rsqrt_and_squared_difference() -> None:
    res = convert(MORE_CASES["layer_norm_last_axis"])
    counts = res.graph.op_counts()
    assert counts["RSQRT"] == 1 and counts["SQUARED_DIFFERENCE"] == 1 and "DIV" not in counts


def test_decomposed_norm_divides_by_rsqrt_product() -> None:
    on = convert(MORE_CASES["layer_norm_decomposed"], rewrites=ALL).graph.op_counts()
    off = convert(MORE_CASES["layer_norm_decomposed"], rewrites=()).graph.op_counts()
    assert on.get("RSQRT") == 1 and "DIV" not in on and "SQRT" not in on
    assert off.get("SQRT") == 1 and off.get("DIV") == 1


@pytest.mark.parametrize("case", sorted(FUSION_CASES))
def test_decomposed_activation_becomes_one_builtin(case: str) -> None:
    model, builtin = FUSION_CASES[case]
    err, res = _max_rel_err(model, keep_io=False)
    assert err <= RTOL, f"{case}: relative error {err:.2e}"
    assert res.graph.op_counts() == {"CONV_2D": 1, builtin: 1}
    assert sum(res.details["fused"].get(k, 0) for k in ("hard_swish", "gelu")) == 1


def test_hard_swish_decomposition_kept_when_the_rewrite_is_off() -> None:
    model, _ = FUSION_CASES["hswish_clip_div6_paddle"]
    res = convert(model, rewrites=())
    assert "HARD_SWISH" not in res.graph.op_counts()
    rt = LiteRT(res.model)
    assert rt.run([np.zeros((1, 8, 8, 4), np.float32)])[0].shape == (1, 8, 8, 6)


def test_gelu_pattern_off_leaves_erf_refused_with_the_pattern_named() -> None:
    model, _ = FUSION_CASES["gelu_erf_paddle"]
    with pytest.raises(UnsupportedModelError, match=r"Erf outside GELU"):
        convert(model, rewrites=())


def test_pattern_with_an_intermediate_used_elsewhere_is_not_fused() -> None:
    n = h.make_node
    # the Clip output is also a graph output: fusing would lose it
    m = _conv_then([n("Add", ["c", "three"], ["a"]), n("Clip", ["a", "lo", "hi"], ["cl"]),
                    n("Mul", ["c", "cl"], ["m"]), n("Div", ["m", "six"], ["y"])], ["y", "cl"],
                   [f32("three", 3.0), f32("lo", 0.0), f32("hi", 6.0), f32("six", 6.0)])
    err, res = _max_rel_err(m, keep_io=False)
    assert err <= RTOL
    assert "HARD_SWISH" not in res.graph.op_counts()


def test_hard_sigmoid_with_another_slope_is_not_hard_swish() -> None:
    n = h.make_node
    m = _conv_then([n("HardSigmoid", ["c"], ["hs"], alpha=0.2, beta=0.5),
                    n("Mul", ["c", "hs"], ["y"])], ["y"], [])
    err, res = _max_rel_err(m, keep_io=False)
    assert err <= RTOL
    assert "HARD_SWISH" not in res.graph.op_counts()


def test_mul_add_after_conv_fold_into_its_weights() -> None:
    res = convert(OP_CASES["batchnorm_alone"])                 # MUL+ADD on the input: stays
    assert res.graph.op_counts() == {"MUL": 1, "ADD": 1}
    n = h.make_node
    m = _conv_then([n("Mul", ["c", "k"], ["s"]), n("Add", ["s", "b"], ["r"]),
                    n("Relu", ["r"], ["y"])], ["y"],
                   [f32("k", [[[0.5]], [[2.0]], [[1.0]], [[3.0]], [[-1.0]], [[0.25]]]),
                    f32("b", 0.3)])
    err, res = _max_rel_err(m, keep_io=False)
    assert err <= RTOL
    assert res.graph.op_counts() == {"CONV_2D": 1}
    assert res.graph.ops[0].options["fusedActivationFunction"] == 1


# -- the measured decision ------------------------------------------------------------------------
class _FakeTimer:
    """Speedups per rewrite, as a sequence (a second measurement takes the next value)."""

    def __init__(self, speedups: dict[str, list[float]]) -> None:
        self.speedups = speedups
        self.calls: list[str] = []

    def compare(self, rewrite: str) -> Timing:
        self.calls.append(rewrite)
        s = self.speedups[rewrite].pop(0)
        return Timing(1.0, s, (s,) * 3)


def test_decide_enables_only_what_measured_faster_and_remeasures_near_ties() -> None:
    timer = _FakeTimer({"hard_swish": [1.5], "relu_0_to_1": [0.8], "affine": [1.005, 0.99, ],
                        "rsqrt": [1.2]})
    d = decide(timer, ("hard_swish", "relu_0_to_1", "affine", "rsqrt"))
    assert d["enabled"] == sorted(["hard_swish", "rsqrt", *ALWAYS])
    assert timer.calls.count("affine") == 2            # within MIN_GAIN: measured again, pooled
    assert "speedup 0.800" in d["trials"]["relu_0_to_1"]


def test_measured_rewrites_are_cached_per_machine(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEOPS_HOME", str(tmp_path))
    made: list[int] = []

    def factory(threads: int) -> _FakeTimer:
        made.append(threads)
        return _FakeTimer({k: [2.0 if k == "hard_swish" else 0.5] for k in MEASURED})

    first = measured_rewrites(1, timer_factory=factory)
    again = measured_rewrites(1, timer_factory=factory)
    assert first["enabled"] == again["enabled"] == sorted(["hard_swish", *ALWAYS])
    assert (first["cached"], again["cached"], made) == (False, True, [1])
    assert list(tmp_path.glob("cache/perf/tflite-fusions-*.json"))


@pytest.mark.parametrize("rewrite", MEASURED)
def test_micro_graph_forms_compute_the_same(rewrite: str) -> None:
    ref, cand = micro_graphs(rewrite)
    assert len(cand.ops) < len(ref.ops) or rewrite in ("rsqrt", "fused_relu_n1_to_1")
    x = np.abs(np.random.default_rng(0).standard_normal(ref.tensors["x"].shape)) + 0.1
    a = LiteRT(write_flatbuffer(ref)).run([x.astype(np.float32)])[0]
    b = LiteRT(write_flatbuffer(cand)).run([x.astype(np.float32)])[0]
    assert np.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_encoder_after_conv_stem_needs_no_transpose() -> None:
    """NHWC (1,1,W,C) → NCHW → flatten → tokens (1,W,C) keeps memory order: one RESHAPE."""
    res = convert(MORE_CASES["conv_to_encoder_tokens"])
    assert "TRANSPOSE" not in res.graph.op_counts()


@pytest.mark.parametrize(("shape", "folds"), [((1, 4, 6, 1), True), ((1, 2, 4, 6), False)])
def test_order_keeping_transpose_reshape_chain_becomes_one_reshape(
        shape: tuple[int, ...], folds: bool) -> None:
    """NHWC → NCHW → flatten keeps memory order only when C or H*W is 1."""
    from converters.tflite._ir import Graph
    from converters.tflite._ir_fuse import fold_layout_chains

    n, h_, w, c = shape
    g = Graph()
    x = g.add_tensor("x", shape)
    g.inputs.append(x)
    t1 = g.add_tensor("t1", (n, c, h_, w))
    g.add_op("TRANSPOSE", [x, g.add_const("p1", np.array([0, 3, 1, 2], np.int32))], [t1])
    y = g.add_tensor("y", (n, c * h_ * w))
    g.add_op("RESHAPE", [t1, g.add_const("s", np.array([n, c * h_ * w], np.int32))], [y],
             newShape=[n, c * h_ * w])
    g.outputs.append(y)
    xv = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    before = LiteRT(write_flatbuffer(g)).run([xv])[0]
    assert fold_layout_chains(g) == int(folds)
    assert (g.op_counts() == {"RESHAPE": 1}) == folds
    assert np.array_equal(LiteRT(write_flatbuffer(g)).run([xv])[0], before)


def test_attention_reads_k_transposed_through_the_adj_flag() -> None:
    res = convert(MORE_CASES["attention_k_transposed"])
    assert "TRANSPOSE" not in res.graph.op_counts()
    bmm = [op for op in res.graph.ops if op.kind == "BATCH_MATMUL"]
    assert [op.options["adjY"] for op in bmm] == [True, False]


@pytest.mark.parametrize(("kernel", "pads", "shift", "left"),
                         [(1, 0, True, {}), (3, 1, True, {"MUL": 1, "ADD": 1}),
                          (3, 1, False, {})])
def test_scale_and_shift_before_a_conv_fold_into_it_where_exact(
        kernel: int, pads: int, shift: bool, left: dict[str, int]) -> None:
    """MobileOne's act * a + b before the next conv folds into it when the conv reads no zero
    padding (a padded border would miss the + b); a scale alone folds into any conv."""
    n = h.make_node
    r = np.random.default_rng(5)
    nodes = [n("Relu", ["c"], ["a"]), n("Mul", ["a", "k"], ["s"])]
    if shift:
        nodes.append(n("Add", ["s", "b"], ["t"]))
    nodes.append(n("Conv", ["t" if shift else "s", "w2", "b2"], ["y"], pads=[pads] * 4))
    m = _conv_then(nodes, ["y"],
                   [f32("k", list(np.linspace(0.5, 2.0, 6)[:, None, None])),
                    f32("b", list(np.linspace(-1, 1, 6)[:, None, None])),
                    W(r, "w2", 5, 6, kernel, kernel), W(r, "b2", 5)])
    err, res = _max_rel_err(m, keep_io=False)
    assert err <= RTOL
    counts = res.graph.op_counts()
    assert {k: v for k, v in counts.items() if k in ("MUL", "ADD")} == left


@pytest.mark.parametrize("case", ["conv_to_encoder_tokens", "layer_norm_decomposed",
                                  "split_opset18_uneven"])
def test_conversion_is_deterministic_and_leaves_the_model_alone(case: str) -> None:
    model = MORE_CASES[case]
    before = model.SerializeToString()
    first, second = convert(model), convert(model)
    assert first.model == second.model
    assert model.SerializeToString() == before


@pytest.mark.parametrize(("size", "means"), [(16, 1), (96, 2)])
def test_long_global_means_are_taken_one_axis_at_a_time(size: int, means: int) -> None:
    """A sequential float32 sum over 96x96 values drifts; two short MEANs stay exact."""
    m = graph([h.make_node("GlobalAveragePool", ["x"], ["y"])], {"x": [1, 3, size, size]},
              ["y"])
    res = convert(m)
    assert res.graph.op_counts() == {"MEAN": means}
    x = (np.abs(np.random.default_rng(0).standard_normal((1, 3, size, size))) + 1)
    got = LiteRT(res.model).run_float([x.astype(np.float32).transpose(0, 2, 3, 1)])[0]
    exact = x.mean(axis=(2, 3))
    assert np.abs(got.reshape(1, 3) - exact).max() / exact.max() < 2e-6

"""Mixed precision by measurement: the knapsack, the Q/DQ bypass, the refusal, uint16 on QNN."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.mixed_precision import (
    LayerCost,
    MixedPrecisionSettings,
    may_replace,
    metric_step,
    prefix_search,
    refusal,
    select,
    too_many_lifted,
)
from converters.qdq_bypass import bypass_layers
from tests.converters import zoo

# ---- the knapsack on hand-made tables ----------------------------------------------------


def _brute(layers: list[LayerCost], base: float, budget: float) -> float:
    """Most time kept INT8 over every subset the additive estimate accepts (the oracle)."""
    useful = [c for c in layers if c.recovered > 0]
    best = -1.0
    for k in range(len(useful) + 1):
        for keep in itertools.combinations(useful, k):
            lifted = sum(c.recovered for c in useful if c not in keep)
            if base - lifted <= budget + 1e-12:
                best = max(best, sum(c.saving_ms for c in keep if c.saving_ms > 0))
    return best


def test_knapsack_keeps_the_fast_layer_a_ranking_prefix_would_float() -> None:
    # b is the most sensitive but also by far the fastest in INT8: a ranking prefix floats b
    # then a (0.03 - 0.012 = 0.018 is over budget, - 0.010 = 0.008), losing 5.1 ms; the
    # knapsack floats a and c (0.03 - 0.014 = 0.016 within 0.017) and loses 0.3 ms.
    table = [LayerCost("a", 0.010, 0.1), LayerCost("b", 0.012, 5.0), LayerCost("c", 0.004, 0.2)]
    sel = select(table, base_drop=0.03, budget=0.017)
    assert sel.feasible
    assert sel.high == ("a", "c") and sel.kept == ("b",)
    assert sel.estimated_drop == pytest.approx(0.016)
    assert sel.saved_ms == pytest.approx(5.0) and sel.lost_ms == pytest.approx(0.3)


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = [LayerCost(f"n{i}", float(rng.uniform(-0.002, 0.02)),
                       float(rng.uniform(-0.5, 3.0))) for i in range(9)]
    base = 0.08
    sel = select(table, base, budget=0.02)
    assert sel.feasible
    assert sel.estimated_drop <= 0.02 + 1e-9
    assert sum(c.saving_ms for c in table if c.node in sel.kept and c.saving_ms > 0
               and c.recovered > 0) == pytest.approx(_brute(table, base, 0.02))
    # layers that recover nothing stay INT8; helpful layers no faster in INT8 are lifted
    for c in table:
        if c.recovered <= 0:
            assert c.node in sel.kept
        elif c.saving_ms <= 0:
            assert c.node in sel.high


def test_knapsack_infeasible_lifts_every_useful_layer() -> None:
    table = [LayerCost("a", 0.01, 1.0), LayerCost("b", 0.0, 1.0), LayerCost("c", 0.02, 1.0)]
    sel = select(table, base_drop=0.10, budget=0.01)
    assert not sel.feasible
    assert sel.high == ("a", "c") and sel.kept == ("b",)
    assert sel.best_drop == pytest.approx(0.07)


def test_knapsack_nothing_to_lift_when_the_budget_is_met() -> None:
    table = [LayerCost("a", 0.01, 1.0), LayerCost("b", 0.02, 2.0)]
    sel = select(table, base_drop=0.005, budget=0.01)
    assert sel.high == () and sel.kept == ("a", "b")


def test_knapsack_is_deterministic_on_ties() -> None:
    table = [LayerCost("a", 0.01, 1.0), LayerCost("b", 0.01, 1.0)]
    sels = {select(table, 0.02, 0.01).high for _ in range(3)}
    assert len(sels) == 1 and len(next(iter(sels))) == 1


def test_a_table_naming_a_layer_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="once"):
        select([LayerCost("a", 0.1, 1.0), LayerCost("a", 0.1, 1.0)], 0.1, 0.01)


# ---- the refusal line ------------------------------------------------------------------


def test_refusal_names_limiting_layers_and_needed_budget() -> None:
    line = refusal("x86-cpu", "top1_agreement", 0.083, 0.01,
                   [LayerCost("conv7", 0.03, 1.0), LayerCost("mm2", 0.05, 0.5),
                    LayerCost("dw3", 0.0, 0.2)], needed=0.04167, measured=3, lifted=2)
    assert "\n" not in line
    assert line.startswith("target x86-cpu: top1_agreement dropped 8.30%")
    assert "limited by mm2 (recovers 5.00%), conv7 (recovers 3.00%);" in line
    assert "dw3" not in line
    assert "with 2 layer(s) out of INT8 (3 measured one by one) it still drops 4.17%" in line
    assert line.endswith("a budget of at least 4.17% would be needed")


def test_a_refusal_under_a_coarse_metric_says_lifting_more_did_not_help() -> None:
    """ocr-rec, x86-cpu, 1 % budget: every table row and prefix (up to 115 of 233 layers)
    dropped one character of 55 or two, and the line said only "with 0 layer(s) out of INT8
    it still drops 1.82%", as though nothing had been lifted and a finer budget might pass."""
    char = 1 / 55
    table = [LayerCost("conv26", -char, 1.0), LayerCost("gap2", -2 * char, 1.0),
             LayerCost("add230", 0.0, 1.0)]
    tried = [(0, char), (2, 2 * char), (7, char), (115, char)]
    step = metric_step([char, *(d for _, d in tried), *(char - c.recovered for c in table)])
    assert step == pytest.approx(char)
    lifted, needed = min(tried, key=lambda t: (t[1], t[0]))
    line = refusal("x86-cpu", "one_minus_cer", char, 0.01, table, needed, measured=3,
                   lifted=lifted, widest=max(n for n, _ in tried), step=step)
    assert "\n" not in line and "limited by none found;" in line
    assert ("with 0 layer(s) out of INT8 (3 measured one by one) it still drops 1.82% (no lower "
            "with up to 115 layers out of INT8, the most tried); every drop measured is a "
            "multiple of 1.82% (the metric's step on this validation data), over the 1.00% "
            "budget: only a build that loses nothing passes it") in line
    assert line.endswith("a budget of at least 1.82% would be needed")


def test_a_fine_metric_or_a_step_within_the_budget_adds_nothing_to_the_refusal() -> None:
    assert metric_step([0.0832, 0.0417, 0.0291]) == 0.0            # not multiples: continuous
    assert metric_step([0.05, 0.05]) == 0.0                         # one drop: no evidence
    assert metric_step([0.25, 0.125, 0.375]) == pytest.approx(0.125)
    line = refusal("x86-cpu", "top1_agreement", 0.02, 0.05, [LayerCost("c", 0.0, 1.0)],
                   0.02, measured=1, lifted=0, widest=0, step=0.01)
    assert "the most tried" not in line and "multiple of" not in line


def _drops(table: dict[int, float]) -> tuple[list[int], Callable[[int], float]]:
    seen: list[int] = []

    def drop_of(g: int) -> float:
        seen.append(g)
        return table[g]
    return seen, drop_of


def test_prefix_search_doubles_then_bisects_to_a_shorter_passing_prefix() -> None:
    sizes = [2 * g for g in range(1, 41)]                 # two layers per tensor
    table = {g: (0.08 if g < 20 else 0.03) for g in range(1, 41)}
    seen, drop_of = _drops(table)
    chosen, tries, stopped = prefix_search(sizes, 0.05, 80, drop_of, bisections=3)
    assert seen[:6] == [1, 2, 4, 8, 16, 32]               # doubling until one passes
    assert seen[6:] == [24, 20, 18]                       # then bisecting 16..32
    assert chosen == 20 and tries[-1].groups == 18 and tries[-1].drop == 0.08
    assert [t.lifted for t in tries[:2]] == [2, 4] and stopped == ""


def test_prefix_search_tries_the_longest_prefix_within_the_limit_then_gives_up() -> None:
    sizes = [3 * g for g in range(1, 41)]
    seen, drop_of = _drops(dict.fromkeys(range(1, 41), 0.08))
    chosen, tries, _ = prefix_search(sizes, 0.05, 60, drop_of)
    assert chosen is None
    assert seen == [1, 2, 4, 8, 16, 20]                   # 20 tensors = 60 layers, the limit
    assert max(t.lifted for t in tries) == 60


def test_prefix_search_skips_prefixes_already_verified() -> None:
    sizes = [5, 5, 5, 6, 9, 12]           # the knapsack already lifted 5 layers
    seen, drop_of = _drops(dict.fromkeys(range(1, 7), 0.01))
    chosen, _, _ = prefix_search(sizes, 0.05, 100, drop_of, already=5)
    assert seen == [4] and chosen == 4


def test_a_shorter_prefix_that_may_not_replace_the_passing_one_counts_as_failing() -> None:
    # 24 passes only in the slower form (bypassed): 32 is kept, and the bisection goes on
    # between 24 and 32 towards a shorter prefix that may replace it
    sizes = [2 * g for g in range(1, 41)]
    seen, drop_of = _drops({g: (0.08 if g < 20 else 0.03) for g in range(1, 41)})
    asked: list[tuple[int, int]] = []

    def replaces(mid: int, hi: int) -> bool:
        asked.append((mid, hi))
        return mid != 24

    chosen, _, _ = prefix_search(sizes, 0.05, 80, drop_of, bisections=3, replaces=replaces)
    assert seen == [1, 2, 4, 8, 16, 32, 24, 28, 26]
    assert asked == [(24, 32), (28, 32), (26, 28)] and chosen == 26


def test_a_refused_shorter_prefix_leaves_the_passing_one() -> None:
    sizes = [2 * g for g in range(1, 41)]
    seen, drop_of = _drops({g: (0.08 if g < 20 else 0.03) for g in range(1, 41)})
    chosen, tries, _ = prefix_search(sizes, 0.05, 80, drop_of, bisections=3,
                                     replaces=lambda mid, hi: False)
    assert seen[6:] == [24, 28, 30] and chosen == 32 and tries[-1].groups == 30


def test_only_a_bypass_never_replaces_an_exclusion_that_passes() -> None:
    assert not may_replace("bypass", "exclusion")         # would lose the fused producers
    assert may_replace("exclusion", "exclusion") and may_replace("exclusion", "bypass")
    assert may_replace("bypass", "bypass") and may_replace(None, None)


def test_a_hopeless_doubling_stops_early_and_says_what_it_tried() -> None:
    # far over budget and the doublings gain nothing: 3 tries, not 7
    sizes = [2 * g for g in range(1, 65)]
    table = {g: 0.24 - 0.001 * (g > 1) for g in range(1, 65)}
    seen, drop_of = _drops(table)
    chosen, tries, stopped = prefix_search(sizes, 0.01, 128, drop_of, hopeless_ratio=5.0,
                                           min_tries=3)
    assert chosen is None and seen == [1, 2, 4]
    assert stopped == ("stopped doubling after 3 prefixes (up to 8 layers): the best drop "
                       "23.90% is over 5x the budget and the last doubling gained 0.00%, too "
                       "little for the 4 doubling(s) left to reach it")
    line = refusal("x86-cpu-vnni", "mask_iou", 0.2385, 0.01, [LayerCost("c1", 0.01, 1.0)],
                   needed=min(t.drop for t in tries), measured=1, lifted=4, stopped=stopped)
    assert "\n" not in line and "it still drops 23.90%; " + stopped in line
    assert "would be needed" not in line                  # 23.90 % bounds nothing here
    assert line.endswith("was not searched for: raise --max-accuracy-drop well above 1.00% "
                         "or use --precision fp32")
    # without the early stop the same search tries every doubling up to the limit
    seen2, drop_of2 = _drops(table)
    assert prefix_search(sizes, 0.01, 128, drop_of2)[0] is None
    assert seen2 == [1, 2, 4, 8, 16, 32, 64]


def test_the_try_budget_stops_the_doubling_and_the_refusal_says_so() -> None:
    sizes = [2 * g for g in range(1, 65)]
    table = {g: 0.03 - 0.0001 * g for g in range(1, 65)}    # close to budget: never hopeless
    seen, drop_of = _drops(table)
    chosen, tries, stopped = prefix_search(sizes, 0.01, 128, drop_of, hopeless_ratio=5.0,
                                           max_tries=2)
    assert chosen is None and seen == [1, 2]
    assert stopped == ("stopped doubling after 2 prefix(es) (up to 4 layers): the try budget "
                       "(--mixed-precision-prefixes 2)")
    line = refusal("x86-cpu", "one_minus_cer", 0.0435, 0.01, [LayerCost("c1", 0.01, 1.0)],
                   needed=min(t.drop for t in tries), measured=1, lifted=4, stopped=stopped)
    assert stopped + ", so the budget it would need was not searched for" in line
    # a prefix that passes within the budget is kept (and bisected as usual)
    seen, drop_of = _drops(dict.fromkeys(range(1, 65), 0.005))
    assert prefix_search(sizes, 0.01, 128, drop_of, max_tries=1)[0:3:2] == (1, "")
    # the last prefix within the limit tried: exhaustive, not stopped by the budget
    seen, drop_of = _drops(dict.fromkeys(range(1, 65), 0.03))
    assert prefix_search(sizes, 0.01, 4, drop_of, max_tries=2)[2] == ""
    assert seen == [1, 2]


@pytest.mark.parametrize("bad", [{"max_measured_layers": 0}, {"max_prefixes": 0}])
def test_mixed_precision_settings_refuse_bounds_below_one(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MixedPrecisionSettings(**bad)


def test_the_early_stop_waits_while_doubling_still_gains_or_the_budget_is_near() -> None:
    sizes = [2 * g for g in range(1, 65)]
    falling = {g: max(0.5 - 0.1 * g.bit_length(), 0.005) for g in range(1, 65)}
    seen, drop_of = _drops(falling)          # 0.4, 0.3, 0.2, 0.1, 0.005: gains 0.1 a doubling
    chosen, _, stopped = prefix_search(sizes, 0.01, 128, drop_of, hopeless_ratio=5.0)
    assert chosen is not None and stopped == "" and seen[:5] == [1, 2, 4, 8, 16]
    flat = dict.fromkeys(range(1, 65), 0.24)   # flat, but under 5x a 5 % budget
    seen, drop_of = _drops(flat)
    assert prefix_search(sizes, 0.05, 128, drop_of, hopeless_ratio=5.0)[2] == ""
    assert seen == [1, 2, 4, 8, 16, 32, 64]


def test_too_many_lifted_layers_is_one_line_naming_them() -> None:
    line = too_many_lifted("arm64-cpu", "mask_iou", 0.008, 0.01,
                           [f"conv{i}" for i in range(8)], 10, 0.5)
    assert "\n" not in line
    assert line.startswith("target arm64-cpu: mask_iou meets the 1.00% budget (0.80%) only "
                           "with 8 of 10 quantised layers out of INT8 (conv0, conv1,")
    assert "conv5, ...), more than 50%" in line and "--precision fp32" in line


# ---- the Q/DQ bypass -------------------------------------------------------------------


def _two_branches() -> onnx.ModelProto:
    """x -> conv_a -> ya ; x -> conv_b -> relu -> conv_c -> yc (b's weights badly scaled)."""
    rng = np.random.default_rng(3)
    wb = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    wb[0] *= 50.0
    inits = [nh.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "wa"),
             nh.from_array(rng.standard_normal(4).astype(np.float32), "ba"),
             nh.from_array(wb, "wb"), nh.from_array(rng.standard_normal(6).astype(np.float32),
                                                    "bb"),
             nh.from_array(rng.standard_normal((2, 6, 1, 1)).astype(np.float32), "wc")]
    nodes = [h.make_node("Conv", ["x", "wa", "ba"], ["ya"], pads=[1, 1, 1, 1], name="conv_a"),
             h.make_node("Conv", ["x", "wb", "bb"], ["b"], pads=[1, 1, 1, 1], name="conv_b"),
             h.make_node("Relu", ["b"], ["r"], name="relu"),
             h.make_node("Conv", ["r", "wc"], ["yc"], name="conv_c")]
    g = h.make_graph(nodes, "two", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                     [h.make_tensor_value_info("ya", T.FLOAT, None),
                      h.make_tensor_value_info("yc", T.FLOAT, None)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _qdq(model: onnx.ModelProto, tmp: Path, x: np.ndarray) -> onnx.ModelProto:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    src = zoo.save(model, tmp / "f.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": v[None]} for v in x])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(src), str(tmp / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=False, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return onnx.load(str(tmp / "q.onnx"))


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, {"x": x}), strict=True))


def test_bypass_makes_exactly_that_layer_float(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    model = _two_branches()
    qdq = _qdq(model, tmp_path, x)
    lifted = bypass_layers(qdq, model, {"conv_b"})
    onnx.checker.check_model(lifted)
    producer = {o: n for n in lifted.graph.node for o in n.output}
    inits = {i.name: nh.to_array(i) for i in lifted.graph.initializer}
    node = {n.name: n for n in lifted.graph.node}
    # conv_b: float input x and its own float weight and bias, bit for bit
    b = node["conv_b"]
    assert b.input[0] == "x"
    assert np.array_equal(inits[b.input[1]], nh.to_array(model.graph.initializer[2]))
    assert np.array_equal(inits[b.input[2]], nh.to_array(model.graph.initializer[3]))
    # every other layer still reads dequantised inputs
    for other in ("conv_a", "conv_c"):
        assert all(producer[i].op_type == "DequantizeLinear" for i in node[other].input)
    # the untouched branch computes exactly what it did; the lifted one moves towards FP32
    q_out, l_out, f_out = _run(qdq, x[:1]), _run(lifted, x[:1]), _run(model, x[:1])
    assert np.array_equal(q_out["ya"], l_out["ya"])
    assert not np.array_equal(q_out["yc"], l_out["yc"])
    assert np.abs(l_out["yc"] - f_out["yc"]).mean() < np.abs(q_out["yc"] - f_out["yc"]).mean()
    # the source QDQ model is left as it was
    assert _run(qdq, x[:1])["yc"].tobytes() == q_out["yc"].tobytes()


def test_bypass_sees_through_a_seven_bit_clamp(tmp_path: Path) -> None:
    """x86 without VNNI clamps 7-bit activations with a uint8 Clip between Q and DQ."""
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    model = _two_branches()
    qdq = _qdq(model, tmp_path, x)
    q = next(n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    for n in qdq.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]:
            n.input[0] = "x_clamped"
    qdq.graph.initializer.append(nh.from_array(np.array(127, np.uint8), "c127"))
    qdq.graph.node.insert(list(qdq.graph.node).index(q) + 1, h.make_node(
        "Clip", [q.output[0], "", "c127"], ["x_clamped"], name="clamp"))
    lifted = bypass_layers(qdq, model, {"conv_b"})
    node = {n.name: n for n in lifted.graph.node}
    assert node["conv_b"].input[0] == "x"
    assert node["conv_a"].input[0] != "x" and "clamp" in node


def test_bypass_restores_an_activation_the_quantiser_folded_into_a_range(tmp_path: Path
                                                                          ) -> None:
    """ORT's QDQ quantiser drops a Relu that feeds a QuantizeLinear (the uint8 range starting
    at 0 clamps instead), so the Q reads the Relu's input; a lifted reader of that tensor must
    see the Relu's output, as in the float model. Every layer lifted is the float model."""
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    model = _two_branches()
    qdq = _qdq(model, tmp_path, x)
    assert "relu" not in {n.name for n in qdq.graph.node}          # folded by the quantiser
    lifted = bypass_layers(qdq, model, {"conv_a", "conv_b", "conv_c"})
    onnx.checker.check_model(lifted)
    got, want = _run(lifted, x[:1]), _run(model, x[:1])
    inits = {i.name: nh.to_array(i) for i in lifted.graph.initializer}
    producer = {o: n for n in lifted.graph.node for o in n.output}
    for k in ("ya", "yc"):           # only the outputs' own Q/DQ is left: half a step off
        step = float(inits[producer[k].input[1]])
        assert np.abs(got[k] - want[k]).max() <= step / 2 * 1.001, k
    # conv_c alone: it reads the Relu's float output, not the Relu's input
    alone = bypass_layers(qdq, model, {"conv_c"})
    producer = {o: n for n in alone.graph.node for o in n.output}
    c = next(n for n in alone.graph.node if n.name == "conv_c")
    assert producer[c.input[0]].op_type == "Relu"


def test_bypass_of_a_missing_layer_is_an_error(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    model = _two_branches()
    with pytest.raises(ValueError, match="'nope' is not a node"):
        bypass_layers(_qdq(model, tmp_path, x), model, {"nope"})


# ---- whole builds ----------------------------------------------------------------------


def _outlier_build(tmp_path: Path, target: str, budget: float, work: str = "work") -> object:
    from converters.api import BuildRequest
    from converters.build import build

    p = zoo.save(zoo.outlier_mlp(), tmp_path / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((32, 4, 16)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=x)
    req = BuildRequest(model=p, name="m", version="1.0.0", targets=(target,),
                       calibration=tmp_path / "cal.npz", max_accuracy_drop=budget,
                       input_shapes={"x": (1, 4, 16)} if target == "qnn-npu" else {},
                       options={"perf_aware": False})
    (art,) = build(req, lambda _m: None, tmp_path / work).artifacts
    return art


@pytest.mark.slow
def test_cpu_build_floats_the_measured_layer_and_records_why(tmp_path: Path) -> None:
    art = _outlier_build(tmp_path, "x86-cpu", 0.01)
    mp = art.details["mixed_precision"]                  # type: ignore[attr-defined]
    assert mp["float"] == ["mm2"] and mp["uint16_nodes"] == {}
    assert mp["measured_layers"] == 4 and mp["verified_drop"] <= 0.01
    assert "correction" not in mp                         # the estimate held
    assert art.details["float_nodes"]["mm2"].startswith(  # type: ignore[attr-defined]
        "accuracy: lifting it alone recovered")
    assert "ONNX Runtime profiler" in mp["speed_model"]


def _weight_outlier_convnet() -> onnx.ModelProto:
    """x -> conv1 -> relu -> conv2 -> relu -> conv3 -> y over [N, 8, 12, 12]. One weight of
    each of conv2's output channels is 400x the rest, on an input channel conv1 all but
    zeroes: per-channel INT8 weights crush the weights that matter, so conv2 must compute in
    float; its input quantises well where it counts."""
    rng = np.random.default_rng(5)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w1[0] *= 1e-3
    w2 = (rng.standard_normal((8, 8, 3, 3)) * 0.1).astype(np.float32)
    w2[:, 0, 0, 0] *= 400.0
    inits = [nh.from_array(w1, "w1"),
             nh.from_array(w2, "w2"),
             nh.from_array((rng.standard_normal((8, 8, 1, 1)) * 0.3).astype(np.float32), "w3")]
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             h.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             h.make_node("Conv", ["r2", "w3"], ["y"], name="conv3")]
    g = h.make_graph(nodes, "wout", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 12, 12])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 8, 12, 12])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.slow
def test_a_layer_lifted_by_exclusion_runs_float_and_its_producer_stays_int8(
        tmp_path: Path) -> None:
    """Exclusion is the lift when it meets the budget: the lifted conv reads its quantised
    input dequantised (its producer keeps its Q, so ORT fuses it to an INT8 kernel), computes
    with its float weight, and ORT does not re-quantise it on load."""
    from converters.api import BuildRequest
    from converters.build import build
    from converters.ort_float import runtime_quantised

    p = zoo.save(_weight_outlier_convnet(), tmp_path / "c.onnx")
    x = np.abs(np.random.default_rng(0).standard_normal((16, 3, 12, 12))).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=x)
    req = BuildRequest(model=p, name="m", version="1.0.0", targets=("x86-cpu-vnni",),
                       calibration=tmp_path / "cal.npz", max_accuracy_drop=0.01,
                       options={"perf_aware": False, "effort": "fast"})  # no equalisation
    (art,) = build(req, lambda _m: None, tmp_path / "work").artifacts
    mp = art.details["mixed_precision"]
    assert mp["base_drop"] > 0.01
    assert "conv2" in mp["float"] and mp["lift"] == "exclusion", mp
    assert mp["verified_drop"] <= 0.01
    assert "excluded from quantize_static" in art.details["float_nodes"]["conv2"]
    model = onnx.load(str(art.path))
    made = {o: n for n in model.graph.node for o in n.output}
    conv2 = next(n for n in model.graph.node if n.name == "conv2")
    assert made[conv2.input[0]].op_type == "DequantizeLinear"        # not the float r1
    conv1 = next(n for n in model.graph.node if n.name == "conv1")
    assert made[conv1.input[1]].op_type == "DequantizeLinear"        # conv1 still INT8
    assert runtime_quantised(model) == []                            # really float in ORT


@pytest.mark.slow
def test_the_bypass_is_the_lift_when_exclusion_misses_the_budget(tmp_path: Path) -> None:
    """mm2's *input* is what INT8 crushes (mm1's outlier channel): excluded, mm2 still reads
    it quantised and the budget is missed; the bypass (mm2 reads mm1's float output) meets it,
    and the manifest says which was measured."""
    art = _outlier_build(tmp_path, "x86-cpu-vnni", 0.01)
    mp = art.details["mixed_precision"]                  # type: ignore[attr-defined]
    assert mp["float"] == ["mm2"] and mp["lift"] == "bypass", mp
    (_, excluded, bypassed), = mp["lift_tries"]
    assert excluded > 0.01 >= bypassed
    assert "bypassed" in art.details["float_nodes"]["mm2"]  # type: ignore[attr-defined]


@pytest.mark.slow
def test_same_inputs_give_the_same_artifact(tmp_path: Path, edgeops_home: Path) -> None:
    """The speed table is cached per machine, measurements are deterministic: a rebuild
    chooses the same layers and writes the same bytes. Its own EDGEOPS_HOME: in the shared one
    another worker's build of the same model could rewrite the cached table between the two
    builds (seen once under load: int8_saves_ms -0.001 vs -0.002)."""
    a = _outlier_build(tmp_path, "x86-cpu", 0.01, "work-a")
    b = _outlier_build(tmp_path, "x86-cpu", 0.01, "work-b")
    assert a.details["mixed_precision"] == b.details["mixed_precision"]  # type: ignore[attr-defined]
    assert a.path.read_bytes() == b.path.read_bytes()                  # type: ignore[attr-defined]


@pytest.mark.slow
def test_qnn_build_puts_the_sensitive_layer_in_uint16(tmp_path: Path) -> None:
    # On QNN uint8 per-tensor activations crush m1's small channels; the weights (uint8, per
    # tensor for MatMul) cost more still, so the budget here is what uint16 on mm2 reaches.
    art = _outlier_build(tmp_path, "qnn-npu", 0.6)
    mp = art.details["mixed_precision"]                  # type: ignore[attr-defined]
    assert mp["uint16"] == ["mm2"] and list(mp["uint16_nodes"]) == ["mm2"]
    assert not any(v.startswith("accuracy") for v in
                   art.details["float_nodes"].values())  # type: ignore[attr-defined]
    q = onnx.load(str(art.path))                         # type: ignore[attr-defined]
    producer = {o: n for n in q.graph.node for o in n.output}
    mm2 = next(n for n in q.graph.node if n.name == "mm2")
    dq = producer[mm2.input[0]]
    assert dq.op_type == "DequantizeLinear"
    zp = next(i for i in q.graph.initializer if i.name == dq.input[2])
    assert zp.data_type == T.UINT16
    # ORT converts at the boundary (mm1 writes m1, so it runs 16-bit from a convert of m0);
    # the layers away from it stay uint8
    mm0 = next(n for n in q.graph.node if n.name == "mm0")
    zp0 = next(i for i in q.graph.initializer if i.name == producer[mm0.input[0]].input[2])
    assert zp0.data_type == T.UINT8


@pytest.mark.slow
def test_refused_build_names_the_layers_and_the_budget(tmp_path: Path) -> None:
    from edgeops.errors import AccuracyGateError

    with pytest.raises(AccuracyGateError) as exc:
        _outlier_build(tmp_path, "qnn-npu", 0.01)
    msg = exc.value.message
    assert "\n" not in msg
    assert "limited by mm2 (recovers " in msg
    assert "a budget of at least " in msg and msg.endswith("would be needed")


# ---- the speed model's attribution (pure) ----------------------------------------------


def test_kernels_are_attributed_to_layers_from_the_graph() -> None:
    from converters.layer_speed import attribute

    graph = [("conv1", "Conv", ["x", "w1"], ["c1"]), ("act", "Relu", ["c1"], ["a1"]),
             ("dw", "Conv", ["a1", "w2"], ["c2"]), ("mm", "MatMul", ["c2", "w3"], ["y"])]
    kernels = {"conv1_token_1_kernel_time": 0.5,        # fused QDQ kernel: the node's name
               "a1_nchwc_kernel_time": 1.0,             # float NCHWc kernel: its output, whose
               #                                          Relu was fused into conv1
               "c2_nchwc_kernel_time": 0.25,            # dw's own output
               "mm_kernel_time": 0.125,
               "ReorderOutput_kernel_time": 9.0,        # layout: no layer's choice
               "Transpose_token_6_kernel_time": 9.0}
    assert attribute(kernels, graph) == {"conv1": 1.5, "dw": 0.25, "mm": 0.125}


def test_unattributed_layers_are_estimated_from_the_measured_ones() -> None:
    from converters.layer_speed import fill_missing

    t = fill_missing(["a", "b", "c", "d"], {"a": 4.0, "b": 2.0, "c": 6.0},
                     {"a": 1.0, "b": 1.0, "d": 0.5})
    assert t.saving_ms("a") == 3.0 and t.saving_ms("b") == 1.0
    assert t.int8_ms["c"] == pytest.approx(6.0 / 3.0)    # median float/INT8 ratio of a, b
    assert t.float_ms["d"] == pytest.approx(0.5 * 3.0)
    assert t.estimated == ("c", "d")
    none = fill_missing(["e"], {}, {})
    assert none.saving_ms("e") == 0.0 and none.estimated == ("e",)



@pytest.mark.slow
def test_a_ranking_prefix_is_lifted_when_the_knapsack_finds_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last resort: per-layer recoveries that do not add up (measured on a 640x640 DBNet:
    no single layer moved mask IoU by 0.1 %, the first 64 together did) leave the knapsack
    nothing feasible; lifting prefixes of the activation-error ranking, each verified by a real
    quantisation, must still find the build. Forced here by a knapsack that selects nothing."""
    import converters.onnx_mixed as om
    from converters.mixed_precision import Selection

    def nothing(costs: list[LayerCost], base_drop: float, budget: float) -> Selection:
        return Selection(high=(), kept=tuple(c.node for c in costs), estimated_drop=base_drop,
                         best_drop=base_drop, saved_ms=0.0, lost_ms=0.0, feasible=False)

    monkeypatch.setattr(om, "select", nothing)
    art = _outlier_build(tmp_path, "x86-cpu-vnni", 0.01)
    mixed = art.details["mixed_precision"]             # type: ignore[attr-defined]
    assert mixed["cumulative"]["lifted"], mixed
    assert mixed["verified_drop"] <= 0.01
    floats = art.details["float_nodes"]                 # type: ignore[attr-defined]
    assert "mm2" in floats and "activation-error ranking" in floats["mm2"]
    assert art.details["quantised_nodes"] >= 1          # type: ignore[attr-defined]


@pytest.mark.slow
def test_layers_lifted_for_free_do_not_count_towards_not_worth_shipping(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where every layer times slower in INT8 (an AVX2 build machine on a tiny model), the
    knapsack lifts each helpful layer for free; the budget needs conv2 alone, so "2 of 3 out of
    INT8, not worth shipping" must not refuse the build (it did, on such a machine)."""
    import converters.onnx_mixed as om
    from converters.api import BuildRequest
    from converters.build import build

    monkeypatch.setattr(om, "_speed", lambda _c, _f, _q, layers, *_a: (
        dict.fromkeys(layers, -0.002), "test: every layer slower in INT8"))
    p = zoo.save(_weight_outlier_convnet(), tmp_path / "c.onnx")
    x = np.abs(np.random.default_rng(0).standard_normal((16, 3, 12, 12))).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=x)
    req = BuildRequest(model=p, name="m", version="1.0.0", targets=("x86-cpu-vnni",),
                       calibration=tmp_path / "cal.npz", max_accuracy_drop=0.01,
                       options={"perf_aware": False, "effort": "fast"})
    (art,) = build(req, lambda _m: None, tmp_path / "work").artifacts
    mp = art.details["mixed_precision"]
    assert "conv2" in mp["float"] and len(mp["float"]) >= 2, mp     # a free lift beside it
    assert mp["verified_drop"] <= 0.01
    assert art.details["quantised_nodes"] >= 1

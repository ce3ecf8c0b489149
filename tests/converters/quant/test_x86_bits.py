"""x86-cpu's exact bit split: the saturation checker, an integer reference, the split, a build.

No CPU without VNNI is at hand (this machine has VNNI), so exactness on one is shown the way it
is defined: an independent numpy model of ``vpmaddubsw`` (pairs of u8*s8 products saturated to
int16, then summed in int32) must give the exact integer result on every input for an artifact
the checker accepts, and a planted 8-bit/8-bit layer, which the checker rejects, must not.
ONNX Runtime on this VNNI machine computes the exact result, so its output is compared too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from converters.api import BuildRequest
from converters.build import build
from converters.ort_session import EXACT_U8S8, saturating_u8s8_here
from converters.x86_bits import check_artifact, choose, enforce
from converters.x86_exact import saturation_violations, u8s8_products
from converters.x86_split import (
    BitSplit,
    LayerBits,
    clamp_seven_bit,
    seven_bit_params,
    split_for,
    tie_chains,
)
from edgeops.errors import ConfigError, ConversionError
from tests.converters import zoo

K, N = 16, 4


def qdq_matmul(w_q: np.ndarray, *, x_scale: float, x_zp: int = 0, clip: int | None = None,
               w_scale: float = 0.01, w_type: int = T.INT8, x_type: int = T.UINT8
               ) -> onnx.ModelProto:
    """x -> QuantizeLinear -> [uint8 Clip] -> DequantizeLinear -> MatMul <- DQ <- w (QDQ)."""
    np_x = np.uint8 if x_type == T.UINT8 else np.int8
    np_w = np.int8 if w_type == T.INT8 else np.uint8
    inits = [nh.from_array(w_q.astype(np_w), "w_quantized"),
             nh.from_array(np.array(w_scale, np.float32), "w_scale"),
             nh.from_array(np.array(0, np_w), "w_zero_point"),
             nh.from_array(np.array(x_scale, np.float32), "x_scale"),
             nh.from_array(np.array(x_zp, np_x), "x_zero_point")]
    nodes = [h.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], ["xq"], name="q"),
             h.make_node("DequantizeLinear", ["w_quantized", "w_scale", "w_zero_point"],
                         ["wd"], name="dqw")]
    feed = "xq"
    if clip is not None:
        inits += [nh.from_array(np.array(0, np.uint8), "lo"),
                  nh.from_array(np.array(clip, np.uint8), "hi")]
        nodes.append(h.make_node("Clip", ["xq", "lo", "hi"], ["xc"], name="clip"))
        feed = "xc"
    nodes += [h.make_node("DequantizeLinear", [feed, "x_scale", "x_zero_point"], ["xd"],
                          name="dqx"),
              h.make_node("MatMul", ["xd", "wd"], ["y"], name="mm")]
    g = h.make_graph(nodes, "qdq", [h.make_tensor_value_info("x", T.FLOAT, [1, K])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, N])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def weights(peak: int) -> np.ndarray:
    """Weights reaching ``peak`` and ``-peak`` in every column (the worst pairs)."""
    w = np.random.default_rng(0).integers(-peak, peak + 1, (K, N))
    w[0:2, :] = peak
    w[2:4, :] = -peak
    return w.astype(np.int8)


# --- an independent integer reference of the non-VNNI kernel -------------------------------

def _activations(m: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, float, int]:
    """The raw u8 values the kernel is fed, read from the graph's Q (and Clip) by hand."""
    init = {i.name: nh.to_array(i) for i in m.graph.initializer}
    s, z = float(init["x_scale"]), int(init["x_zero_point"])
    a = np.clip(np.rint(x / s) + z, 0, 255)
    for clip in (n for n in m.graph.node if n.op_type == "Clip"):
        a = np.minimum(a, int(init[clip.input[2]]))
    return a.astype(np.int64).ravel(), s, z


def vpmaddubsw_dot(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_k a_k w_kn as AVX2 computes it: each adjacent pair saturated to int16 first."""
    pairs = a[0::2, None] * w[0::2].astype(np.int64) + a[1::2, None] * w[1::2].astype(np.int64)
    return np.clip(pairs, -32768, 32767).sum(axis=0)


def reference(m: onnx.ModelProto, x: np.ndarray, *, saturating: bool) -> np.ndarray:
    a, s, z = _activations(m, x)
    init = {i.name: nh.to_array(i) for i in m.graph.initializer}
    w = init["w_quantized"].astype(np.int64)
    acc = vpmaddubsw_dot(a, w) if saturating else a @ w
    return (s * float(init["w_scale"]) * (acc - z * w.sum(axis=0))).astype(np.float32)


def ort_run(m: onnx.ModelProto, x: np.ndarray, exact: bool = False) -> np.ndarray:
    so = ort.SessionOptions()
    if exact:                   # ORT's exact U8U8 kernels: what a VNNI CPU computes
        so.add_session_config_entry(EXACT_U8S8, "1")
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0]).ravel()


INPUTS = {"in range": np.random.default_rng(1).uniform(0, 1, (1, K)).astype(np.float32),
          "far beyond the calibrated range": np.full((1, K), 50.0, np.float32)}
SPLITS = {
    "7-bit weights, 8-bit activations": ({"w_q": weights(64), "x_scale": 1 / 255}, True),
    "8-bit weights, activations clamped to 127": ({"w_q": weights(127), "x_scale": 1 / 127,
                                                       "clip": 127}, True),
    "8-bit weights, 8-bit activations (planted)": ({"w_q": weights(127), "x_scale": 1 / 255},
                                                   False),
    "8-bit weights, a 7-bit scale but no clamp": ({"w_q": weights(127), "x_scale": 1 / 127},
                                                  False),
}


@pytest.mark.parametrize("what", list(SPLITS))
def test_checker_accepts_exactly_the_splits_the_integer_reference_computes_exactly(
        what: str) -> None:
    kwargs, exact = SPLITS[what]
    m = qdq_matmul(**kwargs)                                        # type: ignore[arg-type]
    verdicts = [np.array_equal(reference(m, x, saturating=True),
                               reference(m, x, saturating=False)) for x in INPUTS.values()]
    assert all(verdicts) is exact, verdicts           # the reference: saturation changes it
    assert (saturation_violations(m) == []) is exact  # the checker agrees, from the graph
    for x in INPUTS.values():     # ORT's exact kernels (a VNNI CPU's result) are the exact one
        np.testing.assert_allclose(ort_run(m, x, exact=True), reference(m, x, saturating=False),
                                   rtol=1e-5, atol=1e-5)
        if saturating_u8s8_here():  # an x86 CPU without VNNI: its default kernel saturates
            np.testing.assert_allclose(ort_run(m, x), reference(m, x, saturating=True),
                                       rtol=1e-5, atol=1e-5)


def test_checker_reads_bounds_and_skips_kernels_that_widen() -> None:
    (p,) = u8s8_products(qdq_matmul(weights(127), x_scale=1 / 127, clip=127))
    assert (p.node, p.activation_max, p.weight_max, p.weight_min) == ("mm", 127, 127, -127)
    assert "Clip 'clip'" in p.bound_by and p.exact
    (bad,) = saturation_violations(qdq_matmul(weights(127), x_scale=1 / 255))
    assert "'mm'" in bad.describe() and "beyond int16" in bad.describe()
    # u8u8 and s8s8 kernels accumulate in 32 bits: nothing to prove
    assert u8s8_products(qdq_matmul(weights(127).astype(np.uint8) // 2, x_scale=1 / 255,
                                    w_type=T.UINT8)) == []
    assert u8s8_products(qdq_matmul(weights(127), x_scale=1 / 127, x_type=T.INT8)) == []


def test_checker_covers_already_integer_layers() -> None:
    inits = [nh.from_array(weights(127).T.reshape(N, K, 1, 1).copy(), "w"),
             *[nh.from_array(np.array(v, dt), n) for n, v, dt in (
                 ("xs", 0.1, np.float32), ("xz", 0, np.uint8), ("ws", 0.1, np.float32),
                 ("wz", 0, np.int8), ("ys", 0.1, np.float32), ("yz", 0, np.uint8))]]
    node = h.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                       name="qconv")
    g = h.make_graph([node], "int", [h.make_tensor_value_info("x", T.UINT8, [1, K, 1, 1])],
                     [h.make_tensor_value_info("y", T.UINT8, None)], inits)
    (bad,) = saturation_violations(h.make_model(g))
    assert bad.node == "qconv" and bad.activation_max == 255


def test_check_artifact_refuses_in_one_line_naming_the_layer() -> None:
    with pytest.raises(ConversionError) as e:
        check_artifact(qdq_matmul(weights(127), x_scale=1 / 255), "target x86-cpu")
    assert "\n" not in str(e.value) and "'mm'" in str(e.value)
    assert "x86-cpu-vnni" in (e.value.hint or "")
    summary = check_artifact(qdq_matmul(weights(64), x_scale=1 / 255), "t")
    assert summary["proved_exact"] == summary["u8s8_layers"] == 1


# --- the split (pure) -------------------------------------------------------------------------

def layer(node: str, act: str, w_nsr: float, a_nsr: float, weight: str = "") -> LayerBits:
    return LayerBits(node, act, weight or f"w_{node}", 0, weight_nsr=w_nsr, activation_nsr=a_nsr)


RANGES = {"a": (0.0, 2.0), "b": (-1.0, 1.0), "c": (0.0, 1.0)}


def test_per_layer_gives_8_bit_weights_where_the_weights_limit_the_layer() -> None:
    layers = [layer("wl", "a", 1e-3, 1e-5), layer("al", "b", 1e-5, 1e-3)]
    s = split_for("per-layer", layers, {"a": 1, "b": 1}, RANGES)
    assert [lay.bits for lay in s.layers] == ["w8a7", "w7a8"]
    assert s.weight_bits("wl") == 8 and s.weight_bits("al") == 7
    assert s.seven_bit_activations() == {"a"}
    assert {lay.bits for lay in split_for("w7a8", layers, {}, RANGES).layers} == {"w7a8"}
    assert {lay.bits for lay in split_for("w8a7", layers, {}, RANGES).layers} == {"w8a7"}
    with pytest.raises(ValueError, match="unknown bit-split policy"):
        split_for("w8a8", layers, {}, RANGES)


def test_the_choice_is_per_input_tensor_and_counts_its_other_readers() -> None:
    # two layers read 'a': both follow the tensor; the summed cost decides
    pair = [layer("x", "a", 1e-3, 1e-5), layer("y", "a", 1e-5, 2e-5)]
    assert {lay.bits for lay in split_for("per-layer", pair, {"a": 2}, RANGES).layers} \
        == {"w8a7"}
    # the same layer whose input also feeds many element-wise ops: they would pay for it
    one = [layer("x", "a", 3e-5, 1e-5)]
    assert split_for("per-layer", one, {"a": 1}, RANGES).layers[0].bits == "w8a7"
    assert split_for("per-layer", one, {"a": 4}, RANGES).layers[0].bits == "w7a8"
    # no calibrated range for the input: no 7-bit scale can be made
    s = split_for("w8a7", [layer("z", "unknown", 1e-3, 0.0)], {}, RANGES)
    assert s.layers[0].bits == "w7a8" and "no calibrated range" in s.layers[0].reason


def test_overrides_give_8_bit_weights_per_channel_and_7_bit_scales() -> None:
    s = split_for("w8a7", [layer("x", "a", 1e-3, 1e-5), layer("y", "b", 1e-3, 1e-5)],
                  {}, RANGES)
    ov = s.overrides(RANGES, {"b": [{"rmin": -2.0, "rmax": 2.0}], "other": [{"rmin": 0.0}]})
    assert ov["w_x"] == [{"axis": 0, "reduce_range": False}]
    scale_a = ov["a"][0]
    assert float(scale_a["scale"]) == pytest.approx(2.0 / 127) and int(
        scale_a["zero_point"]) == 0 and scale_a["zero_point"].dtype == np.uint8
    # a shared (Concat) range given in base is the range the 7-bit scale covers
    assert float(ov["b"][0]["scale"]) == pytest.approx(4.0 / 127)
    assert int(ov["b"][0]["zero_point"]) == 64 and "rmin" not in ov["b"][0]
    assert ov["other"] == [{"rmin": 0.0}]
    assert seven_bit_params(0.0, 0.0) is None and seven_bit_params(np.nan, 1.0) is None


def test_a_weight_shared_with_a_7_bit_layer_stays_7_bit() -> None:
    s = BitSplit("per-layer", (
        LayerBits("x", "a", "w", 0, "w8a7"), LayerBits("y", "c", "w", 0, "w7a8"),
        LayerBits("z", "c", "wz", 0, "w8a8")))
    assert s.eight_bit_weights() == {"wz"} and s.eight_bit_nodes() == {"z"}
    assert s.weight_bits("x") == 7 and s.weight_bits("absent") == 7


def test_demote_puts_layers_back_on_7_bit_weights_and_records_it() -> None:
    s = split_for("w8a7", [layer("x", "a", 1e-3, 1e-5)], {}, RANGES).demote(["x"])
    assert s.layers[0].bits == "w7a8" and s.weight_bits("x") == 7
    assert s.to_dict()["demoted_by_checker"] == ["x"]


def test_tied_tensors_take_the_7_bit_scale_from_their_root() -> None:
    nodes = [h.make_node("Relu", ["x"], ["r"], name="relu"),
             h.make_node("MaxPool", ["r"], ["p"], kernel_shape=[1, 1], name="pool"),
             h.make_node("Flatten", ["p"], ["f"], name="flat")]
    g = h.make_graph(nodes, "t", [h.make_tensor_value_info("x", T.FLOAT, [1, 2, 1, 1])],
                     [h.make_tensor_value_info("f", T.FLOAT, None)])
    ties = tie_chains(h.make_model(g), ("MaxPool", "Flatten"))
    assert ties["f"] == ("r", "p", "f")
    s = split_for("w8a7", [layer("fc", "f", 1e-3, 1e-5)], {}, {"r": (0.0, 1.27)}, ties)
    params = s.activation_params({"r": (0.0, 1.27), "f": (0.0, 9.0)})
    assert set(params) == {"r", "p", "f"} and params["f"] == pytest.approx((0.01, 0))


def test_choose_keeps_the_least_drop_then_the_least_error_then_the_cheapest() -> None:
    base = [layer("x", "a", 1e-3, 1e-5)]
    splits = {p: split_for(p, base, {}, RANGES) for p in ("w7a8", "per-layer", "w8a7")}
    measured: list[str] = []

    def score(s: BitSplit) -> tuple[float, float]:
        measured.append(s.policy)
        return {"w7a8": (0.02, -30.0), "per-layer": (0.0, -20.0)}[s.policy]

    best, scores = choose(splits, score)
    assert best.policy == "per-layer" and measured == ["w7a8", "per-layer"]  # w8a7 == per-layer
    assert scores == {"w7a8": {"drop": 0.02, "output_error": -30.0},
                      "per-layer": {"drop": 0.0, "output_error": -20.0}}
    # the task metric ties (one sample of a few flips either way): the output error decides
    best, _ = choose(splits, lambda s: (0.08, -25.0 if s.policy == "per-layer" else -20.0))
    assert best.policy == "per-layer"
    best, _ = choose(splits, lambda s: (0.0, -20.0))
    assert best.policy == "w7a8"


# --- clamping and enforcing -------------------------------------------------------------------

def test_clamp_makes_a_7_bit_activation_exact_even_beyond_its_range() -> None:
    m = qdq_matmul(weights(127), x_scale=float(np.float32(1 / 127)))
    assert saturation_violations(m)
    m, done = clamp_seven_bit(m, {"x": (float(np.float32(1 / 127)), 0)})
    assert done == ["x"] and saturation_violations(m) == []
    onnx.checker.check_model(m)
    x = INPUTS["far beyond the calibrated range"]
    np.testing.assert_allclose(ort_run(m, x), reference(m, x, saturating=True), rtol=1e-5)
    # a Q that does not carry the 7-bit scale asked for is left alone
    other = qdq_matmul(weights(127), x_scale=1 / 255)
    assert clamp_seven_bit(other, {"x": (1 / 127, 0)})[1] == []


def _fake_quantiser(out: Path, honour_scale: bool) -> Any:
    """Writes the QDQ model a quantiser would for the overrides (8-bit weights if asked)."""
    def quantise(ov: dict[str, list[dict[str, Any]]]) -> None:
        eight = ov.get("w", [{}])[0].get("reduce_range") is False
        scale = float(ov["x"][0]["scale"]) if honour_scale and "x" in ov else 1 / 255
        onnx.save(qdq_matmul(weights(127 if eight else 64), x_scale=scale), str(out))
    return quantise


def test_enforce_clamps_and_proves_the_split(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    s = BitSplit("w8a7", (LayerBits("mm", "x", "w", 1, "w8a7"),))
    got, summary = enforce(out, s, {"x": (0.0, 1.0)}, {}, _fake_quantiser(out, True), "t")
    assert got.weight_bits("mm") == 8 and summary["clamped_7bit_activations"] == ["x"]
    assert summary["weights_8bit_activation_7bit"] == 1 and summary["violations"] == []
    assert any(n.op_type == "Clip" for n in onnx.load(str(out)).graph.node)


def test_enforce_demotes_a_layer_whose_input_could_not_be_made_7_bit(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    s = BitSplit("w8a7", (LayerBits("mm", "x", "w", 1, "w8a7"),))
    got, summary = enforce(out, s, {"x": (0.0, 1.0)}, {}, _fake_quantiser(out, False), "t")
    assert got.demoted == ("mm",) and got.weight_bits("mm") == 7
    assert saturation_violations(onnx.load(str(out))) == [] and summary["weights_7bit"] == 1


def test_enforce_refuses_an_artifact_it_cannot_prove(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"

    def planted(_ov: dict[str, Any]) -> None:
        onnx.save(qdq_matmul(weights(127), x_scale=1 / 255), str(out))

    with pytest.raises(ConversionError, match="target x86-cpu: .* could saturate"):
        enforce(out, BitSplit("w7a8"), {}, {}, planted, "target x86-cpu")


# --- inside a build ---------------------------------------------------------------------------

def _build(model: Path, work: Path, target: str = "x86-cpu", **options: object):  # type: ignore[no-untyped-def]
    req = BuildRequest(model=model, name="m", version="1.0.0", targets=(target,),
                       precision="int8", max_accuracy_drop=0.5,
                       options={"perf_aware": False, **options})
    work.mkdir(parents=True, exist_ok=True)
    (art,) = build(req, lambda _m: None, work).artifacts
    return art


def _max_weight(model: onnx.ModelProto, node: str) -> int:
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: nh.to_array(i) for i in model.graph.initializer}
    (conv,) = [n for n in model.graph.node if n.name == node]
    return int(np.abs(inits[producers[conv.input[1]].input[0]].astype(np.int32)).max())


def test_a_forced_8_bit_weight_build_is_recorded_clamped_and_proved(tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    art = _build(p, tmp_path / "a", bit_split="w8a7")
    split = art.details["plan"]["bit_split"]
    assert split["policy"] == "w8a7" and list(split["score_by_policy"]) == ["w8a7"]
    assert art.details["plan"]["target_isa"] == "x86_64"       # the guard: exact everywhere
    model = onnx.load(str(art.path))
    eight = [n for n, v in split["layers"].items() if v["weight_bits"] == 8]
    assert eight and all(_max_weight(model, n) > 64 for n in eight)
    assert split["exactness"]["violations"] == [] and split["exactness"][
        "weights_8bit_activation_7bit"] == len(eight)
    # every 7-bit input is clamped (and the tensors ORT ties it to, e.g. a Flatten's input)
    assert set(split["seven_bit_activations"]) <= set(
        split["exactness"]["clamped_7bit_activations"])
    assert saturation_violations(model) == []
    # what the device runs: ORT keeps the clamps (uint8 Clip) between fused integer convs
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(art.path), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node]
    assert ops.count("Clip") == len(split["exactness"]["clamped_7bit_activations"])
    assert ops.count("QLinearConv") == 2, ops


def test_the_default_build_chooses_on_the_task_metric_and_records_why(tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    art = _build(p, tmp_path / "a", effort="fast")
    split = art.details["plan"]["bit_split"]
    scores = {k: (v["drop"], v["output_error"]) for k, v in split["score_by_policy"].items()}
    assert split["policy"] in scores and scores[split["policy"]] == min(scores.values())
    assert all({"bits", "weight_bits", "weight_nsr", "activation_nsr"} <= set(v)
               for v in split["layers"].values())
    assert all(_max_weight(onnx.load(str(art.path)), n) <= 64
               for n, v in split["layers"].items() if v["weight_bits"] == 7)
    vnni = _build(p, tmp_path / "v", target="x86-cpu-vnni", effort="fast")
    assert "bit_split" not in vnni.details["plan"]


def test_an_unknown_bit_split_is_one_line(tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="unknown bit split 'w8a8'") as e:
        _build(p, tmp_path / "a", bit_split="w8a8", effort="fast")
    assert "per-layer" in (e.value.hint or "")


def test_a_dynamic_x86_build_is_proved_exact_too(tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    req = BuildRequest(model=p, name="m", version="1.0.0", targets=("x86-cpu",),
                       precision="int8-dynamic", max_accuracy_drop=0.5,
                       options={"perf_aware": False})
    (art,) = build(req, lambda _m: None, tmp_path / "w").artifacts
    exact = art.details["plan"]["exactness"]
    assert exact["u8s8_layers"] >= 1 and exact["proved_exact"] == exact["u8s8_layers"]


# --- depthwise convolutions: MLAS never pairs their products ---------------------------------

def qdq_grouped_conv(channels: int, group: int, peak: int = 127) -> onnx.ModelProto:
    """x (u8, unbounded) -> Conv(group) with 8-bit weights, in QDQ form."""
    per = channels // group
    w = np.random.default_rng(2).integers(-peak, peak + 1, (channels, per, 3, 3))
    w[:, :, 0, 0] = peak
    inits = [nh.from_array(w.astype(np.int8), "w_quantized"),
             nh.from_array(np.array(0.01, np.float32), "w_scale"),
             nh.from_array(np.array(0, np.int8), "w_zero_point"),
             nh.from_array(np.array(1 / 255, np.float32), "x_scale"),
             nh.from_array(np.array(0, np.uint8), "x_zero_point")]
    nodes = [h.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero_point"], ["xd"]),
             h.make_node("DequantizeLinear", ["w_quantized", "w_scale", "w_zero_point"], ["wd"]),
             h.make_node("Conv", ["xd", "wd"], ["y"], group=group, name="conv")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, channels, 3, 3])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)])


def test_a_depthwise_conv_is_exact_with_8_bit_weights_and_8_bit_activations() -> None:
    (dw,) = u8s8_products(qdq_grouped_conv(16, 16))
    assert dw.products_per_int16 == 1 and dw.exact and dw.weight_max == 127
    # what its kernels compute: each u8*s8 product alone in int16 (never two added)
    a, w = np.full(9, 255, np.int64), np.full(9, -128, np.int64)
    assert np.array_equal(np.clip(a * w, -32768, 32767), a * w)
    # two input channels per group is no depthwise conv: pairs form, the checker refuses it
    (grouped,) = saturation_violations(qdq_grouped_conv(16, 8))
    assert grouped.products_per_int16 == 2 and grouped.node == "conv"


def test_depthwise_layers_take_8_bit_weights_in_every_policy_but_the_old_default() -> None:
    layers = [LayerBits("dw", "a", "w_dw", 0, depthwise=True, weight_nsr=1e-3,
                        activation_nsr=1e-5), layer("pw", "b", 1e-5, 1e-3)]
    for policy in ("depthwise", "per-layer", "w8a7"):
        s = split_for(policy, layers, {"a": 1, "b": 1}, RANGES)
        assert s.layers[0].bits == "w8a8" and s.weight_bits("dw") == 8, policy
        assert "a" not in s.seven_bit_activations(), policy      # its input stays 8-bit
    assert split_for("depthwise", layers, {}, RANGES).layers[1].bits == "w7a8"
    assert split_for("w7a8", layers, {}, RANGES).weight_bits("dw") == 7


def test_a_depthwise_build_gets_8_bit_depthwise_weights_without_clamps(tmp_path: Path) -> None:
    from tests.converters.quant.tiny import conv_chain

    p = tmp_path / "m.onnx"
    m = conv_chain()
    m.graph.output[0].CopyFrom(h.make_tensor_value_info("y", T.FLOAT, [1, 4, 12, 12]))
    onnx.save(m, str(p))
    art = _build(p, tmp_path / "a", bit_split="depthwise", effort="fast")
    split = art.details["plan"]["bit_split"]
    assert split["layers"]["dw"]["bits"] == "w8a8" and split["seven_bit_activations"] == []
    assert _max_weight(onnx.load(str(art.path)), "dw") > 64
    assert split["exactness"]["weights_8bit_depthwise"] == 1
    assert split["exactness"]["clamped_7bit_activations"] == []


@pytest.mark.parametrize(("options", "quantised"), [
    ({"bit_split": "w8a7"}, 1),              # the one candidate scored is the artifact
    ({"bit_split": "w8a7", "perf_aware": True}, None),    # perf trials: re-made as before
])
def test_the_split_scored_last_is_not_quantised_again(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      options: dict[str, object],
                                                      quantised: int | None) -> None:
    from converters import onnx_accept, onnx_quant
    from converters import validate as validate_mod

    assert onnx_accept.run_onnx is validate_mod.run_onnx   # bound before the patch: uncounted

    calls = {"quantise": 0, "validate": 0}
    real_quantise, real_run = onnx_quant._quantise_static, validate_mod.run_onnx

    def counting_quantise(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["quantise"] += 1
        return real_quantise(*args, **kwargs)

    def counting_run(model, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["validate"] += Path(model).name == "model.onnx"     # the INT8 candidate
        return real_run(model, *args, **kwargs)

    monkeypatch.setattr(onnx_quant, "_quantise_static", counting_quantise)
    monkeypatch.setattr(validate_mod, "run_onnx", counting_run)
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    art = _build(p, tmp_path / "a", effort="fast", **options)
    assert art.details["plan"]["bit_split"]["policy"] == "w8a7"
    if quantised is not None:
        assert calls["quantise"] == quantised, calls
        # the split's score is the gate's: one validation run of the INT8 model before accept
        # (accept runs it once more, on the target's providers, outside this count)
        assert calls["validate"] == 1, calls
    else:
        assert calls["quantise"] >= 2, calls

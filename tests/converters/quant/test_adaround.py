"""AdaRound: lower layer error than round-to-nearest, on ORT's own grid, bounded, fails soft."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper as nh

from converters.quant import graph_passes, passes_for
from converters.quant._gram import layers
from converters.quant.adaround import AdaRound, AdaRoundSettings
from converters.quant.bias_correction import fake_quant_weight
from tests.converters.quant import tiny


def _inits(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: nh.to_array(i) for i in m.graph.initializer}


def _axis(node: str, m: onnx.ModelProto) -> int:
    return next(la.axis for la in layers(m)[0] if la.node == node)


def test_h_predicts_the_output_error_ort_measures_for_every_layer_shape() -> None:
    """tr(dW H dW^T) x columns == ||conv(x, dW)||^2 in ORT: the im2col is ORT's convolution."""
    from converters.quant._gram import accumulate
    from converters.quant._stats import stream_tensors
    from converters.quant.adaround import reconstruction_error

    m = tiny.rounding_net()
    data = tiny.smooth_samples(m)
    found = layers(m)[0]
    hs, seen = accumulate(m, found, data.iter_samples(), max_positions=10**6, seed=0)
    assert seen == 8 and len(found) == 6
    w = _inits(m)
    rng = np.random.default_rng(5)
    for la in found:
        dw = rng.standard_normal(la.shape).astype(np.float32) * 0.01
        measured = tiny.layer_error(m, la.node, la.weight, w[la.weight] + dw, data)
        out = next(n.output[0] for n in m.graph.node if n.name == la.node)
        sizes: list[int] = []
        stream_tensors(m, [out], data.iter_samples(),
                       lambda a, o=out, into=sizes: into.append(a[o].size))
        columns = sum(sizes) // la.outputs
        predicted = reconstruction_error(la.matrix(dw).astype(np.float64), hs[la.node]) * columns
        assert predicted == pytest.approx(measured, rel=2e-3), la.node


@pytest.mark.parametrize("reduce_range", [False, True])
def test_rounding_lowers_each_layers_reconstruction_error_measured_in_ort(
        reduce_range: bool) -> None:
    m = tiny.rounding_net()
    data = tiny.smooth_samples(m)
    pass_ = AdaRound(AdaRoundSettings(reduce_range=reduce_range))
    new, outcome = pass_.run(m, data)
    assert outcome.status == "applied"
    rounded = {d.layer.node: d for d in pass_.done}
    # every layer kind is re-rounded (the MatMul head on 8 rows may tie with nearest)
    assert {"conv_strided", "conv_depthwise", "conv_grouped", "conv_1d", "dense"} <= set(rounded)
    after = _inits(new)
    for node, d in rounded.items():
        w = d.original
        nearest = fake_quant_weight(w, reduce_range, _axis(node, m))
        e_rtn = tiny.layer_error(m, node, d.layer.weight, nearest, data)
        e_ada = tiny.layer_error(m, node, d.layer.weight, after[d.layer.weight], data)
        # the convolutions and the Gemm see hundreds of correlated columns: a clear gain
        assert e_ada < (1.0 if node == "head" else 0.9) * e_rtn, (node, e_ada, e_rtn)
        rec = outcome.data["layers"][node]
        assert rec["rel_error_adaround"] < rec["rel_error_nearest"]


def _ort_int8_weights(model: onnx.ModelProto, data: object, reduce_range: bool,
                      tmp: Path) -> dict[str, np.ndarray]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src, out = tmp / f"src{int(reduce_range)}.onnx", tmp / f"q{int(reduce_range)}.onnx"
    onnx.save(model, str(src))
    feeds = iter(list(data.iter_samples()))  # type: ignore[attr-defined]

    class Reader:
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    q = onnx.load(str(out))
    return {i.name: nh.to_array(i) for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT8}


@pytest.mark.parametrize("reduce_range", [False, True])
def test_onnx_runtimes_quantiser_reproduces_the_chosen_integers(reduce_range: bool,
                                                                tmp_path: Path) -> None:
    m = tiny.rounding_net()
    data = tiny.smooth_samples(m)
    pass_ = AdaRound(AdaRoundSettings(reduce_range=reduce_range))
    new, _ = pass_.run(m, data)
    ints = _ort_int8_weights(new, data, reduce_range, tmp_path)
    differs = 0
    for d in pass_.done:
        got = ints[f"{d.layer.weight}_quantized"]
        assert np.array_equal(d.layer.matrix(got.astype(np.int32)), d.q.astype(np.int32)), \
            d.layer.node
        nearest = np.round(d.layer.matrix(d.original) / (np.abs(d.layer.matrix(d.original))
                                                          .max(1, keepdims=True)
                                                          / (64 if reduce_range else 127)))
        differs += int(np.sum(nearest != d.q))
    assert differs > 0          # AdaRound chose integers round-to-nearest would not


def test_the_pass_is_deterministic(tmp_path: Path) -> None:
    m = tiny.rounding_net()
    a, _ = AdaRound().run(m, tiny.smooth_samples(m))
    b, _ = AdaRound().run(m, tiny.smooth_samples(m))
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != m.SerializeToString()


def test_memory_and_time_caps_keep_round_to_nearest_with_the_reason() -> None:
    m = tiny.rounding_net()
    w = _inits(m)
    # conv_strided's H is 27x27 float64 (5.7 KiB); conv_grouped's two 36x36 (20 KiB)
    pass_ = AdaRound(AdaRoundSettings(max_h_mb=10 / 1024))
    new, outcome = pass_.run(m, tiny.smooth_samples(m))
    assert "max_h_mb" in outcome.data["kept_nearest"]["conv_grouped"]
    assert "conv_grouped" not in outcome.data["layers"]
    assert np.array_equal(_inits(new)["w3"], w["w3"])
    assert "conv_strided" in outcome.data["layers"]
    _, outcome = AdaRound(AdaRoundSettings(max_total_h_mb=8 / 1024)).run(
        m, tiny.smooth_samples(m))
    assert "max_total_h_mb" in outcome.data["kept_nearest"]["conv_grouped"]
    _, outcome = AdaRound(AdaRoundSettings(pass_seconds=1e-6)).run(m, tiny.smooth_samples(m))
    assert outcome.status == "skipped" and not outcome.data["layers"]
    assert all("pass budget" in v for v in outcome.data["kept_nearest"].values())


def test_a_graph_with_nothing_to_round_is_skipped_with_the_reason(tmp_path: Path) -> None:
    from onnx import TensorProto as T
    from onnx import helper as h

    g = h.make_graph([h.make_node("Relu", ["x"], ["y"], name="r")], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 4])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    state = graph_passes(src, tiny.samples(m), effort="max", reduce_range=False,
                         workdir=tmp_path)
    by = {o.name: o for o in state.outcomes}
    assert by["adaround"].status == "skipped"
    assert "no Conv/Gemm/MatMul" in by["adaround"].detail


def test_a_floated_layer_gets_its_original_weights_and_bias_back(tmp_path: Path) -> None:
    m = tiny.rounding_net()
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    state = graph_passes(src, tiny.smooth_samples(m), effort="max", reduce_range=False,
                         workdir=tmp_path, override="adaround,bias_correction")
    orig = _inits(m)
    passed = _inits(onnx.load(str(state.model)))
    assert not np.array_equal(passed["w1"], orig["w1"])
    assert not np.array_equal(passed["b1"], orig["b1"])
    back = _inits(onnx.load(str(state.source_for({"conv_strided"}, tmp_path))))
    assert np.array_equal(back["w1"], orig["w1"]) and np.array_equal(back["b1"], orig["b1"])
    assert np.array_equal(back["w2"], passed["w2"])       # the others stay rounded
    assert state.source_for(set(), tmp_path) == state.model
    ref = _inits(onnx.load(str(state.fp32_model(tmp_path))))   # the ranking's reference
    assert all(np.array_equal(ref[d.layer.weight], orig[d.layer.weight])
               for d in state.adaround.done)                        # type: ignore[union-attr]
    assert np.array_equal(ref["b1"], passed["b1"])                   # corrected bias stays


def test_bias_correction_after_adaround_measures_the_shift_from_the_original_weights(
        tmp_path: Path) -> None:
    m = tiny.rounding_net()
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    state = graph_passes(src, tiny.smooth_samples(m), effort="max", reduce_range=True,
                         workdir=tmp_path, override="adaround,bias_correction")
    by = {o.name: o for o in state.outcomes}
    assert by["adaround"].status == "applied" and by["bias_correction"].status == "applied"
    alone = graph_passes(src, tiny.smooth_samples(m), effort="max", reduce_range=True,
                         workdir=tmp_path / "alone", override="bias_correction")
    shift = by["bias_correction"].data["median_abs_shift"]
    # the rounded weights are on the grid: measured against themselves the shift would be
    # ~0; against the FP32 weights it is of the order of plain rounding's
    assert shift > 0.1 * alone.outcomes[0].data["median_abs_shift"]
    assert state.bias is not None and state.adaround is not None
    assert "w1" in state.bias.reference


def test_a_failing_adaround_is_recorded_and_the_build_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    m = tiny.rounding_net()
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))

    def broken(self: object, model: object, samples: object) -> None:
        raise MemoryError("no room for H")

    monkeypatch.setattr(AdaRound, "run", broken)
    with caplog.at_level(logging.WARNING):
        state = graph_passes(src, tiny.smooth_samples(m), effort="max", reduce_range=False,
                             workdir=tmp_path)
    by = {o.name: o for o in state.outcomes}
    assert by["adaround"].status == "failed" and "no room for H" in by["adaround"].detail
    assert by["bias_correction"].status == "applied"
    assert state.adaround is None
    assert "adaround failed" in caplog.text


def test_adaround_runs_at_effort_max_only_between_smoothquant_and_bias_correction() -> None:
    assert "adaround" not in passes_for("default")
    order = passes_for("max")
    assert order.index("smoothquant") < order.index("adaround") < order.index("bias_correction")
    assert passes_for("fast", "bias_correction,adaround") == ("adaround", "bias_correction")


def test_settings_are_typed_and_described() -> None:
    from converters.quant import describe_settings

    d = describe_settings(AdaRoundSettings())
    assert d["max_h_mb"]["type"] == "float" and d["iterations"]["value"] == 500
    assert all(v["description"] for v in d.values())


def test_effort_max_build_records_adaround_and_is_byte_identical(tmp_path: Path) -> None:
    from converters.api import BuildRequest
    from converters.build import build
    from tests.converters import zoo

    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")

    def one(work: Path):  # type: ignore[no-untyped-def]
        req = BuildRequest(model=p, name="m", version="1.0.0", targets=("x86-cpu",),
                           precision="int8", max_accuracy_drop=0.5,
                           options={"perf_aware": False, "effort": "max"})
        work.mkdir()
        (art,) = build(req, lambda _m: None, work).artifacts
        return art

    a, b = one(tmp_path / "a"), one(tmp_path / "b")
    assert a.path.read_bytes() == b.path.read_bytes()
    rep = a.details["quantisation_passes"]
    assert rep["effort"] == "max" and "adaround" in rep["passes"]
    assert rep["adaround"]["status"] == "applied" and rep["adaround"]["grid"] == "7-bit"
    assert all(v["rel_error_adaround"] <= v["rel_error_nearest"]
               for v in rep["adaround"]["layers"].values())


def test_low_rank_factor_keeps_the_asked_share_of_h_and_only_when_it_pays() -> None:
    from converters.quant.adaround import low_rank

    rng = np.random.default_rng(2)
    x = rng.standard_normal((100, 40)) @ rng.standard_normal((40, 128))   # rank 40 of 128
    h = (x.T @ x / 100)[None]
    f = low_rank(h, 0.9999)
    assert f is not None and f.shape[:2] == (1, 128) and f.shape[2] <= 40
    approx = f[0] @ f[0].T
    assert np.trace(approx) >= 0.9999 * np.trace(h[0]) - 1e-9
    assert np.abs(approx - h[0]).max() < 0.02 * np.abs(h[0]).max()
    full = rng.standard_normal((500, 128))
    assert low_rank((full.T @ full / 500)[None], 0.9999) is None       # full rank: no gain
    assert low_rank(h[:, :32, :32], 0.5) is None                       # small K: no gain


def test_integers_that_orts_rounding_would_not_reproduce_are_refused() -> None:
    from converters.quant.adaround import grid, on_grid

    w = np.array([[0.5, -0.11, 0.27], [0.02, 0.03, -0.04]], np.float32)
    g = grid(w, reduce_range=False)
    q = np.round(w / g.scale[:, None])
    np.testing.assert_array_equal(np.round(on_grid(w, q, g) / g.scale[:, None]), q)
    bad = q.copy()
    bad[0, 0] -= 1            # the channel's max-|w| weight must keep ORT's scale: refused
    with pytest.raises(ArithmeticError, match="do not reproduce"):
        on_grid(w, bad, g)


def test_without_adaround_the_build_gets_nearest_weights_with_their_own_bias_correction(
        tmp_path: Path) -> None:
    m = tiny.rounding_net()
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    data = tiny.smooth_samples(m)
    state = graph_passes(src, data, effort="max", reduce_range=False, workdir=tmp_path,
                         override="adaround,bias_correction")
    plain = graph_passes(src, data, effort="default", reduce_range=False,
                         workdir=tmp_path / "plain", override="bias_correction")
    state.adaround_enabled = False
    got = _inits(onnx.load(str(state.source_for(set(), tmp_path))))
    want = _inits(onnx.load(str(plain.model)))          # bias correction alone, no AdaRound
    orig = _inits(m)
    for k in ("w1", "w2", "w3", "w4", "w5"):
        assert np.array_equal(got[k], orig[k]), k
    for k in ("b1", "b2", "b5"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)
        assert not np.allclose(got[k], orig[k]), k
    state.bias_enabled = False                           # neither: the FP32 parameters
    got = _inits(onnx.load(str(state.source_for(set(), tmp_path))))
    assert all(np.array_equal(got[k], v) for k, v in orig.items())


def test_adaround_is_kept_only_where_it_scores_better_on_the_task_metric(tmp_path: Path) -> None:
    from converters.quant import EngineState, PassOutcome
    from converters.quant.adaround import Rounded

    def state() -> EngineState:
        st = EngineState("max", ("adaround",), tmp_path / "m.onnx")
        st.outcomes.append(PassOutcome("adaround", "applied", "re-rounded"))
        st.adaround = AdaRound()
        la = layers(tiny.rounding_net())[0][0]
        st.adaround.done.append(Rounded(la, np.zeros(la.shape, np.float32),
                                        np.zeros((la.shape[0], la.k), np.int8)))
        return st

    st = state()
    assert st.choose(lambda p: 0.01 if st.adaround_enabled else 0.02) is None
    by = {o.name: o for o in st.outcomes}
    assert st.adaround_enabled and by["adaround"].data["used"]
    assert by["adaround"].data["gate_drop_by_choice"] == {"minmax": 0.02,
                                                          "minmax + adaround": 0.01}
    st = state()
    st.choose(lambda p: 0.01)                       # a tie: the simpler build wins
    assert not st.adaround_enabled
    assert "not used" in {o.name: o for o in st.outcomes}["adaround"].detail


def test_a_tie_goes_to_the_candidate_without_adaround_whatever_its_ranges(
        tmp_path: Path) -> None:
    """``max`` keeps the default effort's choice unless AdaRound is strictly better: was,
    MinMax + AdaRound won a tie against MSE ranges without it (ranges were the outer loop)."""
    from converters.quant import EngineState, PassOutcome
    from converters.quant.adaround import Rounded

    st = EngineState("max", ("adaround", "mse_ranges"), tmp_path / "m.onnx")
    st.outcomes.append(PassOutcome("adaround", "applied", "re-rounded"))
    st.adaround = AdaRound()
    la = layers(tiny.rounding_net())[0][0]
    st.adaround.done.append(Rounded(la, np.zeros(la.shape, np.float32),
                                    np.zeros((la.shape[0], la.k), np.int8)))
    st.range_candidates = {"minmax": tmp_path / "minmax.json",
                           "mse_ranges": tmp_path / "mse_ranges.json"}
    best = {("minmax.json", True), ("mse_ranges.json", False)}

    def drop(p: Path | None) -> float:
        assert p is not None
        return 0.01 if (p.name, st.adaround_enabled) in best else 0.02

    assert st.choose(drop) == tmp_path / "mse_ranges.json"
    assert not st.adaround_enabled


def test_im2col_columns_per_layer_and_sample_stay_under_the_memory_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import converters.quant._gram as gram

    m = tiny.rounding_net()
    sizes: list[int] = []
    real = gram.patches

    def spy(*a: object) -> np.ndarray:
        p = real(*a)  # type: ignore[arg-type]
        sizes.append(p.nbytes)
        return p

    monkeypatch.setattr(gram, "patches", spy)
    cap = 2048                                   # bytes: 512 float32 values
    hs, _ = gram.accumulate(m, layers(m)[0], tiny.smooth_samples(m).iter_samples(),
                            max_positions=10**6, seed=0, max_patch_bytes=cap)
    assert sizes and max(sizes) <= cap
    assert all(np.isfinite(h).all() and (np.trace(h, axis1=1, axis2=2) > 0).all()
               for h in hs.values())
    sizes.clear()
    gram.accumulate(m, layers(m)[0], tiny.smooth_samples(m).iter_samples(),
                    max_positions=10**6, seed=0)
    assert max(sizes) > cap                      # without the cap the conv columns are larger


def test_layers_the_bit_split_gives_8_bit_weights_get_adarounds_choice_on_that_grid(
        tmp_path: Path) -> None:
    """x86 without VNNI: AdaRound rounds on the 7-bit grid before the bit split; a layer
    that ends up with 8-bit weights must carry integers AdaRound chose on the 8-bit grid, not
    round-to-nearest of its 7-bit choice (or of its FP32 weight)."""
    m = tiny.rounding_net()
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    data = tiny.smooth_samples(m)
    state = graph_passes(src, data, effort="max", reduce_range=True, workdir=tmp_path,
                         override="adaround")
    assert state.adaround is not None and state.adaround.done
    eight = frozenset(d.layer.node for d in state.adaround.done)
    state.round_eight_bit(eight, data)
    assert set(state.eight_bit_report) == eight
    kept = {n for n, r in state.eight_bit_report.items() if r["kept"] == "adaround"}
    assert kept and kept == set(state.eight_bit)
    model = onnx.load(str(state.source_for(set(), tmp_path, eight)))
    ints = _ort_int8_weights(model, data, False, tmp_path)          # the 8-bit grid
    differs = 0
    for node in kept:
        r = state.eight_bit[node]
        got = r.layer.matrix(ints[f"{r.layer.weight}_quantized"].astype(np.int32))
        assert np.array_equal(got, r.q.astype(np.int32)), node
        w = r.layer.matrix(r.original)
        nearest = np.round(w / (np.abs(w).max(1, keepdims=True) / 127))
        differs += int(np.sum(nearest != r.q))
        rec = state.eight_bit_report[node]
        assert rec["rel_error_adaround"] < rec["rel_error_nearest"]
    assert differs > 0          # AdaRound's 8-bit integers, not round-to-nearest's
    # the layers' own biases and the 7-bit rounding of the others are untouched
    assert "adaround_8bit_grid" in state.report()
    seven = _inits(onnx.load(str(state.source_for(set(), tmp_path))))
    first = next(iter(kept))
    r = state.eight_bit[first]
    assert not np.array_equal(seven[r.layer.weight], _inits(model)[r.layer.weight])
    # a layer kept float gets its FP32 weight, 8-bit or not
    back = _inits(onnx.load(str(state.source_for({first}, tmp_path, eight))))
    assert np.array_equal(back[r.layer.weight], r.original)


def test_an_x86_build_rounds_its_8_bit_weight_layers_again_on_their_grid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from converters.api import BuildRequest
    from converters.build import build
    from converters.quant.engine import EngineState
    from tests.converters import zoo

    # On this tiny net AdaRound loses on the metric and is dropped before the split; keep it
    # (the real choice runs first) so the 8-bit step after the split has layers to round.
    real = EngineState.choose

    def keep_adaround(self: EngineState, gate_drop: Any) -> Path | None:
        chosen = real(self, gate_drop)
        self.adaround_enabled = True
        return chosen

    monkeypatch.setattr(EngineState, "choose", keep_adaround)
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    # every layer 8-bit weights, 7-bit inputs: each rounded layer is rounded again
    req = BuildRequest(model=p, name="m", version="1.0.0", targets=("x86-cpu",),
                       precision="int8", max_accuracy_drop=0.5,
                       options={"perf_aware": False, "effort": "max", "bit_split": "w8a7"})
    (art,) = build(req, lambda _m: None, tmp_path / "w").artifacts
    rep = art.details["quantisation_passes"]
    split = art.details["plan"]["bit_split"]["layers"]
    eight = {n for n, v in split.items() if v["weight_bits"] == 8}
    rounded = {n for n, v in rep["adaround"]["layers"].items() if v["kept"] == "adaround"}
    assert eight & rounded
    grid8 = rep["adaround_8bit_grid"]
    again = grid8["layers"]
    assert set(again) == eight & rounded
    assert all(v["rel_error_adaround"] <= v["rel_error_nearest"] for v in again.values()
               if v["kept"] == "adaround")
    # kept only when the build scores at least as well with it on the task metric
    assert grid8["used"] == (grid8["gate_drop_with"] <= grid8["gate_drop_without"])


def _blas_threads() -> set[int]:
    import threadpoolctl

    return {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}


def test_numpys_blas_runs_on_the_settings_threads_inside_the_pass_and_is_restored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: AdaRound's matrix products ran on one OpenBLAS thread per core."""
    import threadpoolctl

    import converters.quant.adaround as adaround

    seen: list[set[int]] = []
    real = adaround.optimise_rounding

    def spy(*a: Any, **k: Any) -> Any:
        seen.append(_blas_threads())
        return real(*a, **k)

    monkeypatch.setattr(adaround, "optimise_rounding", spy)
    m = tiny.rounding_net()
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        outside = _blas_threads()
        assert outside                                   # numpy's BLAS is visible
        _, outcome = AdaRound().run(m, tiny.smooth_samples(m))
        assert outcome.status == "applied"
        assert _blas_threads() == outside                # put back as it was
    assert seen and all(s == {1} for s in seen)
    with pytest.raises(ValueError, match="blas_threads must be at least 1"):
        AdaRoundSettings(blas_threads=0)

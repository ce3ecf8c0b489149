"""Each quantisation pass on tiny graphs: what it promises, measured (converters/quant)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper as nh

from converters.quant import describe_settings, graph_passes, passes_for
from converters.quant.bias_correction import BiasCorrection, fake_quant_weight
from converters.quant.equalise import CrossLayerEqualisation, equalisable_pairs
from converters.quant.mse_ranges import MseRanges, MseRangesSettings, mse_clip, quantisation_mse
from converters.quant.smoothquant import SmoothQuant, SmoothQuantSettings
from tests.converters.quant import tiny


def _inits(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: nh.to_array(i) for i in m.graph.initializer}


# -- range setting ------------------------------------------------------------------------------

def test_mse_clipping_beats_minmax_on_a_heavy_tailed_tensor() -> None:
    x = np.random.default_rng(0).standard_t(df=3, size=200_000).astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    s = MseRangesSettings()
    hist = np.bincount(np.clip(((x - lo) * (s.bins / (hi - lo))).astype(int), 0, s.bins - 1),
                       minlength=s.bins)
    a, b, _, _ = mse_clip(hist, lo, hi, s)
    assert lo < a < 0 < b < hi
    assert quantisation_mse(x, a, b) < 0.8 * quantisation_mse(x, lo, hi)


def test_mse_keeps_a_relu_range_starting_at_zero() -> None:
    x = np.maximum(np.random.default_rng(1).standard_t(df=3, size=50_000), 0).astype(np.float32)
    s = MseRangesSettings()
    hi = float(x.max())
    hist = np.bincount(np.clip((x * (s.bins / hi)).astype(int), 0, s.bins - 1), minlength=s.bins)
    a, b, _, _ = mse_clip(hist, 0.0, hi, s)
    assert a == 0.0 and 0 < b < hi


def test_mse_pass_streams_histograms_and_clips_ranges() -> None:
    m = tiny.conv_chain()
    data = tiny.samples(m, 4)
    ranges = {"c1": (-50.0, 60.0), "a1": (0.0, 60.0), "c2": (-80.0, 90.0), "a2": (0.0, 90.0)}
    # real ranges from the data, as calibration finds them
    from converters.quant._stats import stream_tensors

    seen: dict[str, tuple[float, float]] = {}

    def add(arrays: dict[str, np.ndarray]) -> None:
        for k, v in arrays.items():
            lo, hi = seen.get(k, (0.0, 0.0))
            seen[k] = (min(lo, float(v.min())), max(hi, float(v.max())))

    stream_tensors(m, sorted(ranges), data.iter_samples(), add)
    new, outcome = MseRanges().run(m, seen, data)
    assert outcome.status == "applied" and outcome.data["clipped"] >= 1
    for t in seen:
        assert seen[t][0] <= new[t][0] <= 0 <= new[t][1] <= seen[t][1]
    assert new["a1"][0] == 0.0


# -- cross-layer equalisation ------------------------------------------------------------------

@pytest.mark.parametrize("act", ["Relu", "LeakyRelu"])
def test_equalisation_preserves_fp32_outputs(act: str) -> None:
    m = tiny.conv_chain(act)
    data = tiny.samples(m)
    cle = CrossLayerEqualisation()
    assert cle.applies(m) is None
    eq, outcome = cle.run(m)
    assert outcome.data["pairs"] == 2
    ref, got = tiny.run(m, data), tiny.run(eq, data)
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    # the ranges of paired channels now match: Conv1's out-channel c == Conv2's in-channel c
    w1, w2 = _inits(eq)["w1"], _inits(eq)["w2"]
    r1 = np.abs(w1).reshape(len(w1), -1).max(1)
    r2 = np.abs(w2).reshape(len(w2), -1).max(1)
    assert np.allclose(r1, r2, rtol=1e-4)
    assert outcome.data["mean_relative_channel_range"]["after"] > \
        outcome.data["mean_relative_channel_range"]["before"]


def test_equalisation_dense_pair_without_activation_is_exact() -> None:
    m = tiny.conv_chain("Relu", depthwise=False)
    # drop the Relu: conv1 -> project directly
    g = m.graph
    relu = next(n for n in g.node if n.op_type == "Relu")
    g.node.remove(relu)
    next(n for n in g.node if n.name == "project").input[0] = "c1"
    data = tiny.samples(m)
    eq, outcome = CrossLayerEqualisation().run(m)
    assert outcome.data["pairs"] == 1
    assert np.abs(tiny.run(eq, data) - tiny.run(m, data)).max() <= 1e-4


@pytest.mark.parametrize("act", ["HardSwish", "Clip"])
def test_equalisation_skips_activations_that_are_not_positive_homogeneous(act: str) -> None:
    m = tiny.conv_chain("Relu" if act == "Clip" else act)
    if act == "Clip":      # ReLU6 as exported: Clip(0, 6)
        for n in m.graph.node:
            if n.op_type == "Relu":
                n.op_type = "Clip"
                n.input.extend([f"{n.name}_lo", f"{n.name}_hi"])
                m.graph.initializer.extend([nh.from_array(np.array(0, np.float32),
                                                          f"{n.name}_lo"),
                                            nh.from_array(np.array(6, np.float32),
                                                          f"{n.name}_hi")])
    pairs, skipped = equalisable_pairs(m)
    assert pairs == []
    assert skipped == {f"through {act} (not positive-homogeneous)": 2}
    why = CrossLayerEqualisation().applies(m)
    assert why is not None and act in why


# -- bias correction ---------------------------------------------------------------------------

def _mean_shift(model: onnx.ModelProto, quantised: onnx.ModelProto,
                data: tiny.SampleSet) -> float:
    """Mean over output channels of |E[quantised] - E[float]| on ``data``."""
    ref, got = tiny.run(model, data), tiny.run(quantised, data)
    return float(np.abs((got - ref).mean(axis=(0, 2, 3))).mean())


def _weights_rounded(model: onnx.ModelProto, reduce_range: bool) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        if init.name.startswith("w"):
            init.CopyFrom(nh.from_array(fake_quant_weight(nh.to_array(init), reduce_range)
                                        .astype(np.float32), init.name))
    return m


def test_bias_correction_reduces_the_measured_output_mean_shift() -> None:
    m = tiny.conv_chain()
    cal, held_out = tiny.samples(m, 16, seed=1), tiny.samples(m, 16, seed=2)
    bc = BiasCorrection()
    bc.settings = type(bc.settings)(samples=16, reduce_range=True)   # 7-bit: a visible shift
    corrected, outcome = bc.run(m, cal)
    assert outcome.status == "applied" and outcome.data["layers"] == 3
    before = _mean_shift(m, _weights_rounded(m, True), held_out)
    after = _mean_shift(m, _weights_rounded(corrected, True), held_out)
    assert after < 0.5 * before


def test_bias_correction_restores_biases_of_layers_kept_float(tmp_path: Path) -> None:
    m = tiny.conv_chain()
    bc = BiasCorrection()
    corrected, _ = bc.run(m, tiny.samples(m))
    src = tmp_path / "c.onnx"
    onnx.save(corrected, str(src))
    assert bc.restore(src, set(), tmp_path / "r.onnx") == src
    back = onnx.load(str(bc.restore(src, {"dw"}, tmp_path / "r.onnx")))
    assert np.array_equal(_inits(back)["b2"], _inits(m)["b2"])
    assert not np.array_equal(_inits(back)["b1"], _inits(m)["b1"])


# -- SmoothQuant --------------------------------------------------------------------------------

@pytest.mark.parametrize("layernorm", [True, False])
def test_smoothquant_is_exact_and_flattens_outlier_channels(layernorm: bool) -> None:
    m = tiny.matmul_outliers(layernorm)
    data = tiny.samples(m)
    sq = SmoothQuant(SmoothQuantSettings(insert_mul=not layernorm))
    assert sq.applies(m) is None
    out, outcome = sq.run(m, data)
    assert outcome.status == "applied" and outcome.data["smoothed"] == ["t"]
    ref, got = tiny.run(m, data), tiny.run(out, data)
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    fed = "t" if layernorm else "t__sq_smoothed"
    from converters.quant._stats import stream_tensors

    amax: list[np.ndarray] = []
    stream_tensors(out, [fed], data.iter_samples(),
                   lambda a: amax.append(np.abs(a[fed]).reshape(-1, a[fed].shape[-1]).max(0)))
    per_channel = np.max(amax, axis=0)
    assert per_channel.max() / np.median(per_channel) < 8
    if layernorm:
        assert not sq.float_nodes and outcome.detail.count("1 folded") == 1
    else:
        assert list(sq.float_nodes) == ["t__sq_mul"]


def test_smoothquant_by_default_only_folds_into_a_layernorm() -> None:
    m = tiny.matmul_outliers(False)
    out, outcome = SmoothQuant().run(m, tiny.samples(m))
    assert outcome.status == "skipped"
    assert outcome.data["outliers_without_foldable_producer"] == 1
    assert out.SerializeToString() == m.SerializeToString()


def test_smoothquant_leaves_inputs_without_outliers_alone() -> None:
    m = tiny.matmul_outliers(True)
    for i in m.graph.initializer:
        if i.name == "gamma":
            i.CopyFrom(nh.from_array(np.ones(16, np.float32), "gamma"))
    out, outcome = SmoothQuant().run(m, tiny.samples(m))
    assert outcome.status == "skipped" and "outlier channels" in outcome.detail
    assert out.SerializeToString() == m.SerializeToString()


# -- engine: order, effort, failures ----------------------------------------------------------

def test_effort_levels_and_unknown_names() -> None:
    assert passes_for("fast") == ()
    assert "mse_ranges" in passes_for("default")
    assert passes_for("fast", "mse_ranges,cross_layer_equalisation") == (
        "cross_layer_equalisation", "mse_ranges")
    with pytest.raises(ValueError, match="unknown effort 'turbo'"):
        passes_for("turbo")
    with pytest.raises(ValueError, match="unknown quantisation pass"):
        passes_for("default", "brecq")


def test_settings_are_typed_and_described() -> None:
    d = describe_settings(MseRangesSettings())
    assert d["bins"] == {"type": "int", "value": 2048, "description": d["bins"]["description"]}
    assert all(v["description"] for v in d.values())


def test_a_pass_that_cannot_apply_is_skipped_with_its_reason(tmp_path: Path) -> None:
    m = tiny.matmul_outliers(True)          # no Conv pair
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    state = graph_passes(src, tiny.samples(m), effort="default", reduce_range=False,
                         workdir=tmp_path)
    by = {o.name: o for o in state.outcomes}
    assert by["cross_layer_equalisation"].status == "skipped"
    assert "no Conv" in by["cross_layer_equalisation"].detail
    assert by["smoothquant"].status == "applied"


def test_a_failing_pass_falls_back_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    m = tiny.conv_chain()
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))

    def broken(self: object, model: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(CrossLayerEqualisation, "run", broken)
    with caplog.at_level(logging.WARNING):
        state = graph_passes(src, tiny.samples(m), effort="default", reduce_range=False,
                             workdir=tmp_path)
    by = {o.name: o for o in state.outcomes}
    assert by["cross_layer_equalisation"].status == "failed"
    assert "RuntimeError: boom" in by["cross_layer_equalisation"].detail
    assert by["bias_correction"].status == "applied"      # the pipeline went on
    assert "cross_layer_equalisation failed" in caplog.text


def test_ranges_and_bias_correction_are_chosen_on_the_task_metric(tmp_path: Path) -> None:
    from converters.quant import EngineState, PassOutcome

    a, b = tmp_path / "a.json", tmp_path / "b.json"

    def state() -> EngineState:
        st = EngineState("default", ("bias_correction", "mse_ranges"), tmp_path / "m.onnx")
        st.outcomes += [PassOutcome("bias_correction", "applied", "corrected"),
                        PassOutcome("mse_ranges", "applied", "clipped")]
        st.bias = BiasCorrection()
        st.range_candidates = {"minmax": a, "mse_ranges": b}
        return st

    st = state()
    # MSE ranges with bias correction is best
    assert st.choose(lambda p: 0.01 if p == b and st.bias_enabled else 0.03) == b
    assert st.bias_enabled
    by = {o.name: o for o in st.outcomes}
    assert by["mse_ranges"].data["used"] and by["bias_correction"].data["used"]
    assert by["mse_ranges"].data["gate_drop_by_choice"] == {
        "minmax": 0.03, "minmax + bias correction": 0.03, "mse_ranges": 0.03,
        "mse_ranges + bias correction": 0.01}
    st = state()                       # ties: the simplest (MinMax, no correction) wins
    assert st.choose(lambda p: 0.0) == a and not st.bias_enabled
    assert "not used" in {o.name: o for o in st.outcomes}["bias_correction"].detail
    st = state()
    st.range_candidates = {}           # no MSE candidate: bias correction alone is chosen
    seen: list[Path | None] = []
    assert st.choose(lambda p: seen.append(p) or (0.0 if st.bias_enabled else 0.1)) is None
    assert seen == [None, None] and st.bias_enabled


def test_layers_sharing_a_merged_bias_get_their_own_copy() -> None:
    from converters.quant._graph import privatise_params

    m = tiny.conv_chain()
    for n in m.graph.node:                 # what ORT's optimiser does to equal zero biases
        if n.name == "dw":
            n.input[2] = "b1"
    m.graph.initializer.remove(next(i for i in m.graph.initializer if i.name == "b2"))
    assert privatise_params(m) == 1
    biases = [n.input[2] for n in m.graph.node if n.op_type == "Conv"]
    assert len(set(biases)) == 3

"""Shared validation helpers: golden files, output stacking, metrics, gate, shapes, samples."""

from __future__ import annotations

from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converters.data import InputSpec
from converters.validate import (
    accuracy_report,
    check_gate,
    classifier_outputs,
    concrete_shape,
    gate_drop,
    latency_ms,
    model_inputs,
    synthetic_samples,
    write_golden,
)
from edgeops.errors import AccuracyGateError, UsageError
from edgeops.golden import sample_output, stack_outputs
from tests.converters import zoo

_arrays = hnp.arrays(dtype=st.sampled_from([np.float32, np.int64, np.uint8, np.bool_]),
                     shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(inputs=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), _arrays,
                              min_size=1, max_size=3),
       outputs=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), _arrays,
                               min_size=1, max_size=3))
def test_golden_round_trip_and_deterministic(tmp_path_factory: pytest.TempPathFactory,
                                            inputs: dict[str, np.ndarray],
                                            outputs: dict[str, np.ndarray]) -> None:
    d = tmp_path_factory.mktemp("golden")
    write_golden(d / "a.npz", inputs, outputs)
    write_golden(d / "b.npz", inputs, outputs)
    assert (d / "a.npz").read_bytes() == (d / "b.npz").read_bytes()
    with np.load(d / "a.npz") as z:
        assert set(z.files) == {f"input/{k}" for k in inputs} | {f"output/{k}" for k in outputs}
        for k, v in inputs.items():
            np.testing.assert_array_equal(z[f"input/{k}"], v)
            assert z[f"input/{k}"].dtype == v.dtype
        for k, v in outputs.items():
            np.testing.assert_array_equal(z[f"output/{k}"], v)
    assert not list(d.glob(".*tmp"))


@settings(max_examples=40, deadline=None)
@given(st.lists(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3), min_size=1, max_size=1),
       st.integers(1, 4), st.booleans())
def test_stack_then_sample_output_round_trip(shapes: list[tuple[int, ...]], n: int,
                                             batch_axis: bool) -> None:
    shape = ((1, *shapes[0]) if batch_axis else shapes[0])
    rng = np.random.default_rng(0)
    runs = [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]
    stacked = stack_outputs(runs)
    assert stacked.shape[0] == n or (batch_axis and stacked.shape[0] == n)
    for i, r in enumerate(runs):
        np.testing.assert_array_equal(sample_output(r, stacked, i), stacked[i])


def test_accuracy_report_and_gate_on_classifier_outputs() -> None:
    ref = {"logits": np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.1, 3.0],
                               [1.0, 0.0, 0.0]])}
    same = accuracy_report(ref, ref, labels=np.array([0, 1, 2, 1]))
    assert same["summary"]["top1_agreement"] == 1.0
    assert same["summary"]["top1_accuracy"] == same["summary"]["top1_accuracy_reference"] == 0.75
    assert same["summary"]["snr_db_min"] is None            # infinite SNR is not JSON
    flipped = {"logits": ref["logits"].copy()}
    flipped["logits"][3] = [0.0, 5.0, 0.0]                   # one of four top-1s changes
    rep = accuracy_report(ref, flipped)
    assert gate_drop(rep) == ("top1_agreement", 0.25)
    check_gate(rep, 0.25, "x86-cpu")
    with pytest.raises(AccuracyGateError, match=r"target x86-cpu: top1_agreement dropped 25"):
        check_gate(rep, 0.01, "x86-cpu")


def test_gate_refuses_a_task_metric_that_could_not_be_computed() -> None:
    """Was: a task value of None (not finite) read as "dropped 100%"."""
    from converters.tasks import TaskSpec

    ref = {"y": np.ones((4, 3))}
    nan_metric = TaskSpec("regression", inferred=False, why="", outputs=("y",),
                          user_metric=lambda _r, got: float(np.nanmax(got["y"])) if np.isfinite(
                              got["y"]).all() else float("nan"), user_metric_name="mine:peak")
    ok = accuracy_report(ref, ref, task=nan_metric)
    assert gate_drop(ok) == ("mine:peak", 0.0)
    got = {"y": np.where(np.eye(4, 3) > 0, np.nan, 1.0)}
    with pytest.raises(AccuracyGateError) as err:
        gate_drop(accuracy_report(ref, got, task=nan_metric))
    assert err.value.message == (
        "mine:peak cannot be computed (task regression, requested): the artifact's score on the "
        "validation data is not a finite number (NaN or infinite; FP32 scores 1)")
    assert "--metric function must return a finite number" in err.value.hint
    always_nan = TaskSpec("regression", inferred=True, why="", outputs=("y",),
                          user_metric=lambda _r, _g: float("inf"), user_metric_name="mine:inf")
    with pytest.raises(AccuracyGateError, match=r"^mine:inf cannot be computed \(task "
                       r"regression, inferred\): the FP32 model's own score"):
        gate_drop(accuracy_report(ref, ref, task=always_nan))
    assert gate_drop(accuracy_report(ref, got, task=nan_metric), "cosine")[0] == "cosine"


def test_the_uncomputable_metric_refusal_names_the_target() -> None:
    """Was: "mine:peak cannot be computed ..." with no word of which target's artifact."""
    from converters.tasks import TaskSpec
    from converters.validate import check_gate

    ref = {"y": np.ones((4, 3))}
    nan_metric = TaskSpec("regression", inferred=False, why="", outputs=("y",),
                          user_metric=lambda _r, got: 1.0 if np.array_equal(_r["y"], got["y"])
                          else float("nan"), user_metric_name="mine:exact")
    rep = accuracy_report(ref, {"y": np.zeros((4, 3))}, task=nan_metric)
    with pytest.raises(AccuracyGateError, match=r"^target edgetpu: mine:exact cannot be "
                       r"computed \(task regression, requested\): the artifact's score"):
        gate_drop(rep, target="edgetpu")
    with pytest.raises(AccuracyGateError, match=r"^target ethos-u: mine:exact cannot be "):
        check_gate(rep, 0.5, "ethos-u")


def test_gate_reads_labels_then_cosine() -> None:
    ref = {"y": np.ones((4, 2, 3))}
    noisy = {"y": ref["y"] + np.array([0.0, 0.0, 1.0])}
    metric, drop = gate_drop(accuracy_report(ref, noisy))
    assert metric == "cosine" and 0.05 < drop < 0.2
    with pytest.raises(AccuracyGateError, match="cosine"):
        check_gate(accuracy_report(ref, noisy), 0.01, "qnn-npu")
    nan = {"y": np.full((4, 2, 3), np.nan)}
    with pytest.raises(AccuracyGateError):
        check_gate(accuracy_report(ref, nan), 0.5, "qnn-npu")


def test_latency_ms_counts_runs() -> None:
    calls = []
    lat = latency_ms(lambda: calls.append(1), warmup=2, runs=5)
    assert len(calls) == 7
    assert lat["runs"] == 5 and 0 <= lat["p50"] <= lat["p95"]


def test_model_inputs_shapes_and_overrides() -> None:
    m = zoo.convnet(13, dynamic_hw=True)
    (spec,) = model_inputs(m)
    assert spec.shape == (None, 3, None, None) and spec.dtype == np.float32
    with pytest.raises(UsageError, match="dynamic dim 2"):
        concrete_shape(spec)
    (fixed,) = model_inputs(m, {"x": (1, 3, 32, 24)})
    assert concrete_shape(fixed) == (1, 3, 32, 24)
    with pytest.raises(UsageError, match="rank"):
        model_inputs(m, {"x": (1, 3, 32)})
    with pytest.raises(UsageError, match="contradicts"):
        model_inputs(m, {"x": (1, 4, 32, 32)})


def test_synthetic_samples_seeded_and_typed() -> None:
    specs = [InputSpec("img", np.dtype(np.float32), (None, 3, 4, 4)),
             InputSpec("ids", np.dtype(np.int64), (None, 5)),
             InputSpec("mask", np.dtype(np.bool_), (1, 5))]
    a, b, c = (synthetic_samples(specs, 6, seed=s) for s in (0, 0, 1))
    assert len(a) == 6 and a.arrays["img"].shape == (6, 3, 4, 4)
    assert a.arrays["ids"].dtype == np.int64 and a.arrays["mask"].dtype == np.bool_
    np.testing.assert_array_equal(a.arrays["img"], b.arrays["img"])
    assert not np.array_equal(a.arrays["img"], c.arrays["img"])


def test_golden_write_is_atomic_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "golden.npz"
    write_golden(target, {"x": np.zeros(2)}, {"y": np.ones(2)})
    before = target.read_bytes()
    with pytest.raises(ValueError):
        write_golden(target, {"x": np.array([object()], dtype=object)}, {})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden.npz"]


def test_classifier_outputs_heuristic_and_forced_metric() -> None:
    from onnx import TensorProto as T
    from onnx import helper as h

    assert zoo.convnet(13).graph.output[0].name == "logits"
    assert classifier_outputs(zoo.convnet(13)) == ["logits"]
    g = h.make_graph([h.make_node("Relu", ["x"], ["forecast"]),
                      h.make_node("Softmax", ["x"], ["out2"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 8])],
                     [h.make_tensor_value_info("forecast", T.FLOAT, ["N", 8]),
                      h.make_tensor_value_info("out2", T.FLOAT, ["N", 8])])
    assert classifier_outputs(h.make_model(g)) == ["out2"]
    ref = {"forecast": np.array([[1.0, 2.0], [2.0, 1.0]])}
    got = {"forecast": np.array([[2.0, 1.9], [2.0, 1.0]])}   # top-1 flips on sample 0
    assert gate_drop(accuracy_report(ref, got))[0] == "top1_agreement"
    rep = accuracy_report(ref, got, classifier_outputs=[])
    assert "top1_agreement" not in rep["summary"]
    assert gate_drop(rep)[0] == "cosine"
    assert gate_drop(accuracy_report(ref, got), "cosine")[0] == "cosine"

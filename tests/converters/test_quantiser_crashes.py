"""ONNX Runtime's quantiser crashing on a graph: avoided where the cause is known, else the next
cheaper configuration with a warning, else one line (converters/onnx_bias,
converters/onnx_qdq_fallback).

The known cause (ORT 1.32): a Gemm bias that is not a vector (``[1, N]`` after ORT's own MatMul
+ Add fusion) crashes the per-channel int32-bias check. :func:`zoo.dense_biases` is the tiny
graph that reaches the same code path as the zoo's file-type classifier (tests/realzoo.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from converters.api import BuildRequest
from converters.build import build
from converters.failures import BuildFailure
from converters.onnx_bias import vector_gemm_biases
from converters.onnx_qdq_fallback import (
    LADDER,
    QdqConfig,
    QuantiserFallback,
    runs_as_written,
)
from edgeops.errors import ConversionError
from tests.converters import zoo

_X = np.random.default_rng(3).standard_normal((8, 16)).astype(np.float32)


def _run(model: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


class _Reader:
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _quantise(src: Path, out: Path, cfg: QdqConfig, feed: str = "x") -> Path:
    """ORT's quantize_static as the x86 plan calls it (u8 activations, symmetric s8 weights
    per channel), with ``cfg``'s changes."""
    quantize_static(str(src), str(out), _Reader([{feed: _X[i:i + 1]} for i in range(4)]),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True if cfg.per_channel is None else cfg.per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"WeightSymmetric": True, **cfg.extra_options})
    return out


def _fused(tmp_path: Path, bias_shape: tuple[int, ...], batch: int | str = 1) -> Path:
    return zoo.save(zoo.dense_biases(bias_shape, batch, fused=True), tmp_path / "dense.onnx")


def test_ort_per_channel_quantiser_crashes_on_a_row_bias(tmp_path: Path) -> None:
    """Why the bias pass exists; if a future ORT fixes it, the pass stays exact (below)."""
    try:
        _quantise(_fused(tmp_path, (1, 12)), tmp_path / "q.onnx", LADDER[0])
    except ValueError as exc:
        assert "truth value of an array" in str(exc)
        return
    pytest.skip("this onnxruntime quantises a [1, N] Gemm bias per channel")


@pytest.mark.parametrize(("bias_shape", "batch", "done"), [
    ((1, 12), 1, "as its [12] vector"), ((1,), 1, "as its [12] vector"),
    ((), 1, "as its [12] vector"), ((1, 1), 1, "as its [12] vector"),
    ((3, 12), 3, "moved into an Add"), ((3, 1), 3, "moved into an Add")])
def test_gemm_biases_become_vectors_exactly(tmp_path: Path, bias_shape: tuple[int, ...],
                                            batch: int, done: str) -> None:
    src = zoo.dense_biases(bias_shape, batch, fused=True)
    out, rewritten = vector_gemm_biases(src)
    assert done in rewritten["dense1"] and "as its [5] vector" in rewritten["dense2"]
    onnx.checker.check_model(out)
    inits = {i.name: list(i.dims) for i in out.graph.initializer}
    gemms = [n for n in out.graph.node if n.op_type == "Gemm"]
    assert all(len(n.input) < 3 or len(inits[n.input[2]]) == 1 for n in gemms)
    x = _X[:batch]
    got, ref = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                .run(None, {"x": x})[0] for m in (out, src))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    # ... and ORT's per-channel quantiser now takes it as planned
    p = zoo.save(out, tmp_path / "vector.onnx")
    quantize_static(str(p), str(tmp_path / "q.onnx"),
                    _Reader([{"x": x} for _ in range(2)]), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8,
                    extra_options={"WeightSymmetric": True})


def test_vector_biases_leave_vectors_and_shared_biases_alone() -> None:
    src = zoo.dense_biases((12,), fused=True)
    src.graph.initializer[3].CopyFrom(onnx.numpy_helper.from_array(
        onnx.numpy_helper.to_array(src.graph.initializer[3]).reshape(5), "b2"))
    out, rewritten = vector_gemm_biases(src)
    assert rewritten == {} and out == src
    # a [1, N] bias shared with another node is copied, not reshaped under that node
    shared = zoo.dense_biases((1, 12), 1, fused=True)
    shared.graph.node.append(onnx.helper.make_node("Identity", ["b1"], ["b1_copy"], name="i"))
    shared.graph.output.append(onnx.helper.make_tensor_value_info("b1_copy", 1, [1, 12]))
    out, rewritten = vector_gemm_biases(shared)
    dims = {i.name: list(i.dims) for i in out.graph.initializer}
    assert dims["b1"] == [1, 12] and dims["dense1_bias_vector"] == [12]


def _int8(tmp_path: Path, model: onnx.ModelProto) -> Any:
    progress: list[str] = []
    req = BuildRequest(model=zoo.save(model, tmp_path / "m.onnx"), name="m", version="1.0.0",
                       targets=("x86-cpu",), precision="int8", max_accuracy_drop=0.5,
                       options={"perf_aware": False})
    (tmp_path / "work").mkdir()
    (art,) = build(req, progress.append, tmp_path / "work").artifacts
    return art, progress


def test_int8_build_of_a_dense_bias_row_quantises_it(tmp_path: Path) -> None:
    """Was: "'x86-cpu: calibrating ...' failed in ..._adjust_weight_scale_for_int32_bias"."""
    art, progress = _int8(tmp_path, zoo.dense_biases((1, 12)))
    fused = [n for n in onnx.load(str(art.path)).graph.node if n.op_type == "Gemm"]
    assert len(fused) == 2 and art.details["quantised_nodes"] >= 2
    assert set(art.details["gemm_bias_as_vector"]) == {n.name for n in fused}
    assert "warnings" not in art.details and "quantiser_configuration" not in art.details
    assert art.metrics["accuracy"]["summary"]["cosine_min"] > 0.99, art.metrics["accuracy"]
    # the step a quantize_static failure is reported under says so
    after = progress[next(i for i, m in enumerate(progress) if ": calibrating" in m) + 1:]
    assert any(m.startswith("x86-cpu: quantising (QDQ, uint8 activations, int8 weights per "
                            "channel)") for m in after), progress


def _check(model: Path) -> None:
    runs_as_written(model, {"x": _X[:1]})


def test_fallback_takes_the_next_cheaper_configuration_and_stays_there(tmp_path: Path) -> None:
    """A [1] bias crashes both per-channel configurations (IndexError, then a reshape)."""
    src = _fused(tmp_path, (1,))
    said: list[str] = []
    fb = QuantiserFallback("x86-cpu", src, said.append)
    out = fb.run(lambda cfg: _quantise(src, tmp_path / "q.onnx", cfg), _check)
    assert fb.config == LADDER[2] and len(fb.warnings) == 2 and said == fb.warnings
    assert fb.warnings[0].startswith(
        "x86-cpu: quantising without the int32-bias weight-scale adjustment (ONNX Runtime's "
        "quantiser failed as planned in qdq_quantizer.py:_adjust_weight_scale_for_int32_bias "
        "at node 'dense1': index 1 is out of bounds"), fb.warnings
    assert fb.warnings[1].startswith("x86-cpu: quantising with per-tensor weights (ONNX "
                                     "Runtime's quantiser failed without the int32-bias")
    axes = [a for n in onnx.load(str(out)).graph.node if n.op_type == "DequantizeLinear"
            for a in n.attribute if a.name == "axis"]
    assert axes == []                                                   # per tensor
    np.testing.assert_allclose(_run(out, _X[:1]), _run(src, _X[:1]), atol=0.1)
    tried: list[QdqConfig] = []
    fb.run(lambda cfg: tried.append(cfg) or _quantise(src, tmp_path / "q2.onnx", cfg),
           _check)
    assert tried == [LADDER[2]] and len(fb.warnings) == 2        # sticky: no second crash


def test_a_configuration_whose_model_cannot_run_is_passed_over(tmp_path: Path) -> None:
    """Without the weight-scale adjustment, a [1, N] bias gets a per-axis DequantizeLinear
    that ORT fuses away (optimised, it runs) but cannot run as written: the check catches it."""
    src = _fused(tmp_path, (1, 12))
    q = _quantise(src, tmp_path / "q1.onnx", LADDER[1])
    _run(q, _X[:1])                                          # optimised: runs
    with pytest.raises(Exception, match="scale must be 1D tensor with size 1"):
        _check(q)
    fb = QuantiserFallback("x86-cpu", src, lambda _m: None)
    out = fb.run(lambda cfg: _quantise(src, tmp_path / "q.onnx", cfg), _check)
    assert fb.config == LADDER[2] and "DequantizeLinear" in fb.warnings[1], fb.warnings
    np.testing.assert_allclose(_run(out, _X[:1]), _run(src, _X[:1]), atol=0.1)


def test_fallback_when_every_configuration_fails_is_one_line(tmp_path: Path) -> None:
    src = _fused(tmp_path, (12,))
    fb = QuantiserFallback("x86-cpu", src, lambda _m: None)
    with pytest.raises(BuildFailure) as err:      # calibration data for an input it lacks
        fb.run(lambda cfg: _quantise(src, tmp_path / "q.onnx", cfg, feed="y"))
    msg = err.value.message
    assert msg.startswith("dense.onnx: 'x86-cpu: quantising' (as planned, without the int32-"
                          "bias weight-scale adjustment, with per-tensor weights: all failed)")
    assert "\n" not in err.value.diagnostics() and err.value.__cause__ is not None
    assert len(fb.warnings) == 2


def test_fallback_does_not_retry_our_own_errors(tmp_path: Path) -> None:
    fb = QuantiserFallback("x86-cpu", tmp_path / "m.onnx", lambda _m: None)
    tried: list[QdqConfig] = []

    def refuse(cfg: QdqConfig) -> None:
        tried.append(cfg)
        raise ConversionError("calibration failed: bad data")

    with pytest.raises(ConversionError):
        fb.run(refuse)
    assert tried == [LADDER[0]] and fb.warnings == []

"""Sensitivity ranking: the tensor that crushes small channels comes first, whatever the plan.

Regression: ranked on whole-tensor relative error, ``outlier_mlp``'s culprit (``m1``, one channel
300x the rest, quantised per tensor) scored about as low as harmless tensors, and which came
first depended on the plan (``reduce_range`` without VNNI put ``m2`` first), so on an AVX2
machine the accuracy-aware search floated the wrong nodes and refused a buildable model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.onnx_sensitivity import _worst_slice_error, rank_sensitive_nodes
from tests.converters import zoo


def test_worst_slice_sees_a_crushed_channel_the_whole_tensor_hides() -> None:
    f = np.ones((1, 4, 16), np.float32)
    f[..., 3] = 300.0
    q = f.copy()
    q[..., [0, 1, 2, 4, 5]] = 0.0               # crushed: a quantisation step above them
    whole = float(((q - f) ** 2).sum() / (f**2).sum())
    assert whole < 1e-3
    assert _worst_slice_error([f], [q]) == pytest.approx(1.0)


def test_all_zero_channels_and_exact_tensors_add_nothing() -> None:
    f = np.ones((1, 2, 8), np.float32)
    f[..., 5] = 0.0                              # a dead channel: no energy to lose
    assert _worst_slice_error([f], [f.copy()]) == 0.0
    q = f.copy()
    q[..., 5] = 1e-3                             # noise where FP32 is zero is not a channel loss
    assert _worst_slice_error([f], [q]) < 1e-6


def test_samples_of_different_shapes_fall_back_to_the_whole_tensor() -> None:
    a, b = np.ones((1, 3, 4)), np.ones((1, 5, 4))
    qa, qb = a * 1.1, b.copy()
    got = _worst_slice_error([a, b], [qa, qb])
    assert got == pytest.approx(float(((qa - a) ** 2).sum()) / float((a**2).sum() + (b**2).sum()))


@pytest.mark.parametrize("reduce_range", [False, True], ids=["vnni-plan", "avx2-plan"])
def test_outlier_culprit_ranks_first_on_either_x86_plan(tmp_path: Path,
                                                        reduce_range: bool) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from converters.data import SampleSet

    model = zoo.outlier_mlp()
    src = zoo.save(model, tmp_path / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((32, 4, 16)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": x[i:i + 1]} for i in range(len(x))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    qdq = tmp_path / "qdq.onnx"
    quantize_static(str(src), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    ranked = rank_sensitive_nodes(model, qdq, SampleSet({"x": x[:8]}, {"x": 0}),
                                  ["mm0", "mm1", "mm2", "mm3"])
    assert ranked[0][:2] == ("m1", ("mm1", "mm2"))
    assert ranked[0][2] > 0.5 > 10 * max(e for _, _, e in ranked[1:])

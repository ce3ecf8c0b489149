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

from converters.onnx_sensitivity import _SliceError, rank_sensitive_nodes
from tests.converters import zoo


def _worst_slice_error(fp32: list[np.ndarray], quantised: list[np.ndarray]) -> float:
    """The streamed accumulator fed sample by sample, as the ranking feeds it."""
    acc = _SliceError()
    for f, q in zip(fp32, quantised, strict=True):
        acc.add(f, q)
    return acc.value()



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


def _qdq(src: Path, x: np.ndarray, out: Path, reduce_range: bool = False) -> Path:
    """ORT's QDQ u8s8 per-channel quantisation of ``src``, calibrated on the samples of ``x``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter([{"x": x[i:i + 1]} for i in range(len(x))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    return out


@pytest.mark.parametrize("reduce_range", [False, True], ids=["vnni-plan", "avx2-plan"])
def test_outlier_culprit_ranks_first_on_either_x86_plan(tmp_path: Path,
                                                        reduce_range: bool) -> None:
    from converters.data import SampleSet

    model = zoo.outlier_mlp()
    src = zoo.save(model, tmp_path / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((32, 4, 16)).astype(np.float32)

    qdq = _qdq(src, x, tmp_path / "qdq.onnx", reduce_range=reduce_range)
    ranked = rank_sensitive_nodes(model, qdq, SampleSet({"x": x[:8]}, {"x": 0}),
                                  ["mm0", "mm1", "mm2", "mm3"])
    assert ranked[0][:2] == ("m1", ("mm1", "mm2"))
    assert ranked[0][2] > 0.5 > 10 * max(e for _, _, e in ranked[1:])


_PEAK_CHILD = """
import sys
from pathlib import Path
import numpy as np
import onnx
from converters.data import SampleSet
from converters.onnx_sensitivity import rank_sensitive_nodes
n, src, qdq = int(sys.argv[1]), sys.argv[2], sys.argv[3]
x = np.random.default_rng(1).standard_normal((n, 8, 256, 256)).astype(np.float32)
ranked = rank_sensitive_nodes(onnx.load(src), Path(qdq), SampleSet({"x": x}, {"x": 0}),
                              ["c0", "r0", "c1"])
assert ranked
del x
status = Path("/proc/self/status").read_text()
print(int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM:"))))
"""


def test_ranking_memory_does_not_grow_with_the_sample_count(tmp_path: Path) -> None:
    """Activations are reduced sample by sample: peak memory is one sample's, not all of them.

    Holding every exposed activation of every sample for both models took a 640x640 detector's
    build to about 15 GB with 8 samples. Here each sample exposes about 20 MB of activations:
    held whole, 32 samples would peak about 600 MB above 4; streamed, the peaks differ by the
    inputs alone (56 MB).
    """
    import subprocess
    import sys

    from onnx import TensorProto, helper
    rng = np.random.default_rng(1)
    w = [helper.make_tensor(f"w{i}", TensorProto.FLOAT, [8, 8, 1, 1],
                            rng.standard_normal(64).astype(np.float32).tolist()) for i in (0, 1)]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w0"], ["h"], name="c0"),
         helper.make_node("Relu", ["h"], ["r"], name="r0"),
         helper.make_node("Conv", ["r", "w1"], ["y"], name="c1")],
        "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 256, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 256, 256])], w)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    src = zoo.save(model, tmp_path / "big.onnx")
    x = rng.standard_normal((4, 8, 256, 256)).astype(np.float32)

    qdq = _qdq(src, x, tmp_path / "qdq.onnx")

    def peak_kib(n: int) -> int:
        out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(n), str(src), str(qdq)],
                             capture_output=True, text=True, timeout=120, check=True)
        return int(out.stdout.split()[-1])

    grew = (peak_kib(32) - peak_kib(4)) / 1024
    assert grew < 200, f"peak memory grew {grew:.0f} MiB from 4 to 32 samples"

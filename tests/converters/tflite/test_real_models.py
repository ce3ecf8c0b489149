"""PyTorch-exported models (benchmarks/models): FP32 within 1e-4 of ONNX Runtime, INT8 close.

These are the committed benchmark exports (MobileNet-style classifier, ResNet-style classifier,
segmenter with ConvTranspose and Resize, audio 1D-CNN) and the GRU forecaster (unrolled).
Marked slow: each converts and runs a real network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from converters.tflite import compatibility_report, convert
from converters.tflite._runtime import LiteRT
from converters.tflite.convert import to_artifact_layout, to_onnx_layout
from tests.converters.tflite.models import ort_run

MODELS = Path(__file__).resolve().parents[3] / "benchmarks" / "models"
CASES = {"mobilenet": (MODELS / "mobilenet.onnx", MODELS / "mobilenet.cal.npz"),
         "segnet": (MODELS / "segnet.onnx", MODELS / "segnet.cal.npz"),
         "audio": (MODELS / "tflite" / "audio.onnx", MODELS / "tflite" / "audio.calibration.npz")}

pytestmark = pytest.mark.slow


def _load(name: str) -> tuple[onnx.ModelProto, str, np.ndarray]:
    path, cal = CASES[name]
    if not path.exists():
        pytest.skip(f"{path} not exported (python -m benchmarks.models.make_models)")
    m = onnx.load(str(path))
    inp = m.graph.input[0].name
    with np.load(cal) as z:
        return m, inp, z[inp].astype(np.float32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fp32_within_1e4_and_int8_close(name: str) -> None:
    m, inp, data = _load(name)
    fp32 = convert(m)
    int8 = convert(m, precision="int8", calibration=({inp: data[i:i + 1]} for i in range(32)),
                   per_channel="conv-only", target="ethos-u")
    rt32, rt8 = LiteRT(fp32.model), LiteRT(int8.model)
    out = fp32.output_names[0]
    for i in range(40, 44):                      # samples not used for calibration
        x = data[i:i + 1]
        (ref,) = ort_run(m, {inp: x})[:1]
        (g32,) = rt32.run_float([to_artifact_layout(x, fp32.io_layout[inp])])
        g32 = to_onnx_layout(g32, fp32.io_layout[out])
        assert np.abs(g32 - ref).max() <= 1e-4 * np.abs(ref).max()
        (g8,) = rt8.run_float([to_artifact_layout(x, int8.io_layout[inp])])
        g8 = to_onnx_layout(g8, int8.io_layout[out]).ravel().astype(np.float64)
        r = ref.ravel().astype(np.float64)
        assert r @ g8 / (np.linalg.norm(r) * np.linalg.norm(g8)) >= 0.98
    assert "TRANSPOSE" not in fp32.graph.op_counts()
    assert compatibility_report(int8.graph, "ethos-u")["fully_mapped"]


def test_gru_forecaster_unrolled_fp32_within_1e4() -> None:
    """Two stacked GRUs over 48 steps, unrolled into FULLY_CONNECTED/LOGISTIC/TANH steps; the
    full-integer build (a constant initial state feeding the first step) stays close too."""
    path = MODELS / "gru.onnx"
    if not path.exists():
        pytest.skip(f"{path} not exported")
    m = onnx.load(str(path))
    inp = m.graph.input[0].name
    with np.load(MODELS / "gru.cal.npz") as z:
        data = z[inp].astype(np.float32)
    res = convert(m)
    assert "GRU" not in res.graph.op_counts() and res.graph.op_counts()["TANH"] >= 48
    int8 = convert(m, precision="int8", calibration=({inp: data[i:i + 1]} for i in range(32)))
    rt, rt8 = LiteRT(res.model), LiteRT(int8.model)
    for i in range(40, 44):
        x = data[i:i + 1]
        (ref,) = ort_run(m, {inp: x})[:1]
        (got,) = rt.run_float([x])
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
        g8 = rt8.run_float([x])[0].ravel().astype(np.float64)
        r = ref.ravel().astype(np.float64)
        assert r @ g8 / (np.linalg.norm(r) * np.linalg.norm(g8)) >= 0.98


@pytest.mark.parametrize("target", ["edgetpu", "ethos-u"])
def test_full_int8_build_keeps_top1_on_trained_classifier(tmp_path: Path, target: str) -> None:
    """Issue 4's INT8 goal as behaviour: on the trained MobileNet-style classifier (validation
    labels, 200 samples) the accepted full-integer artifact agrees with FP32 on >= 98% of top-1
    decisions, and the build gates on label accuracy (the labels are in the .val.npz)."""
    from converters.api import BuildRequest
    from converters.build import build

    if not (MODELS / "mobilenet.onnx").exists():
        pytest.skip("mobilenet not exported")
    req = BuildRequest(model=MODELS / "mobilenet.onnx", name="m", version="1.0.0",
                       targets=(target,), calibration=MODELS / "mobilenet.cal.npz",
                       validation=MODELS / "mobilenet.val.npz",
                       input_shapes={"input": (1, 3, 32, 32)})
    (a,) = build(req, lambda _m: None, tmp_path).artifacts
    acc = a.metrics["accuracy"]
    assert a.metrics["validation_samples"] == 200
    assert acc["gate_metric"] == "top1_accuracy" and acc["drop"] <= 0.01
    assert acc["summary"]["top1_agreement"] >= 0.98
    assert acc["summary"]["cosine_min"] >= 0.98

"""The application speaks the signature (NCHW float); TFLite artifacts take NHWC and int8 I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from device_agent.inference import InferenceService, LoadedModel, PredictInputError
from device_agent.io_adapter import IoAdapter
from edgeops.bundle import TensorSpec
from edgeops.runtime import load_runner
from tests.device_agent.bundles import onnx_model

SHAPE = (1, 3, 8, 8)


def conv_model() -> bytes:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def served(tmp_path: Path, model: bytes, **convert_kw: Any) -> tuple[InferenceService,
                                                                      LoadedModel]:
    from converters.tflite import convert

    res = convert(onnx.load_from_string(model), **convert_kw)
    path = tmp_path / "model.tflite"
    path.write_bytes(res.model)
    runner = load_runner(path, runtime="litert")
    details = {"io_layout": res.io_layout, **res.details}
    adapter = IoAdapter.from_details(details, runner.inputs, runner.outputs)
    lm = LoadedModel(runner, "conv", "1.0.0", "tflite-cpu", None,
                     (TensorSpec("x", "float32", SHAPE),),
                     (TensorSpec("y", "float32", (1, 4, 8, 8)),),
                     adapter=None if adapter.identity else adapter)
    svc = InferenceService()
    svc.swap(lm)
    return svc, lm


def reference(model: bytes, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["y"], {"x": x})[0])


def test_nhwc_artifact_is_fed_and_read_in_nchw(tmp_path: Path) -> None:
    model = conv_model()
    svc, lm = served(tmp_path, model)
    assert lm.adapter is not None and lm.adapter.in_perm == {"x": (0, 2, 3, 1)}
    assert lm.runner.inputs[0].shape == (1, 8, 8, 3)          # the artifact really is NHWC
    x = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32)
    y = svc.predict({"x": x})["y"]
    assert y.shape == (1, 4, 8, 8)
    np.testing.assert_allclose(y, reference(model, x), atol=1e-5, rtol=1e-4)
    with pytest.raises(PredictInputError, match="shape"):
        svc.predict({"x": np.transpose(x, (0, 2, 3, 1))})   # NHWC is not the signature


def test_int8_io_artifact_is_quantised_and_dequantised(tmp_path: Path) -> None:
    model = conv_model()
    rng = np.random.default_rng(2)
    calib = [{"x": rng.standard_normal(SHAPE, dtype=np.float32)} for _ in range(16)]
    svc, lm = served(tmp_path, model, precision="int8", calibration=calib, io_int8=True)
    assert lm.runner.inputs[0].dtype == "int8"
    assert lm.adapter is not None and "x" in lm.adapter.in_quant and "y" in lm.adapter.out_quant
    x = calib[0]["x"]
    y = svc.predict({"x": x})["y"]
    ref = reference(model, x)
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert float(np.max(np.abs(y - ref))) < 0.1 * float(np.max(np.abs(ref)))


def test_float_nchw_free_model_needs_no_adapter(tmp_path: Path) -> None:
    _, lm = served(tmp_path, onnx_model("affine"), input_shapes={"x": (1, 4)})
    assert lm.adapter is None


def test_malformed_details_are_ignored() -> None:
    from edgeops.runtime import TensorInfo

    t = (TensorInfo("x", "int8", (1, 4)),)
    a = IoAdapter.from_details({"io_layout": {"x": {"perm_from_onnx": [0, 0]}},
                                "io_quantization": {"x": {"scale": -1, "zero_point": 0}}}, t, t)
    assert a.identity

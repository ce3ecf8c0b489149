"""The runner abstraction on both runtimes: ONNX Runtime and LiteRT (real .tflite artifacts)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

from device_agent.runtime import ModelRunError, load_runner
from tests.device_agent.bundles import FEATURES, onnx_model

X = np.arange(FEATURES, dtype=np.float32).reshape(1, FEATURES)


@pytest.fixture(scope="module")
def tflite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from converters.tflite import convert

    result = convert(onnx.load_from_string(onnx_model("affine", 2.0)),
                     input_shapes={"x": (1, FEATURES)})
    p = tmp_path_factory.mktemp("tfl") / "model.tflite"
    p.write_bytes(result.model)
    return p


def test_onnx_runner(tmp_path: Path) -> None:
    p = tmp_path / "m.onnx"
    p.write_bytes(onnx_model("affine", 2.0))
    r = load_runner(p, runtime="onnxruntime", providers=("CPUExecutionProvider",))
    assert [i.name for i in r.inputs] == ["x"] and r.inputs[0].dtype == "float32"
    np.testing.assert_allclose(r.run({"x": X})["y"], X * 2 + 1)
    with pytest.raises(ModelRunError, match="model run failed"):
        r.run({"x": np.zeros((1, 3), np.float32)})


def test_litert_runner_matches_and_is_safe_across_threads(tflite_path: Path) -> None:
    r = load_runner(tflite_path, runtime="litert", threads=1)
    assert r.runtime == "litert" and len(r.inputs) == 1
    name = r.inputs[0].name
    out_name = r.outputs[0].name
    np.testing.assert_allclose(r.run({name: X})[out_name], X * 2 + 1, rtol=1e-6)
    with pytest.raises(ModelRunError, match="missing input"):
        r.run({})
    errors: list[str] = []

    def hammer(k: int) -> None:
        x = np.full((1, FEATURES), float(k), np.float32)
        for _ in range(200):
            y = r.run({name: x})[out_name]
            if not np.allclose(y, x * 2 + 1):
                errors.append(f"thread {k} got {y}")

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]

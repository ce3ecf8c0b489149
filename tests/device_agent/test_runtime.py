"""The runner abstraction on both runtimes: ONNX Runtime and LiteRT (real .tflite artifacts)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeops.runtime import ModelRunError, load_runner
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


def _two_outputs_two_inputs() -> bytes:
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", FEATURES]) for n in "ab"]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", FEATURES])
            for n in ("sum", "diff")]
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"]),
                           helper.make_node("Sub", ["a", "b"], ["diff"])], "g", ins, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_onnx_runner_binding_path_keeps_every_input_check(tmp_path: Path) -> None:
    """``run`` skips ORT's Python wrapper; every bad feed still fails as ModelRunError."""
    import onnxruntime as ort

    p = tmp_path / "m.onnx"
    p.write_bytes(onnx_model("affine", 2.0))
    r = load_runner(p, runtime="onnxruntime")
    for bad, needle in (({}, "missing input 'x'"), ({"z": X}, "missing input 'x'"),
                        ({"x": X, "z": X}, "Invalid input name: z"),
                        ({"x": X.astype(np.float64)}, "data type"),
                        ({"x": X[0]}, "rank"), ({"x": np.zeros((1, 3), np.float32)}, "dim")):
        with pytest.raises(ModelRunError, match=needle):
            r.run(bad)
    want = X * 2 + 1
    # lists, OrtValues and non-dict mappings take ORT's own wrapper, which converts them
    np.testing.assert_allclose(r.run({"x": X.tolist()})["y"], want)
    np.testing.assert_allclose(r.run({"x": ort.OrtValue.ortvalue_from_numpy(X)})["y"], want)
    from types import MappingProxyType

    np.testing.assert_allclose(r.run(MappingProxyType({"x": X}))["y"], want)
    r.close()
    with pytest.raises(ModelRunError, match="model run failed"):
        r.run({"x": X})


def test_onnx_runner_names_several_outputs(tmp_path: Path) -> None:
    p = tmp_path / "two.onnx"
    p.write_bytes(_two_outputs_two_inputs())
    r = load_runner(p, runtime="onnxruntime")
    a, b = X, np.ones_like(X)
    out = r.run({"b": b, "a": a})
    assert list(out) == ["sum", "diff"]
    np.testing.assert_allclose(out["sum"], a + b)
    np.testing.assert_allclose(out["diff"], a - b)
    with pytest.raises(ModelRunError, match="missing input 'b'"):
        r.run({"a": a})

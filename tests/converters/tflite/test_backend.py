"""The tflite backend through converters.build and `edgeops build`: accepted artifacts only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converters.api import BuildRequest, get_backend
from converters.build import build
from converters.tflite import tflite_backend
from converters.tflite._runtime import LiteRT
from edgeops.bundle import read_bundle
from tests.converters.tflite.models import feed, mobilenet_block, segmenter


def _save(model, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def _cal(model, path: Path, n: int = 24, seed: int = 0) -> Path:
    samples = feed(model, seed, n=n)
    np.savez(path, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})
    return path


def _golden(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    ins, outs = {}, {}
    with np.load(path) as z:
        for k in z.files:
            (ins if k.startswith("input/") else outs)[k.split("/", 1)[1]] = z[k]
    return ins, outs


def test_import_registers_backend() -> None:
    assert get_backend("tflite") is tflite_backend


@pytest.mark.parametrize(("target", "precision"), [("tflite-cpu", "fp32"),
                                                   ("tflite-cpu", "fp16"),
                                                   ("tflite-cpu", "int8-dynamic"),
                                                   ("edgetpu", "int8"), ("ethos-u", "int8")])
def test_build_accepts_and_golden_replays(tmp_path: Path, target: str, precision: str) -> None:
    m = mobilenet_block()
    src = _save(m, tmp_path / "m.onnx")
    cal = _cal(m, tmp_path / "cal.npz")
    req = BuildRequest(model=src, name="m", version="1.0.0", targets=(target,),
                       precision=precision, calibration=cal, max_accuracy_drop=0.05)
    outcome = build(req, lambda _m: None, tmp_path / "work")
    (a,) = outcome.artifacts
    assert a.format == "tflite" and a.path.name == "model.tflite" and a.path.exists()
    assert a.metrics["latency"]["threads"] == 1 and a.metrics["latency"]["p50_ms"] > 0
    assert a.metrics["size_bytes"] == a.path.stat().st_size
    acc = a.metrics["accuracy"]["summary"]
    if precision == "fp32":
        assert acc["max_abs_error"] <= 1e-4 * 1.0    # softmax outputs: magnitude <= 1
    assert acc["cosine_min"] >= 0.98
    assert a.details["io_layout"]["x"]["layout"] == "NHWC"
    rt = LiteRT(a.path.read_bytes())
    ins, outs = _golden(a.golden_path)
    assert ins["x"].shape[1:] == (16, 16, 3)             # artifact layout, samples first
    for i in range(ins["x"].shape[0]):
        (got,) = rt.run([ins["x"][i:i + 1]])
        diff = np.abs(got[0].astype(np.float64) - outs["prob"][i].astype(np.float64))
        assert (diff <= a.tolerance["atol"] + a.tolerance["rtol"] * np.abs(outs["prob"][i])).all()
    if target in ("edgetpu", "ethos-u"):
        assert ins["x"].dtype == np.int8 and a.details["io_dtype"] == "int8"
        rep = a.metrics["npu_compatibility"]
        assert rep["accelerator"] == target and rep["fully_mapped"]
        assert set(a.details["io_quantization"]) == {"x", "prob"}
        assert a.details["fusion_decision"]["rule"] == "ops on the NPU op list"
        assert rep["dynamic_ops"] == 0
    else:
        assert "npu_compatibility" not in a.metrics
        decision = a.details["fusion_decision"]
        assert decision["rule"] == "measured in LiteRT on the build machine"
        assert "gelu" in decision["enabled"] and set(decision["trials"]) >= {"hard_swish"}
    # mobilenet_block's HardSwish op is emitted as the builtin on every target
    assert "HARD_SWISH" in a.details["ops"]


def test_keep_io_layout_golden_in_onnx_layout(tmp_path: Path) -> None:
    m = segmenter()
    src = _save(m, tmp_path / "s.onnx")
    req = BuildRequest(model=src, name="s", version="1.0.0", targets=("tflite-cpu",),
                       keep_io_layout=True, calibration=_cal(m, tmp_path / "c.npz", n=4))
    (a,) = build(req, lambda _m: None, tmp_path / "work").artifacts
    ins, outs = _golden(a.golden_path)
    assert ins["x"].shape[1:] == (3, 16, 16) and outs["y"].shape[1:] == (4, 16, 16)
    assert a.details["io_layout"]["y"]["layout"] == "as-onnx"


def test_cli_build_reports_tflite_targets(cli, keys_home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    m = mobilenet_block()
    src = _save(m, tmp_path / "m.onnx")
    cal = _cal(m, tmp_path / "cal.npz")
    out = tmp_path / "out"
    res = cli("build", src, "--name", "m", "--version", "1.0.0", "--target", "tflite-cpu",
              "--target", "edgetpu", "--target", "ethos-u", "--calibration", cal,
              "--max-accuracy-drop", "0.05", "--out", out, "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert set(doc["targets"]) == {"tflite-cpu", "edgetpu", "ethos-u"}
    assert doc["targets"]["edgetpu"]["metrics"]["npu_compatibility"]["accelerator"] == "edgetpu"
    bundle = read_bundle(Path(doc["bundle"]))
    entry = next(e for e in bundle.manifest.artifacts if e.target == "edgetpu")
    assert entry.format == "tflite" and entry.details["io_dtype"] == "int8"
    assert entry.metrics["npu_compatibility"]["fully_mapped"] is True
    model = bundle.read_file(entry.file.path)
    assert LiteRT(model).inputs[0]["dtype"] == np.int8


def test_cli_keep_io_layout_flag(cli, keys_home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    m = segmenter()
    src = _save(m, tmp_path / "s.onnx")
    out = tmp_path / "out"
    res = cli("build", src, "--name", "s", "--version", "1.0.0", "--target", "tflite-cpu",
              "--keep-io-layout", "--out", out, "--json")
    assert res.code == 0, res.err
    bundle = read_bundle(Path(json.loads(res.out)["bundle"]))
    (entry,) = bundle.manifest.artifacts
    assert entry.details["io_layout"]["x"]["layout"] == "as-onnx"
    assert LiteRT(bundle.read_file(entry.file.path)).inputs[0]["shape"].tolist() == [1, 3, 16, 16]


def test_gate_failure_leaves_the_scratch_dir_empty(tmp_path: Path) -> None:
    from edgeops.errors import AccuracyGateError
    from tests.converters import zoo

    src = zoo.save(zoo.outlier_mlp(), tmp_path / "mlp.onnx")
    req = BuildRequest(model=src, name="m", version="1.0.0", targets=("ethos-u",),
                       max_accuracy_drop=0.0)
    with pytest.raises(AccuracyGateError, match="ethos-u"):
        build(req, lambda _m: None, tmp_path / "work")
    assert list((tmp_path / "work" / "ethos-u").iterdir()) == []


def test_tflite_cpu_full_int8_has_float_io(tmp_path: Path) -> None:
    m = mobilenet_block()
    src = _save(m, tmp_path / "m.onnx")
    req = BuildRequest(model=src, name="m", version="1.0.0", targets=("tflite-cpu",),
                       precision="int8", calibration=_cal(m, tmp_path / "cal.npz"),
                       max_accuracy_drop=0.05)
    (a,) = build(req, lambda _m: None, tmp_path / "work").artifacts
    assert a.precision == "int8" and a.details["io_dtype"] == "float32"
    assert 0 < a.tolerance["atol"] < 0.1 and a.tolerance["rtol"] == 0.0   # 2 steps of ~1/256
    assert "npu_compatibility" not in a.metrics
    ins, outs = _golden(a.golden_path)
    assert ins["x"].dtype == np.float32
    rt = LiteRT(a.path.read_bytes())
    (got,) = rt.run([ins["x"][:1]])
    np.testing.assert_allclose(got[0], outs["prob"][0], atol=a.tolerance["atol"],
                               rtol=a.tolerance["rtol"])


def test_artifact_litert_cannot_load_is_a_conversion_error(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the writer emits a truncated flatbuffer; nothing may be accepted."""
    import dataclasses

    import converters.tflite.backend as backend
    from edgeops.errors import ConversionError

    real = backend.convert

    def truncated(*args, **kwargs):  # type: ignore[no-untyped-def]
        res = real(*args, **kwargs)
        return dataclasses.replace(res, model=res.model[: len(res.model) // 3])

    monkeypatch.setattr(backend, "convert", truncated)
    m = mobilenet_block()
    req = BuildRequest(model=_save(m, tmp_path / "m.onnx"), name="m", version="1.0.0",
                       targets=("tflite-cpu",))
    with pytest.raises(ConversionError, match="does not run in LiteRT"):
        build(req, lambda _m: None, tmp_path / "work")
    assert list((tmp_path / "work" / "tflite-cpu").iterdir()) == []


def test_regression_output_is_gated_by_cosine_not_top1(tmp_path: Path) -> None:
    """A [N, 8] forecast is not a classifier: the build says so (classifier_outputs) and the
    tflite backend must follow it, as the ONNX targets do, instead of the shape rule."""
    from onnx import helper as oh

    from tests.converters.tflite.models import W, graph

    rng = np.random.default_rng(5)
    m = graph([oh.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
               oh.make_node("Relu", ["h"], ["r"]),
               oh.make_node("Gemm", ["r", "w2", "b2"], ["forecast"], transB=1)],
              {"x": ["N", 12]}, ["forecast"],
              [W(rng, "w1", 16, 12), W(rng, "b1", 16), W(rng, "w2", 8, 16), W(rng, "b2", 8)])
    src = _save(m, tmp_path / "f.onnx")
    req = BuildRequest(model=src, name="f", version="1.0.0", targets=("tflite-cpu",),
                       precision="int8", calibration=_cal(m, tmp_path / "cal.npz"),
                       max_accuracy_drop=0.05)
    (a,) = build(req, lambda _m: None, tmp_path / "work").artifacts
    acc = a.metrics["accuracy"]
    assert acc["gate_metric"] == "channel_cosine_min"
    assert acc["outputs"]["forecast"]["top1_agreement"] is None
    assert "top1_agreement" not in acc["summary"]
    # forcing the metric reaches the backend too
    req2 = BuildRequest(model=src, name="f", version="1.0.0", targets=("tflite-cpu",),
                        precision="int8", calibration=_cal(m, tmp_path / "cal.npz"),
                        max_accuracy_drop=0.5, options={"gate_metric": "top1"})
    (b,) = build(req2, lambda _m: None, tmp_path / "work2").artifacts
    assert b.metrics["accuracy"]["gate_metric"] == "top1_agreement"

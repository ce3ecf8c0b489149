"""`edgeops build` / `edgeops targets` end to end: real models, real ORT, real signed bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeops.bundle import read_bundle
from edgeops.golden import sample_output
from edgeops.keys import KeyStore
from tests.converters import zoo


def _verify(bundle: Path, home: Path):  # type: ignore[no-untyped-def]
    b = read_bundle(bundle)
    assert b.verify([KeyStore(home).public_key("targets")])
    return b


def test_targets_lists_every_profile_as_json(cli) -> None:
    from edgeops.targets import PROFILES

    res = cli("targets", "--json")
    assert res.code == 0
    rows = json.loads(res.out)
    assert {r["name"] for r in rows} == set(PROFILES)
    x86 = next(r for r in rows if r["name"] == "x86-cpu")
    assert x86["default_precision"] == "int8" and "fp32" in x86["precisions"]


def test_targets_text_and_help_example(cli) -> None:
    res = cli("targets")
    assert res.code == 0 and "qnn-npu" in res.out and "cuda-gpu" in res.out
    assert "Example:" in cli("build", "--help").out
    assert "Example:" in cli("targets", "--help").out


def test_fp32_build_end_to_end(cli, keys_home: Path, tmp_path: Path) -> None:
    model = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    out = tmp_path / "out"
    res = cli("build", model, "--name", "cls", "--version", "1.2.0", "--target", "x86-cpu",
              "--precision", "fp32", "--out", out)
    assert res.code == 0, res.err
    bundle = Path(res.out.strip())
    assert bundle == out / "cls-1.2.0.edgebundle"
    b = _verify(bundle, keys_home)
    check = cli("bundle", "verify", bundle, "--key", keys_home / "keys" / "targets.pub.json")
    assert check.code == 0, check.err
    m = b.manifest
    art = m.artifact_for("x86-cpu")
    assert art is not None and art.precision == "fp32"
    assert art.file.path == "artifacts/x86-cpu/model.onnx"
    assert m.inputs[0].shape == ("N", 3, 16, 16)
    assert m.source["opset"] == 13 and len(m.source_sha256) == 64
    assert {"onnx", "onnxruntime", "numpy", "python"} <= set(m.provenance)
    assert m.baseline["x"]["axis"] == 1 and len(m.baseline["x"]["mean"]) == 3
    # The artifact is a real ORT-optimised graph that reproduces the golden outputs.
    art_bytes = b.read_file(art.file.path)
    onnx.checker.check_model(onnx.load_from_string(art_bytes))
    assert art.golden is not None
    golden = np.load(__import__("io").BytesIO(b.read_file(art.golden.path)))
    sess = ort.InferenceSession(art_bytes, providers=["CPUExecutionProvider"])
    xs = golden["input/x"]
    for i in range(xs.shape[0]):
        got = sample_output(sess.run(None, {"x": xs[i:i + 1]})[0], golden["output/logits"], i)
        np.testing.assert_allclose(got, golden["output/logits"][i],
                                   atol=art.tolerance["atol"], rtol=art.tolerance["rtol"])
    assert 0 < art.tolerance["atol"] <= 1e-3
    assert art.metrics["accuracy"]["summary"]["cosine_min"] > 0.99999
    # Reports beside the bundle; latency lives in the report, not in the signed manifest.
    report = json.loads((out / "cls-1.2.0.report.json").read_text())
    lat = report["targets"]["x86-cpu"]["metrics"]["latency"]
    assert lat["p50_ms"] > 0 and lat["threads"] == 1 and lat["speedup_vs_fp32"] > 0
    assert "latency" not in art.metrics
    md = (out / "cls-1.2.0.report.md").read_text()
    assert "| x86-cpu | fp32 |" in md and "synthetic" in json.dumps(report["data"])


def test_build_twice_is_byte_identical(cli, keys_home: Path, tmp_path: Path) -> None:
    model = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    bundles = []
    for run in ("a", "b"):
        res = cli("build", model, "--name", "cls", "--version", "1.0.0", "--target", "x86-cpu",
                  "--target", "cuda-gpu", "--out", tmp_path / run, "--json")
        assert res.code == 0, res.err
        bundles.append(Path(json.loads(res.out)["bundle"]).read_bytes())
    assert bundles[0] == bundles[1]


def test_timestamp_and_signed_latency_are_opt_in(cli, keys_home: Path, tmp_path: Path) -> None:
    model = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    res = cli("build", model, "--name", "cls", "--version", "1.0.0", "--target", "x86-cpu",
              "--precision", "fp32", "--timestamp", "2026-01-01T00:00:00Z", "--sign-latency",
              "--out", tmp_path / "o", "--json")
    assert res.code == 0, res.err
    m = read_bundle(Path(json.loads(res.out)["bundle"])).manifest
    assert m.created == "2026-01-01T00:00:00Z"
    art = m.artifact_for("x86-cpu")
    assert art is not None and art.metrics["latency_budget_ms"] > 0


def test_latency_is_signed_only_when_timed_on_the_targets_own_provider(
        cli, keys_home: Path, tmp_path: Path) -> None:
    """A cuda-gpu artifact timed on this CPU-only machine gets no budget, and the report says why."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: the cuda-gpu figure is the target's own here")
    model = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    res = cli("build", model, "--name", "cls", "--version", "1.0.0", "--target", "x86-cpu",
              "--target", "cuda-gpu", "--precision", "fp32", "--sign-latency",
              "--out", tmp_path / "o", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    m = read_bundle(Path(data["bundle"])).manifest
    cpu, gpu = m.artifact_for("x86-cpu"), m.artifact_for("cuda-gpu")
    assert cpu is not None and cpu.metrics["latency_budget_ms"] > 0
    assert gpu is not None and "latency_budget_ms" not in gpu.metrics
    assert any("cuda-gpu: latency measured on CPUExecutionProvider" in w for w in data["warnings"])


@pytest.mark.parametrize(("runtime", "providers", "measured", "signed"), [
    ("onnxruntime", ("CPUExecutionProvider",), "CPUExecutionProvider", True),
    ("onnxruntime", ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
     "CUDAExecutionProvider", True),                    # TensorRT absent, timed on CUDA
    ("onnxruntime", ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
     "CPUExecutionProvider", False),                    # CPU-only build machine
    ("onnxruntime", ("QNNExecutionProvider", "CPUExecutionProvider"), "CPUExecutionProvider", False),
    ("litert", ("XNNPACK",), None, True),
    ("litert", ("EdgeTPUDelegate", "XNNPACK"), None, False),
    ("onnxruntime", ("CPUExecutionProvider",), None, True),   # figures from before `provider`
])
def test_latency_signable(runtime: str, providers: tuple[str, ...], measured: str | None,
                          signed: bool, tmp_path: Path) -> None:
    from converters.api import BuiltArtifact
    from converters.package import latency_signable

    art = BuiltArtifact(target="t", path=tmp_path, format="onnx", runtime=runtime,
                        providers=providers, precision="fp32", golden_path=tmp_path, metrics={},
                        tolerance={})
    lat = {"p50_ms": 1.0, "p95_ms": 2.0, **({"provider": measured} if measured else {})}
    assert latency_signable(art, lat) is signed
    assert latency_signable(art, None) is False


@pytest.mark.slow
def test_int8_with_real_data_produces_qdq_and_records_choices(cli, keys_home: Path,
                                                             tmp_path: Path) -> None:
    model = zoo.save(zoo.convnet(11), tmp_path / "m.onnx")       # opset 11: must be upgraded
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((40, 3, 16, 16)).astype(np.float32))
    np.savez(tmp_path / "val.npz", x=rng.standard_normal((12, 3, 16, 16)).astype(np.float32),
             labels=rng.integers(0, 10, 12))
    res = cli("build", model, "--name", "cls", "--version", "1.0.0", "--target", "x86-cpu",
              "--calibration", tmp_path / "cal.npz", "--validation", tmp_path / "val.npz",
              "--calibration-method", "percentile", "--max-accuracy-drop", "0.5",
              "--no-perf-aware",
              "--out", tmp_path / "o", "--json")
    assert res.code == 0, res.err
    b = _verify(Path(json.loads(res.out)["bundle"]), keys_home)
    art = b.manifest.artifact_for("x86-cpu")
    assert art is not None and art.precision == "int8"
    q = onnx.load_from_string(b.read_file(art.file.path))
    ops = [n.op_type for n in q.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    opset = next(o.version for o in q.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 13
    # per-channel weights: some DequantizeLinear carries an axis and a vector scale
    inits = {i.name: i for i in q.graph.initializer}
    assert any(n.op_type == "DequantizeLinear" and len(inits[n.input[1]].dims) == 1
               and inits[n.input[1]].dims[0] > 1 for n in q.graph.node
               if n.input[1] in inits)
    d = art.details
    assert d["calibration"] == {"method": "percentile", "samples": 40, "synthetic": False,
                                "streamed_chunk": 16}
    assert d["opset"] == {"source": 11, "artifact": opset}
    # from the target, whatever this machine's CPU: x86-cpu does not declare VNNI
    assert d["plan"]["reduce_range"] is True and d["plan"]["target_isa"] == "x86_64"
    assert "top1_accuracy" in art.metrics["accuracy"]["summary"]
    assert isinstance(d["float_nodes"], dict)


@pytest.mark.slow
def test_accuracy_aware_fallback_keeps_the_culprit_in_float(cli, keys_home: Path,
                                                            tmp_path: Path) -> None:
    model = zoo.save(zoo.outlier_mlp(), tmp_path / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((32, 4, 16)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=x)
    res = cli("build", model, "--name", "mlp", "--version", "1.0.0", "--target", "x86-cpu",
              "--calibration", tmp_path / "cal.npz", "--no-perf-aware", "--out", tmp_path / "o",
              "--json")
    assert res.code == 0, res.err
    art = read_bundle(Path(json.loads(res.out)["bundle"])).manifest.artifact_for("x86-cpu")
    assert art is not None
    floats = art.details["float_nodes"]
    # mm2 reads the outlier tensor m1: lifting it alone recovers the metric (measured per
    # layer by the mixed-precision step), so it is the one float layer; mm0 and mm3 stay INT8
    assert "mm2" in floats and "recovered" in floats["mm2"]
    assert not {"mm0", "mm3"} & set(floats)
    assert art.metrics["accuracy"]["gate_metric"] == "channel_cosine_min"  # per channel, worst counts
    assert art.metrics["accuracy"]["summary"]["cosine_min"] >= 0.99
    assert art.details["quantised_nodes"] >= 1          # the rest stayed INT8


@pytest.mark.slow
def test_all_onnx_targets_in_one_bundle(cli, keys_home: Path, tmp_path: Path) -> None:
    model = zoo.save(zoo.convnet(13, dynamic_hw=True), tmp_path / "m.onnx")
    res = cli("build", model, "--name", "cls", "--version", "1.0.0", "--target", "x86-cpu",
              "--target", "arm64-cpu", "--target", "cuda-gpu", "--target", "qnn-npu",
              "--precision", "x86-cpu=int8-dynamic,cuda-gpu=fp32",
              "--input-shape", "x=1x3x16x16", "--max-accuracy-drop", "0.5",
              "--out", tmp_path / "o", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert any("synthetic" in w for w in data["warnings"])
    m = _verify(Path(data["bundle"]), keys_home).manifest
    by = {a.target: a for a in m.artifacts}
    assert by["arm64-cpu"].details["plan"]["activation_type"] == "int8"
    assert by["qnn-npu"].details["plan"]["activation_type"] == "uint8"
    assert by["qnn-npu"].details["plan"]["weight_type"] == "uint8"
    assert by["cuda-gpu"].precision == "fp32" and by["x86-cpu"].precision == "int8-dynamic"
    assert by["qnn-npu"].precision == "int8"
    assert by["arm64-cpu"].details["performance_aware"].startswith("skipped")


def test_image_directory_with_preprocessing_spec(cli, keys_home: Path, tmp_path: Path) -> None:
    from PIL import Image

    model = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    spec = '{"size": [16, 16], "layout": "NCHW", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}'
    res = cli("build", model, "--name", "cls", "--version", "1.0.0", "--target", "x86-cpu",
              "--precision", "fp32", "--validation", imgs, "--preprocessing", spec,
              "--out", tmp_path / "o", "--json")
    assert res.code == 0, res.err
    m = read_bundle(Path(json.loads(res.out)["bundle"])).manifest
    assert m.preprocessing == {"size": [16, 16], "layout": "NCHW", "mean": [0.5, 0.5, 0.5],
                               "std": [0.25, 0.25, 0.25]}
    assert m.baseline["x"]["samples"] == 6
    # normalised pixels: (u/255 - 0.5) / 0.25 lies in [-2, 2]
    assert min(m.baseline["x"]["min"]) >= -2.0 and max(m.baseline["x"]["max"]) <= 2.0


def test_bad_preprocessing_spec_is_usage_error(cli, keys_home: Path, tmp_path: Path) -> None:
    model = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    for spec in ('{"resize": [1, 2]}', '{"size": "big"}', "{not json", "missing.json"):
        res = cli("build", model, "--name", "cls", "--version", "1.0.0", "--target", "x86-cpu",
                  "--preprocessing", spec, "--out", tmp_path / "o")
        assert res.code == 2, (spec, res.err)
        assert res.err.count("error:") == 1 and "preprocessing" in res.err
        assert not (tmp_path / "o").exists()

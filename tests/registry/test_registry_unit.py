"""Registry URIs, lineage in the manifest, MLflow metric/tag shapes and DVC hashes: no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeops.bundle import ArtifactEntry, DataDigest, FileRef, Lineage, Manifest, TensorSpec
from edgeops.errors import InvalidBundleError, UsageError
from edgeops.registry import parse_registry_uri
from edgeops.registry.dvc import dvc_md5
from edgeops.registry.mlflow_registry import public_uri
from edgeops.registry.results import build_metrics, build_tags, deployment_tag


def make_manifest() -> Manifest:
    entry = ArtifactEntry(target="x86-cpu", file=FileRef("artifacts/x86-cpu/model.onnx", "a" * 64, 10),
                          format="onnx", runtime="onnxruntime",
                          providers=("CPUExecutionProvider",), precision="fp32")
    return Manifest(name="vehicle", version="1.0.0", source_sha256="b" * 64,
                    inputs=(TensorSpec("x", "float32", ("N", 4)),),
                    outputs=(TensorSpec("y", "float32", ("N", 3)),), artifacts=(entry,))


@pytest.mark.parametrize(("text", "kind", "fields"), [
    ("models:/vehicle/3", "version", {"name": "vehicle", "version": "3"}),
    ("models:/vehicle@champion", "alias", {"name": "vehicle", "alias": "champion"}),
    ("runs:/0a1b2c/model/model.onnx", "run", {"run_id": "0a1b2c", "path": "model/model.onnx"}),
    ("runs:/0a1b2c", "run", {"run_id": "0a1b2c", "path": ""}),
])
def test_registry_uri_forms(text: str, kind: str, fields: dict[str, str]) -> None:
    ref = parse_registry_uri(text)
    assert ref.kind == kind and ref.text == text
    for k, v in fields.items():
        assert getattr(ref, k) == v


@pytest.mark.parametrize(("text", "needle"), [
    ("models:/vehicle/Production", "stages are deprecated"),
    ("models:/", "not a model URI"),
    ("models:/a/b/3", "not a model URI"),
    ("models:/vehicle@bad alias", "not a model URI"),
    ("runs:/../x", "not a model URI"),
])
def test_bad_registry_uris_are_usage_errors(text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        parse_registry_uri(text)


def _lineage() -> Lineage:
    return Lineage(source_uri="models:/vehicle@champion", edgeops_version="0.1.0",
                   tracking_uri="http://mlflow:5000", model_name="vehicle", model_version="3",
                   alias="champion", run_id="abc123", experiment_id="7", git_commit="f" * 40,
                   data={"model": DataDigest("models:/vehicle/3", sha256="0" * 64),
                         "calibration": DataDigest("cal.npz", sha256="1" * 64,
                                                   dvc_md5="2" * 32)})


def test_lineage_round_trips_through_the_signed_manifest() -> None:
    plain = make_manifest()
    assert "lineage" not in plain.to_dict()       # old bundles keep their exact bytes
    with_lineage = Manifest(**{**plain.__dict__, "lineage": _lineage()})
    again = Manifest.from_bytes(with_lineage.to_bytes())
    assert again.lineage == _lineage()
    assert again.to_bytes() == with_lineage.to_bytes()
    assert _lineage().links() == {
        "run": "http://mlflow:5000/#/experiments/7/runs/abc123",
        "model_version": "http://mlflow:5000/#/models/vehicle/versions/3"}


def test_malformed_lineage_is_rejected() -> None:
    d = Manifest(**{**make_manifest().__dict__, "lineage": _lineage()}).to_dict()
    d["lineage"]["data"]["weights"] = {"uri": "x"}
    with pytest.raises(InvalidBundleError, match="unknown entries"):
        Manifest.from_dict(d)
    d["lineage"] = {"source_uri": 3}
    with pytest.raises(InvalidBundleError, match="source_uri"):
        Manifest.from_dict(d)


def test_build_metrics_and_tags() -> None:
    report = {"targets": {"x86-cpu": {"metrics": {
        "size_bytes": 1000, "latency": {"p50_ms": 1.5, "p95_ms": 2.0, "speedup_vs_fp32": 2.5},
        "accuracy": {"gate_metric": "top1_accuracy", "drop": 0.002,
                     "summary": {"cosine_min": 0.999, "top1_accuracy": 0.91}}}}}}
    assert build_metrics(report) == {
        "edgeops.x86-cpu.latency_p50_ms": 1.5, "edgeops.x86-cpu.latency_p95_ms": 2.0,
        "edgeops.x86-cpu.speedup_vs_fp32": 2.5, "edgeops.x86-cpu.size_bytes": 1000.0,
        "edgeops.x86-cpu.accuracy_drop": 0.002, "edgeops.x86-cpu.cosine_min": 0.999,
        "edgeops.x86-cpu.top1_accuracy": 0.91}
    tags = build_tags("m", "1.0.0", "a" * 64, ["x86-cpu", "arm64-cpu"], "b" * 64)
    assert tags["edgeops.targets"] == "arm64-cpu,x86-cpu" and tags["edgeops.bundle"] == "m-1.0.0"
    assert deployment_tag("d1", "aborted", "3 of 10 failed") == (
        "edgeops.deployment.d1", "aborted: 3 of 10 failed")
    assert deployment_tag("d2", "completed", None) == ("edgeops.deployment.d2", "completed")


def test_dvc_hash_is_read_from_the_dvc_file(tmp_path: Path) -> None:
    data = tmp_path / "cal.npz"
    data.write_bytes(b"x")
    assert dvc_md5(data) is None
    (tmp_path / "cal.npz.dvc").write_text(
        "outs:\n- md5: 3f0b4c4e1a2d5e6f708192a3b4c5d6e7\n  size: 1\n  hash: md5\n  path: cal.npz\n")
    assert dvc_md5(data) == "3f0b4c4e1a2d5e6f708192a3b4c5d6e7"


def test_credentials_never_reach_the_manifest() -> None:
    assert public_uri("https://user:secret@mlflow.example.com:8443/x") == \
        "https://mlflow.example.com:8443/x"
    assert public_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_local_build_with_dvc_tracked_data_records_lineage(cli, keys_home: Path,
                                                            tmp_path: Path) -> None:
    import json

    import numpy as np

    from edgeops.bundle import read_bundle
    from tests.converters import zoo

    model = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    cal = tmp_path / "cal.npz"
    with open(cal, "wb") as f:
        np.savez(f, x=np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    args = ("build", model, "--name", "cls", "--version", "1.0.0", "--target", "x86-cpu",
            "--precision", "fp32", "--calibration", cal, "--json")
    plain = cli(*args, "--out", tmp_path / "a")
    assert plain.code == 0, plain.err
    assert read_bundle(Path(json.loads(plain.out)["bundle"])).manifest.lineage is None
    (tmp_path / "cal.npz.dvc").write_text(
        "outs:\n- md5: 0123456789abcdef0123456789abcdef\n  size: 9\n  hash: md5\n  path: cal.npz\n")
    tracked = cli(*args, "--out", tmp_path / "b")
    assert tracked.code == 0, tracked.err
    lin = read_bundle(Path(json.loads(tracked.out)["bundle"])).manifest.lineage
    assert lin is not None and lin.tracking_uri is None and lin.source_uri == "m.onnx"
    assert lin.data["calibration"].dvc_md5 == "0123456789abcdef0123456789abcdef"
    assert lin.data["calibration"].sha256 is not None and lin.data["model"].dvc_md5 is None


def test_registry_build_without_the_extra_names_it(cli, keys_home: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "mlflow", None)     # import mlflow -> ImportError
    res = cli("build", "models:/m@champion", "--name", "m", "--version", "1.0.0", "--target",
              "x86-cpu", "--out", tmp_path / "out")
    assert res.code == 1 and "pip install 'edgeops[mlflow]'" in res.err
    assert not (tmp_path / "out").exists()

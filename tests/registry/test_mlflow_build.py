"""`edgeops build` from a real MLflow tracking server: registry URIs in, lineage and results out.

The server is real (``mlflow server``, SQLite, local artifacts; one per session) and so are the
models: ONNX graphs logged with ``mlflow.onnx.log_model`` and registered. Each error the issue
names has a test: one line, exit 1 or 2, nothing written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeops.bundle import read_bundle
from edgeops.keys import KeyStore
from tests.converters import zoo
from tests.converters.conftest import listing
from tests.registry.conftest import log_onnx

pytestmark = pytest.mark.slow

_BUILD = ("--version", "1.0.0", "--target", "x86-cpu", "--precision", "fp32")


def _cal(tmp_path: Path, n: int = 8) -> Path:
    path = tmp_path / "cal.npz"
    x = np.random.default_rng(3).standard_normal((n, 3, 16, 16)).astype(np.float32)
    with open(path, "wb") as f:
        np.savez(f, x=x)
    return path


def _one_line_error(res: Any, code: int, needle: str) -> None:
    assert res.code == code, (res.out, res.err)
    lines = [ln for ln in res.err.splitlines()
             if ln.strip() and not ln.startswith("  … ")]  # progress lines

    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.err
    assert "Traceback" not in res.err


def test_build_from_alias_records_lineage_and_logs_back(cli, keys_home: Path, tracking: Any,
                                                        tmp_path: Path) -> None:
    cal = _cal(tmp_path)
    logged = log_onnx(tracking, "cls-alias", zoo.convnet(13), commit="c0ffee" * 6 + "abcd",
                      artifacts={"data": cal}, alias="champion")
    out = tmp_path / "out"
    res = cli("build", "models:/cls-alias@champion", "--name", "cls", *_BUILD,
              "--calibration", f"runs:/{logged.run_id}/data/cal.npz", "--mlflow-log",
              "--out", out, "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    bundle = Path(data["bundle"])
    b = read_bundle(bundle)
    assert b.verify([KeyStore(keys_home).public_key("targets")])
    lin = b.manifest.lineage
    assert lin is not None
    assert (lin.source_uri, lin.model_name, lin.model_version, lin.alias) == (
        "models:/cls-alias@champion", "cls-alias", logged.version, "champion")
    assert lin.run_id == logged.run_id and lin.git_commit == "c0ffee" * 6 + "abcd"
    assert lin.tracking_uri == tracking.tracking_uri and lin.experiment_id
    assert lin.data["model"].uri == f"models:/cls-alias/{logged.version}"
    assert lin.data["model"].sha256 == b.manifest.source_sha256
    assert lin.data["calibration"].sha256 == hashlib.sha256(cal.read_bytes()).hexdigest()
    assert b.manifest.source["filename"] == "model.onnx"

    # bundle inspect shows the lineage, text and JSON.
    text = cli("bundle", "inspect", bundle)
    assert text.code == 0 and "from models:/cls-alias@champion" in text.out
    assert f"run {logged.run_id}" in text.out and "commit c0ffeec0ffee" in text.out
    assert f"{tracking.tracking_uri}/#/experiments/" in text.out
    js = json.loads(cli("bundle", "inspect", bundle, "--json").out)
    assert js["lineage"]["run_id"] == logged.run_id and "run" in js["lineage"]["links"]

    # Results back in MLflow, read through the client.
    run = tracking.get_run(logged.run_id)
    metrics = run.data.metrics
    assert metrics["edgeops.x86-cpu.latency_p50_ms"] > 0
    assert metrics["edgeops.x86-cpu.speedup_vs_fp32"] > 0
    assert metrics["edgeops.x86-cpu.size_bytes"] == b.manifest.artifacts[0].file.size
    assert "edgeops.x86-cpu.accuracy_drop" in metrics and metrics["val_accuracy"] == 0.9
    files = {f.path for f in tracking.list_artifacts(logged.run_id, "edgeops/cls-1.0.0")}
    assert files == {"edgeops/cls-1.0.0/cls-1.0.0.report.json",
                     "edgeops/cls-1.0.0/cls-1.0.0.report.md"}
    tags = tracking.get_model_version("cls-alias", logged.version).tags
    assert tags["edgeops.bundle_sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert tags["edgeops.targets"] == "x86-cpu" and tags["edgeops.bundle"] == "cls-1.0.0"
    assert tags["edgeops.source_sha256"] == b.manifest.source_sha256
    md = (out / "cls-1.0.0.report.md").read_text()
    assert f"From `models:/cls-alias@champion`, [version {logged.version}]" in md


def test_build_from_version_and_from_run_artifact(cli, keys_home: Path, tracking: Any,
                                                  tmp_path: Path) -> None:
    import mlflow

    model = zoo.save(zoo.convnet(13), tmp_path / "plain.onnx")
    logged = log_onnx(tracking, "cls-version", zoo.convnet(13))
    res = cli("build", f"models:/cls-version/{logged.version}", "--name", "cls", *_BUILD,
              "--out", tmp_path / "a", "--json")
    assert res.code == 0, res.err
    lin = read_bundle(Path(json.loads(res.out)["bundle"])).manifest.lineage
    assert lin is not None and lin.model_version == logged.version and lin.alias is None
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(model), artifact_path="exported")
    res = cli("build", f"runs:/{run.info.run_id}/exported/plain.onnx", "--name", "cls", *_BUILD,
              "--out", tmp_path / "b", "--json")
    assert res.code == 0, res.err
    m = read_bundle(Path(json.loads(res.out)["bundle"])).manifest
    assert m.lineage is not None and m.lineage.run_id == run.info.run_id
    assert m.lineage.model_name is None
    assert m.source_sha256 == hashlib.sha256(model.read_bytes()).hexdigest()


def test_unknown_alias_is_one_line(cli, keys_home: Path, tracking: Any, tmp_path: Path) -> None:
    log_onnx(tracking, "cls-noalias", zoo.convnet(13), alias="champion")
    out = tmp_path / "out"
    res = cli("build", "models:/cls-noalias@challenger", "--name", "cls", *_BUILD, "--out", out)
    _one_line_error(res, 1, "cls-noalias has no alias @challenger")
    assert "@champion" in res.err
    assert not out.exists()


def test_model_without_onnx_flavour_says_what_to_log(cli, keys_home: Path, tracking: Any,
                                                     tmp_path: Path) -> None:
    import mlflow

    skdir = tmp_path / "skmodel"
    skdir.mkdir()
    (skdir / "MLmodel").write_text(
        "artifact_path: skmodel\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
        "    python_version: 3.11.7\n  sklearn:\n    pickled_model: model.pkl\n"
        "    serialization_format: cloudpickle\n    sklearn_version: 1.9.1\n")
    (skdir / "model.pkl").write_bytes(b"not really a pickle")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(skdir), artifact_path="skmodel")
    tracking.create_registered_model("cls-sklearn")
    mv = tracking.create_model_version("cls-sklearn", f"runs:/{run.info.run_id}/skmodel",
                                       run_id=run.info.run_id)
    out = tmp_path / "out"
    res = cli("build", f"models:/cls-sklearn/{mv.version}", "--name", "cls", *_BUILD,
              "--out", out)
    _one_line_error(res, 1, "has no ONNX flavour (it has python_function, sklearn)")
    assert "mlflow.onnx.log_model" in res.err
    assert not out.exists()


def test_model_changed_after_it_was_pinned_is_refused(cli, keys_home: Path, tracking: Any,
                                                      mlflow_server: Any, tmp_path: Path) -> None:
    """A first --mlflow-log build pins the ONNX digest on the version; bytes swapped in the
    artifact store afterwards (between resolve and download of the next build) are refused."""
    logged = log_onnx(tracking, "cls-pinned", zoo.convnet(13), alias="champion")
    res = cli("build", "models:/cls-pinned@champion", "--name", "cls", *_BUILD, "--mlflow-log",
              "--out", tmp_path / "first", "--json")
    assert res.code == 0, res.err
    swapped = 0
    other = zoo.convnet(13, width=4).SerializeToString()
    for path in mlflow_server.artifacts_dir.rglob("model.onnx"):
        if logged.model_id and logged.model_id in str(path):
            path.write_bytes(other)
            swapped += 1
    assert swapped == 1
    out = tmp_path / "second"
    res = cli("build", "models:/cls-pinned@champion", "--name", "cls", *_BUILD, "--out", out)
    _one_line_error(res, 1, "changed: its ONNX file is sha256")
    assert not out.exists()


def test_unreachable_server_is_one_line(cli, keys_home: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.services import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    out = tmp_path / "out"
    res = cli("build", "models:/cls@champion", "--name", "cls", *_BUILD, "--out", out)
    _one_line_error(res, 1, "is unreachable")
    assert not out.exists() and listing(tmp_path) == []


def test_missing_tracking_uri_and_bad_flags_are_usage_errors(cli, keys_home: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    res = cli("build", "models:/cls@champion", "--name", "cls", *_BUILD, "--out", out)
    _one_line_error(res, 2, "no MLflow tracking server given")
    assert "MLFLOW_TRACKING_URI" in res.err
    model = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    res = cli("build", model, "--name", "cls", *_BUILD, "--mlflow-log", "--out", out)
    _one_line_error(res, 2, "--mlflow-log needs a registry model")
    res = cli("build", "models:/cls/Staging", "--name", "cls", *_BUILD, "--out", out)
    _one_line_error(res, 2, "stages are deprecated")
    assert not out.exists()

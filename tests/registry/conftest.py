"""A real MLflow tracking server for the whole session (it takes seconds to start), and helpers
that log real ONNX models into it the way an ML team does."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeops.registry.mlflow_server import LocalMlflowServer, mlflow_available
from tests.converters.conftest import _keys_home, cli, keys_home  # noqa: F401 - shared fixtures
from tests.services import need


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMlflowServer]:
    need("MLflow", mlflow_available(), "pip install 'edgeops[mlflow]'")
    server = LocalMlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# What MLflow (set_tracking_uri/set_registry_uri) and edgeops' adapter put into os.environ;
# restored after every test so nothing leaks into later tests or their subprocesses (a demo
# inheriting MLFLOW_REGISTRY_URI would register its model on this session's server).
_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
               "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")


@pytest.fixture(autouse=True)
def _isolated_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in _MLFLOW_ENV:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def tracking(mlflow_server: LocalMlflowServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """MLFLOW_TRACKING_URI set for this test; returns an MlflowClient on the server."""
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", mlflow_server.uri)
    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_registry_uri(mlflow_server.uri)
    return MlflowClient(mlflow_server.uri)


@dataclass
class Logged:
    name: str
    version: str
    run_id: str
    model_id: str | None


def log_onnx(client: Any, name: str, model: Any, *, commit: str = "0" * 40,
             artifacts: dict[str, Path] | None = None, alias: str | None = None) -> Logged:
    """``mlflow.onnx.log_model`` inside a run (with a git commit tag), registered as ``name``."""
    import mlflow
    import mlflow.onnx

    with mlflow.start_run() as run:
        mlflow.set_tag("mlflow.source.git.commit", commit)
        mlflow.log_metric("val_accuracy", 0.9)
        for path, local in (artifacts or {}).items():
            mlflow.log_artifact(str(local), artifact_path=path)
        info = mlflow.onnx.log_model(model, name="model", registered_model_name=name)
    version = str(info.registered_model_version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return Logged(name, version, run.info.run_id, getattr(info, "model_id", None))

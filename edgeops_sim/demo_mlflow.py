"""``edgeops demo --mlflow``: the demo's model goes through an MLflow registry, as a team's would.

A private MLflow server (SQLite, local artifacts, :mod:`edgeops.registry.mlflow_server`) is
started in the demo's work directory; the trained model is logged with ``mlflow.onnx.log_model``
in a run that also holds its calibration and validation data, registered and given the alias
``@champion``. The demo then builds from ``models:/vehicle-classifier@champion`` with
``--mlflow-log``, rolls out by moving the fleet alias ``@champion``, and reads back the tags the
build and the fleet manager wrote on the model version.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.errors import ConfigError

__all__ = ["DemoRegistry", "read_back", "start_registry"]


@dataclass
class DemoRegistry:
    server: Any                 # LocalMlflowServer
    uri: str
    name: str
    run_id: str
    version: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}@champion"

    def data_uri(self, filename: str) -> str:
        return f"runs:/{self.run_id}/data/{filename}"

    def stop(self) -> None:
        self.server.stop()


def start_registry(work: Path, name: str, model: Path, data: list[Path],
                   accuracy: float | None) -> DemoRegistry:
    """Start the server, log and register the model, point ``@champion`` at it."""
    from edgeops.registry.mlflow_server import LocalMlflowServer, mlflow_available

    if not mlflow_available():
        raise ConfigError("edgeops demo --mlflow needs the MLflow client and server",
                          hint="install the extra: pip install 'edgeops[mlflow]'")
    d = work / "mlflow"
    if d.exists():
        shutil.rmtree(d)                 # a fresh registry every run, like the fresh fleet
    server = LocalMlflowServer(d)
    uri = server.start()
    try:
        # The demo's own server for everything, whatever the caller's environment names.
        os.environ["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_REGISTRY_URI"] = uri
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        import mlflow.onnx
        import onnx
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        mlflow.set_experiment("edgeops-demo")
        # MLflow prints run links on stdout; the demo's stdout is its --json summary.
        with contextlib.redirect_stdout(sys.stderr), mlflow.start_run(run_name=name) as run:
            mlflow.log_params({"hidden": 64, "seed": 7, "features": "roadside sensors"})
            if accuracy is not None:
                mlflow.log_metric("heldout_accuracy", accuracy)
            for p in data:
                mlflow.log_artifact(str(p), artifact_path="data")
            info = mlflow.onnx.log_model(onnx.load(str(model)), name="model",
                                         registered_model_name=name)
        version = str(info.registered_model_version)
        MlflowClient(uri).set_registered_model_alias(name, "champion", version)
        return DemoRegistry(server, uri, name, run.info.run_id, version)
    except BaseException:
        server.stop()
        raise


def read_back(reg: DemoRegistry, deployments: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """What the build and the fleet wrote back: version tags (waiting for ``deployments``
    outcome tags from the manager's background thread) and the run's edgeops metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(reg.uri)
    deadline = time.monotonic() + timeout_s
    tags: dict[str, str] = {}
    while time.monotonic() < deadline:
        tags = dict(client.get_model_version(reg.name, reg.version).tags)
        if sum(k.startswith("edgeops.deployment.") for k in tags) >= deployments:
            break
        time.sleep(0.5)
    metrics = client.get_run(reg.run_id).data.metrics
    return {"tracking_uri": reg.uri, "model_uri": reg.model_uri, "model_version": reg.version,
            "run_id": reg.run_id,
            "version_tags": {k: v for k, v in sorted(tags.items()) if k.startswith("edgeops.")},
            "run_metrics": {k: v for k, v in sorted(metrics.items())
                            if k.startswith("edgeops.")}}

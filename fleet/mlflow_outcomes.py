"""Deployment outcomes back to the MLflow model version a bundle was built from.

When a deployment ends (completed, aborted with its reason, cancelled, rolled back), the
manager tags the bundle's model version ``edgeops.deployment.<id>`` in MLflow, if the bundle's
signed lineage names a model version and the manager has a tracking URI
(``edgeops fleet serve --mlflow-tracking-uri`` / ``MLFLOW_TRACKING_URI``). The registry then
answers "did this version make it onto devices?".

The rollout loop must never wait on MLflow: outcomes go through a bounded queue to one
background thread; failures are logged and dropped (the deployment itself is in the store).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from edgeops.bundle import Manifest
from edgeops.errors import ConfigError, EdgeOpsError
from fleet.store import BundleStore, Deployment

__all__ = ["MAX_PENDING", "MlflowOutcomes"]

log = logging.getLogger(__name__)
MAX_PENDING = 1000          # outcomes queued for MLflow; beyond this they are logged and dropped


class MlflowOutcomes:
    """The engine's outcome listener: ``engine.attach_outcome_listener(MlflowOutcomes(...))``."""

    def __init__(self, store: BundleStore, tracking_uri: str, *, registry: Any = None) -> None:
        import importlib.util

        if registry is None and importlib.util.find_spec("mlflow") is None:
            raise ConfigError("--mlflow-tracking-uri needs the MLflow client",
                              hint="install the extra: pip install 'edgeops[mlflow]'")
        self.store = store
        self.tracking_uri = tracking_uri
        self._registry = registry             # tests may pass one; else built on first use
        self._q: queue.Queue[tuple[str, str, Deployment] | None] = queue.Queue(MAX_PENDING)
        self._thread = threading.Thread(target=self._run, name="mlflow-outcomes", daemon=True)
        self._thread.start()

    def __call__(self, dep: Deployment) -> None:
        bundle = self.store.get_bundle(dep.bundle_name, dep.bundle_version)
        lineage = Manifest.from_bytes(bundle.manifest).lineage if bundle else None
        if lineage is None or not lineage.model_name or not lineage.model_version:
            return
        try:
            self._q.put_nowait((lineage.model_name, lineage.model_version, dep))
        except queue.Full:
            log.warning("MLflow outcome queue full: deployment %s (%s) not tagged", dep.id,
                        dep.status)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (bounded by ``timeout_s``), then stop the thread."""
        try:
            self._q.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            name, version, dep = item
            try:
                if self._registry is None:
                    from edgeops.registry.mlflow_registry import MlflowRegistry

                    self._registry = MlflowRegistry(self.tracking_uri)
                self._registry.tag_deployment(name, version, dep.id, dep.status, dep.reason)
                log.info("MLflow: %s version %s tagged with deployment %s %s", name, version,
                         dep.id, dep.status)
            except EdgeOpsError as exc:
                log.warning("MLflow: cannot tag %s version %s with deployment %s: %s", name,
                            version, dep.id, exc.diagnostics())
                if "unreachable" in exc.message:
                    self._registry = None     # probe again next time
            except Exception:
                log.exception("MLflow: tagging deployment %s failed", dep.id)

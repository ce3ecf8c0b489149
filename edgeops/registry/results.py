"""What a build and a deployment send back to MLflow, computed without touching the network.

Metric keys are ``edgeops.<target>.<metric>`` so one run can hold several targets side by side
in MLflow's compare view. Tags on the model version say which bundle was built from it and how
its deployments ended, so the registry answers "is this version on devices?".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["TAG_BUNDLE", "TAG_BUNDLE_SHA256", "TAG_SOURCE_SHA256", "TAG_TARGETS",
           "build_metrics", "build_tags", "deployment_tag"]

TAG_BUNDLE = "edgeops.bundle"                 # NAME-VERSION of the last bundle built from it
TAG_BUNDLE_SHA256 = "edgeops.bundle_sha256"
TAG_TARGETS = "edgeops.targets"
# The ONNX file's digest, pinned by the first build that logs back: a later build of the same
# version refuses a model whose bytes changed (see mlflow_registry.MlflowRegistry.fetch).
TAG_SOURCE_SHA256 = "edgeops.source_sha256"
_TAG_DEPLOYMENT = "edgeops.deployment."
_MAX_TAG_VALUE = 5000                         # MLflow's limit on a model version tag value


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def build_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """Per-target latency, speed-up, task metric, accuracy drop and size from a build report."""
    out: dict[str, float] = {}
    for target, r in sorted(report.get("targets", {}).items()):
        m = r.get("metrics", {})
        lat = m.get("latency") or {}
        acc = m.get("accuracy") or {}
        summary = acc.get("summary") or {}
        gate = acc.get("gate_metric")
        values = {
            "latency_p50_ms": lat.get("p50_ms"), "latency_p95_ms": lat.get("p95_ms"),
            "speedup_vs_fp32": lat.get("speedup_vs_fp32"), "size_bytes": m.get("size_bytes"),
            "accuracy_drop": acc.get("drop"), "cosine_min": summary.get("cosine_min"),
        }
        if isinstance(gate, str) and gate != "cosine":
            values[gate] = summary.get(gate)
        for key, v in values.items():
            num = _num(v)
            if num is not None:
                out[f"edgeops.{target}.{key}"] = num
    return out


def build_tags(bundle_name: str, bundle_version: str, bundle_sha256: str,
               targets: list[str], source_sha256: str) -> dict[str, str]:
    """Tags for the registered model version a bundle was built from."""
    return {TAG_BUNDLE: f"{bundle_name}-{bundle_version}", TAG_BUNDLE_SHA256: bundle_sha256,
            TAG_TARGETS: ",".join(sorted(targets)), TAG_SOURCE_SHA256: source_sha256}


def deployment_tag(deployment_id: str, status: str, reason: str | None) -> tuple[str, str]:
    """One tag per deployment: ``edgeops.deployment.<id>`` = ``completed`` or ``aborted: why``."""
    value = status if not reason else f"{status}: {reason}"
    return _TAG_DEPLOYMENT + deployment_id, value[:_MAX_TAG_VALUE]

"""``--mlflow-log``: a finished build's reports, metrics and tags, sent to its source run/version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeops.bundle.lineage import Lineage
from edgeops.registry.mlflow_registry import MlflowRegistry, sha256_file
from edgeops.registry.results import build_metrics, build_tags

__all__ = ["log_build_results"]


def log_build_results(registry: MlflowRegistry, lineage: Lineage, paths: dict[str, Path],
                      source_sha256: str) -> dict[str, Any]:
    """Log to the run and tag the version; returns what was logged (for --json)."""
    report = json.loads(paths["report_json"].read_text())
    metrics = build_metrics(report)
    tags = build_tags(report["name"], report["version"], sha256_file(paths["bundle"]),
                      list(report["targets"]), source_sha256)
    artifact_dir = f"edgeops/{report['name']}-{report['version']}"
    registry.log_build(lineage.run_id, lineage.model_name, lineage.model_version,
                       [paths["report_json"], paths["report_md"]], artifact_dir, metrics, tags)
    return {"run_id": lineage.run_id, "model_name": lineage.model_name,
            "model_version": lineage.model_version, "artifact_dir": artifact_dir,
            "metrics": sorted(metrics), "tags": tags}

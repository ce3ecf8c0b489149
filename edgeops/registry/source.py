"""Turn what `edgeops build` was given (paths or registry URIs) into local files plus lineage.

Registry URIs are downloaded into the build's scratch directory, so a failed build leaves
nothing behind. Each input gets a digest: SHA-256 of the bytes read, and DVC's md5 when the
path is DVC-tracked. A bundle carries :class:`edgeops.bundle.Lineage` when its model came from
a registry, or when DVC tracks any of its inputs; a plain local build stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import edgeops
from edgeops.bundle.lineage import DataDigest, Lineage
from edgeops.registry.dvc import dvc_md5
from edgeops.registry.uri import is_registry_uri, parse_registry_uri

if TYPE_CHECKING:
    from edgeops.registry.mlflow_registry import MlflowRegistry

__all__ = ["PreparedSources", "prepare_sources"]


@dataclass(frozen=True)
class PreparedSources:
    model: Path
    calibration: Path | None
    validation: Path | None
    lineage: Lineage | None
    registry: MlflowRegistry | None      # when any input came from MLflow
    model_sha256: str | None


def _local_digest(given: str, path: Path) -> DataDigest:
    from edgeops.registry.mlflow_registry import sha256_file

    sha = sha256_file(path) if path.is_file() else None
    return DataDigest(uri=path.name if path.is_file() else given, sha256=sha, dvc_md5=dvc_md5(path))


def prepare_sources(model: str, calibration: str | None, validation: str | None,
                    scratch: Path, *, need_registry: bool = False) -> PreparedSources:
    """Resolve and download registry inputs into ``scratch``; digest every input."""
    given = {"model": model, "calibration": calibration, "validation": validation}
    registry: MlflowRegistry | None = None
    if need_registry or any(v is not None and is_registry_uri(v) for v in given.values()):
        from edgeops.registry.mlflow_registry import MlflowRegistry

        for v in given.values():     # malformed URIs fail before any network call
            if v is not None and is_registry_uri(v):
                parse_registry_uri(v)
        registry = MlflowRegistry()
    data: dict[str, DataDigest] = {}
    paths: dict[str, Path | None] = {}
    fetched = None
    for kind, value in given.items():
        if value is None:
            paths[kind] = None
        elif is_registry_uri(value) and kind == "model":
            assert registry is not None
            fetched = registry.fetch(registry.resolve(value), scratch / "model")
            paths[kind] = fetched.path
            data[kind] = DataDigest(uri=fetched.resolved.download_uri, sha256=fetched.sha256)
        elif is_registry_uri(value):
            assert registry is not None
            local = registry.fetch_data(value, scratch / kind)
            paths[kind] = local
            sha = _local_digest(value, local).sha256
            data[kind] = DataDigest(uri=value, sha256=sha)
        else:
            paths[kind] = Path(value)
            if Path(value).exists():
                data[kind] = _local_digest(value, Path(value))
    lineage = None
    if fetched is not None:
        r = fetched.resolved
        lineage = Lineage(source_uri=model, edgeops_version=edgeops.__version__,
                          tracking_uri=registry.public_uri if registry else None,
                          model_name=r.name, model_version=r.version, alias=r.alias,
                          run_id=r.run_id, experiment_id=r.experiment_id,
                          git_commit=r.git_commit, data=data)
    elif registry is not None or any(d.dvc_md5 for d in data.values()):
        lineage = Lineage(source_uri=data["model"].uri if "model" in data else model,
                          edgeops_version=edgeops.__version__,
                          tracking_uri=registry.public_uri if registry else None,
                          data=data)
    return PreparedSources(model=paths["model"] or Path(model), calibration=paths["calibration"],
                           validation=paths["validation"], lineage=lineage, registry=registry,
                           model_sha256=fetched.sha256 if fetched else None)

"""Where a bundle's model came from: registry, run, commit and data, signed with the manifest.

A bundle built from an MLflow registry (``models:/NAME@ALIAS``) or run (``runs:/ID/PATH``)
records the tracking server, the model name, version and alias at build time, the run and the
run's git commit, and a digest for each data set (the DVC ``.dvc`` hash when the data is tracked
by DVC, else SHA-256). From a device, one lookup leads back to the run that trained its model.

I/O-free like the rest of the manifest: built by :meth:`Lineage.from_dict` (which validates) or
the constructor, serialised by :meth:`Lineage.to_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from edgeops.errors import InvalidBundleError

__all__ = ["DataDigest", "Lineage"]

_DATA_KINDS = ("calibration", "validation", "model")


def _opt_str(d: dict[str, Any], key: str, where: str) -> str | None:
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidBundleError(f"manifest {where}.{key} must be a string")
    return value


@dataclass(frozen=True)
class DataDigest:
    """One input of the build (model file or data set) pinned by digest.

    ``sha256`` is the digest of the bytes edgeops read; ``dvc_md5`` the hash DVC records for the
    path (``PATH.dvc``), present when the path is DVC-tracked, so ``dvc`` users can match it.
    """

    uri: str
    sha256: str | None = None
    dvc_md5: str | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> DataDigest:
        if not isinstance(d, dict) or not isinstance(d.get("uri"), str):
            raise InvalidBundleError(f"manifest {where} must be an object with a 'uri'")
        return cls(uri=d["uri"], sha256=_opt_str(d, "sha256", where),
                   dvc_md5=_opt_str(d, "dvc_md5", where))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "sha256": self.sha256, "dvc_md5": self.dvc_md5}


@dataclass(frozen=True)
class Lineage:
    """The signed record of a bundle's origin (manifest key ``lineage``)."""

    source_uri: str                       # as given to `edgeops build`
    edgeops_version: str
    tracking_uri: str | None = None       # MLflow tracking server, credentials removed
    model_name: str | None = None
    model_version: str | None = None
    alias: str | None = None              # the alias the build resolved, if any
    run_id: str | None = None
    experiment_id: str | None = None
    git_commit: str | None = None         # the run's mlflow.source.git.commit tag
    data: dict[str, DataDigest] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.data) - set(_DATA_KINDS))
        if unknown:
            raise InvalidBundleError(f"manifest lineage.data has unknown entries {unknown}",
                                     hint=f"expected {', '.join(_DATA_KINDS)}")

    @property
    def from_mlflow(self) -> bool:
        return self.tracking_uri is not None and (self.run_id is not None
                                                  or self.model_name is not None)

    def links(self) -> dict[str, str]:
        """Web UI links into the MLflow server (only for http(s) tracking URIs)."""
        base = (self.tracking_uri or "").rstrip("/")
        if not base.startswith(("http://", "https://")):
            return {}
        out: dict[str, str] = {}
        if self.run_id and self.experiment_id:
            out["run"] = f"{base}/#/experiments/{quote(self.experiment_id)}/runs/{quote(self.run_id)}"
        if self.model_name and self.model_version:
            out["model_version"] = (f"{base}/#/models/{quote(self.model_name)}"
                                    f"/versions/{quote(self.model_version)}")
        return out

    @classmethod
    def from_dict(cls, d: Any) -> Lineage:
        where = "lineage"
        if not isinstance(d, dict):
            raise InvalidBundleError("manifest lineage is not an object")
        source_uri = d.get("source_uri")
        version = d.get("edgeops_version")
        if not isinstance(source_uri, str) or not isinstance(version, str):
            raise InvalidBundleError("manifest lineage needs 'source_uri' and 'edgeops_version'")
        data = d.get("data", {})
        if not isinstance(data, dict):
            raise InvalidBundleError("manifest lineage.data is not an object")
        return cls(source_uri=source_uri, edgeops_version=version,
                   tracking_uri=_opt_str(d, "tracking_uri", where),
                   model_name=_opt_str(d, "model_name", where),
                   model_version=_opt_str(d, "model_version", where),
                   alias=_opt_str(d, "alias", where), run_id=_opt_str(d, "run_id", where),
                   experiment_id=_opt_str(d, "experiment_id", where),
                   git_commit=_opt_str(d, "git_commit", where),
                   data={k: DataDigest.from_dict(v, f"{where}.data.{k}")
                         for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"source_uri": self.source_uri, "edgeops_version": self.edgeops_version,
                "tracking_uri": self.tracking_uri, "model_name": self.model_name,
                "model_version": self.model_version, "alias": self.alias,
                "run_id": self.run_id, "experiment_id": self.experiment_id,
                "git_commit": self.git_commit,
                "data": {k: v.to_dict() for k, v in sorted(self.data.items())}}

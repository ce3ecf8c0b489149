"""The bundle manifest: a typed, I/O-free model with one parser and one serialiser.

The manifest is what gets signed, so it must serialise deterministically: canonical JSON
(sorted keys, no whitespace, UTF-8). It is only ever built by :func:`Manifest.from_bytes` or by
the constructors below, and both validate, so a ``Manifest`` in hand is always well-formed.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeops.bundle.lineage import Lineage
from edgeops.drift.reference import DriftReference
from edgeops.errors import InvalidBundleError

__all__ = [
    "MANIFEST_SCHEMA",
    "ArtifactEntry",
    "FileRef",
    "Manifest",
    "TensorSpec",
    "canonical_json",
]

MANIFEST_SCHEMA = "edgeops.manifest/v1"
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, compact separators, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _need(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise InvalidBundleError(f"manifest {where} is missing field '{key}'")
    value = d[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidBundleError(f"manifest {where}.{key} has the wrong type ({type(value).__name__})")
    return value


def check_safe_path(path: str, where: str) -> str:
    """A relative POSIX path with no '..', no absolute root and only plain characters."""
    if not _SAFE_PATH.match(path) or any(part in (".", "..") for part in path.split("/")):
        raise InvalidBundleError(f"{where}: unsafe path '{path}' (absolute, '..' or odd characters)")
    return path


def parse_version(version: str) -> tuple[int, int, int]:
    """The numeric core of a semantic version, for ordering."""
    m = _SEMVER.match(version)
    if not m:
        raise InvalidBundleError(f"'{version}' is not a semantic version (MAJOR.MINOR.PATCH)",
                                 hint="use a version such as 1.4.0")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: shapes may hold symbolic (dynamic) dims as strings.

    For inputs, ``batch_axis`` says where a sample's batch of one goes (golden inputs are
    stored with the samples axis in its place, first; ``None``: the input has no batch axis and
    a golden sample is fed whole) and ``state_from`` names the output whose value a streaming
    model feeds back into this input at the next step (golden samples are replayed in order).
    Both are written only when they differ from the defaults (0, none), so older manifests
    read and re-serialise unchanged.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    layout: str | None = None
    batch_axis: int | None = 0
    state_from: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> TensorSpec:
        shape = _need(d, "shape", list, where)
        if not all(isinstance(s, int | str) and not isinstance(s, bool) for s in shape):
            raise InvalidBundleError(f"manifest {where}.shape must hold ints or dim names")
        layout = d.get("layout")
        if layout is not None and not isinstance(layout, str):
            raise InvalidBundleError(f"manifest {where}.layout must be a string")
        axis = d.get("batch_axis", 0)
        if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool)
                                 or not 0 <= axis < max(len(shape), 1)):
            raise InvalidBundleError(f"manifest {where}.batch_axis must be an axis of the "
                                     "shape or null")
        state_from = d.get("state_from")
        if state_from is not None and not isinstance(state_from, str):
            raise InvalidBundleError(f"manifest {where}.state_from must be an output name")
        return cls(name=_need(d, "name", str, where), dtype=_need(d, "dtype", str, where),
                   shape=tuple(shape), layout=layout, batch_axis=axis, state_from=state_from)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                               "layout": self.layout}
        if self.batch_axis != 0:
            out["batch_axis"] = self.batch_axis
        if self.state_from is not None:
            out["state_from"] = self.state_from
        return out


@dataclass(frozen=True)
class FileRef:
    """A file inside the bundle, pinned by digest and size."""

    path: str
    sha256: str
    size: int

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> FileRef:
        path = check_safe_path(_need(d, "path", str, where), f"manifest {where}.path")
        sha = _need(d, "sha256", str, where)
        if not _SHA256.match(sha):
            raise InvalidBundleError(f"manifest {where}.sha256 is not a hex SHA-256 digest")
        size = _need(d, "size", int, where)
        if size < 0:
            raise InvalidBundleError(f"manifest {where}.size is negative")
        return cls(path=path, sha256=sha, size=size)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class ArtifactEntry:
    """One per-target artifact and everything a device needs to load and health-check it."""

    target: str
    file: FileRef
    format: str                      # "onnx" | "tflite"
    runtime: str                     # "onnxruntime" | "litert"
    providers: tuple[str, ...]
    precision: str                   # "fp32" | "fp16" | "int8" | "int8-dynamic" | ...
    golden: FileRef | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # quantisation choices, float nodes

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> ArtifactEntry:
        golden = d.get("golden")
        providers = _need(d, "providers", list, where)
        tolerance = d.get("tolerance", {})
        if not isinstance(tolerance, dict) or not all(
                isinstance(v, int | float) for v in tolerance.values()):
            raise InvalidBundleError(f"manifest {where}.tolerance must map names to numbers")
        return cls(
            target=_need(d, "target", str, where),
            file=FileRef.from_dict(_need(d, "file", dict, where), f"{where}.file"),
            format=_need(d, "format", str, where),
            runtime=_need(d, "runtime", str, where),
            providers=tuple(str(p) for p in providers),
            precision=_need(d, "precision", str, where),
            golden=FileRef.from_dict(golden, f"{where}.golden") if golden is not None else None,
            metrics=dict(d.get("metrics", {})),
            tolerance={k: float(v) for k, v in tolerance.items()},
            details=dict(d.get("details", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "file": self.file.to_dict(), "format": self.format,
            "runtime": self.runtime, "providers": list(self.providers),
            "precision": self.precision,
            "golden": self.golden.to_dict() if self.golden else None,
            "metrics": self.metrics, "tolerance": self.tolerance, "details": self.details,
        }


@dataclass(frozen=True)
class Manifest:
    """What a bundle is: the signed description of a model version and its artifacts."""

    name: str
    version: str
    source_sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    artifacts: tuple[ArtifactEntry, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] | None = None
    baseline: dict[str, Any] = field(default_factory=dict)   # per-input stats for drift
    drift: DriftReference | None = None     # bins + reference counts (edgeops/drift)
    min_agent_version: str = "0.1.0"
    created: str | None = None
    lineage: Lineage | None = None   # registry/run/data origin; absent for plain local builds

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidBundleError(
                f"bundle name '{self.name}' is invalid",
                hint="use lower-case letters, digits, '.', '_' or '-' (at most 64 characters)")
        parse_version(self.version)
        parse_version(self.min_agent_version)
        if not _SHA256.match(self.source_sha256):
            raise InvalidBundleError("manifest source_sha256 is not a hex SHA-256 digest")
        if not self.artifacts:
            raise InvalidBundleError("manifest lists no artifacts", hint="build at least one --target")
        targets = [a.target for a in self.artifacts]
        if len(set(targets)) != len(targets):
            raise InvalidBundleError(f"manifest lists a target twice: {sorted(targets)}")
        paths = [f.path for f in self.files()]
        if len(set(paths)) != len(paths):
            raise InvalidBundleError("manifest lists one file path twice")

    # -- queries ---------------------------------------------------------------------------
    def artifact_for(self, target: str) -> ArtifactEntry | None:
        return next((a for a in self.artifacts if a.target == target), None)

    def files(self) -> list[FileRef]:
        """Every file the manifest pins, artifacts and golden data alike."""
        out: list[FileRef] = []
        for a in self.artifacts:
            out.append(a.file)
            if a.golden is not None:
                out.append(a.golden)
        return out

    @property
    def bundle_filename(self) -> str:
        return f"{self.name}-{self.version}.edgebundle"

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # "lineage" only when present, so bundles built without one keep their exact bytes.
        extra = {"lineage": self.lineage.to_dict()} if self.lineage is not None else {}
        return extra | {
            "schema": MANIFEST_SCHEMA,
            "name": self.name, "version": self.version, "created": self.created,
            "min_agent_version": self.min_agent_version,
            "source": {**self.source, "sha256": self.source_sha256},
            "provenance": self.provenance,
            "signature": {"inputs": [t.to_dict() for t in self.inputs],
                          "outputs": [t.to_dict() for t in self.outputs],
                          "preprocessing": self.preprocessing},
            "baseline": self.baseline,
            "artifacts": [a.to_dict() for a in sorted(self.artifacts, key=lambda a: a.target)],
        } | ({"drift": self.drift.to_dict()} if self.drift is not None else {})

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            d = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidBundleError(f"manifest is not valid JSON: {exc}") from None
        if not isinstance(d, dict):
            raise InvalidBundleError("manifest is not a JSON object")
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        schema = _need(d, "schema", str, "")
        if schema != MANIFEST_SCHEMA:
            raise InvalidBundleError(f"manifest schema '{schema}' is not supported",
                                     hint=f"this edgeops reads {MANIFEST_SCHEMA}; upgrade edgeops")
        source = _need(d, "source", dict, "")
        sig = _need(d, "signature", dict, "")
        arts = _need(d, "artifacts", list, "")
        created = d.get("created")
        pre = sig.get("preprocessing")
        lineage = d.get("lineage")
        return cls(
            name=_need(d, "name", str, ""),
            version=_need(d, "version", str, ""),
            source_sha256=_need(source, "sha256", str, "source"),
            source={k: v for k, v in source.items() if k != "sha256"},
            inputs=tuple(TensorSpec.from_dict(t, f"signature.inputs[{i}]")
                         for i, t in enumerate(_need(sig, "inputs", list, "signature"))),
            outputs=tuple(TensorSpec.from_dict(t, f"signature.outputs[{i}]")
                          for i, t in enumerate(_need(sig, "outputs", list, "signature"))),
            preprocessing=pre if isinstance(pre, dict) else None,
            artifacts=tuple(ArtifactEntry.from_dict(a, f"artifacts[{i}]") if isinstance(a, dict)
                            else _bad(f"manifest artifacts[{i}] is not an object")
                            for i, a in enumerate(arts)),
            provenance=dict(_need(d, "provenance", dict, "")),
            baseline=dict(d.get("baseline", {})),
            drift=_drift(d.get("drift")),
            min_agent_version=_need(d, "min_agent_version", str, ""),
            created=created if isinstance(created, str) else None,
            lineage=Lineage.from_dict(lineage) if lineage is not None else None,
        )


def _drift(d: Any) -> DriftReference | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise InvalidBundleError("manifest drift is not an object")
    return DriftReference.from_dict(d)


def _bad(message: str) -> ArtifactEntry:
    raise InvalidBundleError(message)


def manifest_summary(m: Manifest) -> dict[str, Any]:
    """A compact dict for `bundle inspect` and listings."""
    d = m.to_dict()
    d["artifacts"] = [
        {k: v for k, v in asdict(a).items() if k in ("target", "precision", "runtime")}
        | {"size": a.file.size, "sha256": a.file.sha256, "metrics": a.metrics}
        for a in m.artifacts
    ]
    return d

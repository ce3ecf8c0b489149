"""The converter's public contract: a build request in, accepted per-target artifacts out.

``edgeops build`` (edgeops/cli) calls :func:`converters.build.build_artifacts` with a
:class:`BuildRequest`; each target profile's ``format`` selects a backend registered with
:func:`register_backend` (``onnx`` in converters/onnx_backend, ``tflite`` in converters/tflite).
A backend returns a :class:`BuiltArtifact` only after the artifact has been loaded in its real
runtime and compared with the FP32 source model; anything else raises an
:class:`edgeops.errors.EdgeOpsError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from converters.context import SourceData
from edgeops.targets import CPU_PROVIDERS, TargetProfile

__all__ = [
    "BACKENDS",
    "BACKEND_MODULES",
    "Backend",
    "BackendContext",
    "BuildRequest",
    "BuiltArtifact",
    "ProgressFn",
    "get_backend",
    "register_backend",
    "timed_on_target",
]

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class BuildRequest:
    model: Path
    name: str
    version: str
    targets: tuple[str, ...]
    precision: str | None = None                       # None: each profile's default
    # A path (.npz, .npy directory, images) or, from Python, an iterable of feed dicts, a
    # callable returning one, or an ORT CalibrationDataReader (converters/feeds).
    calibration: Path | Any | None = None
    validation: Path | Any | None = None
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    max_accuracy_drop: float = 0.01                    # relative, on the chosen metric
    calibration_method: str = "minmax"                 # minmax | entropy | percentile
    keep_io_layout: bool = False                       # TFLite: keep ONNX NCHW I/O
    golden_samples: int = 4
    threads: int = 1                                   # latency measurement threads
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltArtifact:
    """An accepted artifact on disk, with what the manifest needs to describe it."""

    target: str
    path: Path
    format: str
    runtime: str
    providers: tuple[str, ...]
    precision: str
    golden_path: Path                                  # npz: input/<name>, output/<name>
    metrics: dict[str, Any]                            # latency, size, accuracy vs FP32
    tolerance: dict[str, float]                        # for on-device golden checks
    details: dict[str, Any] = field(default_factory=dict)  # quantisation choices, float nodes


def timed_on_target(runtime: str, providers: tuple[str, ...], measured: str | None) -> bool:
    """Whether a latency timed on ``measured`` describes the device's own provider.

    ONNX backends record the provider they timed on; LiteRT figures are XNNPACK (CPU). A
    cuda-gpu artifact timed on CUDA counts even when TensorRT (its first choice) is absent;
    timed on the build machine's CPU, never: a tiny model can be faster there than on the GPU,
    and a budget from there would make the device's health check roll back a good model.
    The one rule behind both the build's warning and what is signed (converters/package.py).
    """
    measured = measured or ("XNNPACK" if runtime == "litert" else "CPUExecutionProvider")
    intended = providers[0] if providers else "CPUExecutionProvider"
    return measured == intended or (measured in providers and measured not in CPU_PROVIDERS)


@dataclass(frozen=True)
class BackendContext:
    """What a backend gets: the request, its profile, a scratch dir, and the source model with
    its data and FP32 reference (the same :class:`SourceData` for every target of a build)."""

    request: BuildRequest
    profile: TargetProfile
    precision: str
    workdir: Path
    progress: ProgressFn
    data: SourceData


class Backend(Protocol):
    def __call__(self, ctx: BackendContext) -> BuiltArtifact: ...


BACKENDS: dict[str, Backend] = {}

# Backends import heavy toolchains, so each lives in its own module, imported on first use.
BACKEND_MODULES: dict[str, str] = {"onnx": "converters.onnx_backend", "tflite": "converters.tflite"}


def register_backend(fmt: str, backend: Backend) -> None:
    BACKENDS[fmt] = backend


def get_backend(fmt: str) -> Backend:
    """The backend for an artifact format; its module registers it on import."""
    if fmt not in BACKENDS:
        import importlib

        importlib.import_module(BACKEND_MODULES[fmt])
    return BACKENDS[fmt]

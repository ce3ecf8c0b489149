"""Load one bundle artifact in the runtime and execution provider its manifest names.

The device agent's loader (device_agent/runtime.py) had not landed when this suite was written,
so this is a deliberately small one with a different job: it must *prove* which provider runs
the model. ONNX Runtime falls back to CPU without an error when a provider cannot start, which
is exactly what an on-device check exists to catch, so the loader compares what was asked for
with ``session.get_providers()`` and tells "hardware absent" (skip) from "fell back" (fail).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeops.bundle import ArtifactEntry
from edgeops.errors import BadContentError

__all__ = [
    "CPU_PROVIDERS",
    "LITERT_DELEGATE_LIBRARIES",
    "HardwareMissing",
    "LoadedModel",
    "ModelLoadError",
    "ProviderFallbackError",
    "intended_provider",
    "load_model",
    "require_active",
    "require_available",
    "runtime_versions",
]

CPU_PROVIDERS = frozenset({"CPUExecutionProvider", "XNNPACK"})
# Shared libraries of LiteRT delegates; the override env var points at a vendor's file.
LITERT_DELEGATE_LIBRARIES: Mapping[str, tuple[str, str]] = {
    "EdgeTPUDelegate": ("libedgetpu.so.1", "EDGEOPS_EDGETPU_LIB"),
    "EthosUDelegate": ("libethosu_op_delegate.so", "EDGEOPS_ETHOSU_LIB"),
}
QNN_BACKEND_ENV = "EDGEOPS_QNN_BACKEND"   # path of libQnnHtp.so on Qualcomm devices


class HardwareMissing(Exception):
    """The accelerator or its software is absent here: the check cannot run on this machine."""


class ProviderFallbackError(BadContentError):
    """The intended provider is present but the session runs elsewhere (silent CPU fallback)."""

    default_hint = "check the provider's libraries and drivers on the device (see --debug logs)"


class ModelLoadError(BadContentError):
    """The runtime refused the artifact (corrupted file, unsupported op, wrong format)."""

    default_hint = "rebuild the bundle for this target with `edgeops build`"


class LoadedModel(Protocol):
    runtime: str
    intended_provider: str
    active_providers: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def intended_provider(artifact: ArtifactEntry, override: str | None = None) -> str:
    """The provider the check insists on: ``override``, else the first the manifest lists."""
    if override:
        return override
    if not artifact.providers:
        return "CPUExecutionProvider" if artifact.runtime == "onnxruntime" else "XNNPACK"
    return artifact.providers[0]


@dataclass
class _OrtModel:
    session: Any
    intended_provider: str
    active_providers: tuple[str, ...]
    runtime: str = "onnxruntime"

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        feeds = {i.name: inputs[i.name] for i in self.session.get_inputs()}
        return dict(zip(names, self.session.run(names, feeds), strict=True))


def require_available(intended: str, available: Sequence[str], runtime: str) -> None:
    """Raise :class:`HardwareMissing` (skip, naming it) when ``intended`` is not installed."""
    if intended not in available:
        raise HardwareMissing(f"{intended} is not available in this {runtime} build "
                              f"(available: {', '.join(available) or 'none'})")


def require_active(intended: str, active: Sequence[str]) -> None:
    """Raise :class:`ProviderFallbackError` unless ``intended`` is the session's first provider.

    ONNX Runtime lists the providers a session actually uses, best first; an installed provider
    that failed to start (missing driver, library or unsupported op set) is simply absent.
    """
    if not active or active[0] != intended:
        raise ProviderFallbackError(
            f"{intended} was requested and is installed, but the session runs on "
            f"{', '.join(active) or 'nothing'}: the provider silently fell back")


def _load_ort(path: Path, artifact: ArtifactEntry, intended: str, threads: int) -> _OrtModel:
    import onnxruntime as ort

    available = ort.get_available_providers()
    require_available(intended, available, f"onnxruntime {ort.__version__}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    providers: list[Any] = [p for p in artifact.providers if p in available] or [intended]
    if intended not in providers:
        providers.insert(0, intended)
    if intended == "QNNExecutionProvider":
        backend = os.environ.get(QNN_BACKEND_ENV, "libQnnHtp.so")
        providers = [(p, {"backend_path": backend}) if p == intended else p for p in providers]
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # ORT raises its own pybind classes; all mean "cannot load"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"onnxruntime cannot load {artifact.file.path}: {first[:300]}"
                             ) from None
    active = tuple(session.get_providers())
    require_active(intended, active)
    return _OrtModel(session, intended, active)


@dataclass
class _LiteRtModel:
    interpreter: Any
    output_names: tuple[str, ...]
    intended_provider: str
    active_providers: tuple[str, ...]
    runtime: str = "litert"
    _shapes: tuple[tuple[int, ...], ...] | None = None
    _inputs: list[dict[str, Any]] = field(default_factory=list)
    _outputs: list[tuple[str, int]] = field(default_factory=list)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self.interpreter
        if not self._inputs:
            self._inputs = list(it.get_input_details())
        feeds = [self._feed(d, inputs, i) for i, d in enumerate(self._inputs)]
        shapes = tuple(tuple(np.shape(f)) for f in feeds)
        if shapes != self._shapes:            # resize only when the batch shape changes
            for d, shape in zip(self._inputs, shapes, strict=True):
                it.resize_tensor_input(d["index"], list(shape), strict=False)
            it.allocate_tensors()
            self._inputs = list(it.get_input_details())
            self._outputs = self._map_outputs(it.get_output_details())
            self._shapes = shapes
        for d, f in zip(self._inputs, feeds, strict=True):
            it.set_tensor(d["index"], np.ascontiguousarray(f, dtype=d["dtype"]))
        it.invoke()
        return {name: np.array(it.get_tensor(index)) for name, index in self._outputs}

    def _map_outputs(self, details: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
        by_name = {d["name"]: d for d in details}
        mapped = []
        for pos, name in enumerate(self.output_names):
            d = by_name.get(name, details[pos] if pos < len(details) else None)
            if d is not None:
                mapped.append((name, int(d["index"])))
        return mapped

    @staticmethod
    def _feed(detail: Mapping[str, Any], inputs: Mapping[str, np.ndarray], pos: int) -> Any:
        if detail["name"] in inputs:
            return inputs[detail["name"]]
        return list(inputs.values())[pos]   # TFLite may rename tensors; fall back to order


def _load_litert(path: Path, artifact: ArtifactEntry, intended: str, threads: int,
                 output_names: Sequence[str]) -> _LiteRtModel:
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
    except ImportError:
        raise HardwareMissing("the LiteRT runtime (pip package ai-edge-litert) is not "
                              "installed") from None
    delegates = []
    if intended not in CPU_PROVIDERS:
        lib, env = LITERT_DELEGATE_LIBRARIES.get(intended, (None, None))
        if lib is None:
            raise HardwareMissing(f"no known delegate library for {intended}")
        lib = os.environ.get(env or "", lib)
        try:
            delegates.append(load_delegate(lib))
        except (ValueError, OSError) as exc:
            raise HardwareMissing(f"{intended} delegate {lib} cannot be loaded: "
                                  f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads,
                             experimental_delegates=delegates or None)
        interp.allocate_tensors()
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad flatbuffers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"LiteRT cannot load {artifact.file.path}: {first[:300]}") from None
    active = (intended,) if delegates else ("XNNPACK",)
    return _LiteRtModel(interp, tuple(output_names), intended, active)


def load_model(path: Path, artifact: ArtifactEntry, output_names: Sequence[str],
               threads: int = 1, provider: str | None = None) -> LoadedModel:
    """Load ``path`` as ``artifact`` says; raise :class:`HardwareMissing` when this machine
    lacks the provider, :class:`ProviderFallbackError` when it silently falls back and
    :class:`ModelLoadError` when the runtime rejects the file."""
    intended = intended_provider(artifact, provider)
    if artifact.runtime == "onnxruntime":
        return _load_ort(path, artifact, intended, threads)
    if artifact.runtime == "litert":
        return _load_litert(path, artifact, intended, threads, output_names)
    raise ModelLoadError(f"artifact {artifact.target} names runtime '{artifact.runtime}', "
                         "which this suite cannot load (known: onnxruntime, litert)")


def runtime_versions() -> dict[str, str]:
    """Versions of the runtimes installed here, for the report."""
    import importlib.metadata as md

    out = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-qnn", "ai-edge-litert",
                 "numpy", "edgeops"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out

"""Load one bundle artifact the way the device agent does, and prove which provider runs it.

Loading itself is the agent's loader (:func:`edgeops.runtime.load_runner`), so a blessing vouches
for the exact code path the device will use. What this module adds is the on-device proof the
agent does not need: ONNX Runtime falls back to CPU without an error when a provider cannot
start, which is exactly what an on-device check exists to catch. So the requested provider is
compared with the session's real one, and "hardware absent here" (skip, naming it) is told
apart from "present but fell back" (fail). A CPU that lacks the ISA an artifact was built for
(8-bit x86 weights without VNNI: :mod:`edgeops.cpu`) is hardware absent too: ONNX Runtime
would run it without an error and give wrong outputs, and a blessing must never vouch for that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeops.bundle import ArtifactEntry
from edgeops.cpu import CpuFacts, isa_shortfall, read_cpu_facts
from edgeops.errors import BadContentError
from edgeops.runtime import ModelLoadError, ModelRunner, load_runner
from edgeops.targets import CPU_PROVIDERS

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
    "require_isa",
    "runtime_versions",
]

# Shared libraries of LiteRT delegates; the env var points at a vendor's file when it differs.
LITERT_DELEGATE_LIBRARIES: Mapping[str, tuple[str, str]] = {
    "EdgeTPUDelegate": ("libedgetpu.so.1", "EDGEOPS_EDGETPU_LIB"),
    "EthosUDelegate": ("libethosu_op_delegate.so", "EDGEOPS_ETHOSU_LIB"),
}


class HardwareMissing(Exception):
    """The accelerator or its software is absent here: the check cannot run on this machine."""


class ProviderFallbackError(BadContentError):
    """The intended provider is present but the session runs elsewhere (silent CPU fallback)."""

    default_hint = "check the provider's libraries and drivers on the device"


class LoadedModel(Protocol):
    @property
    def runtime(self) -> str: ...
    @property
    def intended_provider(self) -> str: ...
    @property
    def active_providers(self) -> tuple[str, ...]: ...

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def intended_provider(artifact: ArtifactEntry, override: str | None = None) -> str:
    """The provider the check insists on: ``override``, else the first the manifest lists."""
    if override:
        return override
    if not artifact.providers:
        return "CPUExecutionProvider" if artifact.runtime == "onnxruntime" else "XNNPACK"
    return artifact.providers[0]


def require_available(intended: str, available: Sequence[str], runtime: str) -> None:
    """Raise :class:`HardwareMissing` (skip, naming it) when ``intended`` is not installed."""
    if intended not in available:
        raise HardwareMissing(f"{intended} is not available in this {runtime} build "
                              f"(available: {', '.join(available) or 'none'})")


def require_active(intended: str, active: Sequence[str]) -> None:
    """Raise :class:`ProviderFallbackError` unless ``intended`` is the session's first provider.

    ONNX Runtime lists the providers a session actually uses, best first; an installed provider
    that failed to start (missing driver or library) is simply absent from the list.
    """
    if not active or active[0] != intended:
        raise ProviderFallbackError(
            f"{intended} was requested and is installed, but the session runs on "
            f"{', '.join(active) or 'nothing'}: the provider silently fell back")


@dataclass
class _Loaded:
    """The agent's runner, fed and read by the manifest's tensor names."""

    runner: ModelRunner
    intended_provider: str
    active_providers: tuple[str, ...]
    output_names: tuple[str, ...]

    @property
    def runtime(self) -> str:
        return self.runner.runtime

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [t.name for t in self.runner.inputs]
        if set(names) != set(inputs) and len(names) == len(inputs):
            # LiteRT may rename tensors on conversion; the manifest's order is the contract.
            inputs = dict(zip(names, inputs.values(), strict=True))
        out = self.runner.run(inputs)
        if set(self.output_names) <= set(out):
            return {n: out[n] for n in self.output_names}
        by_position = [out[t.name] for t in self.runner.outputs]
        return dict(zip(self.output_names, by_position, strict=False))


def _load_delegates(intended: str) -> list[Any]:
    if intended in CPU_PROVIDERS:
        return []
    lib, env = LITERT_DELEGATE_LIBRARIES.get(intended, ("", ""))
    if not lib:
        raise HardwareMissing(f"no known delegate library for {intended}")
    lib = os.environ.get(env, lib)
    try:
        from ai_edge_litert.interpreter import load_delegate
    except ImportError:
        raise HardwareMissing("the LiteRT runtime is not installed: "
                              "pip install 'edgeops[tflite]'") from None
    try:
        return [load_delegate(lib)]
    except (ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise HardwareMissing(f"{intended} delegate {lib} cannot be loaded: {first}") from None


def require_isa(artifact: ArtifactEntry, cpu: CpuFacts) -> None:
    """Raise :class:`HardwareMissing` (skip, naming it) when ``cpu`` would compute the artifact
    wrongly: an ``x86-cpu-vnni`` INT8 artifact on an x86 CPU without VNNI."""
    shortfall = isa_shortfall(artifact, cpu)
    if shortfall is not None:
        raise HardwareMissing(f"{shortfall}; bless it on a unit with AVX-512 VNNI or AVX-VNNI "
                              "(or test the x86-cpu artifact here)")


def load_model(path: Path, artifact: ArtifactEntry, output_names: Sequence[str],
               threads: int = 1, provider: str | None = None,
               cpu: CpuFacts | None = None) -> LoadedModel:
    """Load ``path`` as ``artifact`` says; raise :class:`HardwareMissing` when this machine
    lacks the provider or the CPU features the artifact was built for (``cpu``: this
    machine's /proc/cpuinfo unless given), :class:`ProviderFallbackError` when it silently
    falls back and :class:`ModelLoadError` when the runtime rejects the file."""
    require_isa(artifact, cpu if cpu is not None else read_cpu_facts())
    intended = intended_provider(artifact, provider)
    if artifact.runtime == "onnxruntime":
        import onnxruntime as ort

        require_available(intended, ort.get_available_providers(),
                          f"onnxruntime {ort.__version__}")
        providers = [intended, *(p for p in artifact.providers if p != intended)]
        runner = load_runner(path, runtime="onnxruntime", providers=providers, threads=threads)
        active = tuple(getattr(runner, "active_providers", ()))
        require_active(intended, active)
    elif artifact.runtime in ("litert", "tflite"):
        delegates = _load_delegates(intended)
        runner = load_runner(path, runtime="litert", threads=threads, delegates=delegates)
        active = (intended,) if delegates else ("XNNPACK",)
    else:
        raise ModelLoadError(f"artifact {artifact.target} names runtime '{artifact.runtime}', "
                             "which this suite cannot load (known: onnxruntime, litert)")
    return _Loaded(runner, intended, active, tuple(output_names))


def runtime_versions() -> dict[str, str]:
    """Versions of the runtimes installed here, for the report."""
    import importlib.metadata as md

    out = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-qnn", "ai-edge-litert",
                 "tflite-runtime", "numpy", "edgeops"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    # What runs is the module Python imports, which need not be the "onnxruntime" distribution:
    # a GPU box can hold onnxruntime 1.30 (CPU) beside an onnxruntime-gpu 1.31 found first.
    import onnxruntime  # a base dependency

    out["onnxruntime"] = onnxruntime.__version__
    return out

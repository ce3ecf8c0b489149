"""Target profiles as data: what each hardware class gets, in one documented registry.

It lives in edgeops (the contracts layer) because the converters build for a profile, the fleet
checks a device's target name and blessing hardware class against it, and the hardware tests
pick providers from it; none of those parts may import another.

A profile names the artifact format, the runtime and execution providers that load it, the
precisions it accepts (the first is the default) and the facts about the hardware that the
passes read (ISA features, whether shapes must be static). Adding a target means adding a
``TargetProfile`` here (or calling :func:`register` from a plug-in), not branching elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from edgeops.errors import UsageError

__all__ = ["CPU_PROVIDERS", "PROFILES", "TargetProfile", "get_profile", "hardware_class", "register"]

# Providers that run on the machine's own CPU: a latency measured on one of them is a target's
# own figure only when the target's first provider is one of them too (converters.api
# timed_on_target), and a hardware test loads no delegate for them (hardware_tests.runtime).
CPU_PROVIDERS = frozenset({"CPUExecutionProvider", "XNNPACK"})


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    format: str                       # "onnx" | "tflite"
    runtime: str                      # "onnxruntime" | "litert"
    providers: tuple[str, ...]        # execution providers / delegates, in preference order
    precisions: tuple[str, ...]       # accepted --precision values; the first is the default
    hardware: str                     # hardware class for blessing (hardware_tests)
    static_shapes: bool = False       # dynamic dims must be fixed with --input-shape
    options: Mapping[str, Any] = field(default_factory=dict)  # facts passes read (isa, quant...)

    @property
    def default_precision(self) -> str:
        return self.precisions[0]


_REGISTRY: dict[str, TargetProfile] = {}


def register(profile: TargetProfile) -> TargetProfile:
    if profile.name in _REGISTRY:
        raise ValueError(f"target profile {profile.name!r} registered twice")
    _REGISTRY[profile.name] = profile
    return profile


def get_profile(name: str) -> TargetProfile:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown target '{name}'",
                         hint=f"known targets: {', '.join(sorted(_REGISTRY))} "
                              "(see `edgeops targets`)") from None


PROFILES: Mapping[str, TargetProfile] = MappingProxyType(_REGISTRY)


def hardware_class(target: str) -> str | None:
    """The hardware class a target's blessing applies to (``TargetProfile.hardware``), if known."""
    profile = _REGISTRY.get(target)
    return profile.hardware if profile is not None else None

# The INT8 plan comes from what the target's CPUs have, never from the build machine: an x86
# device without VNNI (AVX2, AVX-512 without VNNI) saturates on 8-bit weights, so x86-cpu gets
# 7-bit weights, exact on every x86 CPU, and only a target that declares VNNI gets 8-bit ones
# (converters/onnx_plan.py). A separate target rather than a build flag: devices enrol with
# a target name, the agent picks the artifact by it and blessings are per hardware class, so a
# VNNI-only artifact can never reach a device that did not say it has VNNI.
register(TargetProfile(
    name="x86-cpu", format="onnx", runtime="onnxruntime", providers=("CPUExecutionProvider",),
    precisions=("int8", "fp32", "int8-dynamic"), hardware="x86_64",
    description="ONNX for ONNX Runtime's CPU provider on any x86-64 CPU (INT8 QDQ, 7-bit "
                "weights: exact with or without VNNI)",
    options={"isa": "x86_64", "vnni": False}))
register(TargetProfile(
    name="x86-cpu-vnni", format="onnx", runtime="onnxruntime",
    providers=("CPUExecutionProvider",), precisions=("int8", "fp32", "int8-dynamic"),
    hardware="x86_64-vnni",
    description="ONNX for ONNX Runtime's CPU provider on x86-64 CPUs with AVX-512 VNNI or "
                "AVX-VNNI only (INT8 QDQ, full 8-bit weights: wrong on CPUs without VNNI)",
    options={"isa": "x86_64", "vnni": True}))
register(TargetProfile(
    name="arm64-cpu", format="onnx", runtime="onnxruntime", providers=("CPUExecutionProvider",),
    precisions=("int8", "fp32", "int8-dynamic"), hardware="aarch64",
    description="ONNX for ONNX Runtime's CPU provider on ARM64 (INT8 QDQ, dot-product aware)",
    options={"isa": "arm64"}))
register(TargetProfile(
    name="cuda-gpu", format="onnx", runtime="onnxruntime",
    providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    precisions=("fp16", "fp32"), hardware="cuda",
    description="FP16 ONNX for the CUDA and TensorRT providers (I/O kept FP32)",
    options={"keep_io_types": True}))
register(TargetProfile(
    name="qnn-npu", format="onnx", runtime="onnxruntime",
    providers=("QNNExecutionProvider", "CPUExecutionProvider"),
    precisions=("int8", "int16"), hardware="qnn",
    description="QDQ ONNX shaped for Qualcomm's QNN provider (uint8/uint16 activations)",
    static_shapes=True, options={"activation_type": "uint8"}))
register(TargetProfile(
    name="tflite-cpu", format="tflite", runtime="litert", providers=("XNNPACK",),
    precisions=("fp32", "fp16", "int8-dynamic", "int8"), hardware="arm-litert",
    description="TFLite flatbuffer for LiteRT on ARM CPUs (XNNPACK), written without TensorFlow; "
                "int8 = full integer inside, float I/O",
    options={"quantization": "dynamic-range"}))
register(TargetProfile(
    name="edgetpu", format="tflite", runtime="litert", providers=("EdgeTPUDelegate", "XNNPACK"),
    precisions=("int8",), hardware="edgetpu", static_shapes=True,
    description="Full-integer INT8 TFLite (int8 I/O) for Coral Edge TPU; per-tensor quantisation",
    options={"per_channel": False, "io_dtype": "int8", "npu": "edgetpu"}))
register(TargetProfile(
    name="ethos-u", format="tflite", runtime="litert", providers=("EthosUDelegate", "XNNPACK"),
    precisions=("int8",), hardware="ethos-u", static_shapes=True,
    description="Full-integer INT8 TFLite (int8 I/O) for Arm Ethos-U microNPUs",
    options={"per_channel": "conv-only", "io_dtype": "int8", "npu": "ethos-u"}))

"""The INT8 quantisation plan: decided by the TARGET's CPU, never by the build machine's.

Why a module of its own: an artifact runs on the device, so what its weights may hold is a fact
about the device. ONNX Runtime's x86 u8s8 kernels differ by ISA (MLAS, ``qgemm_kernel_*``):

* AVX2 and AVX-512 without VNNI multiply on ``vpmaddubsw``, which adds pairs of u8*s8 products
  into *saturating* int16: with full 8-bit weights (up to 127) two products of 255*127 overflow,
  and the artifact is silently wrong on that device (``outlier_mlp``: channel cosine 0.83 on
  AVX2 vs 0.999 with 7-bit weights);
* AVX-512 VNNI and AVX-VNNI accumulate on ``vpdpbusd(s)`` straight into int32: no intermediate
  saturation, full 8-bit weights are exact.

7-bit weights (``reduce_range``) cannot saturate (2*255*64 < 32767), so they are exact on every
x86 CPU; neither can 8-bit weights on an input held to 0..127 (2*127*127 < 32767). The
``x86-cpu`` target gets one of the two per layer (``exact_split``: converters/x86_split chooses,
converters/x86_exact proves every artifact). The ``x86-cpu-vnni`` target declares VNNI
(``options["vnni"] = True``) and gets full 8-bit weights, which only a VNNI CPU runs correctly.
Before this module, the build machine's ``/proc/cpuinfo`` decided, so an artifact built on a VNNI
machine saturated on AVX2 devices while the build's accuracy gate (run on the build machine)
could not see it.

The build machine still matters for one thing: whether the gate and the timings it takes here
describe the target (:func:`build_machine_caveat`).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

from converters.ort_session import X86_MACHINES
from edgeops.cpu import X86_VNNI_ISA, CpuFacts, read_cpu_facts
from edgeops.errors import ConfigError

__all__ = ["QuantPlan", "build_machine_caveat", "cpu_facts", "plan_for", "target_isa"]

_ARM = ("arm64", "aarch64")


@dataclass(frozen=True)
class QuantPlan:
    """How a target is quantised, and why (recorded in the manifest's details)."""

    activation_type: str          # "uint8" | "int8" | "uint16"
    weight_type: str              # "int8" | "uint8"
    per_channel: bool
    reduce_range: bool
    activation_symmetric: bool
    qnn: bool
    reason: str
    target_isa: str = ""          # what the artifact's kernels need: see target_isa()
    # x86 without VNNI: per layer, 8-bit weights may replace 7-bit ones where the layer's input
    # is made 7-bit (0..127, clamped) instead; converters/x86_split chooses, x86_exact proves
    exact_split: bool = False


def cpu_facts(cpuinfo: str | None = None) -> dict[str, Any]:
    """ISA facts of this (build) machine, from /proc/cpuinfo flags (:mod:`edgeops.cpu` parses).

    They key measured choices (timings) and say whether the gate here is faithful to the
    target; they never choose the plan.
    """
    facts = read_cpu_facts() if cpuinfo is None else CpuFacts.parse(cpuinfo, platform.machine())
    return facts.to_dict()


def target_isa(profile_name: str, options: dict[str, Any]) -> str:
    """The ISA an INT8 artifact for this profile is built for, from the profile alone.

    ``"x86_64"`` (any x86-64 CPU: AVX2, AVX-512 with or without VNNI), ``"x86_64+vnni"``,
    ``"arm64"`` or ``"qnn-htp"``. A profile that quantises for a CPU must declare its ``isa``.
    """
    if options.get("activation_type") or profile_name.startswith("qnn"):
        return "qnn-htp"
    isa = options.get("isa")
    if isa in _ARM:
        return "arm64"
    if isa in X86_MACHINES:
        return X86_VNNI_ISA if options.get("vnni") is True else "x86_64"
    raise ConfigError(f"target profile {profile_name} declares no CPU ISA for INT8 "
                      f"(options['isa'] is {isa!r})",
                      hint="declare options={'isa': 'x86_64' | 'arm64'} (and 'vnni': True only "
                           "for CPUs that all have VNNI) in the profile: the plan comes from "
                           "the target, never the build machine")


def plan_for(profile_name: str, options: dict[str, Any], precision: str) -> QuantPlan:
    """Pure: the quantisation plan for a profile and precision, from the profile's facts only."""
    isa = target_isa(profile_name, options)
    if isa == "qnn-htp":
        act = "uint16" if precision == "int16" else "uint8"
        return QuantPlan(act, "uint8", per_channel=True, reduce_range=False,
                         activation_symmetric=False, qnn=True, target_isa=isa,
                         reason=f"QNN HTP runs asymmetric {act} activations with uint8 "
                                "weights; ORT's QNN overrides applied")
    if isa == "arm64":
        return QuantPlan("int8", "int8", per_channel=True, reduce_range=False,
                         activation_symmetric=False, qnn=False, target_isa=isa,
                         reason="ARM64: s8s8 QDQ maps onto sdot/smmla dot-product kernels; "
                                "no saturation, full 8-bit range")
    if isa == X86_VNNI_ISA:
        return QuantPlan("uint8", "int8", per_channel=True, reduce_range=False,
                         activation_symmetric=False, qnn=False, target_isa=isa,
                         reason=f"{profile_name} declares VNNI: u8s8 runs on vpdpbusd without "
                                "intermediate saturation; full 8-bit weights (wrong on x86 "
                                "CPUs without VNNI)")
    return QuantPlan("uint8", "int8", per_channel=True, reduce_range=True,
                     activation_symmetric=False, qnn=False, target_isa=isa, exact_split=True,
                     reason=f"{profile_name} does not declare VNNI: on AVX2 and AVX-512 without "
                            "VNNI u8s8 uses vpmaddubsw, whose int16 pairs saturate with 8-bit "
                            "weights and 8-bit activations; per layer, 7-bit weights "
                            "(reduce_range) or 8-bit weights with a 7-bit input (clamped to "
                            "127) are exact on every x86 CPU")


def build_machine_caveat(plan: QuantPlan, facts: dict[str, Any]) -> str | None:
    """Why what this build machine measured may not be the target's.

    ``None`` when it is faithful. Building 7-bit weights anywhere, or 8-bit weights on a VNNI
    machine, is: the build machine runs exactly what the target computes. Building for VNNI on
    an x86 machine without it, the accuracy gate is still faithful (every accuracy session sets
    ORT's ``session.x64quantprecision=1`` there and runs the exact U8U8 kernels, what vpdpbusd
    computes: converters/ort_session), but the performance choices and the latency are this
    machine's kernels (the default u8s8 path, vpmaddubsw), not a VNNI CPU's.
    An ARM64 build machine adds each 16-bit product into 32 bits (umull/smull + sadalp, or
    sdot), so its gate sees no saturation either; it skips the timings (recorded).
    """
    if plan.target_isa != X86_VNNI_ISA:
        return None
    if facts.get("machine", "") in X86_MACHINES and not facts.get("vnni"):
        return ("this build machine has no VNNI: the accuracy gate ran ONNX Runtime's exact "
                "U8U8 kernels (what a VNNI CPU computes), but the performance choices and the "
                "latency were timed on this machine's u8s8 kernels, not a VNNI CPU's; build on "
                "a VNNI machine for faithful timings")
    return None

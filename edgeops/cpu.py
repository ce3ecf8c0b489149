"""This machine's CPU facts, and whether it computes an artifact's INT8 kernels as they were built.

Why it lives in edgeops: the converters read the same flags to say whether a build machine's
accuracy gate is faithful to the target, and the device agent and the hardware suite read them
to refuse an artifact this CPU would compute wrongly; none of those parts may import another, so
the one parser sits below them.

The rule it guards (docs/CONVERTERS.md, "x86 plan"): an ``x86-cpu-vnni`` INT8 artifact has full
8-bit weights. ONNX Runtime's u8s8 kernels on an x86 CPU without VNNI (AVX2, AVX-512 without
VNNI) add pairs of products into a *saturating* int16 (``vpmaddubsw``), so such a CPU gives
wrong outputs without any error; with ``avx512_vnni`` or ``avx_vnni`` the products go straight
into int32 and the weights are exact. ARM64 kernels widen to 32 bits too (``smull``/``sadalp``,
``sdot``), so only an x86 (or unknown) CPU without the flag is refused. A refusal names what is
wrong; the caller adds what to do, which differs between a device and a test bench.

Everything here is pure apart from :func:`read_cpu_facts`, which reads ``/proc/cpuinfo``.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.bundle.manifest import ArtifactEntry
from edgeops.targets import PROFILES

__all__ = [
    "CPUINFO",
    "VNNI_FLAGS",
    "X86_VNNI_ISA",
    "CpuFacts",
    "artifact_needs_vnni",
    "isa_shortfall",
    "read_cpu_facts",
    "target_shortfall",
]

CPUINFO = Path("/proc/cpuinfo")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
# What converters.onnx_plan records in details.plan.target_isa for 8-bit x86 weights.
X86_VNNI_ISA = "x86_64+vnni"
# CPUs whose u8s8/s8s8 kernels accumulate in 32 bits: 8-bit weights are exact there.
_WIDENING = frozenset({"aarch64", "arm64"})
_INT8_PRECISIONS = ("int8", "int8-dynamic")


@dataclass(frozen=True)
class CpuFacts:
    """The machine's architecture and CPU flags; ``flags`` is None when they could not be read."""

    machine: str
    flags: frozenset[str] | None

    @classmethod
    def parse(cls, cpuinfo: str | None, machine: str) -> CpuFacts:
        """Facts from ``/proc/cpuinfo`` text (x86 ``flags`` lines, ARM ``Features`` lines).

        ``cpuinfo`` None or without any flags line means unknown flags, never "no flags":
        a check that needs one must then refuse rather than guess.
        """
        flags: set[str] = set()
        seen = False
        for line in (cpuinfo or "").splitlines():
            if line.startswith(("flags", "Features")) and ":" in line:
                seen = True
                flags.update(line.split(":", 1)[1].split())
        return cls(machine, frozenset(flags) if seen else None)

    @property
    def vnni(self) -> bool:
        return bool(self.flags and self.flags & VNNI_FLAGS)

    @property
    def widens_int8(self) -> bool:
        """INT8 products accumulate in 32 bits whatever the flags (ARM64)."""
        return self.machine.lower() in _WIDENING

    def to_dict(self) -> dict[str, Any]:
        """The shape converters record as ``details.build_machine``."""
        flags = self.flags or frozenset()
        return {"machine": self.machine, "vnni": self.vnni, "avx512": "avx512f" in flags,
                "avx2": "avx2" in flags, "arm_dotprod": "asimddp" in flags}


def read_cpu_facts(path: Path = CPUINFO, machine: str | None = None) -> CpuFacts:
    """This machine's facts (the only I/O here); unreadable ``path`` gives unknown flags."""
    try:
        text: str | None = path.read_text(errors="replace")
    except OSError:
        text = None
    return CpuFacts.parse(text, platform.machine() if machine is None else machine)


def _profile_declares_vnni(target: str) -> bool:
    profile = PROFILES.get(target)
    return profile is not None and profile.options.get("vnni") is True


def artifact_needs_vnni(entry: ArtifactEntry) -> bool:
    """Whether this artifact's weights are exact only on a VNNI CPU (when run on x86).

    The recorded plan decides (``details.plan.target_isa``, written since the plan comes from
    the target). Without one: an INT8 artifact for a profile that declares VNNI needs it, and
    so does an x86 INT8 artifact whose plan recorded full 8-bit weights (``reduce_range``
    false): builds before the target decided took 8-bit weights from a VNNI build machine.
    """
    plan = entry.details.get("plan")
    plan = plan if isinstance(plan, Mapping) else {}
    isa = plan.get("target_isa")
    if isinstance(isa, str) and isa:
        return isa == X86_VNNI_ISA
    if entry.precision not in _INT8_PRECISIONS:
        return False
    if _profile_declares_vnni(entry.target):
        return True
    profile = PROFILES.get(entry.target)
    x86 = profile is not None and profile.options.get("isa") in ("x86_64", "AMD64", "amd64")
    return x86 and plan.get("reduce_range") is False


def _cpu_lacks_vnni(cpu: CpuFacts) -> str | None:
    if cpu.widens_int8 or cpu.vnni:
        return None
    if cpu.flags is None:
        return (f"this {cpu.machine or 'unknown'} CPU's flags could not be read "
                f"({CPUINFO}), so VNNI cannot be confirmed")
    return f"this {cpu.machine or 'unknown'} CPU has neither avx512_vnni nor avx_vnni"


def isa_shortfall(entry: ArtifactEntry, cpu: CpuFacts) -> str | None:
    """Why ``cpu`` would compute ``entry`` wrongly, in one clause; None when it computes it as
    built. The caller says what to do (a device: enrol as ``x86-cpu``)."""
    if not artifact_needs_vnni(entry):
        return None
    lacks = _cpu_lacks_vnni(cpu)
    if lacks is None:
        return None
    return (f"the {entry.target} {entry.precision} artifact has 8-bit weights that need VNNI, "
            f"and {lacks}: ONNX Runtime would saturate them and give wrong outputs without "
            "an error")


def target_shortfall(target: str, cpu: CpuFacts) -> str | None:
    """Why a device enrolled as ``target`` should not be this CPU; None when it may.

    Only a profile that declares VNNI can be wrong for a CPU; its FP32 artifacts still run
    correctly, its INT8 ones do not (:func:`isa_shortfall` refuses those one by one).
    """
    if not _profile_declares_vnni(target):
        return None
    lacks = _cpu_lacks_vnni(cpu)
    if lacks is None:
        return None
    return (f"target {target} declares VNNI but {lacks}: its INT8 artifacts would give wrong "
            "outputs here and will be refused")

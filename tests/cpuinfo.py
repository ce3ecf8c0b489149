"""/proc/cpuinfo texts for tests of the CPU checks (edgeops.cpu), trimmed from real machines.

Shared by the edgeops, device agent and hardware suite tests, which inject them through the
``cpu`` constructor parameters instead of reading this machine's CPU.
"""

from __future__ import annotations

from edgeops.cpu import CpuFacts

__all__ = ["ARM64", "AVX2", "AVX512_NO_VNNI", "AVX512_VNNI", "AVX_VNNI", "VNNI_PLAN", "cpu"]

# Two cores each: the parser unions every flags line.
_X86_CORE = ("processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: test cpu\n"
             "flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma {extra}\n\n")
AVX2 = "".join(_X86_CORE.format(n=n, extra="") for n in range(2))
AVX512_NO_VNNI = "".join(_X86_CORE.format(n=n, extra="avx512f avx512bw avx512vl")
                         for n in range(2))
AVX512_VNNI = "".join(_X86_CORE.format(n=n, extra="avx512f avx512bw avx512_vnni")
                      for n in range(2))
AVX_VNNI = "".join(_X86_CORE.format(n=n, extra="avx_vnni") for n in range(2))
ARM64 = ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 "
         "sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n"
         "CPU implementer\t: 0x41\n")

# What converters.onnx_quant records for an x86-cpu-vnni INT8 build (details.plan).
VNNI_PLAN = {"activation_type": "uint8", "weight_type": "int8", "per_channel": True,
             "reduce_range": False, "target_isa": "x86_64+vnni"}


def cpu(text: str) -> CpuFacts:
    """Facts of an x86-64 machine, or an ARM64 one for :data:`ARM64`."""
    return CpuFacts.parse(text, "aarch64" if text is ARM64 else "x86_64")

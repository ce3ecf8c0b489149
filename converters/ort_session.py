"""One way to open an ONNX Runtime session for checking and timing an artifact.

Every place that runs a model here (the FP32 reference, a candidate's validation, latency,
golden tolerance, the states a sequence carries, the perf pass's timer) opens it the same way:
the requested providers that this onnxruntime build has (CPU as the fallback, so a CUDA
profile's artifact is still checked on a CPU-only build machine), a fixed thread count, quiet
logs. A leaf module, so data feeds and validation can both use it without importing each other.

Accuracy sessions (everything but timing) compute exactly what the target computes, whatever
the build machine: on an x86 CPU without VNNI, ONNX Runtime's default u8s8 kernels pair two
u8*s8 products into a saturating int16 (vpmaddubsw), so an ``x86-cpu-vnni`` artifact (full
8-bit weights) would be validated as a worse model than any VNNI device runs, and the accuracy
gate would float layers or refuse builds a VNNI CPU runs well. There ORT's
``session.x64quantprecision=1`` runs the exact U8U8 kernels (what vpdpbusd computes; the
artifacts of the other x86 target are proven never to saturate, so their values do not change).
Timing sessions (``timing=True``) keep the fast kernels: a timing is this machine's anyway.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["EXACT_U8S8", "X86_MACHINES", "exact_products", "open_session", "saturating_u8s8_here"]

EXACT_U8S8 = "session.x64quantprecision"
X86_MACHINES = ("x86_64", "AMD64", "amd64")     # what platform.machine() says on x86-64


@functools.cache
def saturating_u8s8_here() -> bool:
    """True on an x86 build machine without VNNI (unknown flags count as without: the exact
    kernels are never wrong, only slower)."""
    from edgeops.cpu import read_cpu_facts

    facts = read_cpu_facts()
    return platform.machine() in X86_MACHINES and not facts.vnni


def exact_products(so: Any) -> None:
    """Make an accuracy session's u8s8 products exact on this machine (see the module doc)."""
    if saturating_u8s8_here():
        so.add_session_config_entry(EXACT_U8S8, "1")


def open_session(model: Path | bytes, providers: Sequence[str], threads: int, *,
                 timing: bool = False) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model`` (a file or serialised bytes); exact
    u8s8 products unless it is for ``timing``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not timing:
        exact_products(so)
    available = set(ort.get_available_providers())
    use = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, so, providers=use)

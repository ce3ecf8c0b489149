"""One way to open an ONNX Runtime session for checking and timing an artifact.

Every place that runs a model here (the FP32 reference, a candidate's validation, latency,
golden tolerance, the states a sequence carries, the perf pass's timer) opens it the same way:
the requested providers that this onnxruntime build has (CPU as the fallback, so a CUDA
profile's artifact is still checked on a CPU-only build machine), a fixed thread count, quiet
logs. A leaf module, so data feeds and validation can both use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["open_session"]


def open_session(model: Path | bytes, providers: Sequence[str], threads: int) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model`` (a file or serialised bytes)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    available = set(ort.get_available_providers())
    use = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, so, providers=use)

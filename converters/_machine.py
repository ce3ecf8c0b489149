"""What a measured decision is keyed on: the build machine's CPU.

The performance passes (`converters.onnx_perf`, `converters.tflite._fusion_perf`) cache what
they measured per machine; a cache taken to another CPU must not be reused.
"""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["cpu_name"]


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        name = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), "")
    except OSError:
        name = ""
    return name or platform.processor()

"""What the device was doing while it was tested: CPU, memory, temperatures, software.

A latency figure means little without the state it was measured in (a throttled SoC at 85 °C
is slower than a cold one), so the report records this before and after the checks. Every probe
is best effort: an unreadable sensor is reported as absent, never as an error.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

__all__ = ["GPU_QUERY", "THERMAL_ROOT", "cpu_model", "gpu_state", "machine_info", "parse_gpu_query",
           "thermal_state"]

THERMAL_ROOT = Path("/sys/class/thermal")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _thermal_zones(root: Path) -> dict[str, float]:
    zones: dict[str, float] = {}
    try:
        entries = sorted(root.glob("thermal_zone*"))
    except OSError:
        return zones
    for zone in entries:
        try:
            kind = (zone / "type").read_text().strip() or zone.name
            milli = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        zones[f"{zone.name}:{kind}"] = milli / 1000.0
    return zones


# nvidia-smi fields recorded per GPU: a throttled or hot GPU explains a slow latency figure.
GPU_QUERY = ("name", "driver_version", "temperature.gpu", "clocks.sm", "clocks.max.sm",
             "power.draw", "memory.used", "memory.total", "utilization.gpu")


def parse_gpu_query(text: str) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=GPU_QUERY --format=csv,noheader,nounits`` as dicts.

    Numbers become floats; ``[N/A]`` and other unreadable values are left out, never guessed.
    """
    gpus: list[dict[str, Any]] = []
    for line in text.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(GPU_QUERY):
            continue
        gpu: dict[str, Any] = {}
        for key, value in zip(GPU_QUERY, values, strict=True):
            if not value or value.startswith("[") or value.upper() == "N/A":
                continue
            try:
                gpu[key] = value if key in ("name", "driver_version") else float(value)
            except ValueError:
                continue
        gpus.append(gpu)
    return gpus


def gpu_state() -> list[dict[str, Any]]:
    """NVIDIA GPUs now (temperature, SM clock, power, memory), or [] without nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, f"--query-gpu={','.join(GPU_QUERY)}",
                              "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_gpu_query(out.stdout) if out.returncode == 0 else []


def thermal_state(root: Path = THERMAL_ROOT) -> dict[str, Any]:
    """CPU load, frequency and temperatures now (each absent when unreadable)."""
    state: dict[str, Any] = {"ts": time.time(),
                             "cpu_percent": psutil.cpu_percent(interval=0.1)}
    try:
        state["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        freq = psutil.cpu_freq()
        if freq is not None:
            state["cpu_freq_mhz"] = {"current": round(freq.current, 1), "max": round(freq.max, 1)}
    except (OSError, NotImplementedError):
        pass
    temps = _thermal_zones(root)
    sensors = getattr(psutil, "sensors_temperatures", None)
    if sensors is not None:
        try:
            for chip, readings in sensors().items():
                for i, r in enumerate(readings):
                    temps.setdefault(f"{chip}:{r.label or i}", r.current)
        except (OSError, RuntimeError):
            pass
    state["temperatures_c"] = temps
    if not temps:
        state["temperatures_note"] = "no readable thermal sensor"
    mem = psutil.virtual_memory()
    state["memory_available_mib"] = round(mem.available / 2**20, 1)
    gpus = gpu_state()
    if gpus:
        state["gpus"] = gpus
    return state


def machine_info() -> dict[str, Any]:
    """Static facts about this machine for the report."""
    mem = psutil.virtual_memory()
    return {
        "hostname": platform.node(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_total_mib": round(mem.total / 2**20, 1),
        "python": platform.python_version(),
    }

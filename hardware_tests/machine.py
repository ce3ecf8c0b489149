"""What the device was doing while it was tested: CPU, memory, temperatures, software.

A latency figure means little without the state it was measured in (a throttled SoC at 85 °C
is slower than a cold one), so the report records this before and after the checks. Every probe
is best effort: an unreadable sensor is reported as absent, never as an error.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import psutil

__all__ = ["THERMAL_ROOT", "cpu_model", "machine_info", "thermal_state"]

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

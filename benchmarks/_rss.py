"""A benchmark process's own peak memory, for the rows that report one."""

from __future__ import annotations

from pathlib import Path

__all__ = ["peak_rss_mib"]


def peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM), MiB. Not ``ru_maxrss``: Linux carries that across
    fork and exec, so a child spawned from a large parent reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")

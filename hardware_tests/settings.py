"""Named limits of the hardware suite and the choice of the default target for this machine.

The suite compares what a real device measures with what the build machine wrote into the
manifest. Those comparisons need slack (a Cortex-A53 is not the build server), and the slack
must be stated in the report, so every bound lives here with its unit in its name, and the
report copies the values it ran with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DEFAULT_SETTINGS", "HardwareSettings", "default_target"]


@dataclass(frozen=True)
class HardwareSettings:
    """Bounds and run counts for the on-device checks. Units are in the names."""

    latency_margin_ratio: float = 1.5      # measured p50/p95 may be this many times the manifest's
    latency_slack_ms: float = 0.1          # plus this much: scheduler jitter on sub-ms models
    memory_margin_ratio: float = 1.5       # measured RSS growth may be this many times the figure
    warmup_runs: int = 5                   # runs discarded before timing
    latency_runs: int = 50                 # timed runs for p50/p95
    stability_runs: int = 200              # repeated runs for drift and memory growth
    max_rss_growth_mib: float = 16.0       # RSS growth allowed across the stability runs
    max_output_drift_abs: float = 0.0      # |run_k - run_0|; the same input must give the same bits
    threads: int | None = None             # intra-op threads; None: the manifest's figure or 1

    def __post_init__(self) -> None:
        if self.latency_margin_ratio < 1.0 or self.memory_margin_ratio < 1.0:
            raise ValueError("margins are ratios >= 1.0")
        if min(self.warmup_runs, self.latency_runs, self.stability_runs) < 1:
            raise ValueError("run counts must be at least 1")
        if min(self.max_rss_growth_mib, self.max_output_drift_abs, self.latency_slack_ms) < 0:
            raise ValueError("bounds must not be negative")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_SETTINGS = HardwareSettings()

_CPU_TARGET_BY_MACHINE = {"x86_64": "x86-cpu", "amd64": "x86-cpu",
                          "aarch64": "arm64-cpu", "arm64": "arm64-cpu"}


def default_target(machine: str, available_providers: Iterable[str],
                   bundle_targets: Iterable[str]) -> str | None:
    """The target profile that matches this machine, or ``None`` when nothing does.

    A CUDA-capable ONNX Runtime picks ``cuda-gpu`` when the bundle carries it; otherwise the
    CPU architecture decides (x86_64 → ``x86-cpu``, aarch64 → ``arm64-cpu``).
    """
    providers = set(available_providers)
    if "cuda-gpu" in set(bundle_targets) and "CUDAExecutionProvider" in providers:
        return "cuda-gpu"
    return _CPU_TARGET_BY_MACHINE.get(machine.lower())

"""The one result type every task metric returns, and the relative drop the gate reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TaskScore", "relative_drop"]


def relative_drop(reference_score: float, candidate_score: float) -> float:
    """Relative drop of a higher-is-better score (0.01 = 1%)."""
    if reference_score <= 0:
        return 0.0 if candidate_score >= reference_score else 1.0
    return max(0.0, (reference_score - candidate_score) / reference_score)


@dataclass(frozen=True)
class TaskScore:
    """A higher-is-better score of the candidate, the FP32 model's own score on the same scale,
    and what else the metric measured (reported, not gated)."""

    metric: str
    value: float
    reference: float = 1.0                  # agreement-style metrics: FP32 agrees with itself
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def drop(self) -> float:
        return relative_drop(self.reference, self.value)

"""The one result type every task metric returns, and the relative drop the gate reads.

A score that compares a candidate with FP32 proves something only if FP32 gave it something to
compare: detections, mask pixels, characters, a decision that changes. :class:`Evidence` is how
much of that the FP32 reference holds; a metric with none judges nothing, and the build refuses
rather than pass on it (converters/build.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Evidence", "TaskScore", "relative_drop"]


def relative_drop(reference_score: float, candidate_score: float) -> float:
    """Relative drop of a higher-is-better score (0.01 = 1%)."""
    if reference_score <= 0:
        return 0.0 if candidate_score >= reference_score else 1.0
    return max(0.0, (reference_score - candidate_score) / reference_score)


@dataclass(frozen=True)
class Evidence:
    """What the metric judges in the FP32 reference: ``count`` of it over all samples (0: the
    metric has nothing to judge) and ``nothing``, the phrase that says so, with ``{samples}``
    where the sample count goes ("the FP32 model detects nothing in {samples}")."""

    count: int
    nothing: str

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"evidence count {self.count} is negative")
        if "{samples}" not in self.nothing:
            raise ValueError(f"evidence phrase {self.nothing!r} has no {{samples}} slot")

    def missing(self, samples: str) -> str | None:
        """The phrase for ``samples`` ("the 6 validation samples") when there is nothing."""
        return self.nothing.format(samples=samples) if self.count == 0 else None


@dataclass(frozen=True)
class TaskScore:
    """A higher-is-better score of the candidate, the FP32 model's own score on the same scale,
    and what else the metric measured (reported, not gated)."""

    metric: str
    value: float
    reference: float = 1.0                  # agreement-style metrics: FP32 agrees with itself
    details: dict[str, Any] = field(default_factory=dict)
    evidence: Evidence | None = None        # None: the metric always has something to judge

    @property
    def drop(self) -> float:
        return relative_drop(self.reference, self.value)

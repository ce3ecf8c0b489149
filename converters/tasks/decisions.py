"""Streaming decisions (voice activity, wake word, presence): per step, is the score over the
threshold? The candidate must take the decisions FP32 takes, step by step over the sequence."""

from __future__ import annotations

import numpy as np

from converters.tasks.score import TaskScore

__all__ = ["decision_score"]


def decision_score(ref: np.ndarray, got: np.ndarray, threshold: float = 0.5) -> TaskScore:
    """Decision agreement at ``threshold`` over every step and every score of a step."""
    r = np.asarray(ref, np.float64).reshape(-1) > threshold
    scores = np.asarray(got, np.float64).reshape(-1)
    g = np.where(np.isfinite(scores), scores, -np.inf) > threshold
    agree = float((r == g).mean()) if r.size else 1.0
    return TaskScore("decision_agreement", agree, 1.0,
                     {"threshold": threshold, "steps": int(r.size),
                      "positive_fraction_reference": float(r.mean()) if r.size else 0.0})

"""Streaming decisions (voice activity, wake word, presence): per step, is the score over the
threshold? The candidate must take the decisions FP32 takes, step by step over the sequence.

Evidence: the steps of FP32's rarer decision. A stream where FP32 never fires (or always does)
only checks that the candidate does the same: a detector that never fires would pass.
"""

from __future__ import annotations

import numpy as np

from converters.tasks.score import Evidence, TaskScore

__all__ = ["decision_evidence", "decision_score"]


def decision_score(ref: np.ndarray, got: np.ndarray, threshold: float = 0.5) -> TaskScore:
    """Decision agreement at ``threshold`` over every step and every score of a step."""
    r = np.asarray(ref, np.float64).reshape(-1) > threshold
    scores = np.asarray(got, np.float64).reshape(-1)
    g = np.where(np.isfinite(scores), scores, -np.inf) > threshold
    agree = float((r == g).mean()) if r.size else 1.0
    pos = int(np.count_nonzero(r))
    rarer = min(pos, int(r.size) - pos)
    return TaskScore("decision_agreement", agree, 1.0,
                     {"threshold": threshold, "steps": int(r.size),
                      "positive_fraction_reference": float(r.mean()) if r.size else 0.0,
                      "rarer_decision_steps_reference": rarer},
                     decision_evidence(rarer, pos > 0, threshold, "step"))


def decision_evidence(rarer: int, positive: bool, threshold: float, unit: str) -> Evidence:
    """FP32's rarer decision (count) as evidence; the phrase says which one it always took."""
    always = f"above {threshold:g}" if positive else f"at or below {threshold:g}"
    return Evidence(rarer, f"the FP32 score is {always} at every {unit} of {{samples}}: "
                           "its decision never changes")

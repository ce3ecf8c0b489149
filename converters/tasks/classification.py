"""Classification judged as its users do: does the candidate pick the same class?

``scores``: ``(samples, classes)`` (logits or probabilities, any monotonic scale). One class
column is a binary classifier: the decision is ``score > threshold``.

Evidence: top-1 agreement always has FP32's top-1 to judge. A binary decision without labels has
evidence only where FP32 takes both decisions (see :mod:`.decisions`); with labels, the labels
judge.
"""

from __future__ import annotations

import numpy as np

from converters.tasks.decisions import decision_evidence
from converters.tasks.score import TaskScore

__all__ = ["classification_score", "topk_agreement"]


def topk_agreement(ref: np.ndarray, got: np.ndarray, k: int) -> float:
    """Fraction of samples whose FP32 top-1 class is among the candidate's top ``k``."""
    r = np.asarray(ref, np.float64).reshape(len(ref), -1)
    g = np.asarray(got, np.float64).reshape(r.shape)
    if not len(r):
        return 1.0
    g = np.where(np.isfinite(g), g, -np.inf)
    top1 = r.argmax(axis=1)
    k = min(k, r.shape[1])
    topk = np.argsort(-g, axis=1, kind="stable")[:, :k]
    return float((topk == top1[:, None]).any(axis=1).mean())


def classification_score(ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None = None,
                         threshold: float = 0.5) -> TaskScore:
    """Top-1 agreement (gated), top-5 agreement; with labels, top-1 accuracy is gated."""
    r = np.asarray(ref, np.float64).reshape(len(ref), -1)
    g = np.asarray(got, np.float64).reshape(r.shape)
    if r.shape[1] == 1:
        rd, gd = r[:, 0] > threshold, g[:, 0] > threshold
        agree = float((rd == gd).mean()) if len(r) else 1.0
        details: dict[str, float] = {"decision_agreement": agree, "threshold": threshold}
        if labels is not None:
            lab = np.asarray(labels).reshape(-1).astype(bool)
            ref_acc, acc = float((rd == lab).mean()), float((gd == lab).mean())
            return TaskScore("accuracy", acc, ref_acc, {**details, "accuracy_reference": ref_acc})
        pos = int(np.count_nonzero(rd))
        rarer = min(pos, len(rd) - pos)
        details["rarer_decision_samples_reference"] = rarer
        return TaskScore("decision_agreement", agree, 1.0, details,
                         decision_evidence(rarer, pos > 0, threshold, "one"))
    top1 = topk_agreement(r, g, 1)
    details = {"top1_agreement": top1, "top5_agreement": topk_agreement(r, g, 5)}
    if labels is not None:
        lab = np.asarray(labels).reshape(-1)
        ref_acc = float((r.argmax(axis=1) == lab).mean())
        acc = float((np.where(np.isfinite(g), g, -np.inf).argmax(axis=1) == lab).mean())
        return TaskScore("top1_accuracy", acc, ref_acc,
                         {**details, "top1_accuracy_reference": ref_acc})
    return TaskScore("top1_agreement", top1, 1.0, details)

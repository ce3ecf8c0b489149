"""Accuracy metrics of a candidate's outputs against a reference.

Pure numpy, in edgeops because two parts measure the same way: the converters gate an artifact
against the FP32 source with it, and the hardware tests compare a device's outputs with the
golden ones. Per output: cosine similarity, max absolute error, SNR in dB; for classifier-shaped
outputs (``[n, classes]``) also top-1 agreement, and top-1 accuracy when labels are given; for
integer outputs (a classifier's predicted label, e.g. skl2onnx's ``label``) label agreement: the
fraction of samples whose values are all equal, as cosine says nothing about class indices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["OutputMetrics", "compare_outputs", "is_label_output", "relative_drop"]


@dataclass(frozen=True)
class OutputMetrics:
    name: str
    cosine: float
    max_abs_error: float
    snr_db: float
    top1_agreement: float | None = None
    label_agreement: float | None = None     # integer outputs only

    def to_dict(self) -> dict[str, float | None]:
        if self.label_agreement is not None:     # cosine/SNR of class indices mean nothing
            return {"label_agreement": self.label_agreement, "max_abs_error": self.max_abs_error,
                    "cosine": None, "snr_db": None, "top1_agreement": None}
        return {"cosine": self.cosine, "max_abs_error": self.max_abs_error,
                "snr_db": self.snr_db, "top1_agreement": self.top1_agreement}


def is_label_output(a: np.ndarray) -> bool:
    """Integer or boolean outputs are labels/indices: compared by agreement, not cosine."""
    return bool(np.issubdtype(np.asarray(a).dtype, np.integer) or np.asarray(a).dtype == np.bool_)


def _one(name: str, ref: np.ndarray, got: np.ndarray) -> OutputMetrics:
    r = np.asarray(ref, np.float64).reshape(ref.shape[0] if ref.ndim else 1, -1)
    g = np.asarray(got, np.float64).reshape(r.shape)
    if is_label_output(ref):
        same = (r == g).all(axis=1)
        return OutputMetrics(name, cosine=float(same.mean()),
                             max_abs_error=float(np.abs(r - g).max()) if r.size else 0.0,
                             snr_db=float("inf") if same.all() else float("-inf"),
                             label_agreement=float(same.mean()))
    if not np.isfinite(g).all():
        return OutputMetrics(name, cosine=-1.0, max_abs_error=float("inf"), snr_db=float("-inf"),
                             top1_agreement=0.0 if r.shape[1] > 1 else None)
    num = (r * g).sum(axis=1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    cos = np.where(den > 0, num / np.where(den > 0, den, 1.0),
                   np.where(np.abs(r - g).max(axis=1) == 0, 1.0, 0.0))
    noise = ((r - g) ** 2).sum()
    signal = (r**2).sum()
    snr = float("inf") if noise == 0 else float(10 * np.log10(max(signal, 1e-30) / noise))
    top1 = None
    if ref.ndim == 2 and ref.shape[1] > 1:
        top1 = float((r.argmax(axis=1) == g.argmax(axis=1)).mean())
    return OutputMetrics(name, cosine=float(cos.mean()),
                         max_abs_error=float(np.abs(r - g).max()), snr_db=snr, top1_agreement=top1)


def compare_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                    names: Sequence[str] | None = None) -> list[OutputMetrics]:
    """Metrics per output; arrays are stacked over samples (first axis)."""
    return [_one(n, reference[n], candidate[n]) for n in (names or list(reference))]


def relative_drop(reference_score: float, candidate_score: float) -> float:
    """Relative drop of a higher-is-better score (0.01 = 1%)."""
    if reference_score <= 0:
        return 0.0 if candidate_score >= reference_score else 1.0
    return max(0.0, (reference_score - candidate_score) / reference_score)

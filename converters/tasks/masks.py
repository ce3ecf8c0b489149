"""Segmentation and text detection judged by the mask their users threshold out of the map.

One sample: ``(C, H, W)`` (or ``(H, W)``). One channel is a probability map, binarised at the
model's threshold; several channels are per-class scores, the mask being their argmax. The
score is the intersection over union of the candidate's masks with FP32's, summed over samples
(and classes) before dividing, so an empty mask does not weigh like a full one.

Evidence: one channel, FP32's mask pixels (an empty FP32 mask scores 1.0 against an empty
candidate and 0.0 against one stray pixel); several channels, FP32's pixels outside its most
common class (a map of one class everywhere says nothing about the others).
"""

from __future__ import annotations

import numpy as np

from converters.tasks.score import Evidence, TaskScore

__all__ = ["mask_iou", "mask_score"]


def mask_iou(ref: np.ndarray, got: np.ndarray) -> tuple[int, int]:
    """(intersection, union) of two boolean masks."""
    r, g = np.asarray(ref, bool), np.asarray(got, bool)
    return int(np.count_nonzero(r & g)), int(np.count_nonzero(r | g))


def mask_score(ref: np.ndarray, got: np.ndarray, threshold: float = 0.5) -> TaskScore:
    """Mask IoU vs FP32 at ``threshold`` (one channel) or over argmax classes (several)."""
    r = np.asarray(ref, np.float64)
    g = np.asarray(got, np.float64)
    g = np.where(np.isfinite(g), g, -np.inf)
    if r.ndim == 3:                               # samples, H, W
        r, g = r[:, None], g[:, None]
    inter = union = 0
    if r.shape[1] == 1:
        inter, union = mask_iou(r > threshold, g > threshold)
        pixels = int(np.count_nonzero(r > threshold))
        details: dict[str, float | int] = {"threshold": threshold,
                                           "mask_pixels_reference": pixels}
        evidence = Evidence(pixels, "the FP32 mask is empty in {samples} "
                                    f"(threshold {threshold:g})")
    else:
        rc, gc = r.argmax(axis=1), g.argmax(axis=1)
        for c in range(r.shape[1]):
            i, u = mask_iou(rc == c, gc == c)
            inter, union = inter + i, union + u
        counts = np.bincount(rc.reshape(-1), minlength=r.shape[1])
        top = int(counts.argmax())
        others = int(rc.size - counts[top])
        details = {"classes": int(r.shape[1]), "pixels_outside_top_class_reference": others}
        evidence = Evidence(others, f"the FP32 model labels every pixel class {top} (of "
                                    f"{r.shape[1]}) in {{samples}}")
    iou = inter / union if union else 1.0
    ref_cov = float((r > threshold).mean()) if r.shape[1] == 1 and r.size else None
    return TaskScore("mask_iou", float(iou), 1.0,
                     {**details, "union_pixels": union,
                      **({"mask_fraction_reference": ref_cov} if ref_cov is not None else {})},
                     evidence)

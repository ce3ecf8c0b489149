"""Detectors judged by their detections: decode, threshold, NMS, match against FP32's.

Two head forms are read, both per sample (batch axis removed):

* dense YOLO-style: one ``(K, A)`` or ``(A, K)`` tensor, ``A`` anchors of ``K = 4 + C``
  (box ``cx, cy, w, h`` then class scores) or ``K = 5 + C`` (objectness after the box). The
  longer axis is the anchors'.
* end-to-end: ``boxes (N, 4)`` as ``x1, y1, x2, y2``, ``scores (N,)`` or ``(N, C)`` and
  optionally ``classes (N,)``.

Detections above ``score_threshold`` go through per-class NMS (``nms_iou``); candidate
detections are then matched one to one with FP32's (same class, IoU >= ``match_iou``, highest
scores first). The gated value is the F1 of that match over all samples; the cosine of the class
score channels alone (for dense heads) is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converters.tasks.channels import channel_metrics
from converters.tasks.score import Evidence, TaskScore


def _area(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None))


__all__ = [
    "DenseLayout",
    "Detections",
    "decode_dense",
    "detection_score",
    "iou_matrix",
    "match_f1",
    "nms",
]

MAX_CANDIDATES = 1000     # before NMS: the highest-scoring ones (noise inputs light up many)


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray       # (n, 4) x1, y1, x2, y2
    scores: np.ndarray      # (n,)
    classes: np.ndarray     # (n,) int


@dataclass(frozen=True)
class DenseLayout:
    anchors_last: bool      # (K, A) when True, (A, K) otherwise
    objectness: bool        # 5 + C instead of 4 + C


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` with every box in ``b`` (x1, y1, x2, y2)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(det: Detections, iou: float) -> Detections:
    """Greedy per-class non-maximum suppression, highest score first."""
    order = np.argsort(-det.scores, kind="stable")
    keep: list[int] = []
    for cls in np.unique(det.classes):
        idx = order[det.classes[order] == cls]
        while idx.size:
            keep.append(int(idx[0]))
            if idx.size == 1:
                break
            ov = iou_matrix(det.boxes[idx[:1]], det.boxes[idx[1:]])[0]
            idx = idx[1:][ov < iou]
    k = np.asarray(sorted(keep, key=lambda i: -det.scores[i]), dtype=np.int64)
    return Detections(det.boxes[k], det.scores[k], det.classes[k])


def _select(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float,
            nms_iou: float) -> Detections:
    ok = np.isfinite(scores) & (scores > threshold) & np.isfinite(boxes).all(axis=1)
    idx = np.flatnonzero(ok)
    if idx.size > MAX_CANDIDATES:
        idx = idx[np.argsort(-scores[idx], kind="stable")[:MAX_CANDIDATES]]
    return nms(Detections(boxes[idx], scores[idx], classes[idx].astype(np.int64)), nms_iou)


def decode_dense(head: np.ndarray, layout: DenseLayout, threshold: float = 0.25,
                 nms_iou: float = 0.45) -> Detections:
    """Detections of one sample's dense head (see the module docstring)."""
    x = np.asarray(head, np.float64)
    x = x.reshape(-1, x.shape[-1]) if not layout.anchors_last else x.reshape(x.shape[-2], -1).T
    box = x[:, :4]
    cls = x[:, 5:] if layout.objectness else x[:, 4:]
    if cls.shape[1] == 0:
        raise ValueError(f"a dense head of {x.shape[1]} values per anchor has no class scores")
    classes = cls.argmax(axis=1)
    scores = cls.max(axis=1) * (x[:, 4] if layout.objectness else 1.0)
    xyxy = np.stack([box[:, 0] - box[:, 2] / 2, box[:, 1] - box[:, 3] / 2,
                     box[:, 0] + box[:, 2] / 2, box[:, 1] + box[:, 3] / 2], axis=1)
    return _select(xyxy, scores, classes, threshold, nms_iou)


def decode_end_to_end(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray | None,
                      threshold: float = 0.25, nms_iou: float = 0.45) -> Detections:
    """Detections of one sample's ``boxes``/``scores``/``classes`` outputs."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    s = np.asarray(scores, np.float64).reshape(len(b), -1)
    if classes is not None:
        c = np.asarray(classes).reshape(-1).astype(np.int64)
        sc = s.max(axis=1)
    else:
        c, sc = s.argmax(axis=1), s.max(axis=1)
    return _select(b, sc, c, threshold, nms_iou)


def match_f1(ref: Detections, got: Detections, match_iou: float = 0.5) -> tuple[int, int, int]:
    """(matched, FP32 detections, candidate detections): greedy one-to-one, same class."""
    used = np.zeros(len(ref.scores), bool)
    tp = 0
    ious = iou_matrix(got.boxes, ref.boxes) if len(got.scores) and len(ref.scores) else None
    for gi in np.argsort(-got.scores, kind="stable"):
        if ious is None:
            break
        ok = (~used) & (ref.classes == got.classes[gi]) & (ious[gi] >= match_iou)
        if ok.any():
            ri = int(np.argmax(np.where(ok, ious[gi], -1.0)))
            used[ri] = True
            tp += 1
    return tp, len(ref.scores), len(got.scores)


def _f1(tp: int, n_ref: int, n_got: int) -> float:
    return 1.0 if n_ref + n_got == 0 else 2 * tp / (n_ref + n_got)


def detection_score(ref: list[Detections], got: list[Detections], match_iou: float = 0.5,
                    class_cosine: tuple[float, float] | None = None,
                    score_threshold: float | None = None) -> TaskScore:
    """F1 of the candidate's detections vs FP32's, over all samples (micro).

    Evidence: FP32's detections. With none, F1 is 1.0 for a candidate that finds nothing too and
    0.0 for one that finds anything: it says nothing about the artifact either way.
    """
    tp = n_ref = n_got = 0
    for r, g in zip(ref, got, strict=True):
        t, a, b = match_f1(r, g, match_iou)
        tp, n_ref, n_got = tp + t, n_ref + a, n_got + b
    details: dict[str, float | int | None] = {
        "matched": tp, "detections_reference": n_ref, "detections": n_got,
        "precision_vs_fp32": tp / n_got if n_got else 1.0,
        "recall_vs_fp32": tp / n_ref if n_ref else 1.0, "match_iou": match_iou}
    if class_cosine is not None:
        details["class_score_cosine"] = class_cosine[0]
        details["class_score_cosine_worst_class"] = class_cosine[1]
    at = f" (score threshold {score_threshold:g})" if score_threshold is not None else ""
    return TaskScore("detection_f1", _f1(tp, n_ref, n_got), 1.0, details,
                     Evidence(n_ref, "the FP32 model detects nothing in {samples}" + at))


def class_channels_cosine(ref: np.ndarray, got: np.ndarray, layout: DenseLayout
                          ) -> tuple[float, float]:
    """Cosine of the class-score channels alone (stacked dense heads): over all of them, and
    the worst single class."""
    r, g = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if not layout.anchors_last:
        r, g = np.swapaxes(r, -1, -2), np.swapaxes(g, -1, -2)
    first = 5 if layout.objectness else 4
    cos, _ = channel_metrics(r[:, first:], g[:, first:], axis=0)
    whole, _ = channel_metrics(r[:, first:].reshape(1, -1), g[:, first:].reshape(1, -1), axis=0)
    return float(whole[0]), float(cos.min()) if cos.size else 1.0


def dense_detection_score(ref: np.ndarray, got: np.ndarray, layout: DenseLayout,
                          threshold: float = 0.25, nms_iou: float = 0.45,
                          match_iou: float = 0.5) -> TaskScore:
    """:func:`detection_score` of stacked dense heads ``(samples, K, A)`` or ``(samples, A, K)``."""
    rd = [decode_dense(r, layout, threshold, nms_iou) for r in ref]
    gd = [decode_dense(g, layout, threshold, nms_iou) for g in got]
    score = detection_score(rd, gd, match_iou, class_channels_cosine(ref, got, layout),
                            threshold)
    score.details.update({"score_threshold": threshold, "nms_iou": nms_iou,
                          "head": f"{'5' if layout.objectness else '4'}+C per anchor, "
                                  f"{'(K, anchors)' if layout.anchors_last else '(anchors, K)'}"})
    return score

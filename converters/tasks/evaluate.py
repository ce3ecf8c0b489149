"""Score a candidate's outputs against FP32 for a :class:`TaskSpec`; load a user's metric."""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converters.tasks.channels import channel_score
from converters.tasks.classification import classification_score
from converters.tasks.ctc import ctc_score
from converters.tasks.decisions import decision_score
from converters.tasks.detection import decode_end_to_end, dense_detection_score, detection_score
from converters.tasks.infer import TaskSpec, UserMetric
from converters.tasks.masks import mask_score
from converters.tasks.score import TaskScore

__all__ = ["evaluate", "load_user_metric", "missing_evidence", "task_score"]


def _end_to_end(spec: TaskSpec, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]
                ) -> TaskScore:
    b, s, *c = spec.outputs

    def dets(out: Mapping[str, np.ndarray]) -> list[Any]:
        return [decode_end_to_end(out[b][i], out[s][i], out[c[0]][i] if c else None,
                                  spec.threshold) for i in range(len(out[b]))]

    score = detection_score(dets(ref), dets(got), score_threshold=spec.threshold)
    score.details["score_threshold"] = spec.threshold
    return score


def _user(spec: TaskSpec, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]
          ) -> TaskScore:
    def per(out: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
        return {k: np.asarray(v)[i] for k, v in out.items()}

    assert spec.user_metric is not None
    n = len(next(iter(ref.values())))
    ref_scores = [float(spec.user_metric(per(ref, i), per(ref, i))) for i in range(n)]
    got_scores = [float(spec.user_metric(per(ref, i), per(got, i))) for i in range(n)]
    r, g = float(np.mean(ref_scores)), float(np.mean(got_scores))
    if not (math.isfinite(r) and math.isfinite(g)):
        g = -math.inf if not math.isfinite(g) else g
    return TaskScore(spec.user_metric_name or "user_metric", g, r,
                     {"fp32_score": r, "samples": n})


def task_score(spec: TaskSpec, reference: Mapping[str, np.ndarray],
               candidate: Mapping[str, np.ndarray], labels: np.ndarray | None = None
               ) -> TaskScore:
    """The gated score of ``spec``'s task (outputs stacked over samples, axis 0)."""
    if spec.user_metric is not None:
        return _user(spec, reference, candidate)
    out = spec.outputs[0] if spec.outputs else None
    if spec.task == "detection" and spec.layout is not None and out is not None:
        return dense_detection_score(reference[out], candidate[out], spec.layout, spec.threshold)
    if spec.task == "detection":
        return _end_to_end(spec, reference, candidate)
    if spec.task in ("segmentation", "text-detection") and out is not None:
        r, g = reference[out], candidate[out]
        if spec.channels_last:                    # (N, H, W, C) -> (N, C, H, W)
            r, g = np.moveaxis(r, -1, 1), np.moveaxis(g, -1, 1)
        return mask_score(r, g, spec.threshold)
    if spec.task == "ctc" and out is not None:
        return ctc_score(reference[out], candidate[out], spec.blank)
    if spec.task == "classification" and out is not None:
        return classification_score(reference[out], candidate[out], labels, spec.threshold)
    if spec.task == "vad" and out is not None:
        return decision_score(reference[out], candidate[out], spec.threshold)
    names = spec.outputs or tuple(reference)
    return channel_score({n: reference[n] for n in names}, {n: candidate[n] for n in names},
                         dict(spec.channel_axes))


def missing_evidence(spec: TaskSpec, reference: Mapping[str, np.ndarray], samples: str,
                     labels: np.ndarray | None = None) -> tuple[str, str] | None:
    """``(metric, why)`` when FP32's own outputs give ``spec``'s metric nothing to judge (no
    detections, empty masks, no characters, a decision that never changes), else None.

    ``samples`` names the data in the phrase ("the 6 validation samples"). A user's metric is
    theirs to judge; the per-channel cosine and top-1 agreement always have something.
    """
    if spec.user_metric is not None:
        return None
    score = task_score(spec, reference, reference, labels)
    why = score.evidence.missing(samples) if score.evidence is not None else None
    return (score.metric, why) if why is not None else None


def evaluate(spec: TaskSpec, reference: Mapping[str, np.ndarray],
             candidate: Mapping[str, np.ndarray], labels: np.ndarray | None = None
             ) -> dict[str, Any]:
    """The report's ``task`` section: task metric (gated) and the per-channel worst case."""
    score = task_score(spec, reference, candidate, labels)
    channels = channel_score(dict(reference), dict(candidate), dict(spec.channel_axes))
    return {**spec.to_dict(), "metric": score.metric, "value": score.value,
            "reference": score.reference, "drop": score.drop, "details": score.details,
            "channels": {"cosine_min": channels.value, **channels.details}}


def load_user_metric(spec: str) -> UserMetric:
    """``module:function`` imported; ``ValueError`` with what is wrong otherwise."""
    mod, sep, fn = spec.partition(":")
    if not sep or not mod or not fn:
        raise ValueError(f"--metric '{spec}' is not module:function")
    here = str(Path.cwd())
    added = here not in sys.path
    if added:                       # a console script does not put the cwd on sys.path
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(mod)
    except Exception as exc:
        raise ValueError(f"--metric {spec}: cannot import '{mod}' ({exc})") from None
    finally:
        if added:
            sys.path.remove(here)
    func = getattr(module, fn, None)
    if not callable(func):
        raise ValueError(f"--metric {spec}: '{mod}' has no function '{fn}'")
    user: UserMetric = func
    return user

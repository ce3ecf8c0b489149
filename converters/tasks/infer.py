"""Which task a model performs, read from its graph and its FP32 outputs (never from names).

``--task auto`` walks these rules in order and records which one fired:

1. state outputs (an output with the shape of an input, fed back by streaming models) are set
   aside; the rest are the model's answers;
2. ``detection``: outputs ``boxes (n, 4)`` + ``scores (n[, C])`` [+ ``classes (n)``], or one
   dense head ``(K, A)``/``(A, K)`` (anchors the longer axis, ``K >= 5``) that a Concat builds
   with a Sigmoid/Softmax branch (box values beside class probabilities);
3. ``segmentation``: a ``(C, H, W)`` map, ``H, W >= 8``, made by Sigmoid/Softmax (threshold 0.5
   on a probability map, 0 on logits). ``text-detection`` is the same read at 0.3 (the DB
   binarisation threshold): the graph cannot tell them apart, pass ``--task text-detection``.
   An explicit ``--task`` also reads a channels-last ``(H, W, C)`` map (``C`` under ``H, W``,
   as TensorFlow exports give), which ``auto`` does not guess;
4. ``ctc``: ``(T, C)`` scores made by Softmax/LogSoftmax, ``C >= 3``, ``T > 1``;
5. ``classification``: ``(C,)`` scores made by Softmax/LogSoftmax, or non-negative rows summing
   to 1, or one Sigmoid score; a streaming model (state outputs) with such a score is ``vad``;
6. anything else: per-channel cosine (``embedding`` for sequences/maps, ``regression`` for
   vectors).

Outputs are the stacked FP32 reference (axis 0 = samples), as the validation keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converters.tasks.detection import DenseLayout

__all__ = ["TASKS", "TaskSpec", "infer_task"]

TASKS = ("auto", "classification", "detection", "segmentation", "text-detection", "ctc",
         "regression", "vad", "embedding")
TEXT_DETECTION_THRESHOLD = 0.3
_LAYOUT_OPS = {"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Cast"}
_PROB_OPS = {"Sigmoid", "Softmax", "LogSoftmax"}
UserMetric = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], float]


@dataclass(frozen=True)
class TaskSpec:
    """What the gate measures: the task, the outputs it reads, and how it reads them."""

    task: str
    inferred: bool
    why: str
    outputs: tuple[str, ...] = ()
    channel_axes: Mapping[str, int] = field(default_factory=dict)
    threshold: float = 0.5
    layout: DenseLayout | None = None            # dense detection heads
    channels_last: bool = False                  # segmentation map (H, W, C), not (C, H, W)
    blank: int = 0                               # CTC blank class
    user_metric: UserMetric | None = None
    user_metric_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "inferred": self.inferred, "why": self.why,
                "outputs": list(self.outputs),
                **({"metric": self.user_metric_name} if self.user_metric_name else {})}


def _producers(model: Any) -> dict[str, Any]:
    return {o: n for n in model.graph.node for o in n.output}


def _made_by(name: str, producers: Mapping[str, Any]) -> Any:
    """The node that computes ``name``, looking through layout-only ops (reshape, transpose)."""
    seen: set[str] = set()
    node = producers.get(name)
    while node is not None and node.op_type in _LAYOUT_OPS and name not in seen:
        seen.add(name)
        name = node.input[0]
        node = producers.get(name)
    return node


def _op(name: str, producers: Mapping[str, Any]) -> str | None:
    node = _made_by(name, producers)
    return node.op_type if node is not None else None


def _state_outputs(reference: Mapping[str, np.ndarray],
                   feeds: Mapping[str, tuple[int, ...]]) -> set[str]:
    out = set()
    for name, ref in reference.items():
        per = tuple(np.shape(ref)[1:])
        for shape in feeds.values():
            if len(shape) >= 2 and per in (tuple(shape), tuple(shape[1:])) \
                    and np.issubdtype(np.asarray(ref).dtype, np.floating) and len(per) >= 2:
                out.add(name)
    return out


def _channel_axes(model: Any, reference: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Per output, the channel axis of one sample: the model's axis 1, unless that axis is
    dynamic (a sequence length) and the last one is fixed (features)."""
    axes: dict[str, int] = {}
    for vi in model.graph.output:
        if vi.name not in reference:
            continue
        per_rank = np.ndim(reference[vi.name]) - 1
        dims = vi.type.tensor_type.shape.dim
        fixed = [d.HasField("dim_value") and d.dim_value > 0 for d in dims]
        axes[vi.name] = per_rank - 1 if (len(fixed) >= 3 and not fixed[1] and fixed[-1]
                                         and per_rank >= 2) else 0
    return axes


def _dense_layout(per: tuple[int, ...]) -> DenseLayout | None:
    if len(per) != 2 or min(per) < 5 or max(per) < 4 * min(per):
        return None
    anchors_last = per[1] > per[0]
    return DenseLayout(anchors_last=anchors_last, objectness=not anchors_last)


def _is_concat_of_probabilities(name: str, producers: Mapping[str, Any]) -> bool:
    node = _made_by(name, producers)
    return node is not None and node.op_type == "Concat" and any(
        _op(i, producers) in _PROB_OPS for i in node.input)


def _end_to_end(cands: Mapping[str, np.ndarray]) -> tuple[str, ...] | None:
    for b, arr in cands.items():
        per = np.shape(arr)[1:]
        if len(per) < 1 or per[-1] != 4 or not np.issubdtype(np.asarray(arr).dtype, np.floating):
            continue
        n = per[:-1]
        scores = [s for s, a in cands.items() if s != b and np.shape(a)[1:len(n) + 1] == n
                  and np.issubdtype(np.asarray(a).dtype, np.floating) and len(n) >= 1]
        if not scores:
            continue
        classes = [c for c, a in cands.items() if c not in (b, scores[0])
                   and np.shape(a)[1:] == n]
        return (b, scores[0], *classes[:1])
    return None


def _probability_rows(a: np.ndarray) -> bool:
    x = np.asarray(a, np.float64)
    return bool(x.size and (x >= -1e-6).all() and np.allclose(x.sum(axis=-1), 1.0, atol=1e-3))


def _find(task: str, cands: Mapping[str, np.ndarray], producers: Mapping[str, Any],
          strict: bool, scores: frozenset[str] = frozenset()
          ) -> tuple[tuple[str, ...], str, dict[str, Any]] | None:
    """(outputs, why, spec fields) for ``task``, or None. ``strict`` (auto) also asks the graph
    for the op that makes a probability; an explicit ``--task`` needs the shape only."""
    floats = {n: a for n, a in cands.items() if np.issubdtype(np.asarray(a).dtype, np.floating)}
    for name, arr in floats.items():
        per = tuple(np.shape(arr)[1:])
        op = _op(name, producers)
        if task == "detection":
            layout = _dense_layout(per)
            if layout and (not strict or _is_concat_of_probabilities(name, producers)):
                k = "5" if layout.objectness else "4"
                return (name,), (f"'{name}' {per} is a dense detection head ({k}+C per "
                                 "anchor, box values concatenated with class probabilities)"), \
                    {"layout": layout, "threshold": 0.25}
        elif task in ("segmentation", "text-detection"):
            if len(per) == 3 and min(per[1:]) >= 8 and (not strict or op in _PROB_OPS):
                thr = TEXT_DETECTION_THRESHOLD if task == "text-detection" else (
                    0.5 if op in _PROB_OPS or _in_unit(arr) else 0.0)
                return (name,), f"'{name}' {per} is a (C, H, W) map made by {op}", \
                    {"threshold": thr}
            if not strict and len(per) == 3 and min(per[:2]) >= 8 and per[2] < min(per[:2]):
                thr = TEXT_DETECTION_THRESHOLD if task == "text-detection" else (
                    0.5 if _in_unit(arr) else 0.0)
                return (name,), f"'{name}' {per} is a channels-last (H, W, C) map made by " \
                    f"{op}", {"threshold": thr, "channels_last": True}
        elif task == "ctc":
            if len(per) == 2 and per[-1] >= 3 and per[0] > 1 and (
                    not strict or op in ("Softmax", "LogSoftmax")):
                return (name,), (f"'{name}' {per} holds class scores per time step "
                                 f"(made by {op})"), {}
        elif task in ("classification", "vad"):
            flat = tuple(d for d in per if d != 1)        # (1, C) and (C, 1, 1) are (C,)
            if len(flat) == 1 and flat[0] >= 2 and (
                    not strict or op in _PROB_OPS or _probability_rows(arr) or name in scores) \
                    and task != "vad":
                how = ("made by " + op if op in _PROB_OPS else "rows sum to 1"
                       if _probability_rows(arr) else "labels given or named as scores")
                return (name,), f"'{name}' {per} holds class scores ({how})", {}
            if int(np.prod(per)) == 1 and (not strict or op == "Sigmoid" or _in_unit(arr)):
                return (name,), f"'{name}' {per} is one score in [0, 1] per step", {}
    if task == "detection":
        e2e = _end_to_end(cands)
        if e2e:
            return e2e, f"end-to-end detection outputs {list(e2e)} (boxes, scores[, classes])", {
                "threshold": 0.25}
    return None


def _in_unit(a: np.ndarray) -> bool:
    x = np.asarray(a, np.float64)
    return bool(x.size and (x >= 0).all() and (x <= 1).all())


def infer_task(model: Any, reference: Mapping[str, np.ndarray],
               feeds: Mapping[str, tuple[int, ...]], task: str = "auto",
               scores: frozenset[str] = frozenset(), labels: bool = False) -> TaskSpec:
    """The task and how to read it; ``task`` other than auto must fit an output (else
    ``ValueError`` with what the outputs look like). ``scores``: outputs known to hold class
    scores (the build's Softmax/name rule); ``labels``: the validation data carries class
    labels, which makes any ``(C,)`` output a classifier's."""
    if labels:
        scores = scores | {n for n, a in reference.items()
                           if len([d for d in np.shape(a)[1:] if d != 1]) == 1}
    producers = _producers(model)
    axes = _channel_axes(model, reference)
    states = _state_outputs(reference, feeds)
    answers = {n: a for n, a in reference.items() if n not in states} or dict(reference)
    if task in ("regression", "embedding"):
        return TaskSpec(task, False, "requested: per-channel cosine", tuple(answers), axes)
    if task != "auto":
        found = _find(task, answers, producers, strict=False)
        if found is None:
            shapes = ", ".join(f"'{n}' {tuple(np.shape(a)[1:])}" for n, a in answers.items())
            raise ValueError(f"--task {task}: no output has the form this task reads "
                             f"(outputs per sample: {shapes})")
        outs, why, extra = found
        return TaskSpec(task, False, "requested: " + why, outs, axes, **extra)
    order = ("detection", "segmentation", "ctc", "classification")
    for t in order:
        found = _find(t, answers, producers, strict=True, scores=scores)
        if found is not None:
            outs, why, extra = found
            if t == "classification" and states \
                    and int(np.prod(np.shape(answers[outs[0]])[1:])) == 1:
                t, why = "vad", why + f"; state outputs {sorted(states)} fed back: streaming"
            return TaskSpec(t, True, why, outs, axes, **extra)
    rank = max((np.ndim(a) - 1 for a in answers.values()), default=0)
    t = "embedding" if rank >= 2 else "regression"
    return TaskSpec(t, True, "no output has a task's form: per-channel cosine, worst channel",
                    tuple(answers), axes)

"""Ground truth for recent predictions: the device's side of concept drift.

Why it exists: input and prediction drift (device_agent/drift_sketch.py) say the world changed;
only ground truth says the model got worse. Labels usually arrive later than the prediction
(an operator confirms, a downstream system measures), so every served request gets a
*prediction id* (``X-Edgeops-Prediction-Id`` and ``prediction_id`` in the local API's answer),
the agent remembers the last ``capacity`` predictions for ``ttl_s``, and the application posts
the truth for an id (``POST /v1/feedback``). The agent scores it at once and counts it into the
open window; the window leaves as an ``accuracy`` telemetry record (docs/DRIFT.md):

* classification (an output ``[N, K]``, K > 1): ``total`` and ``correct`` (top-1), and per true
  class ``[total, correct]`` for classes below 64;
* regression (any other output): ``total`` and a histogram of absolute errors over fixed
  edges (:data:`ABS_ERROR_EDGES`, last bucket open).

Refused, with a reason (:class:`FeedbackRefused`): an id never issued or evicted from the ring
(``unknown-id``), one older than ``ttl_s`` (``expired``), a second answer for the same id
(``duplicate``), a label of the wrong type or count for the prediction (``wrong-type``).
Nothing is counted for a refused answer.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeops.errors import BadContentError
from edgeops.protocol.records import AccuracyRecord

__all__ = ["ABS_ERROR_EDGES", "FeedbackRefused", "PredictionLog"]

# absolute error buckets for regression: upper bounds, the last bucket is open
ABS_ERROR_EDGES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
_MAX_CLASSES = 64


class FeedbackRefused(BadContentError):
    """Ground truth the agent cannot match to a prediction; ``reason`` says why."""

    default_hint = "post feedback once per prediction id, soon after the prediction"

    def __init__(self, reason: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.reason = reason


@dataclass
class _Prediction:
    bundle: str | None
    ts: float
    task: str                         # "classification" or "regression"
    predicted: np.ndarray             # class per row, or values (flattened per row)
    answered: bool = False


class PredictionLog:
    """The ring of recent predictions and the open accuracy window. Thread-safe."""

    def __init__(self, clock: Callable[[], float], *, capacity: int = 10_000,
                 ttl_s: float = 3600.0, window_s: float = 900.0) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ring: OrderedDict[str, _Prediction] = OrderedDict()
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.window_s = window_s
        self._issued = 0
        self._reset(clock())

    def _reset(self, now: float) -> None:
        self._start = now
        self._windows: dict[tuple[str | None, str], dict[str, Any]] = {}

    # -- the request path ----------------------------------------------------------------------
    def record(self, bundle: str | None, outputs: Mapping[str, np.ndarray]) -> str:
        """Remember a served request's prediction; returns its id."""
        pid = secrets.token_hex(8)
        first = next(iter(outputs.values()), None)
        a = np.atleast_1d(np.asarray(first) if first is not None else np.zeros((0,)))
        if a.ndim == 2 and a.shape[1] > 1:
            task, predicted = "classification", a.argmax(axis=1)
        else:
            task, predicted = "regression", a.reshape(len(a), -1)
        with self._lock:
            self._ring[pid] = _Prediction(bundle, self._clock(), task, predicted.copy())
            while len(self._ring) > self.capacity:
                self._ring.popitem(last=False)
            self._issued += 1
        return pid

    # -- ground truth --------------------------------------------------------------------------
    def feedback(self, prediction_id: Any, *, label: Any = None, value: Any = None
                 ) -> dict[str, Any]:
        """Score ground truth for ``prediction_id``; raises :class:`FeedbackRefused`."""
        if not isinstance(prediction_id, str) or not prediction_id:
            raise FeedbackRefused("wrong-type", "prediction_id must be a string")
        now = self._clock()
        with self._lock:
            p = self._ring.get(prediction_id)
            if p is None:
                raise FeedbackRefused("unknown-id", f"no recent prediction {prediction_id!r} "
                                      f"(the agent keeps the last {self.capacity})")
            if now - p.ts > self.ttl_s:
                raise FeedbackRefused("expired", f"prediction {prediction_id} is "
                                      f"{now - p.ts:.0f} s old (kept for {self.ttl_s:.0f} s)")
            if p.answered:
                raise FeedbackRefused("duplicate", f"prediction {prediction_id} already has "
                                      "feedback")
            result = (_score_class(p, label, value) if p.task == "classification"
                      else _score_value(p, label, value))
            p.answered = True
            self._count(p, result)
        return {"prediction_id": prediction_id, "task": p.task, **result}

    def _count(self, p: _Prediction, result: Mapping[str, Any]) -> None:
        w = self._windows.get((p.bundle, p.task))
        if w is None:
            w = self._windows[(p.bundle, p.task)] = (
                {"total": 0, "correct": 0, "per_class": {}} if p.task == "classification"
                else {"total": 0, "abs_error": [0] * (len(ABS_ERROR_EDGES) + 1)})
        if p.task == "classification":
            for truth, ok in zip(result["labels"], result["correct_rows"], strict=True):
                w["total"] += 1
                w["correct"] += int(ok)
                if 0 <= truth < _MAX_CLASSES:
                    c = w["per_class"].setdefault(str(truth), [0, 0])
                    c[0] += 1
                    c[1] += int(ok)
        else:
            for err in result["abs_errors"]:
                w["total"] += 1
                w["abs_error"][_bucket(err)] += 1

    # -- the telemetry tick --------------------------------------------------------------------
    def due(self, now: float) -> bool:
        return bool(self._windows) and now - self._start >= self.window_s

    def take(self, now: float, device_id: str) -> list[AccuracyRecord]:
        """Close the window into ``accuracy`` records (one per bundle and task)."""
        with self._lock:
            windows, start = self._windows, self._start
            self._reset(now)
        return [AccuracyRecord(now, device_id, bundle, task, start, now, c["total"],
                               c.get("correct"),
                               {k: (v[0], v[1]) for k, v in c["per_class"].items()}
                               if "per_class" in c else None,
                               tuple(c["abs_error"]) if "abs_error" in c else None)
                for (bundle, task), c in windows.items() if bundle is not None]


def _rows(x: Any, n: int, what: str) -> list[Any]:
    rows = x if isinstance(x, list) else [x]
    if len(rows) != n:
        raise FeedbackRefused("wrong-type", f"{what}: {len(rows)} given for a prediction of "
                              f"{n} rows")
    return rows


def _score_class(p: _Prediction, label: Any, value: Any) -> dict[str, Any]:
    if label is None or value is not None:
        raise FeedbackRefused("wrong-type", "this prediction is a classification: send "
                              "'label' (a class index, or one per row)")
    rows = _rows(label, len(p.predicted), "labels")
    if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in rows):
        raise FeedbackRefused("wrong-type", "a label must be a class index (integer >= 0)")
    ok = [int(x) == int(y) for x, y in zip(rows, p.predicted.tolist(), strict=True)]
    return {"labels": [int(x) for x in rows], "correct_rows": ok, "correct": all(ok)}


def _score_value(p: _Prediction, label: Any, value: Any) -> dict[str, Any]:
    if value is None or label is not None:
        raise FeedbackRefused("wrong-type", "this prediction is a regression: send 'value' "
                              "(a number, or one list of numbers per row)")
    rows = _rows(value, len(p.predicted), "values")
    try:
        truth = np.asarray(rows, dtype=np.float64).reshape(len(p.predicted), -1)
    except (ValueError, TypeError):
        raise FeedbackRefused("wrong-type", "values must be numbers shaped like the "
                              "prediction") from None
    if truth.shape != p.predicted.shape or not np.isfinite(truth).all():
        raise FeedbackRefused("wrong-type", f"values have shape {list(truth.shape)}, the "
                              f"prediction {list(p.predicted.shape)} (finite numbers)")
    errs = np.abs(truth - p.predicted.astype(np.float64)).max(axis=1)
    return {"abs_errors": [float(e) for e in errs], "abs_error": float(errs.max())}


def _bucket(err: float) -> int:
    for i, edge in enumerate(ABS_ERROR_EDGES):
        if err <= edge or math.isnan(err):
            return i
    return len(ABS_ERROR_EDGES)

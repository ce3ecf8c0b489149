"""Live drift sketches: counts of sampled inputs and outputs in the bundle's reference bins.

Why it exists: the fleet tests whole distributions (edgeops/drift/stats.py) but a device can only
afford to send a few hundred bytes per feature per window. So the agent counts one inference
request in ``sample_every`` into the bins the signed manifest fixed (``Manifest.drift``) and
sends the counts when the window closes (``window_s`` seconds or ``window_inferences``
requests, whichever comes first), as a ``drift_sketch`` telemetry record (docs/DRIFT.md).

Cost on the request path: one counter increment for unsampled requests; for sampled ones, a few
numpy reductions per tensor and one ``searchsorted`` + ``bincount`` per feature. Thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edgeops.drift.features import extract
from edgeops.drift.reference import DriftReference

__all__ = ["DriftSketch"]


class DriftSketch:
    """Counts for the active bundle's reference; :meth:`take` closes a window into a record."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._key: str | None = None             # bundle label the counts belong to
        self._ref: DriftReference | None = None
        self._counts: dict[str, np.ndarray] = {}
        self._requests = 0
        self._sampled = 0
        self._start = clock()

    def set_reference(self, bundle: str | None, reference: DriftReference | None) -> None:
        """Start counting for another bundle (the open window is discarded: other bins)."""
        with self._lock:
            if bundle == self._key and reference is self._ref:
                return
            self._key, self._ref = bundle, reference
            self._reset()

    def _reset(self) -> None:
        ref = self._ref
        self._counts = {} if ref is None else {
            f.name: np.zeros(f.bins, dtype=np.int64) for f in ref.features}
        self._requests = self._sampled = 0
        self._start = self._clock()

    def observe(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """The inference service's output observer: (inputs, outputs) of a served request."""
        ref = self._ref
        if ref is None:
            return
        self._requests += 1           # a lost increment under a race only shifts the sample
        if self._requests % ref.sample_every:
            return
        found: dict[str, np.ndarray] = {}
        for rule in ref.rules:
            src = inputs if rule.side == "input" else outputs
            arr = src.get(rule.tensor)
            if arr is not None:
                for name, values in extract(rule, np.asarray(arr)).items():
                    fb = ref.feature(name)
                    if fb is not None:
                        found[name] = fb.bin_counts(values)
        with self._lock:
            if ref is not self._ref:
                return                # the bundle changed meanwhile
            self._sampled += 1
            for name, c in found.items():
                self._counts[name] += c

    def due(self, now: float) -> bool:
        """The open window is complete (time or request count reached)."""
        ref = self._ref
        return ref is not None and (now - self._start >= ref.window_s or
                                    self._requests >= ref.window_inferences)

    def take(self, now: float, device_id: str) -> dict[str, Any] | None:
        """Close the window into a ``drift_sketch`` record (None when nothing was sampled)."""
        with self._lock:
            ref, counts, start = self._ref, self._counts, self._start
            requests, sampled = self._requests, self._sampled
            self._reset()
        if ref is None or sampled == 0:
            return None
        return {"kind": "drift_sketch", "ts": now, "device_id": device_id, "bundle": self._key,
                "window_start": start, "window_end": now, "requests": requests,
                "sampled": sampled, "sample_every": ref.sample_every,
                "counts": {k: [int(x) for x in v.tolist()] for k, v in counts.items()
                           if v.any()}}

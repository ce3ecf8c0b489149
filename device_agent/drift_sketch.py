"""Live drift sketches: counts of sampled inputs and outputs in the bundle's reference bins.

Why it exists: the fleet tests whole distributions (edgeops/drift/stats.py) but a device can only
afford to send a few hundred bytes per feature per window. So the agent counts one inference
request in ``sample_every`` into the bins the signed manifest fixed (``Manifest.drift``) and
sends the counts when the window closes (``window_s`` seconds or ``window_inferences``
requests, whichever comes first), as a ``drift_sketch`` telemetry record (docs/DRIFT.md) whose
counts are packed (edgeops/drift/sketch_codec.py: about a fifth of the JSON form's bytes).

Cost on the request path: one counter increment for unsampled requests; a sampled one copies its
small tensors (up to 64 KiB; larger ones, images, are reduced to their feature values at once),
and every 256 sampled requests (or when the window closes) they are binned together, a few array
operations per tensor for the whole batch, against all features' edges at once
(benchmarks/drift.py measures it beside today's mean-shift observer). Thread-safe.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edgeops.drift.features import extract
from edgeops.drift.reference import DriftReference, TensorRule
from edgeops.drift.sketch_codec import pack_counts
from edgeops.protocol.records import DriftSketchRecord

__all__ = ["DEFER_MAX_BYTES", "DEFER_MAX_REQUESTS", "DriftSketch"]

DEFER_MAX_BYTES = 64 * 1024      # a tensor up to this size is copied and counted in a batch
DEFER_MAX_REQUESTS = 256         # sampled requests held before they are counted (memory bound)


class _Plan:
    """The reference compiled for counting: every quantile feature's edges in one matrix
    (padded with +inf), so a sampled request is binned with a few array operations instead of
    one ``searchsorted`` per feature; tabular tensors skip the per-feature dict entirely (their
    columns are the features, in order)."""

    def __init__(self, ref: DriftReference) -> None:
        self.names = [f.name for f in ref.features]
        self.row = {name: i for i, name in enumerate(self.names)}
        self.bins = np.array([f.bins for f in ref.features], dtype=np.int64)
        self.width = int(self.bins.max())
        self.edges = np.full((len(self.names), max(1, self.width - 1)), np.inf)
        self.categorical = np.array([f.kind == "categorical" for f in ref.features])
        for i, f in enumerate(ref.features):
            self.edges[i, : len(f.edges)] = f.edges
        # rule -> rows of its column features (tabular/regression), when they are all watched
        self.columns: dict[TensorRule, np.ndarray] = {}
        for rule in ref.rules:
            if rule.rule in ("tabular", "regression"):
                p = f"{rule.side}:{rule.tensor}"
                cols = [self.row[p]] if p in self.row else []
                j = 0
                while f"{p}[{j}]" in self.row:
                    cols.append(self.row[f"{p}[{j}]"])
                    j += 1
                if cols:
                    self.columns[rule] = np.asarray(cols)

    def block(self, rule: TensorRule, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, values [rows, batch]) of one tensor."""
        cols = self.columns.get(rule)
        if cols is not None and arr.ndim >= 1 and arr.dtype.kind in "fiub" and arr.shape[0]:
            x = arr.reshape(arr.shape[0], -1)
            if x.shape[1] == len(cols) or (len(cols) > 1 and x.shape[1] > len(cols)):
                return cols, x[:, : len(cols)].T.astype(np.float64)
        found = extract(rule, arr)
        rows = [self.row[n] for n in found if n in self.row]
        if not rows:
            return None
        vals = [found[n] for n in found if n in self.row]
        if any(v.shape != vals[0].shape for v in vals):
            return None                     # not one value per sample: not a known shape
        return np.asarray(rows), np.stack(vals).astype(np.float64, copy=False)

    def add(self, counts: np.ndarray, rows: np.ndarray, v: np.ndarray) -> None:
        """Count ``v`` ([rows, batch]) into ``counts`` (flat [features * width])."""
        b = (self.edges[rows][:, :, None] < v[:, None, :]).sum(axis=1)   # edges below value
        cat = self.categorical[rows]
        if cat.any():
            vc = v[cat]
            b[cat] = np.where(np.isfinite(vc), vc, -1).astype(np.int64)
        ok = np.isfinite(v) & (b >= 0) & (b < self.bins[rows][:, None])
        np.add.at(counts, (rows[:, None] * self.width + b)[ok], 1)


class DriftSketch:
    """Counts for the active bundle's reference; :meth:`take` closes a window into a record."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._key: str | None = None             # bundle label the counts belong to
        self._ref: DriftReference | None = None
        self._plan: _Plan | None = None
        self._counts = np.zeros(0, dtype=np.int64)
        self._requests = 0
        self._sampled = 0
        self._start = clock()

    def set_reference(self, bundle: str | None, reference: DriftReference | None) -> None:
        """Start counting for another bundle (the open window is discarded: other bins)."""
        with self._lock:
            if bundle == self._key and reference is self._ref:
                return
            self._key, self._ref = bundle, reference
            self._plan = None if reference is None else _Plan(reference)
            self._reset()

    def _reset(self) -> None:
        plan = self._plan
        self._counts = np.zeros(0 if plan is None else len(plan.names) * plan.width,
                                dtype=np.int64)
        self._requests = self._sampled = 0
        self._start = self._clock()
        self._pending: dict[TensorRule, list[np.ndarray]] = {}   # tensors not yet counted
        self._pending_values: dict[TensorRule, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._pending_n = 0

    def _count_pending(self) -> None:
        """Count what ``observe`` put aside, one batch per tensor (caller holds the lock)."""
        plan = self._plan
        if plan is not None:
            for rule, arrays in self._pending.items():
                if len({a.shape[1:] for a in arrays}) == 1:
                    blk = plan.block(rule, np.concatenate(arrays))
                    if blk is not None:
                        plan.add(self._counts, *blk)
                else:                          # dynamic shapes: one request at a time
                    for a in arrays:
                        blk = plan.block(rule, a)
                        if blk is not None:
                            plan.add(self._counts, *blk)
            for blocks in self._pending_values.values():
                for rows, values in blocks:
                    plan.add(self._counts, rows, values)
        self._pending, self._pending_values, self._pending_n = {}, {}, 0

    def observe(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """The inference service's output observer: (inputs, outputs) of a served request."""
        ref, plan = self._ref, self._plan
        if ref is None or plan is None:
            return
        self._requests += 1           # a lost increment under a race only shifts the sample
        if self._requests % ref.sample_every:
            return
        # Small tensors are copied and counted later in one batch (the request pays a copy);
        # large ones (images) are reduced to their few feature values now.
        small: list[tuple[TensorRule, np.ndarray]] = []
        reduced: list[tuple[TensorRule, tuple[np.ndarray, np.ndarray]]] = []
        for rule in ref.rules:
            arr = (inputs if rule.side == "input" else outputs).get(rule.tensor)
            if arr is None:
                continue
            a = np.asarray(arr)
            if a.nbytes <= DEFER_MAX_BYTES and a.ndim >= 1 and a.dtype.kind in "fiub":
                small.append((rule, a.copy()))
            else:
                blk = plan.block(rule, a)
                if blk is not None:
                    reduced.append((rule, blk))
        with self._lock:
            if plan is not self._plan:
                return                # the bundle changed meanwhile
            self._sampled += 1
            for rule, a in small:
                self._pending.setdefault(rule, []).append(a)
            for rule, blk in reduced:
                self._pending_values.setdefault(rule, []).append(blk)
            self._pending_n += 1
            if self._pending_n >= DEFER_MAX_REQUESTS:
                self._count_pending()

    @property
    def bundle(self) -> str | None:
        """The bundle label whose reference bins the open window counts in (None: not counting).

        Set by the collector when inference swaps models (device_agent/collector.py), so every
        request is counted in the bins of the model that served it."""
        return self._key

    def due(self, now: float) -> bool:
        """The open window is complete (time or request count reached)."""
        ref = self._ref
        return ref is not None and (now - self._start >= ref.window_s or
                                    self._requests >= ref.window_inferences)

    def take(self, now: float, device_id: str) -> dict[str, Any] | None:
        """Close the window into a ``drift_sketch`` record (None when nothing was sampled)."""
        with self._lock:
            self._count_pending()
            ref, plan, counts, start = self._ref, self._plan, self._counts, self._start
            requests, sampled, bundle = self._requests, self._sampled, self._key
            self._reset()
        if ref is None or plan is None or sampled == 0 or bundle is None:
            return None
        table = counts.reshape(len(plan.names), plan.width)
        # every feature, in the reference's order, packed (edgeops/drift/sketch_codec.py): the
        # signed reference fixes names and bins, so they are not sent
        packed = pack_counts([table[i, : plan.bins[i]].tolist() for i in range(len(plan.names))])
        # Whole seconds: the manager only places a window (floor(end / window_s)) and checks
        # its length; the clock's full-precision floats cost ~24 bytes a record. No
        # ``sample_every``: the signed reference states it.
        end = math.floor(now)
        return DriftSketchRecord(end, device_id, bundle, math.floor(start), end,
                                 requests, sampled, counts_z=packed).to_dict()

"""Local inference for the device's own application: an in-process API and a local socket API.

Why here and not in the application: the agent owns which model is active, so it must also be
the one serving it, or an activation could tear a model out from under a request. The rule that
makes swaps safe is simple: :meth:`InferenceService.predict` reads the current
:class:`LoadedModel` reference once and runs on it; :meth:`InferenceService.swap` replaces the
reference. A request in flight keeps the old session alive (plain reference counting) until it
returns, so no request ever fails because of an activation.

The socket API over this service lives in :mod:`device_agent.local_api` (imported only when a
socket or port is configured, to keep the agent's resident size down); it imports this module,
never the other way round.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from device_agent.io_adapter import IoAdapter
from device_agent.memory import release_free_memory
from device_agent.slots import SlotInfo, SlotStore
from edgeops.bundle.manifest import Manifest, TensorSpec
from edgeops.errors import BadContentError, EdgeOpsError
from edgeops.runtime import ModelRunner, load_runner

if TYPE_CHECKING:
    from device_agent.feedback import PredictionLog

__all__ = [
    "InferenceService",
    "InferenceStats",
    "LoadedModel",
    "NoModelError",
    "PredictInputError",
]

log = logging.getLogger(__name__)
_perf_counter = time.perf_counter

Observer = Callable[[Mapping[str, np.ndarray], float, bool], None]
# (inputs, outputs) of a request that succeeded: prediction drift needs the outputs
OutputObserver = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], None]
# Latency histogram bucket upper bounds in milliseconds (last bucket is open-ended).
LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
                      1000.0, 2500.0, float("inf"))


class NoModelError(EdgeOpsError):
    """No model is active yet (fresh device, or the only install failed)."""

    default_hint = "deploy a model to this device from the fleet manager"


class PredictInputError(BadContentError):
    """The request's inputs do not match the active model's signature."""

    default_hint = "GET /v1/model (or `edgeops agent status`) shows the expected inputs"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve: its runner and what it is."""

    runner: ModelRunner
    name: str
    version: str
    target: str
    slot: str | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    loaded_at: float = field(default_factory=time.time)
    adapter: IoAdapter | None = None       # signature form ↔ artifact form (layout, int8 I/O)

    @cached_property
    def serve(self) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
        """Checked feed in, outputs out: the runner, or the runner wrapped in the adapter."""
        run, adapter = self.runner.run, self.adapter
        if adapter is None:
            return run
        return lambda feed: adapter.from_artifact(run(adapter.to_artifact(feed)))

    @cached_property
    def input_plan(self) -> tuple[tuple[str, np.dtype[Any] | None, int,
                                        tuple[tuple[int, int], ...]], ...]:
        """Per input: name, dtype, rank and fixed dims, precomputed for the hot path."""
        plan = []
        for t in self.inputs:
            try:
                dtype: np.dtype[Any] | None = np.dtype(t.dtype)
            except TypeError:
                dtype = None
            dims = tuple((i, d) for i, d in enumerate(t.shape) if isinstance(d, int) and d >= 0)
            plan.append((t.name, dtype, len(t.shape), dims))
        return tuple(plan)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "target": self.target,
                "slot": self.slot, "runtime": self.runner.runtime,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_slot(cls, store: SlotStore, info: SlotInfo, threads: int = 1) -> LoadedModel:
        manifest = Manifest.from_bytes(store.path(info.slot, "manifest.json").read_bytes())
        entry = manifest.artifact_for(info.target)
        if entry is None:
            raise BadContentError(f"slot {info.slot} has no artifact for {info.target}")
        runner = load_runner(store.path(info.slot, info.model_file), runtime=entry.runtime,
                             providers=entry.providers, threads=threads)
        adapter = IoAdapter.from_details(entry.details, runner.inputs, runner.outputs)
        return cls(runner, info.name, info.version, info.target, info.slot, manifest.inputs,
                   manifest.outputs, adapter=None if adapter.identity else adapter)


class InferenceStats:
    """A latency histogram and an error count, cheap enough to update on every request.

    The request path only increments one cumulative bucket (and the error count on failure):
    no lock, no allocation. The rest happens in :meth:`snapshot`, off that path: the figures
    since the last reset are the cumulative counts minus those taken at the reset, so a reset
    never races an increment and the periods add up exactly. On CPython with the GIL a
    ``list[i] += 1`` of small ints is not interrupted between its read and its write (no
    eval-breaker check inside it); on a free-threaded build two threads could rarely lose one
    increment, which a latency statistic tolerates.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()        # between snapshots only
        self._buckets = [0] * len(LATENCY_BUCKETS_MS)
        self._errors = 0
        self._base: tuple[list[int], int] = ([0] * len(LATENCY_BUCKETS_MS), 0)

    def record(self, latency_ms: float, ok: bool) -> None:
        self._buckets[bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        if not ok:
            self._errors += 1

    def snapshot(self, reset: bool = False) -> dict[str, Any]:
        """Totals, histogram and p50/p95/p99 (bucket upper bounds) since the last reset."""
        with self._lock:
            now, errors_now = list(self._buckets), self._errors
            base, base_errors = self._base
            if reset:
                self._base = (now, errors_now)
        buckets = [a - b for a, b in zip(now, base, strict=True)]
        count, errors = sum(buckets), errors_now - base_errors
        return {"count": count, "errors": errors,
                "p50_ms": _quantile(buckets, 0.50), "p95_ms": _quantile(buckets, 0.95),
                "p99_ms": _quantile(buckets, 0.99),
                "histogram": {"le_ms": [b if b != float("inf") else None
                                        for b in LATENCY_BUCKETS_MS], "counts": buckets}}


def _quantile(buckets: Sequence[int], q: float) -> float | None:
    total = sum(buckets)
    if not total:
        return None
    seen = 0
    for bound, n in zip(LATENCY_BUCKETS_MS, buckets, strict=True):
        seen += n
        if seen >= q * total:
            return bound if bound != float("inf") else LATENCY_BUCKETS_MS[-2]
    return None


class InferenceService:
    """The in-process API. Thread-safe; swapping the model never fails a request in flight."""

    def __init__(self, *, threads: int = 1, observers: Sequence[Observer] = ()) -> None:
        self._model: LoadedModel | None = None
        self._swap_lock = threading.Lock()
        self.threads = threads
        self.stats = InferenceStats()
        self.observers = list(observers)
        self.output_observers: list[OutputObserver] = []
        # called with the model now served, right after each swap (the drift sketch takes the
        # new bundle's bins here, so no request of one model is counted in another's bins)
        self.model_listeners: list[Callable[[LoadedModel | None], None]] = []
        # ground truth per prediction id (device_agent/feedback.py); None: no ids handed out
        self.predictions: PredictionLog | None = None

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def swap(self, model: LoadedModel | None) -> LoadedModel | None:
        """Serve ``model`` from now on; return the one it replaced (do not close it: requests
        still running on it hold their own reference)."""
        with self._swap_lock:
            old, self._model = self._model, model
        if model is not None:
            log.info("serving %s@%s (slot %s)", model.name, model.version, model.slot)
        for listener in self.model_listeners:
            try:
                listener(model)
            except Exception:  # a listener must never fail a swap
                log.exception("inference model listener failed")
        return old

    def load_slot(self, store: SlotStore, info: SlotInfo | None) -> None:
        """The installer's ``on_activate`` hook: load first, then swap (a load error leaves the
        current model serving and propagates). Then hands the heap the old session freed back
        to the OS (device_agent/memory.py); a request still running on the old model frees it
        later, and the allocator's fixed trim threshold returns most of that on its own."""
        self.swap(None if info is None else LoadedModel.from_slot(store, info, self.threads))
        release_free_memory()

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # One read of the reference, no lock: a swap() meanwhile only changes what the next
        # request runs on, and this one keeps its model alive until it returns.
        model = self._model
        if model is None:
            raise NoModelError("no model is active on this device")
        t0 = _perf_counter()
        ok = False
        try:
            out = model.serve(_check_inputs(model, inputs))
            ok = True
        finally:
            ms = (_perf_counter() - t0) * 1000.0
            self.stats.record(ms, ok)
            if self.observers:
                self._notify(inputs, ms, ok)
        for obs_out in self.output_observers:     # after the latency was taken
            try:
                obs_out(inputs, out)
            except Exception:  # an observer must never fail a request
                log.exception("inference output observer failed")
        return out

    def _notify(self, inputs: Mapping[str, np.ndarray], ms: float, ok: bool) -> None:
        for obs in self.observers:
            try:
                obs(inputs, ms, ok)
            except Exception:  # an observer must never fail a request
                log.exception("inference observer failed")


def _check_inputs(model: LoadedModel, inputs: Mapping[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
    """Names, dtypes and fixed dims against the manifest; casts (copies) only when needed.

    The common case (a dict of numpy arrays of the right dtype) costs one identity test and a
    shape compare per input and returns ``inputs`` itself.
    """
    plan = model.input_plan
    if type(inputs) is not dict:
        inputs = dict(inputs)
    if len(inputs) != len(plan):
        names = {p[0] for p in plan}
        raise PredictInputError(f"inputs do not match the model: missing "
                                f"{sorted(names - set(inputs))}, unexpected "
                                f"{sorted(set(inputs) - names)}")
    fixed: dict[str, np.ndarray] | None = None
    for name, dtype, ndim, dims in plan:
        value = inputs.get(name)
        if type(value) is not np.ndarray or value.dtype is not dtype:
            cast = _cast(name, value, dtype)
            if cast is not value:
                fixed = dict(inputs) if fixed is None else fixed
                fixed[name] = value = cast
        shape = value.shape
        if len(shape) != ndim:
            _bad_shape(model, name, shape)
        for ax, d in dims:         # a plain loop: a generator costs more than the check
            if shape[ax] != d:
                _bad_shape(model, name, shape)
    return inputs if fixed is None else fixed


def _cast(name: str, value: Any, dtype: np.dtype[Any] | None) -> np.ndarray:
    """``value`` as an array of ``dtype`` (itself when it already is one): the slow path."""
    if value is None:
        raise PredictInputError(f"input {name!r} is missing")
    if type(value) is np.ndarray and (dtype is None or value.dtype == dtype):
        return value
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise PredictInputError(f"input {name!r} cannot be read as {dtype}: {exc}") from None


def _bad_shape(model: LoadedModel, name: str, shape: tuple[int, ...]) -> NoReturn:
    spec = next(t for t in model.inputs if t.name == name)
    raise PredictInputError(f"input {name!r} has shape {list(shape)}, the model expects "
                            f"{list(spec.shape)}")

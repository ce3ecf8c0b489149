"""The records inside a telemetry batch, typed: what a device measured and reports.

Why it exists: a :class:`~edgeops.protocol.messages.TelemetryBatch` carries its records as JSON
objects, and both sides used to build and read those objects by hand (the agent in five
modules, the manager in intake, drift, deltas and the console). These classes are the one
contract, like the command bodies (:mod:`edgeops.protocol.bodies`): the agent builds
``InferenceRecord(...).to_dict()``, the manager reads ``parse_record(d)``, and every instance
is validated on construction, so a bad field is one :class:`RecordError` naming it.

Wire format (docs/PROTOCOL.md ``telemetry``): ``to_dict`` gives exactly the objects agents sent
before these classes existed (same keys, same values, so the same canonical JSON), which lets
old managers read new agents and the other way round. Keys this version does not know are
ignored on parse (an older manager still reads what a newer agent sends; the store keeps the
record as it came). A kind this version does not know is not an error: :func:`parse_record`
returns an :class:`UnknownRecord`, which the manager stores as it came and counts.

Each class checks its own record: types, required fields, ranges, counts that contradict each
other. What needs the manager's state or clock (whose record it is, whether a window is current,
whether a sketch fits its bundle's signed bins, a capture's caps) is the manager's intake
(fleet/drift/concept.py, fleet/drift/intake.py, fleet/capture/intake.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, ClassVar

from edgeops.drift.sketch_codec import PACKED_FIELD
from edgeops.protocol.messages import MessageError

__all__ = [
    "KNOWN_KINDS",
    "AccuracyRecord",
    "CaptureSampleRecord",
    "DeliveryRecord",
    "DriftFeature",
    "DriftRecord",
    "DriftSketchRecord",
    "HeartbeatRecord",
    "InferenceRecord",
    "LatencyHistogram",
    "RecordError",
    "SystemRecord",
    "TelemetryRecord",
    "UnknownRecord",
    "parse_record",
]

_MAX_KIND = 64                 # the manager's telemetry.kind column
_MAX_BUCKETS = 64
_MAX_FEATURES = 4096           # an agent keeps 64 by default (TelemetryLimits.max_features)
_MAX_CLASSES = 4096            # an agent keeps 64 (device_agent/feedback.py)
_MAX_BINS = 4096               # per feature of a drift reference
_MAX_SEQ = 2**62
_REAL = frozenset({int, float})      # types exactly: bool is not a number here
_INT = frozenset({int})
_TUPLE = frozenset({tuple})
_LISTS = frozenset({list, tuple})
_STR = frozenset({str})


class RecordError(MessageError):
    """A telemetry record lacks a field or has one of the wrong type or out of range.

    ``reason`` sorts refusals for counting: ``malformed`` (missing, wrong type),
    ``negative-count`` (a count below zero), ``absurd-count`` (counts that contradict each
    other, such as more correct answers than answers).
    """

    default_hint = "the device sent a record this manager cannot read: check both versions " \
                   "(docs/PROTOCOL.md)"

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


# -- field checks: one line naming the record kind and the field ------------------------------
def _bad(kind: str, name: str, want: str, value: object) -> RecordError:
    return RecordError(f"{kind} record: '{name}' must be {want}, not {value!r:.60}")


def _number(kind: str, name: str, value: object, *, optional: bool = False,
            lo: float | None = None, hi: float | None = None) -> None:
    if value is None and optional:
        return
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))):
        raise _bad(kind, name, "a finite number" + (" or null" if optional else ""), value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"from {lo:g}" if hi is None else f"between {lo:g} and {hi:g}"
        raise RecordError(f"{kind} record: '{name}' must be {span}, not {value!r:.30}")


def _count(kind: str, name: str, value: object, *, optional: bool = False,
           hi: int | None = None) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(kind, name, "an integer count" + (" or null" if optional else ""), value)
    if value < 0:
        raise RecordError(f"{kind} record: '{name}' is below zero ({value})", "negative-count")
    if hi is not None and value >= hi:
        raise RecordError(f"{kind} record: '{name}' is out of range ({value!r:.30})",
                          "absurd-count")


def _text(kind: str, name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise _bad(kind, name, "a non-empty string" + (" or null" if optional else ""), value)


def _flag(kind: str, name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, bool):
        raise _bad(kind, name, "true or false", value)


def _object(kind: str, name: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(kind, name, "an object", value)
    return value


def _list(kind: str, name: str, value: object, most: int) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _bad(kind, name, "a list", value)
    if len(value) > most:
        raise RecordError(f"{kind} record: '{name}' holds over {most} entries")
    return list(value)


def _put(d: dict[str, Any], obj: object, always: tuple[str, ...],
         unless_none: tuple[str, ...] = ()) -> dict[str, Any]:
    """``always`` fields are sent even when null (as agents did); the others only when set."""
    for name in always:
        d[name] = getattr(obj, name)
    for name in unless_none:
        v = getattr(obj, name)
        if v is not None:
            d[name] = v
    return d


@dataclass(frozen=True)
class HeartbeatRecord:
    """The agent is alive: its version, uptime, what it runs and its parts' counters.

    The agent's counters are optional so that agents older than each counter still parse.
    ``parts`` holds the fields the agent's feature parts add (``AgentPart.heartbeat``), sent
    flat beside the others: the one record whose other keys are kept rather than ignored,
    since a part's counters are its own business.
    """

    KIND: ClassVar[str] = "heartbeat"
    ts: float
    agent_version: str
    uptime_s: float
    active: Mapping[str, Any] | None = None     # the active slot: name, version, target, slot
    deferred: bool | None = None                # a deployment waits for its window
    rejected_commands: int | None = None
    mqtt_dropped_inbound: int | None = None
    parts: Mapping[str, Any] = field(default_factory=dict)
    _FIELDS: ClassVar[frozenset[str]] = frozenset({
        "kind", "ts", "agent_version", "uptime_s", "active", "deferred", "rejected_commands",
        "mqtt_dropped_inbound"})

    def __post_init__(self) -> None:
        k = self.KIND
        _number(k, "ts", self.ts)
        if not isinstance(self.agent_version, str):
            raise _bad(k, "agent_version", "a string", self.agent_version)
        _number(k, "uptime_s", self.uptime_s, lo=0)
        if self.active is not None:
            _object(k, "active", self.active)
        _flag(k, "deferred", self.deferred, optional=True)
        _count(k, "rejected_commands", self.rejected_commands, optional=True)
        _count(k, "mqtt_dropped_inbound", self.mqtt_dropped_inbound, optional=True)
        _object(k, "parts", self.parts)
        clash = self._FIELDS.intersection(self.parts)
        if clash:
            raise RecordError(f"{k} record: a part's field may not be named "
                              f"{sorted(clash)[0]!r}")

    def to_dict(self) -> dict[str, Any]:
        return _put({"kind": self.KIND, **self.parts}, self,
                    ("ts", "agent_version", "uptime_s", "active"),
                    ("deferred", "rejected_commands", "mqtt_dropped_inbound"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeartbeatRecord:
        return cls(d.get("ts"), d.get("agent_version"), d.get("uptime_s"),  # type: ignore[arg-type]
                   d.get("active"), d.get("deferred"), d.get("rejected_commands"),
                   d.get("mqtt_dropped_inbound"),
                   {n: v for n, v in d.items() if n not in cls._FIELDS})


@dataclass(frozen=True)
class SystemRecord:
    """CPU, memory, disk and temperature of the device (null where the OS does not say)."""

    KIND: ClassVar[str] = "system"
    ts: float
    cpu_pct: float
    mem_mb: float
    mem_pct: float | None = None
    agent_rss_mb: float | None = None
    disk_free_mb: float | None = None
    temp_c: float | None = None

    def __post_init__(self) -> None:
        k = self.KIND
        _number(k, "ts", self.ts)
        _number(k, "cpu_pct", self.cpu_pct, lo=0, hi=100)
        _number(k, "mem_mb", self.mem_mb, lo=0)
        _number(k, "mem_pct", self.mem_pct, optional=True, lo=0, hi=100)
        _number(k, "agent_rss_mb", self.agent_rss_mb, optional=True, lo=0)
        _number(k, "disk_free_mb", self.disk_free_mb, optional=True, lo=0)
        _number(k, "temp_c", self.temp_c, optional=True)

    def to_dict(self) -> dict[str, Any]:
        return _put({"kind": self.KIND}, self, ("ts", "cpu_pct", "mem_mb"),
                    ("mem_pct", "agent_rss_mb")) | {"disk_free_mb": self.disk_free_mb,
                                                    "temp_c": self.temp_c}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SystemRecord:
        return cls(d.get("ts"), d.get("cpu_pct"), d.get("mem_mb"),  # type: ignore[arg-type]
                   d.get("mem_pct"), d.get("agent_rss_mb"), d.get("disk_free_mb"),
                   d.get("temp_c"))


@dataclass(frozen=True)
class LatencyHistogram:
    """Request counts per latency bucket; ``le_ms`` are upper bounds, null for +infinity."""

    le_ms: tuple[float | None, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        k = InferenceRecord.KIND
        if type(self.le_ms) is not tuple or type(self.counts) is not tuple:
            raise RecordError(f"{k} record: 'histogram' must hold two lists")
        if len(self.le_ms) != len(self.counts) or len(self.counts) > _MAX_BUCKETS:
            raise RecordError(f"{k} record: 'histogram' needs as many counts as bounds "
                              f"(at most {_MAX_BUCKETS})")
        # The manager reads every inference row's histogram (the /metrics scan), so a good one
        # is passed in a few C-level calls; the per-field checks, which name what is wrong,
        # run only when that quick look fails (it never passes a bad histogram).
        bounds = [b for b in self.le_ms if b is not None]
        try:        # (a sum over huge integers does not fit a float: the slow path says so)
            quick = set(map(type, bounds)) <= _REAL and (not bounds or (
                min(bounds) >= 0 and math.isfinite(sum(bounds))))
        except OverflowError:
            quick = False
        if not quick:
            for b in self.le_ms:
                _number(k, "histogram.le_ms", b, optional=True, lo=0)
        if not (set(map(type, self.counts)) <= _INT and (not self.counts
                                                          or min(self.counts) >= 0)):
            for c in self.counts:
                _count(k, "histogram.counts", c)

    def to_dict(self) -> dict[str, Any]:
        return {"le_ms": list(self.le_ms), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, d: object) -> LatencyHistogram:
        k = InferenceRecord.KIND
        h = d if type(d) is dict else _object(k, "histogram", d)    # (the ABC check is slow)
        le, counts = h.get("le_ms"), h.get("counts")
        if type(le) is not list and not isinstance(le, list | tuple):
            raise _bad(k, "histogram.le_ms", "a list", le)
        if type(counts) is not list and not isinstance(counts, list | tuple):
            raise _bad(k, "histogram.counts", "a list", counts)
        return cls(tuple(le), tuple(counts))


@dataclass(frozen=True)
class InferenceRecord:
    """Requests served since the last record: totals and latency quantiles (bucket bounds)."""

    KIND: ClassVar[str] = "inference"
    ts: float
    bundle: str | None                  # "name@version" that served them
    count: int
    errors: int
    p50_ms: float | None = None         # null when nothing was served
    p95_ms: float | None = None
    p99_ms: float | None = None
    histogram: LatencyHistogram | None = None

    def __post_init__(self) -> None:
        k = self.KIND
        _number(k, "ts", self.ts)
        _text(k, "bundle", self.bundle, optional=True)
        _count(k, "count", self.count)
        _count(k, "errors", self.errors)
        for name in ("p50_ms", "p95_ms", "p99_ms"):
            _number(k, name, getattr(self, name), optional=True, lo=0)
        if self.histogram is not None and not isinstance(self.histogram, LatencyHistogram):
            raise _bad(k, "histogram", "a latency histogram", self.histogram)

    def to_dict(self) -> dict[str, Any]:
        d = _put({"kind": self.KIND}, self, ("ts", "bundle", "count", "errors", "p50_ms",
                                             "p95_ms", "p99_ms"))
        if self.histogram is not None:
            d["histogram"] = self.histogram.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InferenceRecord:
        h = d.get("histogram")
        return cls(d.get("ts"), d.get("bundle"), d.get("count"),  # type: ignore[arg-type]
                   d.get("errors"), d.get("p50_ms"), d.get("p95_ms"),  # type: ignore[arg-type]
                   d.get("p99_ms"), LatencyHistogram.from_dict(h) if h is not None else None)


@dataclass(frozen=True)
class DriftFeature:
    """One input's live summary, and against the bundle's baseline when it has one.

    ``shift`` = |live mean - baseline mean| / baseline std (null when the std is 0). The
    baseline fields and ``shift`` are sent only when the bundle has a baseline for the input.
    """

    count: float | None
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    baseline_mean: float | None = None
    baseline_std: float | None = None
    shift: float | None = None

    def __post_init__(self) -> None:
        k = DriftRecord.KIND
        _number(k, "features.count", self.count, optional=True, lo=0)
        for name in ("mean", "min", "max"):
            _number(k, f"features.{name}", getattr(self, name), optional=True)
        _number(k, "features.std", self.std, optional=True, lo=0)
        if self.baseline_mean is None:
            if self.baseline_std is not None or self.shift is not None:
                raise RecordError(f"{k} record: a feature's 'baseline_std' or 'shift' needs "
                                  "its 'baseline_mean'")
            return
        _number(k, "features.baseline_mean", self.baseline_mean)
        _number(k, "features.baseline_std", self.baseline_std)
        _number(k, "features.shift", self.shift, optional=True, lo=0)

    def to_dict(self) -> dict[str, Any]:
        d = _put({}, self, ("count", "mean", "std", "min", "max"))
        if self.baseline_mean is not None:
            _put(d, self, ("baseline_mean", "baseline_std", "shift"))
        return d

    @classmethod
    def from_dict(cls, d: object) -> DriftFeature:
        f = _object(DriftRecord.KIND, "features.*", d)
        return cls(f.get("count"), f.get("mean"), f.get("std"), f.get("min"), f.get("max"),
                   f.get("baseline_mean"), f.get("baseline_std"), f.get("shift"))


@dataclass(frozen=True)
class DriftRecord:
    """Input drift of one interval: per input feature, live summaries beside the baseline."""

    KIND: ClassVar[str] = "drift"
    ts: float
    bundle: str | None
    features: Mapping[str, DriftFeature] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = self.KIND
        _number(k, "ts", self.ts)
        _text(k, "bundle", self.bundle, optional=True)
        _object(k, "features", self.features)
        if len(self.features) > _MAX_FEATURES:
            raise RecordError(f"{k} record: 'features' holds over {_MAX_FEATURES} inputs")
        for name, f in self.features.items():
            if not isinstance(name, str) or not isinstance(f, DriftFeature):
                raise _bad(k, f"features.{name}", "a feature summary", f)

    def max_shift(self) -> tuple[str, float] | None:
        """The feature that moved most, with its shift (None when no feature has one)."""
        shifts = [(n, f.shift) for n, f in self.features.items() if f.shift is not None]
        return max(shifts, key=lambda s: s[1]) if shifts else None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "ts": self.ts, "bundle": self.bundle,
                "features": {n: f.to_dict() for n, f in self.features.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftRecord:
        feats = _object(cls.KIND, "features", d.get("features"))
        if len(feats) > _MAX_FEATURES:
            raise RecordError(f"{cls.KIND} record: 'features' holds over {_MAX_FEATURES} inputs")
        return cls(d.get("ts"), d.get("bundle"),  # type: ignore[arg-type]
                   {str(n): DriftFeature.from_dict(f) for n, f in feats.items()})


DELIVERY_METHODS = ("delta", "full", "cached")


@dataclass(frozen=True)
class DeliveryRecord:
    """How a deployment's artifact arrived: the manager sums these into bytes saved.

    ``fetched_bytes`` came over the network (the delta, the whole artifact, or 0 when it was
    cached); ``reason`` says why the full artifact was fetched although a delta was looked for.
    """

    KIND: ClassVar[str] = "delivery"
    ts: float
    deployment_id: str | None
    bundle: str
    method: str
    fetched_bytes: int
    full_bytes: int
    reason: str | None = None

    def __post_init__(self) -> None:
        k = self.KIND
        _number(k, "ts", self.ts)
        _text(k, "deployment_id", self.deployment_id, optional=True)
        _text(k, "bundle", self.bundle)
        if self.method not in DELIVERY_METHODS:
            raise _bad(k, "method", " or ".join(DELIVERY_METHODS), self.method)
        _count(k, "fetched_bytes", self.fetched_bytes)
        _count(k, "full_bytes", self.full_bytes)
        if self.reason is not None and not isinstance(self.reason, str):
            raise _bad(k, "reason", "a string or null", self.reason)

    def to_dict(self) -> dict[str, Any]:
        return _put({"kind": self.KIND}, self, ("ts", "deployment_id", "bundle", "method",
                                                "fetched_bytes", "full_bytes", "reason"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeliveryRecord:
        return cls(d.get("ts"), d.get("deployment_id"), d.get("bundle"),  # type: ignore[arg-type]
                   d.get("method"), d.get("fetched_bytes"), d.get("full_bytes"),  # type: ignore[arg-type]
                   d.get("reason"))


@dataclass(frozen=True)
class CaptureSampleRecord:
    """One captured request under an open capture: ``data`` is the base64 of its sample frame
    (:func:`edgeops.protocol.capture.sample_bytes`), ``bytes`` the frame's length.

    ``data`` stays text here: the manager checks its length against the capture's caps before
    it decodes a byte (fleet/capture/intake.py).
    """

    KIND: ClassVar[str] = "capture"
    ts: float
    device_id: str
    capture_id: str
    bundle: str | None
    seq: int                    # per device and capture, from 0
    bytes: int
    data: str

    def __post_init__(self) -> None:
        k = self.KIND
        _number(k, "ts", self.ts)
        _text(k, "device_id", self.device_id)
        _text(k, "capture_id", self.capture_id)
        _text(k, "bundle", self.bundle, optional=True)
        _count(k, "seq", self.seq, hi=_MAX_SEQ)
        _count(k, "bytes", self.bytes)
        if not isinstance(self.data, str):
            raise _bad(k, "data", "base64 text", self.data)

    def to_dict(self) -> dict[str, Any]:
        return _put({"kind": self.KIND}, self, ("ts", "device_id", "capture_id", "bundle", "seq",
                                                "bytes", "data"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CaptureSampleRecord:
        return cls(d.get("ts"), d.get("device_id"), d.get("capture_id"),  # type: ignore[arg-type]
                   d.get("bundle"), d.get("seq"), d.get("bytes"),  # type: ignore[arg-type]
                   d.get("data"))  # type: ignore[arg-type]


ACCURACY_TASKS = ("classification", "regression")


@dataclass(frozen=True)
class AccuracyRecord:
    """Ground truth scored on the device over one window, for one bundle and task.

    Classification: ``correct`` of ``total`` top-1 answers, and ``per_class`` class index →
    ``[total, correct]``. Regression: ``abs_error`` counts per fixed error bucket (they sum to
    ``total``). Counts that contradict each other are refused as ``absurd-count``.
    """

    KIND: ClassVar[str] = "accuracy"
    ts: float
    device_id: str
    bundle: str
    task: str
    window_start: float
    window_end: float
    total: int
    correct: int | None = None                              # classification
    per_class: Mapping[str, tuple[int, int]] | None = None  # classification
    abs_error: tuple[int, ...] | None = None                # regression

    def __post_init__(self) -> None:
        k = self.KIND
        _number(k, "ts", self.ts)
        _text(k, "device_id", self.device_id)
        _text(k, "bundle", self.bundle)
        if self.task not in ACCURACY_TASKS:
            raise _bad(k, "task", " or ".join(ACCURACY_TASKS), self.task)
        _number(k, "window_start", self.window_start)
        _number(k, "window_end", self.window_end)
        if self.window_start > self.window_end:
            raise RecordError(f"{k} record: the window ends before it starts")
        _count(k, "total", self.total)
        if self.task == "classification":
            self._check_classes()
        else:
            self._check_errors()

    def _check_classes(self) -> None:
        k = self.KIND
        if self.abs_error is not None:
            raise RecordError(f"{k} record: a classification has no 'abs_error'")
        _count(k, "correct", self.correct)
        assert self.correct is not None
        if self.correct > self.total:
            raise RecordError(f"{k} record: {self.correct} correct of {self.total}",
                              "absurd-count")
        if self.per_class is None:
            return
        _object(k, "per_class", self.per_class)
        if len(self.per_class) > _MAX_CLASSES:
            raise RecordError(f"{k} record: 'per_class' holds over {_MAX_CLASSES} classes")
        for c, v in self.per_class.items():
            if not (isinstance(v, tuple) and len(v) == 2):
                raise _bad(k, f"per_class[{c!r}]", "[total, correct]", v)
            _count(k, f"per_class[{c!r}]", v[0])
            _count(k, f"per_class[{c!r}]", v[1])
            if v[1] > v[0] or v[0] > self.total:
                raise RecordError(f"{k} record: per_class[{c!r}] = {list(v)}", "absurd-count")

    def _check_errors(self) -> None:
        k = self.KIND
        if self.correct is not None or self.per_class is not None:
            raise RecordError(f"{k} record: a regression has no 'correct' or 'per_class'")
        if not isinstance(self.abs_error, tuple):
            raise _bad(k, "abs_error", "a histogram of counts", self.abs_error)
        if len(self.abs_error) > _MAX_BUCKETS:
            raise RecordError(f"{k} record: 'abs_error' holds over {_MAX_BUCKETS} buckets")
        for x in self.abs_error:
            _count(k, "abs_error", x)
        if sum(self.abs_error) != self.total:
            raise RecordError(f"{k} record: abs_error counts sum to {sum(self.abs_error)}, "
                              f"not total {self.total}", "absurd-count")

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy of a classification window (None for regression or no answers)."""
        return self.correct / self.total if self.correct is not None and self.total else None

    def to_dict(self) -> dict[str, Any]:
        d = _put({"kind": self.KIND}, self, ("ts", "device_id", "bundle", "task",
                                             "window_start", "window_end", "total"),
                 ("correct",))
        if self.per_class is not None:
            d["per_class"] = {c: list(v) for c, v in self.per_class.items()}
        if self.abs_error is not None:
            d["abs_error"] = list(self.abs_error)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AccuracyRecord:
        k = cls.KIND
        per_class = abs_error = None
        if d.get("task") == "classification":
            raw = d.get("per_class")
            if raw is not None:
                raw = _object(k, "per_class", raw)
                if len(raw) > _MAX_CLASSES:
                    raise RecordError(f"{k} record: 'per_class' holds over {_MAX_CLASSES} "
                                      "classes")
                per_class = {str(c): tuple(_list(k, f"per_class[{c!r}]", v, 2))
                             for c, v in raw.items()}
            correct = d.get("correct")
        else:
            correct = None
            if d.get("abs_error") is not None:
                abs_error = tuple(_list(k, "abs_error", d.get("abs_error"), _MAX_BUCKETS))
        return cls(d.get("ts"), d.get("device_id"), d.get("bundle"),  # type: ignore[arg-type]
                   d.get("task"), d.get("window_start"), d.get("window_end"),  # type: ignore[arg-type]
                   d.get("total"), correct, per_class, abs_error)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DriftSketchRecord:
    """One closed window's counts in the bins of the bundle's signed drift reference.

    Agents send the counts packed (``counts_z``: every feature in the reference's order,
    edgeops/drift/sketch_codec.py); agents before that sent ``counts`` (feature → list) and
    ``sample_every``, and the manager stores every sketch with ``counts`` unpacked. Exactly one
    of the two is set. Whether the counts fit the reference (features, bins, plausible sums),
    and whether the window is current, is the manager's intake (fleet/drift/intake.py).
    """

    KIND: ClassVar[str] = "drift_sketch"
    ts: float
    device_id: str
    bundle: str
    window_start: float
    window_end: float
    requests: int
    sampled: int
    counts: Mapping[str, tuple[int, ...]] | None = None
    counts_z: str | None = None
    sample_every: int | None = None

    def __post_init__(self) -> None:
        k = self.KIND
        _number(k, "ts", self.ts)
        _text(k, "device_id", self.device_id)
        _text(k, "bundle", self.bundle)
        _number(k, "window_start", self.window_start)
        _number(k, "window_end", self.window_end)
        if self.window_start > self.window_end:
            raise RecordError(f"{k} record: the window ends before it starts")
        _count(k, "requests", self.requests)
        _count(k, "sampled", self.sampled)
        if self.sampled > self.requests:
            raise RecordError(f"{k} record: {self.sampled} sampled of {self.requests} requests",
                              "absurd-count")
        _count(k, "sample_every", self.sample_every, optional=True)
        if self.sample_every == 0:
            raise _bad(k, "sample_every", "1 or more", 0)
        if (self.counts is None) == (self.counts_z is None):
            raise RecordError(f"{k} record: needs one of 'counts' or '{PACKED_FIELD}'")
        if self.counts_z is not None and not isinstance(self.counts_z, str):
            raise _bad(k, PACKED_FIELD, "base64 text", self.counts_z)
        if self.counts is not None:
            _object(k, "counts", self.counts)
            if len(self.counts) > _MAX_FEATURES:
                raise RecordError(f"{k} record: 'counts' holds over {_MAX_FEATURES} features")
            # every count at once in C-level calls (the manager reads every stored sketch);
            # the per-feature checks, which name the feature, only when that look fails
            lists = self.counts.values()
            flat = list(chain.from_iterable(lists)) if set(map(type, lists)) <= _TUPLE else []
            if not (set(map(type, lists)) <= _TUPLE
                    and max(map(len, lists), default=0) <= _MAX_BINS
                    and set(map(type, flat)) <= _INT and min(flat, default=0) >= 0):
                for name, c in self.counts.items():
                    if type(c) is not tuple or len(c) > _MAX_BINS:
                        raise _bad(k, f"counts[{name!r}]",
                                   f"a list of at most {_MAX_BINS} counts", c)
                    for x in c:
                        _count(k, f"counts[{name!r}]", x)

    def to_dict(self) -> dict[str, Any]:
        d = _put({"kind": self.KIND}, self, ("ts", "device_id", "bundle", "window_start",
                                             "window_end", "requests", "sampled"),
                 ("sample_every",))
        if self.counts is not None:
            d["counts"] = {n: list(c) for n, c in self.counts.items()}
        if self.counts_z is not None:
            d[PACKED_FIELD] = self.counts_z
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftSketchRecord:
        k = cls.KIND
        counts = d.get("counts")
        if counts is not None:
            counts = _object(k, "counts", counts)
            if len(counts) > _MAX_FEATURES:
                raise RecordError(f"{k} record: 'counts' holds over {_MAX_FEATURES} features")
            # the manager reads every stored sketch through here (drift status, monitors):
            # messages are only built for a feature that is wrong
            if not set(map(type, counts.values())) <= _LISTS:
                for n, c in counts.items():
                    if not isinstance(c, list | tuple):
                        raise _bad(k, f"counts[{n!r}]", "a list", c)
            names = counts.keys() if set(map(type, counts)) <= _STR else map(str, counts)
            counts = dict(zip(names, map(tuple, counts.values()), strict=True))
        return cls(d.get("ts"), d.get("device_id"), d.get("bundle"),  # type: ignore[arg-type]
                   d.get("window_start"), d.get("window_end"), d.get("requests"),  # type: ignore[arg-type]
                   d.get("sampled"), counts, d.get(PACKED_FIELD), d.get("sample_every"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class UnknownRecord:
    """A record of a kind this version does not know (a newer agent's): kept as it came.

    Not an error, for forward compatibility: the manager stores it and counts it
    (``telemetry:unknown-kind``); readers that do not know the kind skip it.
    """

    kind: str
    ts: float
    fields: Mapping[str, Any] = field(default_factory=dict)   # everything but kind and ts

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind or len(self.kind) > _MAX_KIND:
            raise RecordError(f"a telemetry record's 'kind' must be a string of 1 to "
                              f"{_MAX_KIND} characters, not {self.kind!r:.60}")
        _number(self.kind, "ts", self.ts)

    def to_dict(self) -> dict[str, Any]:
        return {**self.fields, "kind": self.kind, "ts": self.ts}


TelemetryRecord = (HeartbeatRecord | SystemRecord | InferenceRecord | DriftRecord
                   | DriftSketchRecord | DeliveryRecord | CaptureSampleRecord | AccuracyRecord)

_RECORDS: dict[str, Any] = {c.KIND: c for c in (HeartbeatRecord, SystemRecord, InferenceRecord,
                                                 DriftRecord, DriftSketchRecord, DeliveryRecord,
                                                 CaptureSampleRecord, AccuracyRecord)}
KNOWN_KINDS: frozenset[str] = frozenset(_RECORDS)


def parse_record(d: Mapping[str, Any]) -> TelemetryRecord | UnknownRecord:
    """The typed record ``d`` holds, by its ``kind``; :class:`RecordError` if it does not fit.

    A kind this version does not know gives an :class:`UnknownRecord` (not an error).
    """
    if not isinstance(d, Mapping):
        raise RecordError("a telemetry record must be an object")
    kind = d.get("kind")
    cls = _RECORDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return UnknownRecord(kind, d.get("ts"),  # type: ignore[arg-type]
                             {k: v for k, v in d.items() if k not in ("kind", "ts")})
    parsed: TelemetryRecord = cls.from_dict(d)
    return parsed

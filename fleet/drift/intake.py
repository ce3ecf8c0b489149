"""The acceptance rule for ``drift_sketch`` telemetry records: checked before anything is stored.

Why it exists: a sketch is counts a device claims to have seen, and the fleet turns them into
alerts. Counts that do not fit the bundle's signed bins, negative or impossible counts, windows
from the future or the far past and a record naming another device are refused here, with a
reason that ingest counts (``IngestStats.counts["drift_sketch:refused:<reason>"]``), so one
broken or hostile device cannot raise or mask an alarm. Packed counts (what agents send,
edgeops/drift/sketch_codec.py) are unpacked here against the reference's bins, bounded, and
stored in the JSON form older agents send, so everything after intake reads one form. Pure:
the record, the device id from the topic, the reference and the clock in; the counts to store
or a :class:`SketchRefusal` out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from edgeops.bundle.manifest import Manifest
from edgeops.drift.reference import DriftReference
from edgeops.drift.sketch_codec import SketchEncodingError, unpack_counts
from edgeops.errors import EdgeOpsError
from edgeops.protocol.records import DriftSketchRecord, RecordError

__all__ = ["REASONS", "SketchIntake", "SketchLimits", "SketchRefusal", "check_sketch",
           "read_sketch"]

REASONS = ("malformed", "device-mismatch", "no-reference", "unknown-feature",
           "bins-mismatch", "negative-count", "absurd-count", "future-window", "stale-window",
           "bad-encoding")


@dataclass(frozen=True)
class SketchLimits:
    """Times in seconds, counts in samples."""

    max_clock_skew_s: float = 300.0          # window_end may lie this far ahead of our clock
    max_age_s: float = 7 * 86_400.0          # ... and no further back than this
    max_window_s: float = 86_400.0           # a window longer than a day is not a window
    max_samples_per_window: int = 10_000_000


@dataclass(frozen=True)
class SketchRefusal:
    reason: str                 # one of REASONS
    message: str


def read_sketch(record: Mapping[str, Any], device_id: str, reference: DriftReference | None,
                now: float, limits: SketchLimits = SketchLimits()
                ) -> SketchRefusal | dict[str, list[int]]:
    """The counts to store, by feature name, or why the record must not be stored.
    ``reference`` is the drift reference of the bundle the record names (None: bundle unknown
    or without one). Counts come packed (``counts_z``, edgeops/drift/sketch_codec.py: what
    agents send) or, from agents already in the field, as JSON (``counts``: name -> list);
    either way the result is the JSON form, features without a count left out."""
    claimed = record.get("device_id")
    if claimed != device_id:
        return SketchRefusal("device-mismatch",
                             f"sketch from {device_id} claims to come from {claimed!r}")
    try:        # the record's own checks: fields, types, counts (edgeops/protocol/records.py)
        rec = DriftSketchRecord.from_dict(record)
    except RecordError as exc:
        return SketchRefusal(exc.reason, exc.message)
    start, end, sampled = rec.window_start, rec.window_end, rec.sampled
    if end > now + limits.max_clock_skew_s:
        return SketchRefusal("future-window", f"window ends {end - now:.0f} s in the future")
    if end < now - limits.max_age_s:
        return SketchRefusal("stale-window", f"window ended {now - end:.0f} s ago "
                             f"(older than {limits.max_age_s:.0f} s)")
    if end - start > limits.max_window_s:
        return SketchRefusal("malformed", f"window of {end - start:.0f} s")
    if reference is None:
        return SketchRefusal("no-reference", f"bundle {rec.bundle} has no drift reference")
    if sampled > limits.max_samples_per_window:
        return SketchRefusal("absurd-count", f"{sampled} sampled of {rec.requests} requests")
    if rec.counts_z is not None:
        try:
            per = unpack_counts(rec.counts_z, [fb.bins for fb in reference.features])
        except SketchEncodingError as e:
            return SketchRefusal(e.reason, str(e))
        counts = {fb.name: c for fb, c in zip(reference.features, per, strict=True) if any(c)}
    else:
        assert rec.counts is not None
        counts = {name: list(c) for name, c in rec.counts.items()}
    for name, c in counts.items():
        fb = reference.feature(name)
        if fb is None:
            return SketchRefusal("unknown-feature", f"feature {name!r} is not in the reference")
        if len(c) != fb.bins:
            return SketchRefusal("bins-mismatch", f"{name}: {len(c)} counts for {fb.bins} bins")
        if sum(c) > sampled * _max_per_sample(name):
            return SketchRefusal("absurd-count", f"{name}: {sum(c)} counts from {sampled} "
                                 "sampled requests")
    return counts


def check_sketch(record: Mapping[str, Any], device_id: str, reference: DriftReference | None,
                 now: float, limits: SketchLimits = SketchLimits()) -> SketchRefusal | None:
    """None when the record may be stored; else why not (:func:`read_sketch`)."""
    got = read_sketch(record, device_id, reference, now, limits)
    return got if isinstance(got, SketchRefusal) else None


def _max_per_sample(_name: str) -> int:
    # a request may carry a batch: bounded by the agent's inference limits (max batch), so a
    # generous constant; beyond it the counts cannot come from `sampled` requests
    return 1024


class _Bundles(Protocol):
    def get_bundle(self, name: str, version: str) -> Any: ...


class SketchIntake:
    """:func:`check_sketch` with the bundle's reference looked up (and cached) from the store."""

    def __init__(self, store: _Bundles, *, limits: SketchLimits = SketchLimits(),
                 clock: Callable[[], float] = time.time, cache_max: int = 256,
                 unknown_ttl_s: float = 60.0) -> None:
        self.store = store
        self.limits = limits
        self._clock = clock
        # published bundles never change, so a found reference is kept; "unknown" is kept
        # only briefly, or a bundle published after a bogus sketch named it would stay refused
        self._refs: dict[str, tuple[DriftReference | None, float]] = {}
        self._cache_max = cache_max
        self._unknown_ttl_s = unknown_ttl_s

    def reference(self, bundle: str) -> DriftReference | None:
        hit = self._refs.get(bundle)
        if hit is not None and (hit[0] is not None or hit[1] > self._clock()):
            return hit[0]
        ref = None
        name, sep, version = bundle.partition("@")
        if sep:
            rec = self.store.get_bundle(name, version)
            if rec is not None:
                try:
                    ref = Manifest.from_bytes(rec.manifest).drift
                except EdgeOpsError:
                    ref = None
        if len(self._refs) >= self._cache_max:
            self._refs.clear()
        self._refs[bundle] = (ref, self._clock() + self._unknown_ttl_s)
        return ref

    def read(self, device_id: str, record: Mapping[str, Any]
             ) -> SketchRefusal | dict[str, list[int]]:
        """:func:`read_sketch`: the counts to store, or why not."""
        bundle = record.get("bundle")
        ref = self.reference(bundle) if isinstance(bundle, str) else None
        return read_sketch(record, device_id, ref, self._clock(), self.limits)

    def check(self, device_id: str, record: Mapping[str, Any]) -> SketchRefusal | None:
        got = self.read(device_id, record)
        return got if isinstance(got, SketchRefusal) else None

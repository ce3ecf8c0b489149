"""Everything devices send the manager, decoded, checked and routed: status, state, telemetry,
fetch.

Why it exists: the broker lets any connected client publish bytes on a device's topic, and the
manager must survive whatever arrives. Every message goes through :mod:`edgeops.protocol`
(size limit, JSON schema, version, the type the topic allows), the device id in the topic must
equal the one in the payload, unknown devices are logged and dropped, replayed and out-of-order
state reports are ignored (the store compares ``seq``), and exact redeliveries of a telemetry
batch (QoS 1 is at-least-once) are dropped. Telemetry records are stored as they came
(:mod:`edgeops.protocol.records` types them for the readers); ``capture``, ``accuracy`` and
``drift_sketch`` records are checked first and refused with a counted reason, and a record of
a kind this version does not know (a newer agent's) is stored all the same and counted as
``telemetry:unknown-kind``. Nothing here raises for bad input: each message
yields an :class:`Outcome` and is logged; the caller acknowledges it either way.

Telemetry is buffered and written in batches (one transaction per ``telemetry_batch_rows`` or
``telemetry_flush_s``), which is what makes thousands of messages per second possible; the
worker acknowledges telemetry messages only after :meth:`Ingest.flush` has persisted them.

No MQTT client in here: the worker feeds (topic, payload) pairs.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from edgeops.config import DEFAULT_LIMITS
from edgeops.drift.sketch_codec import PACKED_FIELD
from edgeops.protocol import (
    Ack,
    FetchRequest,
    MessageError,
    StateReport,
    StatusMessage,
    TelemetryBatch,
    decode_json,
    topics,
)
from edgeops.protocol.records import KNOWN_KINDS
from fleet.delivery import DeliveryRejected
from fleet.drift.concept import check_accuracy
from fleet.drift.intake import SketchRefusal
from fleet.store import IngestStore

__all__ = [
    "FetchSink",
    "Ingest",
    "IngestConfig",
    "Outcome",
]

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    BUFFERED = "buffered"          # telemetry waiting for the next flush
    DUPLICATE = "duplicate"        # exact redelivery of something already taken
    STALE = "stale"                # state seq not above the last stored / status older
    UNKNOWN_DEVICE = "unknown-device"
    MALFORMED = "malformed"        # bad JSON, schema, version, size, type for topic
    MISMATCH = "mismatch"          # device id in topic and payload differ
    REFUSED = "refused"            # a fetch the delivery refused (unknown artifact, target)
    IGNORED = "ignored"            # not a topic the manager consumes


class SketchCheck(Protocol):
    """fleet.drift.intake.SketchIntake: the counts of a drift_sketch record to store (unpacked),
    or why it must not be stored."""

    def read(self, device_id: str, record: Mapping[str, Any]
             ) -> SketchRefusal | dict[str, list[int]]: ...


class CaptureSink(Protocol):
    """fleet.capture.intake.CaptureIntake: stores a ``capture`` sample, or says why not."""

    def accept(self, device_id: str, record: Mapping[str, Any]) -> Any: ...


class FetchSink(Protocol):
    """Where fetch requests go (fleet.delivery.ChunkDelivery)."""

    def submit(self, req: FetchRequest, device_target: str | None) -> int: ...


@dataclass(frozen=True)
class IngestConfig:
    """Sizes in bytes, times in seconds, counts in rows/entries."""

    max_payload_bytes: int = DEFAULT_LIMITS.max_mqtt_payload_bytes
    telemetry_batch_rows: int = 5000     # flush when this many rows are buffered
    telemetry_flush_s: float = 0.1       # ... or when the oldest buffered row is this old
    device_cache_ttl_s: float = 30.0     # how long a known device's target is trusted
    unknown_cache_ttl_s: float = 5.0     # newly enrolled devices are seen within this
    device_cache_max: int = 100_000
    dedupe_per_device: int = 64          # recent telemetry payload digests remembered
    # each (device, batch seq) stored once, checked in the store (telemetry_batches): devices
    # re-send until acknowledged, possibly to another worker; False = the in-memory check
    # only (benchmarks/fleet_ingest.py measures the difference)
    exactly_once: bool = True


@dataclass
class IngestStats:
    counts: dict[str, int] = field(default_factory=dict)
    telemetry_rows: int = 0
    telemetry_messages: int = 0
    flushes: int = 0

    def bump(self, kind: str, outcome: Outcome) -> None:
        key = _STAT_KEYS.get((kind, outcome))
        if key is None:
            key = _STAT_KEYS[(kind, outcome)] = f"{kind}:{outcome.value}"
        self.counts[key] = self.counts.get(key, 0) + 1


_STAT_KEYS: dict[tuple[str, Outcome], str] = {}


_EXPECT: dict[str, type] = {"status": StatusMessage, "state": StateReport,
                            "telemetry": TelemetryBatch, "fetch": FetchRequest}


class Ingest:
    """Decode, validate and route one message at a time; telemetry is flushed in batches.

    Not thread-safe: one consumer thread per worker calls :meth:`handle` and :meth:`flush`.
    ``on_state(report)`` and ``on_status(device_id, online)`` (the rollout engine) are called
    only for reports the store accepted.
    """

    def __init__(self, store: IngestStore, *, delivery: FetchSink | None = None,
                 on_state: Callable[[StateReport], None] | None = None,
                 on_status: Callable[[str, bool], None] | None = None,
                 row_factory: Callable[..., Any] | None = None,
                 config: IngestConfig | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sketches: SketchCheck | None = None,
                 captures: CaptureSink | None = None) -> None:
        self.store = store
        self.delivery = delivery
        self.on_state = on_state
        self.on_status = on_status
        self.config = config or IngestConfig()
        self._clock = clock
        # called positionally: (device_id, ts, kind, data, seq, deployment_id)
        self._row = row_factory or _default_row_factory()
        self._devices: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._recent: dict[str, deque[int]] = {}
        self._rows: list[Any] = []
        self._seen: dict[str, float] = {}
        self._first_buffered: float | None = None
        # end-to-end acknowledgements (docs/PROTOCOL.md): ready to send, and telemetry ones
        # that wait for the flush that persists their batch
        self._acks: dict[str, Ack] = {}
        self._acks_after_flush: dict[str, Ack] = {}
        # topic -> (device id, channel), or None for a topic ingest ignores; topics repeat
        # per device, and the split + id regex was a visible share of the per-message cost
        self._topics: dict[str, tuple[str, str] | None] = {}
        self.stats = IngestStats()
        # drift_sketch records are checked against the bundle's signed bins before they are
        # stored (fleet/drift/intake.py); without a checker they are refused, never stored
        self.sketches = sketches
        # capture samples go to the capture store (fleet/capture), never the telemetry table;
        # without a sink they are refused
        self.captures = captures

    # -- one message -----------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> Outcome:
        try:
            parts = self._topics[topic]
        except KeyError:
            parts = self._parse_topic(topic)
        if parts is None:
            self.stats.bump("other", Outcome.IGNORED)
            log.debug("ignored message on %s", topic)
            return Outcome.IGNORED
        device_id, kind = parts
        outcome = self._handle(kind, device_id, payload)
        self.stats.bump(kind, outcome)
        return outcome

    def _parse_topic(self, topic: str) -> tuple[str, str] | None:
        parsed = topics.parse_device_topic(topic)
        parts = None
        if parsed is not None and parsed.channel in _EXPECT:
            parts = (parsed.device_id, parsed.channel)
        if len(self._topics) >= 4 * self.config.device_cache_max:
            self._topics.clear()        # bounded: anyone may publish on fresh topics
        self._topics[topic] = parts
        return parts

    def _handle(self, kind: str, device_id: str, payload: bytes) -> Outcome:
        if kind == "status" and not payload:
            return Outcome.IGNORED          # a cleared retained message
        try:
            msg = decode_json(payload, self.config.max_payload_bytes, expect=_EXPECT[kind])
        except MessageError as exc:
            log.warning("dropped %s from %s: %s", kind, device_id, exc.message)
            return Outcome.MALFORMED
        problem = _storable(msg, payload)
        if problem is not None:
            log.warning("dropped %s from %s: %s", kind, device_id, problem)
            return Outcome.MALFORMED
        if msg.device_id != device_id:
            log.warning("dropped %s on the topic of %s claiming to be %r", kind, device_id,
                        msg.device_id)
            return Outcome.MISMATCH
        target = self._device_target(device_id)
        if target is None:
            log.warning("dropped %s from unknown device %s", kind, device_id)
            return Outcome.UNKNOWN_DEVICE
        if isinstance(msg, TelemetryBatch):
            return self._telemetry(msg, payload)
        if isinstance(msg, StateReport):
            return self._state(msg)
        if isinstance(msg, StatusMessage):
            return self._status(msg)
        assert isinstance(msg, FetchRequest)
        return self._fetch(msg, target)

    def _state(self, report: StateReport) -> Outcome:
        stored = self.store.record_state(report)
        # stored now, or a seq at or below the last stored one (a re-send whose first copy
        # made it): either way the device may forget it
        self._ack(self._acks, Ack(report.device_id, state=report.seq))
        if not stored:
            log.info("ignored state seq %d from %s (replayed or out of order)", report.seq,
                     report.device_id)
            return Outcome.STALE
        if self.on_state is not None:
            try:
                self.on_state(report)
            except Exception:  # the engine's bug must not stop ingest; the state is stored
                log.exception("rollout engine failed on state %d from %s", report.seq,
                              report.device_id)
        return Outcome.ACCEPTED

    def _status(self, msg: StatusMessage) -> Outcome:
        if not self.store.set_status(msg.device_id, msg.online, msg.ts, msg.agent_version):
            return Outcome.STALE
        if self.on_status is not None:
            try:
                self.on_status(msg.device_id, msg.online)
            except Exception:  # see _state
                log.exception("rollout engine failed on status of %s", msg.device_id)
        return Outcome.ACCEPTED

    def _fetch(self, req: FetchRequest, target: str) -> Outcome:
        if self.delivery is None:
            return Outcome.IGNORED
        try:
            self.delivery.submit(req, target)
        except DeliveryRejected as exc:
            log.warning("refused fetch: %s", exc.message)
            # acknowledged all the same: asking again cannot change the answer
            self._ack(self._acks, Ack(req.device_id, fetch=(req.artifact,)))
            return Outcome.REFUSED
        self._ack(self._acks, Ack(req.device_id, fetch=(req.artifact,)))
        return Outcome.ACCEPTED

    def _telemetry(self, batch: TelemetryBatch, payload: bytes) -> Outcome:
        digest = hash(payload)
        recent = self._recent.get(batch.device_id)
        # acknowledged once the flush that follows has committed (the first copy of a
        # duplicate may still be in the buffer)
        self._ack(self._acks_after_flush, Ack(batch.device_id, telemetry=batch.seq))
        if recent is None:
            recent = self._recent[batch.device_id] = deque(maxlen=self.config.dedupe_per_device)
        elif digest in recent:
            return Outcome.DUPLICATE
        recent.append(digest)
        last_ts = 0.0
        device_id, seq, row, append = batch.device_id, batch.seq, self._row, self._rows.append
        for rec in batch.records:
            data = dict(rec)             # the record is ours: decoded from this payload
            kind = data.pop("kind")
            if kind == "drift_sketch":
                counts = self._sketch_counts(device_id, rec)
                if counts is None:
                    continue
                data.pop(PACKED_FIELD, None)     # stored unpacked: one form for every reader
                data["counts"] = counts
            if kind == "capture":
                self._capture(device_id, rec)
                continue
            if kind == "accuracy" and not self._accuracy_ok(device_id, rec):
                continue
            if kind not in KNOWN_KINDS:       # a newer agent's: stored as it came, counted
                stats = self.stats.counts
                stats[_UNKNOWN_KIND] = stats.get(_UNKNOWN_KIND, 0) + 1
            ts = float(data.pop("ts"))
            dep = data.pop("deployment_id", None)
            if ts > last_ts:
                last_ts = ts
            append(row(device_id, ts, kind, data, seq,
                       dep if isinstance(dep, str) else None))
        if batch.dropped:
            log.info("device %s reports %d telemetry records dropped by its queue",
                     batch.device_id, batch.dropped)
        if last_ts:
            self._seen[batch.device_id] = max(self._seen.get(batch.device_id, 0.0), last_ts)
        self.stats.telemetry_messages += 1
        if self._first_buffered is None:
            self._first_buffered = self._clock()
        return Outcome.BUFFERED

    def _sketch_counts(self, device_id: str, rec: Mapping[str, Any]
                       ) -> dict[str, list[int]] | None:
        got = (self.sketches.read(device_id, rec) if self.sketches is not None
               else _NO_SKETCH_CHECK)
        if not isinstance(got, SketchRefusal):
            return got
        key = f"drift_sketch:refused:{got.reason}"
        self.stats.counts[key] = self.stats.counts.get(key, 0) + 1
        log.warning("refused drift sketch from %s: %s", device_id, got.message)
        return None

    def _refused(self, kind: str, device_id: str, reason: str, message: str) -> None:
        key = f"{kind}:refused:{reason}"
        self.stats.counts[key] = self.stats.counts.get(key, 0) + 1
        log.warning("refused %s from %s: %s", kind, device_id, message)

    def _capture(self, device_id: str, rec: Mapping[str, Any]) -> None:
        if self.captures is None:
            self._refused("capture", device_id, "no-capture", "this manager takes no captures")
            return
        refusal = self.captures.accept(device_id, rec)
        if refusal is not None:
            self._refused("capture", device_id, refusal.reason, refusal.message)
        else:
            self.stats.counts["capture:stored"] = self.stats.counts.get("capture:stored", 0) + 1

    def _accuracy_ok(self, device_id: str, rec: Mapping[str, Any]) -> bool:
        refusal = check_accuracy(rec, device_id, time.time())
        if refusal is not None:
            self._refused("accuracy", device_id, refusal.reason, refusal.message)
        return refusal is None

    # -- batching --------------------------------------------------------------------------
    def flush_due(self) -> bool:
        if not self._rows and not self._seen:
            return False
        if len(self._rows) >= self.config.telemetry_batch_rows:
            return True
        first = self._first_buffered
        return first is not None and self._clock() - first >= self.config.telemetry_flush_s

    def buffered_rows(self) -> int:
        return len(self._rows)

    def flush(self) -> int:
        """Persist buffered telemetry in one transaction; raises if the store fails (the
        caller then does not acknowledge, so the broker redelivers). Safe to call again after
        a failure: rows that were committed are not written twice."""
        rows = self._rows
        if rows:
            stored = (self.store.insert_telemetry_once(rows) if self.config.exactly_once
                      else self.store.insert_telemetry(rows))
            self._rows = []
            self.stats.telemetry_rows += stored
        if self._seen:
            # one lock order for every worker: two workers updating the same devices in
            # different orders deadlock on PostgreSQL
            self.store.mark_seen(dict(sorted(self._seen.items())))
            self._seen = {}
        self._first_buffered = None
        self.stats.flushes += 1
        for ack in self._acks_after_flush.values():
            self._ack(self._acks, ack)
        self._acks_after_flush = {}
        return len(rows)

    # -- end-to-end acknowledgements -------------------------------------------------------
    @staticmethod
    def _ack(into: dict[str, Ack], ack: Ack) -> None:
        cur = into.get(ack.device_id)
        into[ack.device_id] = ack if cur is None else cur.merge(ack)

    def take_acks(self) -> list[Ack]:
        """Acknowledgements due (one per device, cumulative), to publish on ``ack`` topics.

        Telemetry is acknowledged only after :meth:`flush` persisted it; state reports and
        fetches as soon as they were handled.
        """
        if not self._acks:
            return []
        out = list(self._acks.values())
        self._acks = {}
        return out

    # -- device lookups --------------------------------------------------------------------
    def _device_target(self, device_id: str) -> str | None:
        now = self._clock()
        hit = self._devices.get(device_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        dev = self.store.get_device(device_id)
        target: str | None = str(dev.target) if dev is not None else None
        ttl = self.config.device_cache_ttl_s if target else self.config.unknown_cache_ttl_s
        self._devices[device_id] = (target, now + ttl)
        self._devices.move_to_end(device_id)
        while len(self._devices) > self.config.device_cache_max:
            self._devices.popitem(last=False)
        return target

    def forget_device(self, device_id: str) -> None:
        """Drop a cached lookup (after enrolment or removal)."""
        self._devices.pop(device_id, None)


_INT64 = 2**63


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and abs(
        v) < _INT64


def _storable(msg: Any, payload: bytes) -> str | None:
    """What the JSON schema allows but a database column does not: NUL characters (PostgreSQL
    text), NaN/Infinity (JSON extensions Python accepts) and integers beyond 64 bits. Rejecting
    them here keeps one bad message from poisoning a whole telemetry transaction."""
    if b"\\u0000" in payload:
        return "message contains a NUL character"
    if isinstance(msg, StatusMessage):
        return None if _finite(msg.ts) else "status ts is not a finite number"
    if isinstance(msg, StateReport):
        if not (_finite(msg.ts) and _finite(msg.seq)):
            return "state seq/ts out of range"
        return None
    if isinstance(msg, TelemetryBatch):
        if not (_finite(msg.seq) and _finite(msg.dropped)):
            return "telemetry seq/dropped out of range"
        for rec in msg.records:
            if not _finite(rec["ts"]):
                return "telemetry record ts is not a finite number"
            if not _NUMERIC_KEYS.isdisjoint(rec):
                for k in _NUMERIC_KEYS_ORDERED:
                    v = rec.get(k)
                    if v is not None and isinstance(v, int | float) and not _finite(v):
                        return f"telemetry record {k} out of range"
            if len(rec["kind"]) > 64:
                return "telemetry record kind is too long"
    return None


_NUMERIC_KEYS_ORDERED = ("count", "errors", "p50_ms", "p95_ms", "p99_ms")
_NUMERIC_KEYS = frozenset(_NUMERIC_KEYS_ORDERED)


_UNKNOWN_KIND = "telemetry:unknown-kind"
_NO_SKETCH_CHECK = SketchRefusal("no-reference", "this manager checks no drift sketches")


def _default_row_factory() -> Callable[..., Any]:
    from fleet.store.models import TelemetryRow

    return TelemetryRow

"""Sending the agent's durable queues until a manager acknowledges them, end to end.

Why it exists: the broker's PUBACK says only that the broker has a message. When no manager is
subscribed (the agent reconnected first after an outage), or a dead manager session in the
shared-subscription group gets it, the broker drops or parks it. So a state report or a
telemetry batch leaves the agent's disk only when a manager says, on the device's own ``ack``
topic, that it is stored (:class:`edgeops.protocol.Ack`); until then it is sent again after a
timeout that doubles, with jitter, up to a ceiling, and at once after every reconnect.

One message of each kind is in flight at a time, so reports reach the manager in ``seq``
order and a cumulative ack is exact. A telemetry batch keeps its ``seq`` and records across
re-sends and restarts (:meth:`DurableQueue.pin_batch`), so the manager stores it once.

The state queue also remembers the last report about each deployment
(:class:`StateOutbox`), which the agent sends again when the manager asks (``report-state``).

Used from the agent's I/O thread only (``pump`` and ``on_ack``); no locks of its own.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.telemetry import DurableQueue, TelemetryLimits, take_batch
from edgeops.fsutil import atomic_write
from edgeops.protocol import Ack, TelemetryBatch, topics

__all__ = ["AckSettings", "Outbox", "StateOutbox"]

log = logging.getLogger(__name__)

_TELEMETRY_LIMITS = TelemetryLimits()


@dataclass(frozen=True)
class AckSettings:
    """When to send again what no manager acknowledged. Units are in the names."""

    timeout_s: float = 5.0        # first re-send this long after a send...
    max_timeout_s: float = 30.0   # ...each further one twice as long, up to this
    jitter: float = 0.5           # each wait is uniform(1 - jitter, 1) x its nominal length

    def wait(self, attempt: int, rng: random.Random) -> float:
        nominal = min(self.max_timeout_s, self.timeout_s * 2.0 ** min(attempt, 30))
        return nominal * rng.uniform(1.0 - self.jitter, 1.0)


class StateOutbox(DurableQueue):
    """The state-report queue, which also keeps the last report about a deployment on disk."""

    def __init__(self, path: Path, max_records: int, last_report: Path) -> None:
        super().__init__(path, max_records)
        self.last_report_path = last_report

    def push(self, body: bytes) -> None:
        super().push(body)
        try:
            d = json.loads(body)
        except ValueError:
            return
        if d.get("deployment_id") and d.get("phase"):
            try:
                atomic_write(self.last_report_path, body)
            except OSError as exc:   # the report itself is queued; only report-state's copy lags
                log.warning("last report not saved (%s): a report-state answer may be older", exc)

    def last_report(self) -> dict[str, Any] | None:
        """The last report that carried a deployment and a phase, or None."""
        try:
            d = json.loads(self.last_report_path.read_bytes())
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) else None


@dataclass
class _InFlight:
    seq: int
    last_id: int          # queue row id up to which this message carries records
    body: bytes
    attempt: int
    due: float            # monotonic time of the next re-send
    generation: int       # connection it was last sent on


class Outbox:
    """Sends the state and telemetry queues, one message each in flight, until acknowledged.

    ``publish(topic, payload)`` queues a QoS 1 publish; ``generation()`` is the connection
    count (a reconnect re-sends at once).
    """

    def __init__(self, device_id: str, state_q: DurableQueue, telemetry_q: DurableQueue,
                 publish: Callable[[str, bytes], object], generation: Callable[[], int], *,
                 settings: AckSettings = AckSettings(),
                 telemetry: TelemetryLimits = _TELEMETRY_LIMITS,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.device_id = device_id
        self.state_q = state_q
        self.telemetry_q = telemetry_q
        self._publish = publish
        self._generation = generation
        self.settings = settings
        self.telemetry_limits = telemetry
        self._rng = rng or random.Random()
        self._clock = clock
        self._state_topic = topics.device_topic(device_id, "state")
        self._telemetry_topic = topics.device_topic(device_id, "telemetry")
        self.state: _InFlight | None = None
        self.telemetry: _InFlight | None = None
        self.resent = 0           # re-sends of unacknowledged messages (diagnostics, tests)

    @property
    def busy(self) -> bool:
        """Something is waiting for its acknowledgement."""
        return self.state is not None or self.telemetry is not None

    # -- acknowledgements ------------------------------------------------------------------
    def on_ack(self, ack: Ack) -> None:
        if ack.device_id != self.device_id:
            return
        st = self.state
        if st is not None and ack.state is not None and ack.state >= st.seq:
            self.state_q.ack(st.last_id)
            self.state = None
        tel = self.telemetry
        if tel is not None and ack.telemetry is not None and ack.telemetry >= tel.seq:
            self.telemetry_q.ack_batch(tel.last_id)
            self.telemetry = None

    # -- sending ---------------------------------------------------------------------------
    def pump(self) -> None:
        """Send what is next, and again what is overdue; call often while connected."""
        now, gen = self._clock(), self._generation()
        self.state = self._step(self.state, self._topic_state, self._next_state, now, gen)
        self.telemetry = self._step(self.telemetry, self._topic_tel, self._next_telemetry,
                                    now, gen)

    def _topic_state(self) -> str:
        return self._state_topic

    def _topic_tel(self) -> str:
        return self._telemetry_topic

    def _step(self, cur: _InFlight | None, topic: Callable[[], str],
              make: Callable[[], tuple[int, int, bytes] | None], now: float,
              gen: int) -> _InFlight | None:
        if cur is None:
            nxt = make()
            if nxt is None:
                return None
            seq, last_id, body = nxt
            self._publish(topic(), body)
            return _InFlight(seq, last_id, body, 0, now + self.settings.wait(0, self._rng), gen)
        if gen != cur.generation or now >= cur.due:
            # a reconnect starts the backoff afresh: the manager is likely back too
            attempt = 0 if gen != cur.generation else cur.attempt + 1
            self._publish(topic(), cur.body)
            self.resent += 1
            log.debug("%s: re-sent %s seq %d (attempt %d)", self.device_id, topic(), cur.seq,
                      attempt)
            cur.attempt, cur.generation = attempt, gen
            cur.due = now + self.settings.wait(attempt, self._rng)
        return cur

    def _next_state(self) -> tuple[int, int, bytes] | None:
        while True:
            rows = self.state_q.peek(1)
            if not rows:
                return None
            rid, body = rows[0]
            try:
                seq = int(json.loads(body)["seq"])
            except (ValueError, KeyError, TypeError):
                log.error("dropping a damaged state report from the outbox")
                self.state_q.ack(rid)
                continue
            return seq, rid, body

    def _next_telemetry(self) -> tuple[int, int, bytes] | None:
        q = self.telemetry_q
        pinned = q.pinned_batch()
        if pinned is not None:          # sent before a restart and never acknowledged
            seq, last = pinned
            batch = take_batch(q, self.telemetry_limits, upto=last)
            if batch is None:            # its records were dropped by the queue bound
                q.ack_batch(last)
                return self._next_telemetry()
            last, records = batch
        else:
            batch = take_batch(q, self.telemetry_limits)
            if batch is None:
                return None
            last, records = batch
            seq = q.pin_batch(last)
        msg = TelemetryBatch(self.device_id, seq, tuple(records), q.dropped)
        return seq, last, msg.to_bytes()

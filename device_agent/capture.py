"""The capture sampler: recent inputs and outputs, sampled into a bounded buffer, opt-in only.

Why it exists: the retraining loop needs live data from a drifting cohort, and a device must not
ship its inputs unless an operator asked for it. So nothing is sampled until the agent accepted
a signed ``capture`` command (edgeops/protocol/capture.py: :class:`CaptureOrder`, which states
the sample rate, the byte caps and the end); the caps are enforced here, where the bytes are
made, and again by the manager where they arrive (fleet/capture/intake.py).

Samples leave as ``capture`` telemetry records through the durable telemetry queue, so they use
the device's own MQTT identity (the broker lets a device publish only on its own topics), the
end-to-end acks and the outage handling every other record has. The bytes a device has used
(total and per UTC day) and its next sample number are kept in ``capture.json`` (atomic
writes), so a restart neither resets the caps nor reuses a sample number.

Cost on the request path with no open capture: one attribute read. With one: a random draw per
request; a sampled request pays one copy of its tensors into the buffer (at most
``buffer_max_bytes``, 1 MiB, wait for the next telemetry tick; more are dropped and counted).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeops.fsutil import atomic_write
from edgeops.protocol.capture import CaptureOrder, sample_bytes
from edgeops.protocol.messages import MessageError
from edgeops.protocol.records import CaptureSampleRecord

__all__ = ["CaptureSampler"]

log = logging.getLogger(__name__)
_DAY_S = 86_400.0


class CaptureSampler:
    """Holds the open capture (if any), samples requests, hands out records. Thread-safe."""

    def __init__(self, state_path: Path, clock: Callable[[], float], *,
                 rng: random.Random | None = None,
                 buffer_max_bytes: int = 1024 * 1024) -> None:
        self._path = state_path
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._buffer: deque[tuple[float, bytes]] = deque()
        self._buffered = 0                 # bytes waiting in the buffer
        self.buffer_max_bytes = buffer_max_bytes
        self.order: CaptureOrder | None = None
        self.used_total = 0           # bytes of the current capture taken into the buffer
        self.used_day = 0
        self.day = -1
        self.next_seq = 0
        self.skipped: dict[str, int] = {}   # why requests chosen by the draw were not kept
        self._load()

    # -- the order ---------------------------------------------------------------------------
    def apply(self, body: Mapping[str, Any]) -> CaptureOrder:
        """A verified ``capture`` command's body: open (or replace) or close the capture."""
        order = CaptureOrder.from_dict(body)      # MessageError for a bad body
        with self._lock:
            same = self.order is not None and self.order.capture_id == order.capture_id
            if not same:
                self.used_total = self.used_day = 0
                self.next_seq = 0
                self._buffer.clear()
                self._buffered = 0
            self.order = order if order.open else None
            self._save()
        log.info("capture %s %s", order.capture_id, "opened" if order.open else "closed")
        return order

    @property
    def active(self) -> bool:
        o = self.order
        return o is not None and self._clock() < o.until

    # -- the request path --------------------------------------------------------------------
    def observe(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
                ) -> None:
        """The inference service's output observer."""
        order = self.order
        if order is None:
            return
        if self._rng.random() >= order.sample_rate:
            return
        now = self._clock()
        if now >= order.until:
            return
        try:
            data = sample_bytes(inputs, outputs)
        except MessageError:
            self._skip("dtype")
            return
        if len(data) > order.max_sample_bytes:
            self._skip("sample-too-large")
            return
        with self._lock:
            if self.order is not order:
                return
            day = int(now // _DAY_S)
            if day != self.day:
                self.day, self.used_day = day, 0
            if self.used_total + len(data) > order.max_bytes_per_device:
                self._skip("device-cap")
                return
            if self.used_day + len(data) > order.max_bytes_per_day:
                self._skip("day-cap")
                return
            if self._buffered + len(data) > self.buffer_max_bytes:
                self._skip("buffer-full")
                return
            self.used_total += len(data)
            self.used_day += len(data)
            self._buffered += len(data)
            self._buffer.append((now, data))

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    # -- the telemetry tick ------------------------------------------------------------------
    def take(self, device_id: str, bundle: str | None) -> list[CaptureSampleRecord]:
        """Buffered samples as ``capture`` records (the byte counts are saved first)."""
        with self._lock:
            order = self.order
            if not self._buffer or order is None:
                return []
            items = list(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            first = self.next_seq
            self.next_seq += len(items)
            self._save()
        return [CaptureSampleRecord(ts, device_id, order.capture_id, bundle, first + i, len(data),
                              base64.b64encode(data).decode("ascii"))
                for i, (ts, data) in enumerate(items)]

    # -- persistence -------------------------------------------------------------------------
    def _save(self) -> None:
        state = {"order": self.order.to_dict() if self.order else None,
                 "used_total": self.used_total, "used_day": self.used_day, "day": self.day,
                 "next_seq": self.next_seq}
        atomic_write(self._path, json.dumps(state, sort_keys=True).encode(), mode=0o600)

    def _load(self) -> None:
        try:
            state = json.loads(self._path.read_bytes())
            order = state.get("order")
            self.order = CaptureOrder.from_dict(order) if order else None
            self.used_total = int(state["used_total"])
            self.used_day = int(state["used_day"])
            self.day = int(state["day"])
            self.next_seq = int(state["next_seq"])
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError, AttributeError, MessageError) as exc:
            # a mangled file: no capture (off is the safe default), counts from zero
            log.warning("ignoring %s: %s", self._path, exc)
            self.order = None

"""The acceptance rule for ``capture`` telemetry records, and where accepted samples go.

Why it exists: a capture upload is data a device claims to have seen, and it ends up in the next
build's calibration and validation set. So before a byte is stored, a sample must name a capture
that is open, come from a device the capture was opened for (on that device's own topic), fit
the capture's caps per sample, per device and per UTC day (the manager's count, whatever the
device believes), and decode as an ``EOC1`` frame of plain numeric arrays. Anything else is
refused with a reason that ingest counts (``IngestStats.counts["capture:refused:<reason>"]``);
nothing of it is stored.

:func:`check_capture` is pure (record, topic device, capture, usage, clock in; a refusal or the
decoded sample out); :class:`CaptureIntake` looks the capture and usage up, writes the bytes to
the blob directory (atomic, by SHA-256) and indexes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.fsutil import atomic_write
from edgeops.protocol.capture import MAX_SAMPLE_BYTES, read_sample
from edgeops.protocol.messages import MessageError
from edgeops.protocol.records import CaptureSampleRecord, RecordError
from fleet.store import CaptureRecord, CaptureSampleRow, CaptureStore

__all__ = ["REASONS", "CaptureIntake", "CaptureRefusal", "blob_path", "check_capture"]

log = logging.getLogger(__name__)

REASONS = ("malformed", "device-mismatch", "no-capture", "capture-closed", "outside-cohort",
           "over-sample-cap", "over-device-cap", "over-day-cap", "bad-arrays")
DAY_S = 86_400.0


@dataclass(frozen=True)
class CaptureRefusal:
    reason: str                 # one of REASONS
    message: str


@dataclass(frozen=True)
class AcceptedSample:
    capture_id: str
    seq: int
    ts: float
    data: bytes
    bundle: str | None


def check_capture(record: Mapping[str, Any], device_id: str, capture: CaptureRecord | None,
                  usage: tuple[int, int], now: float) -> CaptureRefusal | AcceptedSample:
    """May this sample be stored? ``usage``: bytes already stored for the device in this
    capture (in all, today by the manager's clock)."""
    claimed = record.get("device_id")
    if claimed != device_id:
        return CaptureRefusal("device-mismatch",
                              f"sample from {device_id} claims to come from {claimed!r}")
    try:
        rec = CaptureSampleRecord.from_dict(record)
    except RecordError as exc:
        return CaptureRefusal("malformed", exc.message)
    cid, data = rec.capture_id, rec.data
    if capture is None:
        return CaptureRefusal("no-capture", f"no capture {cid!r} on this manager")
    if not capture.is_open(now):
        return CaptureRefusal("capture-closed", f"capture {cid} is not open "
                              f"({capture.to_dict(now)['status']})")
    if device_id not in capture.devices:
        return CaptureRefusal("outside-cohort", f"device {device_id} is not in capture {cid} "
                              f"({capture.selector})")
    cap = min(capture.max_sample_bytes, MAX_SAMPLE_BYTES)
    if len(data) > (cap + 2) // 3 * 4 + 4:
        return CaptureRefusal("over-sample-cap", f"sample of ~{len(data) * 3 // 4} bytes is "
                              f"over the capture's {cap}-byte sample cap")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return CaptureRefusal("malformed", "sample data is not base64")
    if len(raw) > cap:
        return CaptureRefusal("over-sample-cap", f"sample of {len(raw)} bytes is over the "
                              f"capture's {cap}-byte sample cap")
    total, today = usage
    if total + len(raw) > capture.max_bytes_per_device:
        return CaptureRefusal("over-device-cap", f"{device_id} would reach {total + len(raw)} "
                              f"bytes, over {capture.max_bytes_per_device} per device")
    if today + len(raw) > capture.max_bytes_per_day:
        return CaptureRefusal("over-day-cap", f"{device_id} would reach {today + len(raw)} "
                              f"bytes today, over {capture.max_bytes_per_day} per day")
    try:
        read_sample(raw, cap)
    except MessageError as exc:
        return CaptureRefusal("bad-arrays", exc.message)
    return AcceptedSample(cid, rec.seq, float(rec.ts), raw, rec.bundle)


def blob_path(data_dir: Path | None, sha256: str) -> Path:
    """Where a sample's bytes live: the store's data directory, by SHA-256."""
    if data_dir is None:
        raise MessageError("this manager has no data directory for captures")
    return data_dir / "captures" / sha256[:2] / sha256


class CaptureIntake:
    """:func:`check_capture` against the store, then the bytes to disk and a row in the index."""

    def __init__(self, store: CaptureStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    def accept(self, device_id: str, record: Mapping[str, Any]) -> CaptureRefusal | None:
        now = self._clock()
        cid = record.get("capture_id")
        capture = self.store.get_capture(cid) if isinstance(cid, str) else None
        day = int(now // DAY_S)
        usage = (self.store.capture_usage(capture.id, device_id, day) if capture is not None
                 else (0, 0))
        verdict = check_capture(record, device_id, capture, usage, now)
        if isinstance(verdict, CaptureRefusal):
            return verdict
        digest = hashlib.sha256(verdict.data).hexdigest()
        path = blob_path(self.store.data_dir, digest)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, verdict.data, mode=0o600)
        # the row is the commit point: a re-sent sample finds its row and is not counted twice
        self.store.add_capture_sample(CaptureSampleRow(
            verdict.capture_id, device_id, verdict.seq, verdict.ts, day, len(verdict.data),
            digest, verdict.bundle, now))
        return None

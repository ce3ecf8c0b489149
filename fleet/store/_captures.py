"""Data captures: the capture an operator opened and the index of the samples devices sent.

The sample bytes live in the store's blob directory (fleet/capture/blobs.py); here only what to
look them up and bound them by: per (capture, device, seq) one row with its size, UTC day and
SHA-256. Written once in the same portable ``?`` SQL as :mod:`fleet.store._sql`, which mixes
this in.
"""

# ruff: noqa: S608 - SQL text is assembled only from constant fragments and "?" placeholders.
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.store._base import SqlBase

__all__ = ["CaptureRecord", "CaptureRecords", "CaptureSampleRow"]

_COLS = ("id, selector, sample_rate, max_bytes_per_device, max_bytes_per_day, max_sample_bytes, "
         "until, status, devices, created_at, created_by, stopped_at")
_SCOLS = "capture_id, device_id, seq, ts, day, size, sha256, bundle, received_at"


@dataclass(frozen=True)
class CaptureRecord:
    """An opened capture. ``devices``: the selector's members when it was opened."""

    id: str
    selector: str
    sample_rate: float
    max_bytes_per_device: int
    max_bytes_per_day: int
    max_sample_bytes: int
    until: float
    status: str                      # "open" or "stopped" (past ``until`` reads as expired)
    devices: tuple[str, ...]
    created_at: float
    created_by: str | None = None
    stopped_at: float | None = None

    def is_open(self, now: float) -> bool:
        return self.status == "open" and now < self.until

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        status = self.status
        if now is not None and status == "open" and now >= self.until:
            status = "expired"
        return {"id": self.id, "selector": self.selector, "sample_rate": self.sample_rate,
                "max_bytes_per_device": self.max_bytes_per_device,
                "max_bytes_per_day": self.max_bytes_per_day,
                "max_sample_bytes": self.max_sample_bytes, "until": self.until,
                "status": status, "devices": list(self.devices), "created_at": self.created_at,
                "created_by": self.created_by, "stopped_at": self.stopped_at}


@dataclass(frozen=True)
class CaptureSampleRow:
    capture_id: str
    device_id: str
    seq: int
    ts: float
    day: int
    size: int
    sha256: str
    bundle: str | None
    received_at: float


def _capture(r: Sequence[Any]) -> CaptureRecord:
    return CaptureRecord(r[0], r[1], float(r[2]), int(r[3]), int(r[4]), int(r[5]), float(r[6]),
                         r[7], tuple(json.loads(r[8])), float(r[9]), r[10],
                         float(r[11]) if r[11] is not None else None)


def _sample(r: Sequence[Any]) -> CaptureSampleRow:
    return CaptureSampleRow(r[0], r[1], int(r[2]), float(r[3]), int(r[4]), int(r[5]), r[6], r[7],
                            float(r[8]))


class CaptureRecords(SqlBase):
    """The captures and capture_samples tables; the SQL store supplies the plumbing."""

    data_dir: Path | None         # where fleet/capture keeps the sample bytes

    def create_capture(self, c: CaptureRecord) -> None:
        with self._tx() as cur:
            self._exec(cur, f"INSERT INTO captures ({_COLS}) VALUES "
                            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (c.id, c.selector, c.sample_rate, c.max_bytes_per_device,
                        c.max_bytes_per_day, c.max_sample_bytes, c.until, c.status,
                        json.dumps(list(c.devices)), c.created_at, c.created_by, c.stopped_at))

    def get_capture(self, capture_id: str) -> CaptureRecord | None:
        with self._tx() as cur:
            self._exec(cur, f"SELECT {_COLS} FROM captures WHERE id = ?", (capture_id,))
            r = cur.fetchone()
            return _capture(r) if r else None

    def list_captures(self, limit: int = 100) -> list[CaptureRecord]:
        with self._tx() as cur:
            self._exec(cur, f"SELECT {_COLS} FROM captures ORDER BY created_at DESC LIMIT ?",
                       (max(1, min(limit, 1000)),))
            return [_capture(r) for r in cur.fetchall()]

    def stop_capture(self, capture_id: str, now: float) -> bool:
        """Open → stopped; False when it was not open."""
        with self._tx() as cur:
            self._exec(cur, "UPDATE captures SET status = 'stopped', stopped_at = ? "
                            "WHERE id = ? AND status = 'open'", (now, capture_id))
            return bool(cur.rowcount)

    def capture_usage(self, capture_id: str, device_id: str, day: int) -> tuple[int, int]:
        """Bytes stored for this device in this capture: (in all, on ``day``)."""
        with self._tx() as cur:
            self._exec(cur, "SELECT COALESCE(SUM(size), 0), COALESCE(SUM(CASE WHEN day = ? "
                            "THEN size ELSE 0 END), 0) FROM capture_samples "
                            "WHERE capture_id = ? AND device_id = ?",
                       (day, capture_id, device_id))
            total, today = cur.fetchone()
            return int(total), int(today)

    def add_capture_sample(self, row: CaptureSampleRow) -> bool:
        """Index one sample; False when (capture, device, seq) is already there (a re-send)."""
        with self._tx() as cur:
            self._exec(cur, f"INSERT INTO capture_samples ({_SCOLS}) VALUES "
                            "(?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       (row.capture_id, row.device_id, row.seq, row.ts, row.day, row.size,
                        row.sha256, row.bundle, row.received_at))
            return bool(cur.rowcount)

    def capture_samples(self, capture_id: str) -> list[CaptureSampleRow]:
        with self._tx() as cur:
            self._exec(cur, f"SELECT {_SCOLS} FROM capture_samples WHERE capture_id = ? "
                            "ORDER BY device_id, seq", (capture_id,))
            return [_sample(r) for r in cur.fetchall()]

    def capture_totals(self, capture_id: str) -> tuple[int, int, int]:
        """(samples, bytes, devices) stored for a capture."""
        with self._tx() as cur:
            self._exec(cur, "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(DISTINCT device_id) "
                            "FROM capture_samples WHERE capture_id = ?", (capture_id,))
            n, size, devices = cur.fetchone()
            return int(n), int(size), int(devices)

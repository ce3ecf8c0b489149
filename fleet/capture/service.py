"""Open, stop, list and export captures: what ``edgeops fleet capture`` and its routes do.

Why it exists: the retraining loop needs a bounded sample of live data from a drifting cohort.
Opening a capture fixes its devices (the selector's members now), stores the bounds, and sends
each device a signed ``capture`` command stating them (edgeops/protocol/capture.py); devices
outside it, or samples over a bound, are refused on intake (fleet/capture/intake.py). Export
turns the stored samples into the ``.npz`` that ``edgeops build --calibration/--validation``
reads (converters/data.py): one array per model input keyed by its name, samples first (the
"whole inputs per sample" form), nothing else in the file.
"""

from __future__ import annotations

import io
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeops.errors import ConfigError, UsageError
from edgeops.protocol.capture import MAX_SAMPLE_BYTES, CaptureOrder, read_sample
from edgeops.protocol.messages import MessageError
from fleet.capture.intake import blob_path
from fleet.errors import ConflictError, NotFoundError
from fleet.ports import CommandSigner, DeviceChannel
from fleet.selector import parse_selector
from fleet.store import CaptureRecord, CaptureStore, DeviceStore

__all__ = ["CaptureBounds", "CaptureFleetStore", "as_capture_store", "export_npz", "start_capture",
           "stop_capture"]

MAX_DURATION_S = 30 * 86_400.0
MAX_BYTES_PER_DEVICE = 1024**3


@runtime_checkable
class CaptureFleetStore(CaptureStore, DeviceStore, Protocol):
    """What opening a capture needs: its tables, and the registry the selector picks from."""


def as_capture_store(store: object) -> CaptureFleetStore:
    """The store with its capture tables (the SQL stores mix them in), or a ConfigError.

    Checked by the methods it has (a wrapper that delegates to a SQL store has them too)."""
    if not isinstance(store, CaptureFleetStore):
        raise ConfigError(f"{type(store).__name__} keeps no data captures",
                          hint="serve the fleet with a SQLite or PostgreSQL store")
    return store


@dataclass(frozen=True)
class CaptureBounds:
    """What an operator sets; bytes count encoded samples, times are epoch seconds."""

    sample_rate: float
    max_bytes_per_device: int
    max_bytes_per_day: int
    until: float
    max_sample_bytes: int = 64 * 1024

    def check(self, now: float) -> None:
        if not 0.0 < self.sample_rate <= 1.0:
            raise UsageError(f"sample rate {self.sample_rate} is not in (0, 1]",
                             hint="e.g. --sample-rate 0.05 keeps one request in 20")
        if not 0 < self.max_bytes_per_device <= MAX_BYTES_PER_DEVICE:
            raise UsageError(f"--max-bytes-per-device must be in 1..{MAX_BYTES_PER_DEVICE}")
        if not 0 < self.max_bytes_per_day <= self.max_bytes_per_device:
            raise UsageError("--max-bytes-per-day must be positive and at most "
                             "--max-bytes-per-device")
        if not 0 < self.max_sample_bytes <= MAX_SAMPLE_BYTES:
            raise UsageError(f"--max-sample-bytes must be in 1..{MAX_SAMPLE_BYTES}")
        if not now < self.until <= now + MAX_DURATION_S:
            raise UsageError("--until must be in the future and at most 30 days away")


def _order(c: CaptureRecord, is_open: bool) -> dict[str, Any]:
    return CaptureOrder(c.id, is_open, c.sample_rate, c.max_bytes_per_device,
                        c.max_bytes_per_day, c.until, c.max_sample_bytes).to_dict()


def start_capture(store: CaptureFleetStore, signer: CommandSigner, channel: DeviceChannel, *,
                  selector: str, bounds: CaptureBounds, now: float,
                  created_by: str | None = None) -> CaptureRecord:
    """Persist the capture, then send each selected device its signed ``capture`` command."""
    bounds.check(now)
    sel = parse_selector(selector)
    devices = sorted(d.id for d in store.select_devices(sel.prefilter()) if sel.matches(d))
    if not devices:
        raise UsageError(f"selector {str(sel)!r} selects no device",
                         hint="list devices with `edgeops fleet devices` and adjust --selector")
    rec = CaptureRecord(f"c-{secrets.token_hex(8)}", str(sel), bounds.sample_rate,
                        bounds.max_bytes_per_device, bounds.max_bytes_per_day,
                        bounds.max_sample_bytes, bounds.until, "open", tuple(devices), now,
                        created_by)
    store.create_capture(rec)
    _send(signer, channel, rec, True)
    return rec


def stop_capture(store: CaptureStore, signer: CommandSigner, channel: DeviceChannel,
                 capture_id: str, now: float) -> CaptureRecord:
    rec = store.get_capture(capture_id)
    if rec is None:
        raise NotFoundError(f"no capture {capture_id!r}")
    if not store.stop_capture(capture_id, now):
        raise ConflictError(f"capture {capture_id} is already {rec.status}")
    _send(signer, channel, rec, False)
    stopped = store.get_capture(capture_id)
    assert stopped is not None
    return stopped


def _send(signer: CommandSigner, channel: DeviceChannel, rec: CaptureRecord,
          is_open: bool) -> None:
    body = _order(rec, is_open)
    # valid until the capture ends: a command delivered later opens nothing anyway
    ttl = max(60.0, rec.until - signer.clock())
    for cmd in signer.issue_many([(d, "capture", body) for d in rec.devices], ttl_s=ttl):
        channel.send_command(cmd.command.device_id, cmd)


def export_npz(store: CaptureStore, capture_id: str) -> tuple[bytes, dict[str, Any]]:
    """The capture's inputs as an ``.npz`` for ``edgeops build``, and a summary of it."""
    rec = store.get_capture(capture_id)
    if rec is None:
        raise NotFoundError(f"no capture {capture_id!r}")
    rows = store.capture_samples(capture_id)
    samples: list[dict[str, np.ndarray]] = []
    unreadable = 0
    bundles: Counter[str] = Counter()
    for r in rows:
        try:
            inputs, _ = read_sample(blob_path(store.data_dir, r.sha256).read_bytes())
        except (OSError, MessageError):
            unreadable += 1
            continue
        samples.append(inputs)
        bundles[r.bundle or "?"] += 1
    if not samples:
        raise ConflictError(f"capture {capture_id} holds no samples yet",
                            hint="wait for devices to upload, or check `edgeops fleet capture "
                                 "list` for the bytes received")
    arrays, kept = _stack(samples)
    buf = io.BytesIO()
    named: dict[str, Any] = dict(arrays)
    np.savez(buf, **named)
    summary = {"capture_id": capture_id, "samples": kept, "stored": len(rows),
               "left_out": len(samples) - kept, "unreadable": unreadable,
               "bundles": dict(bundles),
               "inputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name}
                          for k, v in arrays.items()}}
    return buf.getvalue(), summary


def _stack(samples: Sequence[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], int]:
    """Samples of the most common signature (names, shapes, dtypes), stacked samples-first.

    A bundle switch mid-capture can change the inputs; mixing would give build a file it
    refuses, so the minority signature is left out (counted in the summary).
    """
    def sig(s: dict[str, np.ndarray]) -> tuple[tuple[str, tuple[int, ...], str], ...]:
        return tuple(sorted((k, v.shape, v.dtype.name) for k, v in s.items()))

    common, _ = Counter(sig(s) for s in samples).most_common(1)[0]
    keep = [s for s in samples if sig(s) == common]
    return {name: np.stack([s[name] for s in keep]) for name, _, _ in common}, len(keep)

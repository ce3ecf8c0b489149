"""A monitor's opt-in capture on drift: when its alarm starts, open a bounded data capture.

Why it exists: retraining on a drifting cohort needs a sample of what that cohort now sees.
A monitor created with ``capture_on_drift`` (``edgeops fleet monitor add --capture-on-drift``)
asks the manager to open, when one of its alarms *starts*, a capture on the monitor's cohort
through :func:`fleet.capture.service.start_capture` (signed ``capture`` commands, the same
bounds and refusals as ``edgeops fleet capture start``). Once per alarm start: not again while
the alarm holds, and not when a capture on exactly that cohort is already open (its id is named
instead). The capture id goes into the alarm history and the retrain event.

Off by default: capture moves live inputs off devices, so an operator opts in with bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edgeops.errors import UsageError
from fleet.capture.service import (
    MAX_BYTES_PER_DEVICE,
    MAX_DURATION_S,
    CaptureBounds,
    CaptureFleetStore,
    start_capture,
)
from fleet.fields import known_fields
from fleet.ports import CommandSigner, DeviceChannel

__all__ = ["CaptureOpener", "DriftCapture", "parse_drift_capture"]

MAX_HOURS = MAX_DURATION_S / 3600.0
_KEYS = frozenset(("sample_rate", "max_bytes_per_device", "max_bytes_per_day", "hours"))


@dataclass(frozen=True)
class DriftCapture:
    """The bounds of the capture a monitor opens on drift (bytes count encoded samples)."""

    sample_rate: float = 0.05
    max_bytes_per_device: int = 64 * 1024**2
    max_bytes_per_day: int = 16 * 1024**2
    hours: float = 24.0

    def __post_init__(self) -> None:
        if not 0.0 < self.sample_rate <= 1.0:
            raise UsageError(f"capture sample rate {self.sample_rate} is not in (0, 1]",
                             hint="e.g. --capture-sample-rate 0.05 keeps one request in 20")
        if not 0 < self.max_bytes_per_device <= MAX_BYTES_PER_DEVICE:
            raise UsageError("capture max bytes per device must be in "
                             f"1..{MAX_BYTES_PER_DEVICE} (--capture-max-bytes-per-device)")
        if not 0 < self.max_bytes_per_day <= self.max_bytes_per_device:
            raise UsageError("capture max bytes per day must be positive and at most the max "
                             "bytes per device (--capture-max-bytes-per-day)")
        if not (math.isfinite(self.hours) and 0.0 < self.hours <= MAX_HOURS):
            raise UsageError(f"capture hours must be more than 0 and at most {MAX_HOURS:g} "
                             "(--capture-hours)")

    def bounds(self, now: float) -> CaptureBounds:
        return CaptureBounds(self.sample_rate, self.max_bytes_per_device,
                             self.max_bytes_per_day, now + self.hours * 3600.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_drift_capture(v: Any) -> DriftCapture | None:
    """The API's ``capture_on_drift`` field: null/absent (off) or an object of bounds; a key
    left out takes its default (shown by ``monitor list --json``)."""
    if v is None or v is False:
        return None
    if v is True:
        return DriftCapture()
    v = known_fields(v, _KEYS, what="capture_on_drift",
                     not_object="monitor capture_on_drift must be null or an object",
                     example='e.g. {"sample_rate": 0.05, "max_bytes_per_device": 67108864, '
                             '"max_bytes_per_day": 16777216, "hours": 24}')
    for key in ("max_bytes_per_device", "max_bytes_per_day"):
        if key in v and (isinstance(v[key], bool) or not isinstance(v[key], int)):
            raise UsageError(f"capture_on_drift {key} must be an integer")
    for key in ("sample_rate", "hours"):
        if key in v and (isinstance(v[key], bool) or not isinstance(v[key], int | float)):
            raise UsageError(f"capture_on_drift {key} must be a number")
    return DriftCapture(**{k: v[k] for k in _KEYS if k in v})


class CaptureOpener:
    """Opens a monitor's capture through fleet/capture (signed commands to the cohort).

    ``channel`` is a getter: the manager swaps its device channel when the broker connects.
    """

    def __init__(self, store: CaptureFleetStore,
                 signer_channel: Callable[[], tuple[CommandSigner, DeviceChannel]]) -> None:
        self.store = store
        self.signer_channel = signer_channel

    def __call__(self, cohort: str, settings: DriftCapture, now: float, created_by: str
                 ) -> str:
        signer, channel = self.signer_channel()
        rec = start_capture(self.store, signer, channel, selector=cohort,
                            bounds=settings.bounds(now), now=now, created_by=created_by)
        return rec.id

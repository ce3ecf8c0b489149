"""When may a verified model be activated? Maintenance windows and "not while driving".

Why it exists apart from the installer: the rules are site policy, not install mechanics, and
they are fed by different sources (the wall clock, a file the vehicle writes, a local MQTT topic
relayed by the MQTT adapter, a signed ``config`` command). :class:`InstallPolicy` is pure given
its inputs: ``evaluate(now)`` reads the driving signal and returns a decision. A ``deferred``
decision is not a failure: the installer keeps the staged slot and retries when allowed.

Fail-safe rule: when a driving signal is configured but its value is unknown (file missing or
unreadable, no topic message yet), the install is deferred: activating a model in a moving
vehicle is the one thing this module exists to prevent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from device_agent.config import DrivingSignal, PolicyConfig, parse_window

__all__ = ["DrivingState", "InstallPolicy", "PolicyDecision", "in_windows"]

_MAX_SIGNAL_BYTES = 64


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    reason: str | None = None          # why deferred, for the fleet
    retry_after_s: float = 0.0         # when it is worth asking again


def in_windows(windows: Sequence[str], now: datetime) -> tuple[bool, float]:
    """Is local time ``now`` inside one of the windows? Also: seconds until the next opens.

    Windows are "HH:MM-HH:MM" in local time; an end before the start wraps past midnight
    ("23:00-01:00"). No windows means always allowed.
    """
    if not windows:
        return True, 0.0
    minute = now.hour * 60 + now.minute + now.second / 60.0
    best = float("inf")
    for w in windows:
        start, end = parse_window(w)
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if inside:
            return True, 0.0
        wait_min = (start - minute) % (24 * 60)
        best = min(best, wait_min * 60.0)
    return False, best


def _parse_flag(raw: bytes | str) -> bool | None:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.strip().lower()
    if text in ("1", "true", "yes", "driving"):
        return True
    if text in ("0", "false", "no", "stopped", "parked"):
        return False
    return None


class DrivingState:
    """The vehicle's "am I driving" signal, from whichever source the config names.

    ``on_topic_message`` is the callback the MQTT adapter calls with each payload received on
    the configured local topic (payload ``"1"``/``"0"``); it is thread-safe.
    """

    def __init__(self, signal: DrivingSignal | None = None) -> None:
        self._lock = threading.Lock()
        self._signal = signal
        self._topic_value: bool | None = None

    @property
    def signal(self) -> DrivingSignal | None:
        return self._signal

    def set_signal(self, signal: DrivingSignal | None) -> None:
        """Switch the source (a signed ``config`` command may do this)."""
        with self._lock:
            if signal != self._signal:
                self._topic_value = None
            self._signal = signal

    def on_topic_message(self, payload: bytes) -> None:
        value = _parse_flag(payload[:_MAX_SIGNAL_BYTES])
        with self._lock:
            self._topic_value = value

    def driving(self) -> bool | None:
        """True/False, or None when a signal is configured but its value is unknown."""
        with self._lock:
            signal, topic_value = self._signal, self._topic_value
        if signal is None:
            return False
        if signal.file is not None:
            try:
                with open(signal.file, "rb") as f:
                    return _parse_flag(f.read(_MAX_SIGNAL_BYTES))
            except OSError:
                return None
        return topic_value


class InstallPolicy:
    """Maintenance windows plus the driving signal; ``evaluate`` says go or defer (and why)."""

    def __init__(self, windows: Sequence[str] = (), driving: DrivingState | None = None,
                 clock: Callable[[], datetime] = datetime.now,
                 recheck_driving_s: float = 30.0) -> None:
        for w in windows:
            parse_window(w)
        self.windows = tuple(windows)
        self.driving = driving or DrivingState()
        self._clock = clock
        self._recheck_s = recheck_driving_s

    @classmethod
    def from_config(cls, cfg: PolicyConfig,
                    clock: Callable[[], datetime] = datetime.now) -> InstallPolicy:
        return cls(cfg.maintenance_windows, DrivingState(cfg.driving_signal), clock)

    def evaluate(self) -> PolicyDecision:
        now = self._clock()
        inside, wait_s = in_windows(self.windows, now)
        if not inside:
            opens = (now + timedelta(seconds=wait_s)).strftime("%H:%M")
            return PolicyDecision(False, f"outside the maintenance windows "
                                         f"({', '.join(self.windows)}); next opens at {opens}",
                                  wait_s)
        driving = self.driving.driving()
        if driving is None:
            return PolicyDecision(False, "vehicle driving state is unknown (no signal yet); "
                                         "waiting for it to report stopped", self._recheck_s)
        if driving:
            return PolicyDecision(False, "vehicle is driving; install waits until it stops",
                                  self._recheck_s)
        return PolicyDecision(True)

    def describe(self) -> dict[str, object]:
        sig = self.driving.signal
        return {"maintenance_windows": list(self.windows),
                "driving_signal": sig.to_dict() if sig else None,
                "driving": self.driving.driving()}


"""Fakes for the fleet tests only: an in-memory DeviceChannel that records what was sent."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from edgeops.protocol import SignedCommand

__all__ = ["FakeDeviceChannel"]


@dataclass
class FakeDeviceChannel:
    """Implements fleet.ports.DeviceChannel by remembering every call (retained = last wins)."""

    desired: dict[str, SignedCommand] = field(default_factory=dict)
    commands: list[tuple[str, SignedCommand]] = field(default_factory=list)
    metadata: dict[str, bytes] = field(default_factory=dict)
    desired_log: list[tuple[str, SignedCommand]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send_desired(self, device_id: str, cmd: SignedCommand) -> None:
        with self._lock:
            self.desired[device_id] = cmd
            self.desired_log.append((device_id, cmd))

    def send_command(self, device_id: str, cmd: SignedCommand) -> None:
        with self._lock:
            self.commands.append((device_id, cmd))

    def publish_metadata(self, filename: str, data: bytes) -> None:
        with self._lock:
            self.metadata[filename] = data

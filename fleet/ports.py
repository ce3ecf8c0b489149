"""The manager's one seam towards devices, and the signer of the commands that cross it.

The rollout engine decides; a :class:`DeviceChannel` delivers. The MQTT worker
(``fleet.worker``) implements the channel over paho; tests use an in-memory fake
(``tests/fleet/fakes.py: FakeDeviceChannel``). :class:`CommandSigner` issues commands with a
per-device sequence number persisted in the store (so a restarted manager never reuses one and
devices reject replays) and an expiry, signed with the online ``manager`` key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from securesystemslib.signer import Signer

from edgeops.protocol import Command, SignedCommand
from fleet.store import CommandSeqStore

__all__ = ["DEFAULT_COMMAND_TTL_S", "CommandSigner", "DeviceChannel"]

DEFAULT_COMMAND_TTL_S = 7 * 24 * 3600.0
"""A desired-state command stays valid a week; it is re-signed when the device returns."""


@runtime_checkable
class DeviceChannel(Protocol):
    """How commands and metadata reach devices. Implementations must not block for long."""

    def send_desired(self, device_id: str, cmd: SignedCommand) -> None:
        """Retained on ``devices/<id>/desired``: what the device should converge to."""

    def send_command(self, device_id: str, cmd: SignedCommand) -> None:
        """One-off command on ``devices/<id>/commands`` (not retained)."""

    def publish_metadata(self, filename: str, data: bytes) -> None:
        """Retained TUF metadata on ``tuf/metadata/<filename>``."""


class CommandSigner:
    """Signs commands for devices: fresh persisted ``seq``, ``issued``/``expires`` from a clock."""

    def __init__(self, signer: Signer, seqs: CommandSeqStore, *,
                 ttl_s: float = DEFAULT_COMMAND_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self.seqs = seqs
        self.ttl_s = ttl_s
        self.clock = clock

    @property
    def keyid(self) -> str:
        return str(self.signer.public_key.keyid)

    def issue(self, device_id: str, kind: str, body: dict[str, Any],
              ttl_s: float | None = None) -> SignedCommand:
        now = self.clock()
        cmd = Command(device_id=device_id, seq=self.seqs.next_command_seq(device_id), kind=kind,
                      issued=now, expires=now + (ttl_s if ttl_s is not None else self.ttl_s),
                      body=body)
        return SignedCommand.sign(cmd, self.signer)

    def issue_many(self, items: Sequence[tuple[str, str, dict[str, Any]]],
                   ttl_s: float | None = None) -> list[SignedCommand]:
        """Like :meth:`issue` for (device_id, kind, body) items, seqs in one transaction."""
        seqs = self.seqs.next_command_seqs([d for d, _, _ in items])
        now = self.clock()
        ttl = ttl_s if ttl_s is not None else self.ttl_s
        return [SignedCommand.sign(Command(device_id=d, seq=seqs[d], kind=kind, issued=now,
                                           expires=now + ttl, body=body), self.signer)
                for d, kind, body in items]

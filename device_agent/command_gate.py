"""The command gate: which signed commands this agent acts on, and which it refuses.

Why its own part: acceptance is a security decision (pinned manager keys, device id, expiry,
persisted replay protection) and should read as one thing, apart from what the agent does with
a command. The gate is fed bytes and the clock and answers with a decision; the rules
themselves are :func:`edgeops.protocol.check_command` (pure) and the typed bodies of
:mod:`edgeops.protocol.bodies`. The gate adds what needs state: the last accepted ``seq``
(persisted in :class:`~device_agent.net_state.NetState`) and the commands queued but not yet
handled, so a retained ``desired`` seen again after a reconnect is not run twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from securesystemslib.signer import Key

from device_agent.net_state import NetState
from edgeops.config import DEFAULT_LIMITS
from edgeops.protocol import (
    BodyError,
    Command,
    CommandBody,
    MessageError,
    SignedCommand,
    check_command,
    parse_body,
)

__all__ = ["Admitted", "BadBody", "CommandGate", "Decision", "Refused"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admitted:
    """A genuine, fresh command for this device, with its typed body: act on it."""

    command: Command
    body: CommandBody
    digest: str                 # SHA-256 of the payload: the retained copy is not run twice


@dataclass(frozen=True)
class BadBody:
    """Genuine and fresh, but its body does not parse: the manager sent what we cannot read."""

    command: Command
    error: BodyError
    digest: str


@dataclass(frozen=True)
class Refused:
    """Not acted on. ``stale``: our manager's retained ``desired``, only older (not an alarm)."""

    reason: str
    stale: bool = False
    seq: int | None = None


Decision = Admitted | BadBody | Refused


class CommandGate:
    """Checks each command payload against the device's keys, address, clock and counters."""

    def __init__(self, device_id: str, *, net: NetState,
                 manager_keys: Callable[[], Sequence[Key]],
                 clock: Callable[[], float],
                 max_bytes: int = DEFAULT_LIMITS.max_mqtt_payload_bytes) -> None:
        self.device_id = device_id
        self.net = net
        self.manager_keys = manager_keys
        self.clock = clock
        self.max_bytes = max_bytes
        self.rejected = 0              # commands refused (not counting stale retained ones)
        self._queued_seq = 0
        self._queued: set[str] = set()

    def check(self, payload: bytes, *, retained_desired: bool = False) -> Decision | None:
        """The decision on one payload; None if it was handled or is queued already."""
        digest = hashlib.sha256(payload).hexdigest()
        if digest == self.net.command_digest or digest in self._queued:
            return None    # the retained ``desired`` again after a reconnect: already handled
        keys = list(self.manager_keys())
        signed: SignedCommand | None = None
        try:
            signed = SignedCommand.from_bytes(payload, self.max_bytes)
            cmd = check_command(signed, device_id=self.device_id, manager_keys=keys,
                                last_seq=max(self.net.command_seq, self._queued_seq),
                                now=self.clock())
        except MessageError as exc:
            if retained_desired and signed is not None and self._genuine(signed, keys):
                # A stale retained ``desired`` (older seq or expired) that the manager signed
                # for us: expected after a restart until it re-signs; not worth an alarm.
                return Refused(exc.message, stale=True, seq=signed.command.seq)
            self.rejected += 1
            return Refused(exc.message)
        try:
            return Admitted(cmd, parse_body(cmd.kind, cmd.body), digest)
        except BodyError as exc:
            return BadBody(cmd, exc, digest)

    def queued(self, seq: int, digest: str) -> None:
        """An admitted command waits for the worker: later ones must have a higher seq."""
        self._queued_seq = seq
        self._queued.add(digest)

    def done(self, digest: str) -> None:
        """The worker finished with it (handled or not)."""
        self._queued.discard(digest)

    def accept(self, seq: int, digest: str) -> None:
        """Record ``seq`` as accepted (persisted): nothing at or below it runs again."""
        self.net.accept_command(seq, digest)

    def _genuine(self, signed: SignedCommand, keys: list[Key]) -> bool:
        """Signed by a pinned manager key and addressed to us (ignoring expiry and seq)."""
        try:
            check_command(signed, device_id=self.device_id, manager_keys=keys, last_seq=-1,
                          now=float("-inf"))
        except MessageError:
            return False
        return True

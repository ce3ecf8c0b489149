"""Signed commands from the fleet manager to one device.

Every command (deploy, rollback, config, cancel, capture) carries the device id, a per-device sequence
number and an expiry, and is signed with the manager's online ``manager`` key. The agent accepts
a command only if the signature verifies against its pinned manager key, it is addressed to this
device, it has not expired, and its ``seq`` is higher than any it has accepted (persisted), so
broker access alone cannot push anything onto a device. A deploy command only names *which*
signed bundle to install; the bundle itself must still pass TUF and the targets-key signature.

The retained ``desired`` topic holds the latest deploy command for a device, re-signed with a
fresh expiry when the device comes back online, so vehicles offline for days still converge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Key, Signature, Signer

from edgeops.bundle.manifest import canonical_json
from edgeops.protocol.messages import PROTOCOL_VERSION, MessageError

__all__ = ["COMMAND_KINDS", "Command", "CommandRejected", "SignedCommand", "check_command"]

# ``capture``: open or close an opt-in data capture (fleet/capture, device_agent/capture.py)
COMMAND_KINDS = ("deploy", "rollback", "config", "cancel", "report-state", "capture")


class CommandRejected(MessageError):
    """A well-formed command that this device must not act on (replay, expiry, address, key)."""

    default_hint = "the command was not issued for this device by its fleet manager"


@dataclass(frozen=True)
class Command:
    """``body`` for deploy: {deployment_id, name, version, target, manifest_path, artifact}."""

    device_id: str
    seq: int
    kind: str
    issued: float
    expires: float
    body: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "seq": self.seq, "kind": self.kind,
                "issued": self.issued, "expires": self.expires, "body": self.body}

    def signed_bytes(self) -> bytes:
        return canonical_json(self.to_dict())


@dataclass(frozen=True)
class SignedCommand:
    command: Command
    signature: Signature

    @classmethod
    def sign(cls, command: Command, signer: Signer) -> SignedCommand:
        return cls(command, signer.sign(command.signed_bytes()))

    def to_bytes(self) -> bytes:
        return canonical_json({"v": PROTOCOL_VERSION, "type": "command",
                               "command": self.command.to_dict(),
                               "signature": self.signature.to_dict()})

    @classmethod
    def from_bytes(cls, payload: bytes, max_bytes: int = 64 * 1024) -> SignedCommand:
        if len(payload) > max_bytes:
            raise MessageError(f"command of {len(payload)} bytes exceeds the limit")
        try:
            d = json.loads(payload)
            if d.get("v") != PROTOCOL_VERSION or d.get("type") != "command":
                raise MessageError("not a version-1 command message")
            c = d["command"]
            kind = c["kind"]
            if kind not in COMMAND_KINDS:
                raise MessageError(f"unknown command kind {kind!r}")
            body = c.get("body", {})
            if not isinstance(body, dict):
                raise MessageError("command body is not an object")
            if not all(isinstance(c[k], int | float) and not isinstance(c[k], bool)
                       for k in ("seq", "issued", "expires")):
                raise MessageError("command seq/issued/expires must be numbers")
            cmd = Command(device_id=str(c["device_id"]), seq=int(c["seq"]), kind=kind,
                          issued=float(c["issued"]), expires=float(c["expires"]), body=body)
            sig = Signature.from_dict(dict(d["signature"]))
        except MessageError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise MessageError("command message is malformed") from None
        return cls(cmd, sig)


def check_command(signed: SignedCommand, *, device_id: str, manager_keys: list[Key],
                  last_seq: int, now: float) -> Command:
    """The agent's acceptance rule. Pure: the caller persists ``seq`` after acting."""
    cmd = signed.command
    key = next((k for k in manager_keys if k.keyid == signed.signature.keyid), None)
    if key is None:
        raise CommandRejected("command is signed by a key this device does not trust")
    try:
        key.verify_signature(signed.signature, cmd.signed_bytes())
    except UnverifiedSignatureError:
        raise CommandRejected("command signature does not verify (altered in transit?)") from None
    if cmd.device_id != device_id:
        raise CommandRejected(f"command is addressed to {cmd.device_id!r}, not {device_id!r}")
    if cmd.expires <= now:
        raise CommandRejected(f"command {cmd.seq} expired at {cmd.expires:.0f}")
    if cmd.seq <= last_seq:
        raise CommandRejected(f"command {cmd.seq} is a replay (last accepted {last_seq})")
    return cmd

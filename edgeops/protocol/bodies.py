"""The bodies of signed commands, typed: what the manager asks a device to do.

Why it exists: a :class:`~edgeops.protocol.commands.Command` carries its ``body`` as the JSON
object that was signed (the signature covers those exact bytes, so the wire form stays a dict).
Both sides used to read and write that dict by hand: the rollout engine built it, the agent
checked each key. These classes are the one contract: the manager builds
``DeployCommand(...).to_dict()``, the agent parses ``DeployCommand.from_dict(body)``, and
every instance is validated on construction (python-tuf's metadata classes work the same way),
so a bad field is one :class:`BodyError` with a message naming it.

Wire format (docs/PROTOCOL.md): optional fields that are unset are left out, ``downgrade``
only appears when true, and keys this version does not know are ignored on parse, so an
older agent still reads what a newer manager sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeops.protocol.capture import CaptureOrder
from edgeops.protocol.messages import MessageError

__all__ = [
    "BodyError",
    "BundleRef",
    "CancelCommand",
    "CommandBody",
    "ConfigCommand",
    "DeployCommand",
    "ReportStateCommand",
    "RollbackCommand",
    "parse_body",
    "raw_deployment_id",
]

_HEX = frozenset("0123456789abcdef")


class BodyError(MessageError):
    """A signed command's body lacks a field or has one of the wrong type."""

    default_hint = "the manager sent a body this agent cannot read: check both versions " \
                   "(docs/PROTOCOL.md)"


def _text(kind: str, name: str, value: object, *, optional: bool = False,
          empty: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or (not empty and not value):
        want = "a string" if empty else "a non-empty string"
        raise BodyError(f"{kind} command: '{name}' must be {want}, not {value!r:.60}")


def _get(d: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise BodyError(f"{kind} command: the body is not an object")
    return d


@dataclass(frozen=True)
class DeployCommand:
    """Install the signed bundle ``name@version`` (built for ``target``) on this device.

    The body only *names* the bundle: what is installed must still pass TUF and the bundle's
    own signatures. ``artifact``/``size`` name the target file for the device's own target;
    ``downgrade`` lets an operator's rollback go below what the device runs (never below the
    release floor the agent reads from the offline-signed targets).
    """

    name: str
    version: str
    deployment_id: str | None = None
    target: str | None = None
    manifest_path: str | None = None
    artifact: str | None = None          # SHA-256 of the target file, hex
    size: int | None = None              # bytes of the target file
    downgrade: bool = False
    KIND = "deploy"

    def __post_init__(self) -> None:
        k = self.KIND
        _text(k, "name", self.name)
        _text(k, "version", self.version)
        for name in ("deployment_id", "target", "manifest_path"):
            _text(k, name, getattr(self, name), optional=True)
        if self.artifact is not None and not (
                isinstance(self.artifact, str) and len(self.artifact) == 64
                and set(self.artifact) <= _HEX):
            raise BodyError(f"{k} command: 'artifact' must be a SHA-256 hex digest")
        if self.size is not None and (not isinstance(self.size, int)
                                      or isinstance(self.size, bool) or self.size < 0):
            raise BodyError(f"{k} command: 'size' must be a byte count, not {self.size!r:.30}")
        if not isinstance(self.downgrade, bool):
            raise BodyError(f"{k} command: 'downgrade' must be true or false")

    @property
    def label(self) -> str:
        """``name@version``: how state reports name the bundle."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "version": self.version}
        for name in ("deployment_id", "target", "manifest_path", "artifact", "size"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        if self.downgrade:
            d["downgrade"] = True
        return d

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> DeployCommand:
        d = _get(body, cls.KIND)
        return cls(name=d.get("name"), version=d.get("version"),    # type: ignore[arg-type]
                   deployment_id=d.get("deployment_id"), target=d.get("target"),
                   manifest_path=d.get("manifest_path"), artifact=d.get("artifact"),
                   size=d.get("size"), downgrade=d.get("downgrade", False))


@dataclass(frozen=True)
class BundleRef:
    """A bundle by name and version (what a rollback goes back to)."""

    name: str
    version: str

    def __post_init__(self) -> None:
        _text("rollback", "to.name", self.name, empty=True)
        _text("rollback", "to.version", self.version, empty=True)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class RollbackCommand:
    """Go back to the previous slot; the deployment being undone is ``name@version``.

    The agent needs only ``deployment_id`` (it goes back to its own previous slot, if the
    release floor allows); the rest says what the manager meant, for logs and audits.
    """

    deployment_id: str
    name: str | None = None
    version: str | None = None
    to: BundleRef | None = None          # what the device ran before, as the manager knows it
    KIND = "rollback"

    def __post_init__(self) -> None:
        _text(self.KIND, "deployment_id", self.deployment_id)
        _text(self.KIND, "name", self.name, optional=True)
        _text(self.KIND, "version", self.version, optional=True)
        if self.to is not None and not isinstance(self.to, BundleRef):
            raise BodyError(f"{self.KIND} command: 'to' must be a bundle reference")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"deployment_id": self.deployment_id,
                             "to": self.to.to_dict() if self.to else None}
        for name in ("name", "version"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        return d

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> RollbackCommand:
        d = _get(body, cls.KIND)
        to = d.get("to")
        if to is not None:
            if not isinstance(to, Mapping):
                raise BodyError(f"{cls.KIND} command: 'to' must be an object or null")
            to = BundleRef(to.get("name"), to.get("version"))     # type: ignore[arg-type]
        return cls(d.get("deployment_id"), d.get("name"), d.get("version"),  # type: ignore[arg-type]
                   to)


@dataclass(frozen=True)
class CancelCommand:
    """Stop working on ``deployment_id`` if it has not been installed yet."""

    deployment_id: str
    KIND = "cancel"

    def __post_init__(self) -> None:
        _text(self.KIND, "deployment_id", self.deployment_id)

    def to_dict(self) -> dict[str, Any]:
        return {"deployment_id": self.deployment_id}

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> CancelCommand:
        return cls(_get(body, cls.KIND).get("deployment_id"))     # type: ignore[arg-type]


@dataclass(frozen=True)
class ReportStateCommand:
    """Send the last report about ``deployment_id`` again (None: about any deployment)."""

    deployment_id: str | None = None
    KIND = "report-state"

    def __post_init__(self) -> None:
        _text(self.KIND, "deployment_id", self.deployment_id, optional=True)

    def to_dict(self) -> dict[str, Any]:
        return {"deployment_id": self.deployment_id}

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> ReportStateCommand:
        return cls(_get(body, cls.KIND).get("deployment_id"))


@dataclass(frozen=True)
class ConfigCommand:
    """Change the agent's run-time settings; today only the driving signal.

    ``driving_signal`` is the policy's ``driving_signal`` object (null switches it off);
    ``sets_driving_signal`` says whether the body names it at all (absent: unchanged).
    """

    deployment_id: str | None = None
    driving_signal: Mapping[str, Any] | None = None
    sets_driving_signal: bool = False
    KIND = "config"

    def __post_init__(self) -> None:
        _text(self.KIND, "deployment_id", self.deployment_id, optional=True)
        if self.driving_signal is not None and not isinstance(self.driving_signal, Mapping):
            raise BodyError(f"{self.KIND} command: 'driving_signal' must be an object or null")
        if self.driving_signal is not None and not self.sets_driving_signal:
            raise BodyError(f"{self.KIND} command: a driving signal given must be set")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.deployment_id is not None:
            d["deployment_id"] = self.deployment_id
        if self.sets_driving_signal:
            d["driving_signal"] = (dict(self.driving_signal)
                                   if self.driving_signal is not None else None)
        return d

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> ConfigCommand:
        d = _get(body, cls.KIND)
        return cls(d.get("deployment_id"), d.get("driving_signal"), "driving_signal" in d)


CommandBody = (DeployCommand | RollbackCommand | CancelCommand | ReportStateCommand
               | ConfigCommand | CaptureOrder)

_BODIES: dict[str, Any] = {c.KIND: c for c in (DeployCommand, RollbackCommand, CancelCommand,
                                                ReportStateCommand, ConfigCommand, CaptureOrder)}


def parse_body(kind: str, body: Mapping[str, Any]) -> CommandBody:
    """The typed body of a command of ``kind``; :class:`BodyError` if it does not fit."""
    cls = _BODIES.get(kind)
    if cls is None:
        raise BodyError(f"unknown command kind {kind!r}")
    try:
        parsed: CommandBody = cls.from_dict(body)
    except BodyError:
        raise
    except MessageError as exc:     # the capture order's own checks (edgeops/protocol/capture.py)
        raise BodyError(exc.message) from None
    return parsed


def raw_deployment_id(body: Mapping[str, Any]) -> str | None:
    """The body's ``deployment_id`` if it is a string: to report a body that did not parse."""
    dep = body.get("deployment_id") if isinstance(body, Mapping) else None
    return dep if isinstance(dep, str) else None


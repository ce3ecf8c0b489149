"""Every MQTT message of the fleet protocol: typed, versioned, validated on decode.

JSON for control messages (``{"v": 1, "type": ...}``), a small binary frame for artifact
chunks. Decoding never trusts its input: size-limited, schema-checked, and every failure is one
:class:`MessageError` (bad content), which handlers log and drop. See docs/PROTOCOL.md.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edgeops.bundle.manifest import canonical_json
from edgeops.errors import BadContentError

__all__ = [
    "PROTOCOL_VERSION",
    "Chunk",
    "DevicePhase",
    "FetchRequest",
    "MessageError",
    "StateReport",
    "StatusMessage",
    "TelemetryBatch",
    "decode_chunk",
    "decode_json",
    "encode_chunk",
]

PROTOCOL_VERSION = 1
_CHUNK_MAGIC = b"EOC1"


class MessageError(BadContentError):
    """A message is malformed, oversized, of an unknown version or type."""

    default_hint = "check the sender's protocol version (docs/PROTOCOL.md)"


class DevicePhase(StrEnum):
    """Where one device is in one deployment; the manager persists this state machine."""

    PENDING = "pending"            # selected, not yet notified (or offline)
    NOTIFIED = "notified"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    ACTIVATED = "activated"
    HEALTHY = "healthy"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"
    TIMED_OUT = "timed-out"
    DEFERRED = "deferred"

    @property
    def terminal(self) -> bool:
        return self in (DevicePhase.HEALTHY, DevicePhase.FAILED, DevicePhase.ROLLED_BACK,
                        DevicePhase.TIMED_OUT)


def _field(d: dict[str, Any], key: str, kind: type | tuple[type, ...], optional: bool = False
           ) -> Any:
    if key not in d or d[key] is None:
        if optional:
            return None
        raise MessageError(f"message is missing '{key}'")
    v = d[key]
    if not isinstance(v, kind) or (isinstance(v, bool) and kind in (int, float, (int, float))):
        raise MessageError(f"message field '{key}' has the wrong type")
    return v


def _check(value: object, name: str, kind: type | tuple[type, ...], optional: bool = False
           ) -> None:
    """Construction-time check of one field (the same rule :func:`_field` applies on parse)."""
    _field({name: value}, name, kind, optional)


def _load(payload: bytes, max_bytes: int) -> dict[str, Any]:
    if len(payload) > max_bytes:
        raise MessageError(f"message of {len(payload)} bytes exceeds the {max_bytes}-byte limit")
    try:
        d = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise MessageError("message is not valid JSON") from None
    if not isinstance(d, dict):
        raise MessageError("message is not a JSON object")
    if d.get("v") != PROTOCOL_VERSION:
        raise MessageError(f"unsupported protocol version {d.get('v')!r}")
    return d


@dataclass(frozen=True)
class StatusMessage:
    """Retained on ``devices/<id>/status``; the Last Will says ``online: false``."""

    device_id: str
    online: bool
    agent_version: str = ""
    ts: float = 0.0
    TYPE = "status"

    def __post_init__(self) -> None:
        _check(self.device_id, "device_id", str)
        _check(self.online, "online", bool)
        _check(self.agent_version, "agent_version", str)
        _check(self.ts, "ts", (int, float))

    def to_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "type": self.TYPE, "device_id": self.device_id,
                "online": self.online, "agent_version": self.agent_version, "ts": self.ts}

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StatusMessage:
        return cls(_field(d, "device_id", str), _field(d, "online", bool),
                   _field(d, "agent_version", str, True) or "",
                   float(_field(d, "ts", (int, float), True) or 0.0))


@dataclass(frozen=True)
class StateReport:
    """A device's progress on a deployment, and what it runs now.

    ``seq`` increases with every report a device sends (persisted across restarts), so the
    manager drops replayed and out-of-order reports.
    """

    device_id: str
    seq: int
    ts: float
    phase: DevicePhase | None = None
    deployment_id: str | None = None
    bundle: str | None = None                 # "name@version" the phase refers to
    reason: str | None = None                 # why failed / rolled back / deferred
    active: dict[str, Any] | None = None      # {"name","version","target","slot"}
    slots: dict[str, Any] = field(default_factory=dict)
    TYPE = "state"

    def __post_init__(self) -> None:
        _check(self.device_id, "device_id", str)
        _check(self.seq, "seq", int)
        if self.seq < 0:
            raise MessageError("seq must not be negative")
        _check(self.ts, "ts", (int, float))
        if self.phase is not None and not isinstance(self.phase, DevicePhase):
            raise MessageError(f"unknown phase {self.phase!r}")
        for name in ("deployment_id", "bundle", "reason"):
            _check(getattr(self, name), name, str, optional=True)
        _check(self.active, "active", dict, optional=True)
        _check(self.slots, "slots", dict)

    def to_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "type": self.TYPE, "device_id": self.device_id,
                "seq": self.seq, "ts": self.ts, "phase": self.phase.value if self.phase else None,
                "deployment_id": self.deployment_id, "bundle": self.bundle,
                "reason": self.reason, "active": self.active, "slots": self.slots}

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StateReport:
        phase = _field(d, "phase", str, True)
        try:
            parsed = DevicePhase(phase) if phase is not None else None
        except ValueError:
            raise MessageError(f"unknown phase {phase!r}") from None
        seq = _field(d, "seq", int)
        if seq < 0:
            raise MessageError("seq must not be negative")
        reason = _field(d, "reason", str, True)
        return cls(
            device_id=_field(d, "device_id", str), seq=seq,
            ts=float(_field(d, "ts", (int, float))), phase=parsed,
            deployment_id=_field(d, "deployment_id", str, True),
            bundle=_field(d, "bundle", str, True),
            reason=reason[:1000] if reason else None,
            active=_field(d, "active", dict, True),
            slots=_field(d, "slots", dict, True) or {})


@dataclass(frozen=True)
class TelemetryBatch:
    """Batched records (heartbeat, system, inference, drift) from the store-and-forward queue."""

    device_id: str
    seq: int
    records: tuple[dict[str, Any], ...]
    dropped: int = 0                           # records the bounded queue discarded so far
    TYPE = "telemetry"
    MAX_RECORDS = 1000

    def to_bytes(self) -> bytes:
        return canonical_json({"v": PROTOCOL_VERSION, "type": self.TYPE,
                               "device_id": self.device_id, "seq": self.seq,
                               "dropped": self.dropped, "records": list(self.records)})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TelemetryBatch:
        records = _field(d, "records", list)
        if len(records) > cls.MAX_RECORDS:
            raise MessageError(f"telemetry batch holds over {cls.MAX_RECORDS} records")
        for r in records:
            if not isinstance(r, dict) or not isinstance(r.get("kind"), str) or not isinstance(
                    r.get("ts"), int | float) or isinstance(r.get("ts"), bool):
                raise MessageError("telemetry record needs 'kind' (string) and 'ts' (number)")
        return cls(_field(d, "device_id", str), _field(d, "seq", int), tuple(records),
                   _field(d, "dropped", int, True) or 0)


@dataclass(frozen=True)
class FetchRequest:
    """A device asks for an artifact's chunks: all of them, or the missing index ranges."""

    device_id: str
    artifact: str                              # sha256 of the artifact
    missing: tuple[tuple[int, int], ...] | None = None   # [start, end) chunk ranges; None = all
    TYPE = "fetch"

    def to_bytes(self) -> bytes:
        return canonical_json({"v": PROTOCOL_VERSION, "type": self.TYPE,
                               "device_id": self.device_id, "artifact": self.artifact,
                               "missing": [list(r) for r in self.missing]
                               if self.missing is not None else None})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FetchRequest:
        art = _field(d, "artifact", str)
        if len(art) != 64 or any(c not in "0123456789abcdef" for c in art):
            raise MessageError("fetch.artifact is not a SHA-256 hex digest")
        raw = _field(d, "missing", list, True)
        missing = None
        if raw is not None:
            if len(raw) > 10_000:
                raise MessageError("fetch.missing lists too many ranges")
            try:
                missing = tuple((int(a), int(b)) for a, b in raw)
            except (TypeError, ValueError):
                raise MessageError("fetch.missing must hold [start, end) pairs") from None
            if any(a < 0 or b <= a for a, b in missing):
                raise MessageError("fetch.missing holds an empty or negative range")
        return cls(_field(d, "device_id", str), art, missing)


_JSON_TYPES: dict[str, Any] = {c.TYPE: c for c in (StatusMessage, StateReport, TelemetryBatch,
                                                    FetchRequest)}


def decode_json(payload: bytes, max_bytes: int = 256 * 1024,
                expect: type | None = None) -> Any:
    """Decode one JSON control message; ``expect`` pins the class the topic allows."""
    d = _load(payload, max_bytes)
    cls = _JSON_TYPES.get(str(d.get("type")))
    if cls is None:
        raise MessageError(f"unknown message type {d.get('type')!r}")
    if expect is not None and cls is not expect:
        raise MessageError(f"a {d.get('type')!r} message is not allowed on this topic")
    return cls.from_dict(d)


@dataclass(frozen=True)
class Chunk:
    """One piece of an artifact, self-describing and individually hashed."""

    artifact: str          # sha256 of the whole artifact
    index: int
    count: int
    total_size: int
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def encode_chunk(chunk: Chunk) -> bytes:
    """``EOC1`` + u32 header length + canonical JSON header + raw bytes."""
    header = canonical_json({"artifact": chunk.artifact, "index": chunk.index,
                             "count": chunk.count, "size": chunk.total_size,
                             "sha256": chunk.sha256})
    return _CHUNK_MAGIC + struct.pack(">I", len(header)) + header + chunk.data


def decode_chunk(payload: bytes, max_chunk_bytes: int) -> Chunk:
    if len(payload) < 8 or payload[:4] != _CHUNK_MAGIC:
        raise MessageError("not an artifact chunk frame")
    (hlen,) = struct.unpack(">I", payload[4:8])
    if hlen > 4096 or 8 + hlen > len(payload):
        raise MessageError("chunk header length is out of range")
    try:
        h = json.loads(payload[8 : 8 + hlen])
        artifact, index, count, size, digest = (h["artifact"], h["index"], h["count"], h["size"],
                                                h["sha256"])
    except (ValueError, KeyError, TypeError):
        raise MessageError("chunk header is malformed") from None
    data = payload[8 + hlen :]
    if len(data) > max_chunk_bytes:
        raise MessageError(f"chunk of {len(data)} bytes exceeds the {max_chunk_bytes}-byte limit")
    if not (isinstance(index, int) and isinstance(count, int) and isinstance(size, int)
            and 0 <= index < count and isinstance(artifact, str)):
        raise MessageError("chunk header fields are out of range")
    chunk = Chunk(artifact, index, count, size, data)
    if chunk.sha256 != digest:
        raise MessageError(f"chunk {index} of {artifact[:12]} fails its SHA-256 check")
    return chunk

"""Typed records the store hands out: what the fleet knows, independent of SQL.

Every backend returns these dataclasses, so the rollout engine, the API and the MQTT ingest
never see rows or dialect quirks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from edgeops.protocol.records import RecordError, TelemetryRecord, UnknownRecord, parse_record

__all__ = [
    "DEPLOYMENT_STATUSES",
    "DEVICE_CLASSES",
    "AliasRecord",
    "Blessing",
    "BundleRecord",
    "Deployment",
    "DeploymentDevice",
    "Device",
    "DeviceFilter",
    "OnlineCount",
    "Page",
    "TagCount",
    "TelemetryDigestRow",
    "TelemetryRow",
    "TokenRecord",
    "ValueCount",
    "stored_record",
]

DEVICE_CLASSES = ("sensor", "camera", "vehicle", "gateway")

# running → completed | aborted | cancelled | rolled-back; paused ↔ running.
DEPLOYMENT_STATUSES = ("running", "paused", "completed", "aborted", "cancelled", "rolled-back")


@dataclass(frozen=True)
class Device:
    id: str
    device_class: str
    target: str
    tags: dict[str, str] = field(default_factory=dict)
    agent_version: str = ""
    installed: dict[str, Any] = field(default_factory=dict)   # slots as last reported
    active: dict[str, Any] | None = None                     # {"name","version","target","slot"}
    online: bool = False
    status_ts: float = 0.0                                   # ts of the status message applied
    last_seen: float | None = None
    enrolled_at: float = 0.0
    last_state_seq: int = -1

    @property
    def active_bundle(self) -> str | None:
        a = self.active or {}
        return f"{a['name']}@{a['version']}" if a.get("name") and a.get("version") else None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "class": self.device_class, "target": self.target,
                "tags": dict(self.tags), "agent_version": self.agent_version,
                "installed": self.installed, "active": self.active,
                "active_bundle": self.active_bundle, "online": self.online,
                "status_ts": self.status_ts, "last_seen": self.last_seen,
                "enrolled_at": self.enrolled_at}


@dataclass(frozen=True)
class DeviceFilter:
    """Filters for listing devices; every field set narrows the result (AND)."""

    device_class: str | None = None
    target: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    version: str | None = None        # active bundle version, or "name@version"
    online: bool | None = None
    search: str | None = None         # substring of the id or of any tag value
    ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Page:
    """One page of a listing; ``next_cursor`` is None on the last page."""

    items: list[Any]
    total: int
    next_cursor: str | None = None


@dataclass(frozen=True)
class TelemetryRow:
    """One telemetry record as persisted (``data`` is the record without kind/ts)."""

    device_id: str
    ts: float
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    deployment_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "ts": self.ts, "kind": self.kind,
                "seq": self.seq, "deployment_id": self.deployment_id, **self.data}

    def record(self) -> TelemetryRecord | UnknownRecord:
        """The typed record this row holds; :class:`RecordError` if it does not parse."""
        return stored_record(self.kind, self.ts, self.data, self.deployment_id)


def stored_record(kind: str, ts: float, data: object, deployment_id: str | None = None
                  ) -> TelemetryRecord | UnknownRecord:
    """The typed record of a stored telemetry row (ingest keeps the record as it came, less
    ``kind``, ``ts`` and ``deployment_id``, which have columns of their own)."""
    if not isinstance(data, Mapping):
        raise RecordError(f"the stored {kind} record is not an object")
    d = {**data, "kind": kind, "ts": ts}
    if deployment_id is not None:
        d["deployment_id"] = deployment_id
    return parse_record(d)


@dataclass(frozen=True)
class BundleRecord:
    name: str
    version: str
    manifest: bytes
    signatures: bytes
    published_at: float
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path → (sha256, size)

    def to_dict(self) -> dict[str, Any]:
        import json

        m = json.loads(self.manifest)
        return {"name": self.name, "version": self.version, "published_at": self.published_at,
                "targets": sorted(a["target"] for a in m.get("artifacts", [])),
                "files": {p: {"sha256": s, "size": n} for p, (s, n) in self.files.items()},
                "manifest": m}


@dataclass(frozen=True)
class AliasRecord:
    """``name@alias`` → ``version``, and the move that put it there (who, which rollout)."""

    name: str
    alias: str
    version: str
    moved_at: float
    moved_by: str | None = None
    deployment_id: str | None = None
    previous: str | None = None          # the version before this move (history rows)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "alias": self.alias, "version": self.version,
                "moved_at": self.moved_at, "moved_by": self.moved_by,
                "deployment_id": self.deployment_id, "previous": self.previous}


@dataclass(frozen=True)
class Deployment:
    id: str
    bundle_name: str
    bundle_version: str
    selector: str
    strategy: dict[str, Any]
    status: str
    phase_index: int
    phase_started_at: float
    created_at: float
    updated_at: float
    reason: str | None = None
    created_by: str | None = None

    @property
    def bundle(self) -> str:
        return f"{self.bundle_name}@{self.bundle_version}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "bundle": self.bundle, "name": self.bundle_name,
                "version": self.bundle_version, "selector": self.selector,
                "strategy": self.strategy, "status": self.status,
                "phase_index": self.phase_index, "phase_started_at": self.phase_started_at,
                "created_at": self.created_at, "updated_at": self.updated_at,
                "reason": self.reason}


@dataclass(frozen=True)
class DeploymentDevice:
    """One device's persisted place in one deployment (state is a DevicePhase value)."""

    deployment_id: str
    device_id: str
    wave: int                      # which rollout phase the device belongs to (fixed at creation)
    state: str
    target: str
    updated_at: float
    notified_at: float | None = None
    reason: str | None = None
    previous: str | None = None    # "name@version" active before this deployment
    command: bytes | None = None   # the signed desired command last sent (resent on restart)

    def to_dict(self) -> dict[str, Any]:
        return {"deployment_id": self.deployment_id, "device_id": self.device_id,
                "wave": self.wave, "state": self.state, "target": self.target,
                "updated_at": self.updated_at, "notified_at": self.notified_at,
                "reason": self.reason, "previous": self.previous}


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    role: str
    name: str
    created_at: float
    revoked: bool = False


@dataclass(frozen=True)
class Blessing:
    bundle_name: str
    bundle_version: str
    hardware: str
    passed: bool
    report: dict[str, Any]
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.bundle_name, "version": self.bundle_version,
                "hardware": self.hardware, "passed": self.passed, "report": self.report,
                "created_at": self.created_at}


# -- aggregates (counted in the database; the console and /metrics read these) ---------------
@dataclass(frozen=True)
class OnlineCount:
    """Devices sharing one grouping value (a class, a tag's value) and one online flag."""

    name: str
    online: bool
    count: int


@dataclass(frozen=True)
class ValueCount:
    """How many devices carry one value of a field (class, target, active version)."""

    value: str
    count: int


@dataclass(frozen=True)
class TagCount:
    """How many devices carry the tag ``key=value``."""

    key: str
    value: str
    count: int


class TelemetryDigestRow(NamedTuple):
    """One telemetry row as the console's digests read it, by insertion order (``id``).

    ``n_count``/``n_errors``/``p95_ms`` are the columns extracted at insert (inferences,
    errors, latency); ``data`` is the raw JSON record, present only for the kinds the caller
    asked it for.
    """

    id: int
    device_id: str
    ts: float
    kind: str
    n_count: int | None
    n_errors: int | None
    p95_ms: float | None
    data: str | None

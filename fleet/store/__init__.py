"""The fleet manager's state behind one typed interface: SQLite (WAL) or PostgreSQL.

``open_store(url)`` picks the backend from the URL (``sqlite:///relative.db``,
``sqlite:////absolute.db`` or a plain path → SQLite; ``postgresql://...`` → PostgreSQL),
applies pending migrations and returns a :class:`Store`. Everything above (registry,
repository, rollout engine, HTTP API, the MQTT ingest) talks to this interface only, so both
backends run the same tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edgeops.errors import UsageError
from edgeops.protocol import StateReport
from fleet.store._sql import StoreConflict
from fleet.store.models import (
    DEPLOYMENT_STATUSES,
    DEVICE_CLASSES,
    Blessing,
    BundleRecord,
    Deployment,
    DeploymentDevice,
    Device,
    DeviceFilter,
    Page,
    TelemetryRow,
    TokenRecord,
)
from fleet.store.schema import SCHEMA_VERSION

__all__ = [
    "DEPLOYMENT_STATUSES",
    "DEVICE_CLASSES",
    "SCHEMA_VERSION",
    "Blessing",
    "BundleRecord",
    "Deployment",
    "DeploymentDevice",
    "Device",
    "DeviceFilter",
    "Page",
    "Store",
    "StoreConflict",
    "TelemetryRow",
    "TokenRecord",
    "open_store",
]


@runtime_checkable
class Store(Protocol):
    """What the fleet manager persists. Every method is one transaction; thread-safe."""

    data_dir: Path | None

    def close(self) -> None: ...
    def migrate(self) -> int: ...
    def schema_version(self) -> int: ...

    # devices
    def upsert_device(self, device: Device) -> None: ...
    def get_device(self, device_id: str) -> Device | None: ...
    def list_devices(self, f: DeviceFilter | None = None, limit: int = 100,
                     cursor: str | None = None) -> Page: ...
    def select_devices(self, f: DeviceFilter) -> list[Device]: ...
    def set_status(self, device_id: str, online: bool, ts: float,
                   agent_version: str = "") -> bool: ...
    def mark_seen(self, seen: Mapping[str, float]) -> None: ...
    def record_state(self, report: StateReport) -> bool: ...

    # telemetry
    def insert_telemetry(self, rows: Sequence[TelemetryRow]) -> int: ...
    def query_telemetry(self, device_id: str, kind: str | None = None,
                        since: float | None = None, until: float | None = None,
                        limit: int = 1000) -> list[TelemetryRow]: ...
    def count_telemetry(self, device_id: str | None = None) -> int: ...
    def aggregate_telemetry(self, device_ids: Sequence[str] | None = None,
                            since: float | None = None) -> dict[str, Any]: ...
    def aggregate_deployment(self, deployment_id: str, since: float | None = None,
                             states: Sequence[str] | None = None) -> dict[str, Any]: ...

    # bundles and artifacts (blobs by sha256 under data_dir/blobs)
    def blob_path(self, sha256: str) -> Path: ...
    def add_blob(self, sha256: str, size: int) -> None: ...
    def artifact_path(self, sha256: str) -> Path | None: ...
    def put_bundle(self, record: BundleRecord) -> bool: ...
    def get_bundle(self, name: str, version: str) -> BundleRecord | None: ...
    def list_bundles(self, name: str | None = None) -> list[BundleRecord]: ...

    # deployments
    def create_deployment(self, dep: Deployment,
                          devices: Sequence[DeploymentDevice]) -> None: ...
    def get_deployment(self, deployment_id: str) -> Deployment | None: ...
    def list_deployments(self, status: Sequence[str] | None = None,
                         limit: int = 100) -> list[Deployment]: ...
    def update_deployment(self, deployment_id: str, *, now: float, status: str | None = None,
                          expect_status: Sequence[str] | None = None,
                          phase_index: int | None = None,
                          phase_started_at: float | None = None,
                          reason: str | None = None) -> bool: ...
    def deployment_devices(self, deployment_id: str,
                           states: Sequence[str] | None = None) -> list[DeploymentDevice]: ...
    def device_deployments(self, device_id: str,
                           statuses: Sequence[str] = ("running",)) -> list[DeploymentDevice]: ...
    def deployment_counts(self, deployment_id: str) -> dict[str, int]: ...
    def transition_device(self, deployment_id: str, device_id: str, *, state: str, now: float,
                          expect: Sequence[str], reason: str | None = None,
                          command: bytes | None = None, notified: bool = False) -> bool: ...
    def notify_devices(self, deployment_id: str, commands: Mapping[str, bytes],
                       now: float) -> list[str]: ...
    def waiting_offline(self, deployment_id: str) -> int: ...
    def set_device_command(self, deployment_id: str, device_id: str,
                           command: bytes) -> None: ...

    # tokens (hashed), blessings, TUF metadata, command seq, settings
    def add_token(self, token_hash: str, role: str, name: str, now: float) -> TokenRecord: ...
    def get_token(self, token_hash: str) -> TokenRecord | None: ...
    def list_tokens(self) -> list[TokenRecord]: ...
    def revoke_token(self, token_id: str) -> bool: ...
    def put_blessing(self, b: Blessing) -> None: ...
    def list_blessings(self, name: str, version: str) -> list[Blessing]: ...
    def has_blessing(self, name: str, version: str, hardware: str) -> bool: ...
    def put_metadata(self, items: Sequence[tuple[str, str, int, bytes]]) -> None: ...
    def get_metadata(self, filename: str) -> bytes | None: ...
    def latest_metadata(self, role: str) -> tuple[int, bytes] | None: ...
    def next_command_seq(self, device_id: str) -> int: ...
    def next_command_seqs(self, device_ids: Sequence[str]) -> dict[str, int]: ...
    def get_setting(self, key: str) -> str | None: ...
    def set_setting(self, key: str, value: str) -> None: ...


def open_store(url: str, data_dir: Path | None = None) -> Store:
    """Open (and migrate) the store named by ``url``; ``data_dir`` holds artifact blobs."""
    if url.startswith(("postgresql://", "postgres://")):
        from fleet.store.postgres import PostgresStore

        return PostgresStore(url, data_dir)
    if url.startswith("sqlite://"):
        # SQLAlchemy's convention: sqlite:///rel/path.db is relative, sqlite:////abs/path.db
        # absolute (three slashes, then the path).
        path = url.removeprefix("sqlite://")
        path = path.removeprefix("/")
        if not path:
            raise UsageError(f"no database path in {url!r}",
                             hint="use sqlite:///relative/fleet.db or sqlite:////abs/fleet.db")
        from fleet.store.sqlite import SqliteStore

        return SqliteStore(Path(path), data_dir)
    if "://" in url:
        raise UsageError(f"unsupported database URL {url!r}",
                         hint="use sqlite:///path/fleet.db, a plain path, or postgresql://...")
    from fleet.store.sqlite import SqliteStore

    return SqliteStore(Path(url), data_dir)

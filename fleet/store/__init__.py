"""The fleet manager's state behind one typed interface: SQLite (WAL) or PostgreSQL.

``open_store(url)`` picks the backend from the URL (``sqlite:///relative.db``,
``sqlite:////absolute.db`` or a plain path → SQLite; ``postgresql://...`` → PostgreSQL),
applies pending migrations and returns a :class:`Store`. Everything above (registry,
repository, rollout engine, HTTP API, the MQTT ingest) talks to these interfaces only, so both
backends run the same tests; each part types against the roles it uses
(:mod:`fleet.store.roles`). Artifact bytes are files by sha256 (:mod:`fleet.store.blobs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from edgeops.errors import UsageError
from fleet.store._aggregates import DeviceField
from fleet.store._base import StoreConflict
from fleet.store._captures import CaptureRecord, CaptureSampleRow
from fleet.store._drift_alerts import (
    AlarmEvent,
    AlarmState,
    DeliveryAttempt,
    DeliveryJob,
    DeliveryRecord,
    MonitorRecord,
    OutgoingEvent,
    WebhookRecord,
)
from fleet.store.blobs import BlobStore
from fleet.store.models import (
    DEPLOYMENT_STATUSES,
    DEVICE_CLASSES,
    AliasRecord,
    Blessing,
    BundleRecord,
    Deployment,
    DeploymentDevice,
    Device,
    DeviceFilter,
    OnlineCount,
    Page,
    TagCount,
    TelemetryDigestRow,
    TelemetryRow,
    TokenRecord,
    ValueCount,
)
from fleet.store.roles import (
    AlarmStore,
    AliasStore,
    ArtifactStore,
    BlessingStore,
    BundleStore,
    CaptureStore,
    CommandSeqStore,
    ConsoleReads,
    DeploymentStore,
    DeviceReports,
    DeviceStore,
    DriftAlertStore,
    IngestStore,
    MetadataStore,
    MonitorStore,
    RepositoryStore,
    SettingsStore,
    StoreLifecycle,
    TelemetryStore,
    TelemetryWrites,
    TokenStore,
    WebhookDeliveryStore,
)
from fleet.store.schema import SCHEMA_VERSION

__all__ = [
    "DEPLOYMENT_STATUSES",
    "DEVICE_CLASSES",
    "SCHEMA_VERSION",
    "AlarmEvent",
    "AlarmState",
    "AlarmStore",
    "AliasRecord",
    "AliasStore",
    "ArtifactStore",
    "Blessing",
    "BlessingStore",
    "BlobStore",
    "BundleRecord",
    "BundleStore",
    "CaptureRecord",
    "CaptureSampleRow",
    "CaptureStore",
    "CommandSeqStore",
    "ConsoleReads",
    "DeliveryAttempt",
    "DeliveryJob",
    "DeliveryRecord",
    "Deployment",
    "DeploymentDevice",
    "DeploymentStore",
    "Device",
    "DeviceField",
    "DeviceFilter",
    "DeviceReports",
    "DeviceStore",
    "DriftAlertStore",
    "IngestStore",
    "MetadataStore",
    "MonitorRecord",
    "MonitorStore",
    "OnlineCount",
    "OutgoingEvent",
    "Page",
    "RepositoryStore",
    "SettingsStore",
    "Store",
    "StoreConflict",
    "StoreLifecycle",
    "TagCount",
    "TelemetryDigestRow",
    "TelemetryRow",
    "TelemetryStore",
    "TelemetryWrites",
    "TokenRecord",
    "TokenStore",
    "ValueCount",
    "WebhookDeliveryStore",
    "WebhookRecord",
    "open_store",
]


@runtime_checkable
class Store(StoreLifecycle, DeviceStore, TelemetryStore, RepositoryStore, BlessingStore,
            AliasStore, DeploymentStore, CommandSeqStore, ConsoleReads, TokenStore,
            SettingsStore, CaptureStore, DriftAlertStore, Protocol):
    """Everything the fleet manager persists: every role of :mod:`fleet.store.roles`.

    Only the parts that wire the manager together (the server, the worker) need all of it;
    the rest type against the role they use (the TUF repository a ``RepositoryStore``, the
    API's auth a ``TokenStore``, the console ``ConsoleReads``, data capture a
    ``CaptureStore``, the webhook sender a ``WebhookDeliveryStore``, ...).
    """


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

"""What the fleet manager persists, one Protocol per role; :class:`fleet.store.Store` is all of them.

Why roles: each part of the manager needs a slice of the state (the rollout engine
deployments, the API's auth tokens, the TUF repository bundles, blobs and metadata), and typing
it against that slice says what it may touch, lets a test hand it a small fake, and lets a new
table arrive as a new role (a Protocol here, an SQL mixin beside :mod:`fleet.store._sql`)
without growing one fifty-method interface. Every method is one transaction; thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edgeops.protocol import StateReport
from fleet.store._aggregates import DeviceField
from fleet.store._captures import CaptureRecord, CaptureSampleRow
from fleet.store._drift_alerts import (
    AlarmEvent,
    AlarmState,
    DeliveryAttempt,
    DeliveryJob,
    DeliveryRecord,
    MonitorRecord,
    OutgoingEvent,
)
from fleet.store.models import (
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

__all__ = [
    "AlarmStore",
    "AliasStore",
    "ArtifactStore",
    "BlessingStore",
    "BundleStore",
    "CaptureStore",
    "CommandSeqStore",
    "ConsoleReads",
    "DeploymentStore",
    "DeviceReports",
    "DeviceStore",
    "DriftAlertStore",
    "IngestStore",
    "MetadataStore",
    "MonitorStore",
    "RepositoryStore",
    "SettingsStore",
    "StoreLifecycle",
    "TelemetryStore",
    "TelemetryWrites",
    "TokenStore",
    "WebhookDeliveryStore",
]


@runtime_checkable
class StoreLifecycle(Protocol):
    """Opening, migrating and closing the database; ``data_dir`` holds the blob store."""

    data_dir: Path | None

    def close(self) -> None: ...
    def migrate(self) -> int: ...
    def schema_version(self) -> int: ...


@runtime_checkable
class DeviceReports(Protocol):
    """What devices' own messages change in the registry: online status, last seen, reported
    state (written by the ingest, which looks a device up to know its target)."""

    def get_device(self, device_id: str) -> Device | None: ...
    def set_status(self, device_id: str, online: bool, ts: float,
                   agent_version: str = "") -> bool: ...
    def mark_seen(self, seen: Mapping[str, float]) -> None: ...
    def record_state(self, report: StateReport) -> bool: ...


@runtime_checkable
class DeviceStore(DeviceReports, Protocol):
    """The registry: enrolled devices, their online status and last reported state."""

    def upsert_device(self, device: Device) -> None: ...
    def list_devices(self, f: DeviceFilter | None = None, limit: int = 100,
                     cursor: str | None = None) -> Page: ...
    def select_devices(self, f: DeviceFilter) -> list[Device]: ...


@runtime_checkable
class TelemetryWrites(Protocol):
    """Telemetry records written in batches (the ingest); ``_once`` drops redelivered rows."""

    def insert_telemetry(self, rows: Sequence[TelemetryRow]) -> int: ...
    def insert_telemetry_once(self, rows: Sequence[TelemetryRow]) -> int: ...


@runtime_checkable
class TelemetryStore(TelemetryWrites, Protocol):
    """Telemetry records: written in batches by the ingest, read raw or aggregated."""

    def query_telemetry(self, device_id: str, kind: str | None = None,
                        since: float | None = None, until: float | None = None,
                        limit: int = 1000) -> list[TelemetryRow]: ...
    def count_telemetry(self, device_id: str | None = None) -> int: ...
    def aggregate_telemetry(self, device_ids: Sequence[str] | None = None,
                            since: float | None = None) -> dict[str, Any]: ...
    def aggregate_deployment(self, deployment_id: str, since: float | None = None,
                             states: Sequence[str] | None = None) -> dict[str, Any]: ...


@runtime_checkable
class IngestStore(DeviceReports, TelemetryWrites, Protocol):
    """What the MQTT ingest (:mod:`fleet.ingest`) writes: device reports and telemetry."""


@runtime_checkable
class BundleStore(Protocol):
    """Published bundles (immutable: same name and version, same content)."""

    def put_bundle(self, record: BundleRecord) -> bool: ...
    def get_bundle(self, name: str, version: str) -> BundleRecord | None: ...
    def list_bundles(self, name: str | None = None) -> list[BundleRecord]: ...


@runtime_checkable
class ArtifactStore(Protocol):
    """Artifact bytes by sha256: on disk in the blob store (:mod:`fleet.store.blobs`), known
    to the database once recorded; only recorded blobs are served."""

    def blob_path(self, sha256: str) -> Path: ...
    def add_blob(self, sha256: str, size: int) -> None: ...
    def artifact_path(self, sha256: str) -> Path | None: ...


@runtime_checkable
class MetadataStore(Protocol):
    """The TUF repository's metadata files, by file name and by role's latest version."""

    def put_metadata(self, items: Sequence[tuple[str, str, int, bytes]]) -> None: ...
    def get_metadata(self, filename: str) -> bytes | None: ...
    def latest_metadata(self, role: str) -> tuple[int, bytes] | None: ...


@runtime_checkable
class RepositoryStore(BundleStore, ArtifactStore, MetadataStore, Protocol):
    """What the TUF repository (:mod:`fleet.repository`) persists."""


@runtime_checkable
class BlessingStore(Protocol):
    """Hardware-test results that bless a bundle version for a hardware class."""

    def put_blessing(self, b: Blessing) -> None: ...
    def list_blessings(self, name: str, version: str) -> list[Blessing]: ...
    def has_blessing(self, name: str, version: str, hardware: str) -> bool: ...


@runtime_checkable
class AliasStore(Protocol):
    """``NAME@champion`` → version, every move kept (:mod:`fleet.store._aliases`)."""

    def set_alias(self, record: AliasRecord) -> AliasRecord: ...
    def get_alias(self, name: str, alias: str) -> AliasRecord | None: ...
    def list_aliases(self, name: str | None = None) -> list[AliasRecord]: ...
    def alias_moves(self, name: str, alias: str, limit: int = 100) -> list[AliasRecord]: ...


@runtime_checkable
class CommandSeqStore(Protocol):
    """Per-device command sequence numbers, persisted so a restarted manager never reuses one."""

    def next_command_seq(self, device_id: str) -> int: ...
    def next_command_seqs(self, device_ids: Sequence[str]) -> dict[str, int]: ...


@runtime_checkable
class DeploymentStore(Protocol):
    """Deployments and each selected device's row in them (compare-and-set transitions)."""

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


@runtime_checkable
class ConsoleReads(Protocol):
    """Grouped, bounded, read-only counts for the console and ``/metrics``
    (:mod:`fleet.store._aggregates`)."""

    def device_online_counts(self, tag: str | None = None) -> list[OnlineCount]: ...
    def device_value_counts(self, field: DeviceField, limit: int) -> list[ValueCount]: ...
    def tag_value_counts(self, limit: int) -> list[TagCount]: ...
    def deployed_versions(self, name: str, limit: int = 100) -> list[tuple[str, str, int]]: ...
    def deployment_deliveries(self, deployment_id: str,
                              since: float) -> list[tuple[str, float, str]]: ...
    def deployment_wave_counts(self, deployment_id: str) -> dict[int, dict[str, int]]: ...
    def deployment_devices_page(self, deployment_id: str, state: str | None, limit: int,
                                offset: int) -> tuple[int, list[DeploymentDevice]]: ...
    def deployment_status_counts(self) -> dict[str, int]: ...
    def deployments_updated_since(self, since: float, statuses: Sequence[str],
                                  limit: int) -> list[Deployment]: ...
    def telemetry_max_id(self) -> int: ...
    def telemetry_digest_rows(self, after_id: int, kinds: Sequence[str], limit: int, *,
                              until_id: int | None = None,
                              data_for: Sequence[str] = ()) -> list[TelemetryDigestRow]: ...


@runtime_checkable
class TokenStore(Protocol):
    """API tokens, stored only as hashes."""

    def add_token(self, token_hash: str, role: str, name: str, now: float) -> TokenRecord: ...
    def get_token(self, token_hash: str) -> TokenRecord | None: ...
    def list_tokens(self) -> list[TokenRecord]: ...
    def revoke_token(self, token_id: str) -> bool: ...


@runtime_checkable
class SettingsStore(Protocol):
    """Small named values the manager keeps between starts."""

    def get_setting(self, key: str) -> str | None: ...
    def set_setting(self, key: str, value: str) -> None: ...


@runtime_checkable
class CaptureStore(Protocol):
    """Data captures and the index of their samples (:mod:`fleet.store._captures`); the sample
    bytes are files under ``data_dir`` (fleet/capture/intake.py)."""

    data_dir: Path | None

    def create_capture(self, c: CaptureRecord) -> None: ...
    def get_capture(self, capture_id: str) -> CaptureRecord | None: ...
    def list_captures(self, limit: int = 100) -> list[CaptureRecord]: ...
    def stop_capture(self, capture_id: str, now: float) -> bool: ...
    def capture_usage(self, capture_id: str, device_id: str, day: int) -> tuple[int, int]: ...
    def add_capture_sample(self, row: CaptureSampleRow) -> bool: ...
    def capture_samples(self, capture_id: str) -> list[CaptureSampleRow]: ...
    def capture_totals(self, capture_id: str) -> tuple[int, int, int]: ...


@runtime_checkable
class MonitorStore(Protocol):
    """Stored drift monitors with their webhooks (:mod:`fleet.store._drift_alerts`)."""

    def add_monitor(self, monitor: MonitorRecord) -> None: ...
    def get_monitor(self, name: str) -> MonitorRecord | None: ...
    def list_monitors(self) -> list[MonitorRecord]: ...
    def remove_monitor(self, name: str) -> bool: ...


@runtime_checkable
class AlarmStore(Protocol):
    """Each monitor's alarm state per bundle and side, and its history; a transition queues
    its webhook deliveries in the same transaction."""

    def update_alarm(self, state: AlarmState, events: Sequence[OutgoingEvent],
                     detail: dict[str, Any]) -> bool: ...
    def alarm_states(self, monitor: str | None = None) -> list[AlarmState]: ...
    def alarm_history(self, monitor: str | None = None, limit: int = 100
                      ) -> list[AlarmEvent]: ...


@runtime_checkable
class WebhookDeliveryStore(Protocol):
    """The webhook delivery log: due deliveries claimed under a lease, every attempt kept."""

    def claim_deliveries(self, now: float, lease_s: float, limit: int) -> list[DeliveryJob]: ...
    def record_attempt(self, delivery_id: int, attempt: DeliveryAttempt, state: str,
                       next_at: float) -> None: ...
    def list_deliveries(self, monitor: str | None = None, state: str | None = None,
                        limit: int = 100) -> list[DeliveryRecord]: ...


@runtime_checkable
class DriftAlertStore(MonitorStore, AlarmStore, WebhookDeliveryStore, Protocol):
    """What drift alerting persists (fleet/drift/alerts.py, the API's monitor routes)."""

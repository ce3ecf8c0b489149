"""The fleet schema as ordered migrations, written once for SQLite and PostgreSQL.

Each migration is SQL with three placeholders the dialect fills in: ``{blob}`` (BLOB/BYTEA),
``{real}`` (REAL/DOUBLE PRECISION) and ``{serial_pk}`` (an auto-increment primary key). Applied
migrations are recorded in ``schema_migrations``; a database newer than this code is refused.
Add a migration by appending to :data:`MIGRATIONS`, never by editing an applied one.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

_V1 = """
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    device_class TEXT NOT NULL,
    target TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{{}}',
    agent_version TEXT NOT NULL DEFAULT '',
    installed TEXT NOT NULL DEFAULT '{{}}',
    active TEXT,
    active_name TEXT,
    active_version TEXT,
    online INTEGER NOT NULL DEFAULT 0,
    status_ts {real} NOT NULL DEFAULT 0,
    last_seen {real},
    enrolled_at {real} NOT NULL,
    last_state_seq BIGINT NOT NULL DEFAULT -1
);
CREATE TABLE device_tags (
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (device_id, key)
);
CREATE INDEX device_tags_kv ON device_tags (key, value);
CREATE TABLE telemetry (
    id {serial_pk},
    device_id TEXT NOT NULL,
    ts {real} NOT NULL,
    kind TEXT NOT NULL,
    seq BIGINT NOT NULL DEFAULT 0,
    deployment_id TEXT,
    n_count BIGINT,
    n_errors BIGINT,
    p95_ms {real},
    data TEXT NOT NULL
);
CREATE INDEX telemetry_device_ts ON telemetry (device_id, ts);
CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    added_at {real} NOT NULL
);
CREATE TABLE bundles (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    manifest {blob} NOT NULL,
    signatures {blob} NOT NULL,
    published_at {real} NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE bundle_files (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (name, version, path)
);
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    bundle_name TEXT NOT NULL,
    bundle_version TEXT NOT NULL,
    selector TEXT NOT NULL,
    strategy TEXT NOT NULL,
    status TEXT NOT NULL,
    phase_index INTEGER NOT NULL DEFAULT 0,
    phase_started_at {real} NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    reason TEXT,
    created_by TEXT
);
CREATE TABLE deployment_devices (
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    wave INTEGER NOT NULL,
    state TEXT NOT NULL,
    target TEXT NOT NULL,
    updated_at {real} NOT NULL,
    notified_at {real},
    reason TEXT,
    previous TEXT,
    command {blob},
    PRIMARY KEY (deployment_id, device_id)
);
CREATE INDEX deployment_devices_device ON deployment_devices (device_id);
CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at {real} NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE blessings (
    bundle_name TEXT NOT NULL,
    bundle_version TEXT NOT NULL,
    hardware TEXT NOT NULL,
    passed INTEGER NOT NULL,
    report TEXT NOT NULL,
    created_at {real} NOT NULL,
    PRIMARY KEY (bundle_name, bundle_version, hardware)
);
CREATE TABLE tuf_metadata (
    filename TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    version INTEGER NOT NULL,
    data {blob} NOT NULL,
    created_at {real} NOT NULL
);
CREATE TABLE command_seq (
    device_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Bundle aliases (``NAME@champion``), as ML teams name models in MLflow: one row per alias
# pointing at a published version, and every move kept with who made it and the rollout it
# started (issue 19).
_V2_ALIASES = """
CREATE TABLE bundle_aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version TEXT NOT NULL,
    moved_at {real} NOT NULL,
    moved_by TEXT,
    deployment_id TEXT,
    PRIMARY KEY (name, alias)
);
CREATE TABLE bundle_alias_moves (
    id {serial_pk},
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version TEXT NOT NULL,
    previous TEXT,
    moved_at {real} NOT NULL,
    moved_by TEXT,
    deployment_id TEXT
);
CREATE INDEX bundle_alias_moves_alias ON bundle_alias_moves (name, alias, id)
"""

# Telemetry batches already stored, by (device, batch seq): an agent re-sends a batch until a
# manager acknowledges it (docs/PROTOCOL.md, end-to-end acknowledgement), possibly to another
# worker or after a restart, so the store, not a worker's memory, makes ingest exactly-once.
_V3_TELEMETRY_BATCHES = """
CREATE TABLE telemetry_batches (
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (device_id, seq)
)
"""

# Opt-in data captures (issue 18, fleet/capture): the capture an operator opened, and an index
# of the samples devices uploaded (the bytes sit in the blob directory, by SHA-256); one row
# per (capture, device, seq), so a re-sent sample is stored once.
_V4_CAPTURES = """
CREATE TABLE captures (
    id TEXT PRIMARY KEY,
    selector TEXT NOT NULL,
    sample_rate {real} NOT NULL,
    max_bytes_per_device BIGINT NOT NULL,
    max_bytes_per_day BIGINT NOT NULL,
    max_sample_bytes BIGINT NOT NULL,
    until {real} NOT NULL,
    status TEXT NOT NULL,
    devices TEXT NOT NULL,
    created_at {real} NOT NULL,
    created_by TEXT,
    stopped_at {real}
);
CREATE TABLE capture_samples (
    capture_id TEXT NOT NULL REFERENCES captures(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    ts {real} NOT NULL,
    day BIGINT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    bundle TEXT,
    received_at {real} NOT NULL,
    PRIMARY KEY (capture_id, device_id, seq)
);
CREATE INDEX capture_samples_day ON capture_samples (capture_id, device_id, day)
"""

# Drift monitors and their webhooks (issue 18, fleet/store/_drift_alerts.py): the alarm state
# per monitor, bundle and side guards transitions, so each is announced once; deliveries and
# every attempt are kept, pending ones survive a restart.
_V5_DRIFT_ALERTS = """
CREATE TABLE drift_monitors (
    name TEXT PRIMARY KEY,
    cohort TEXT NOT NULL,
    policy TEXT NOT NULL,
    retrain INTEGER NOT NULL DEFAULT 0,
    created_at {real} NOT NULL,
    created_by TEXT
);
CREATE TABLE drift_webhooks (
    id TEXT PRIMARY KEY,
    monitor TEXT NOT NULL REFERENCES drift_monitors(name) ON DELETE CASCADE,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at {real} NOT NULL
);
CREATE TABLE drift_alarms (
    monitor TEXT NOT NULL REFERENCES drift_monitors(name) ON DELETE CASCADE,
    bundle TEXT NOT NULL,
    side TEXT NOT NULL,
    in_alarm INTEGER NOT NULL,
    since {real} NOT NULL,
    status TEXT NOT NULL,
    drifting_windows INTEGER NOT NULL,
    features TEXT NOT NULL,
    evaluated_at {real} NOT NULL,
    PRIMARY KEY (monitor, bundle, side)
);
CREATE TABLE drift_alarm_events (
    id {serial_pk},
    event_id TEXT NOT NULL,
    monitor TEXT NOT NULL,
    bundle TEXT NOT NULL,
    side TEXT NOT NULL,
    in_alarm INTEGER NOT NULL,
    at {real} NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX drift_alarm_events_monitor ON drift_alarm_events (monitor, id);
CREATE TABLE webhook_deliveries (
    id {serial_pk},
    webhook_id TEXT NOT NULL REFERENCES drift_webhooks(id) ON DELETE CASCADE,
    monitor TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body {blob} NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at {real} NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);
CREATE TABLE webhook_attempts (
    delivery_id BIGINT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    at {real} NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms {real} NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
)
"""

MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2_ALIASES), (3, _V3_TELEMETRY_BATCHES),
                                           (4, _V4_CAPTURES), (5, _V5_DRIFT_ALERTS))
SCHEMA_VERSION = MIGRATIONS[-1][0]

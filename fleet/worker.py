"""One manager worker on the broker: consumes device messages, serves chunks, sends commands.

Why it exists: this is the process-level glue between the broker and the fleet's state. It
implements :class:`fleet.ports.DeviceChannel` (the rollout engine's way to reach devices) and
runs three things:

* a *control* MQTT session subscribed to ``state``, ``telemetry`` and ``fetch`` through MQTT 5
  shared subscriptions (``$share/edgeops-managers/...``), so any number of workers against one
  broker and one PostgreSQL split the load, and to ``status`` directly (every worker sees every
  device's retained status and Last Will);
* a consumer thread that feeds each message to :class:`fleet.ingest.Ingest`, flushes telemetry
  in batches and acknowledges messages only once they are persisted (manual QoS 1 acks), so a
  crashed worker loses nothing: the broker redelivers on the resumed session;
* a *chunk* MQTT session used only by :class:`fleet.delivery.ChunkDelivery`, whose publish
  acknowledgements drive the delivery's in-flight window and whose bytes are the manager's
  artifact egress.

End-to-end acknowledgement (docs/PROTOCOL.md): once a state report or fetch is handled, and
once a telemetry batch is committed, the worker publishes an ``ack`` on the device's own topic;
the agent keeps the message in its outbox until then. A worker's control session has a stable
client id (:func:`persistent_client_id`), so a restarted worker resumes its own session, and
:meth:`ManagerWorker.stop` unsubscribes and ends the session, so no dead session stays in the
shared-subscription group.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from edgeops.errors import EdgeOpsError, TransportError
from edgeops.fsutil import atomic_write
from edgeops.protocol import SignedCommand, StateReport, topics
from fleet.capture.intake import CaptureIntake
from fleet.capture.service import as_capture_store
from fleet.delivery import ArtifactCatalog, ArtifactInfo, ChunkDelivery, DeliveryConfig
from fleet.drift.intake import SketchIntake
from fleet.ingest import Ingest, IngestConfig
from fleet.mqtt import Inbound, MqttConnection, MqttOptions, TlsOptions
from fleet.store import ArtifactStore, BundleStore, Store

__all__ = ["ManagerWorker", "StoreCatalog", "WorkerConfig", "default_client_id",
           "persistent_client_id"]

log = logging.getLogger(__name__)

_SHARED_CHANNELS = ("state", "telemetry", "fetch")


def default_client_id() -> str:
    return f"edgeops-manager-{socket.gethostname()}-{os.getpid()}"


_CLIENT_ID = re.compile(r"^edgeops-manager-[A-Za-z0-9_.-]{1,64}$")


def persistent_client_id(data_dir: Path, instance: str) -> str:
    """This worker's MQTT client id, the same at every start (kept in ``data_dir``).

    Why: with a new id per start, the session of the previous process stays in the
    shared-subscription group until it expires and the broker keeps handing it device
    messages. With the same id the new process takes that session over (and the broker
    redelivers what the old one left unacknowledged). ``instance`` tells apart workers that
    share a data directory (``fleet serve`` passes its HTTP port); they must not share an id,
    or they would take each other's session over.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", instance)[:32] or "0"
    path = data_dir / f"mqtt-client-id.{safe}"
    try:
        cid = path.read_text().strip()
        if _CLIENT_ID.match(cid):
            return cid
        log.warning("%s does not hold a manager client id; writing a new one", path)
    except FileNotFoundError:
        pass
    cid = f"edgeops-manager-{uuid.uuid4().hex[:16]}"
    data_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, cid.encode() + b"\n")
    return cid


@dataclass(frozen=True)
class WorkerConfig:
    """Everything tunable about a worker; see docs/FLEET_MQTT.md for the trade-offs."""

    mqtt: MqttOptions | None = None          # None = defaults with the worker's client id
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    share_group: str = topics.SHARE_GROUP    # "" = no shared subscriptions (single worker)
    connect_timeout_s: float = 10.0
    store_retry_max_s: float = 5.0           # back-off ceiling while the database is down
    send_acks: bool = True                   # end-to-end acks on devices/<id>/ack
    end_session_on_stop: bool = True         # stop() unsubscribes and ends the MQTT session


class CatalogStore(ArtifactStore, BundleStore, Protocol):
    """The catalog reads published bundles and finds their blobs."""


class StoreCatalog:
    """Artifacts by digest from the store: the blob on disk plus which targets may fetch it.

    A file under ``artifacts/<target>/`` in any published bundle belongs to that target; any
    other bundle file (manifest.json, signatures.json) may go to every device. Bundles are
    immutable, so answers are cached; a miss or a refusal re-reads the bundle list once.
    """

    def __init__(self, store: CatalogStore) -> None:
        self.store = store
        self._targets: dict[str, frozenset[str] | None] = {}
        self._lock = threading.Lock()

    def _reload(self) -> None:
        found: dict[str, set[str] | None] = {}
        for b in self.store.list_bundles():
            for path, (sha, _size) in b.files.items():
                t = _target_of(path)
                if t is None:
                    found[sha] = None
                else:
                    cur = found.setdefault(sha, set())
                    if cur is not None:
                        cur.add(t)
        with self._lock:
            self._targets = {s: (frozenset(t) if t is not None else None)
                             for s, t in found.items()}

    def artifact(self, sha256: str) -> ArtifactInfo | None:
        path = self.store.artifact_path(sha256)
        if path is None:
            return None
        if sha256 not in self._targets:
            self._reload()
        if sha256 not in self._targets:
            return None      # a blob no published bundle lists: not deliverable
        return ArtifactInfo(sha256, path.stat().st_size, path, self._targets[sha256])

    def refresh(self) -> None:
        self._reload()


def _target_of(path: str) -> str | None:
    parts = path.split("/")
    for i, p in enumerate(parts[:-2]):
        if p == "artifacts":
            return parts[i + 1]
    return None


class ManagerWorker:
    """A :class:`fleet.ports.DeviceChannel` over MQTT plus the ingest and delivery loops."""

    def __init__(self, store: Store, broker_url: str, data_dir: Path | None = None, *,
                 tls: TlsOptions | None = None, client_id: str | None = None,
                 on_state: Callable[[StateReport], None] | None = None,
                 on_status: Callable[[str, bool], None] | None = None,
                 config: WorkerConfig | None = None,
                 catalog: ArtifactCatalog | None = None) -> None:
        self.store = store
        self.data_dir = data_dir
        self.config = config or WorkerConfig()
        self.client_id = client_id or default_client_id()
        opts = self.config.mqtt or MqttOptions(client_id=self.client_id)
        opts = replace(opts, client_id=self.client_id)
        group = self.config.share_group
        # share_group "" = plain subscriptions: one worker on a broker without MQTT 5 (amqtt)
        subs = [(topics.shared(f"{topics.PREFIX}/devices/+/{ch}", group) if group
                 else f"{topics.PREFIX}/devices/+/{ch}", 1) for ch in _SHARED_CHANNELS]
        subs.append((f"{topics.PREFIX}/devices/+/status", 1))
        self.control = MqttConnection(broker_url, opts, tls=tls, subscriptions=subs)
        self.delivery = ChunkDelivery(catalog or StoreCatalog(store), self._publish_chunk,
                                      self.config.delivery)
        self.chunks = MqttConnection(
            broker_url, replace(opts, client_id=f"{self.client_id}-chunks", clean_start=True,
                                session_expiry_s=0, manual_ack=False),
            tls=tls, on_published=self.delivery.published)
        self.ingest = Ingest(store, delivery=self.delivery, on_state=on_state,
                             on_status=on_status, config=self.config.ingest,
                             sketches=SketchIntake(store),
                             captures=CaptureIntake(as_capture_store(store)))
        self._stop = threading.Event()
        self._consumer: threading.Thread | None = None
        self._unacked: list[Inbound] = []
        self.errors = 0
        self.acks_sent = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Connect both sessions and start consuming; raises TransportError if no broker."""
        self._stop.clear()
        self.chunks.start(self.config.connect_timeout_s)
        try:
            self.control.start(self.config.connect_timeout_s)
        except EdgeOpsError:
            self.chunks.close()
            raise
        self.delivery.start()
        self._consumer = threading.Thread(target=self._consume, name="ingest", daemon=True)
        self._consumer.start()

    def stop(self) -> None:
        """Finish what is buffered, then disconnect (unacked work is redelivered later)."""
        self._stop.set()
        if self._consumer is not None:
            self._consumer.join(timeout=15)
            self._consumer = None
        self.delivery.stop()
        if self.config.end_session_on_stop:
            self.control.end_session()
        self.control.close()
        self.chunks.close()

    def __enter__(self) -> ManagerWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- DeviceChannel ---------------------------------------------------------------------
    def send_desired(self, device_id: str, cmd: SignedCommand) -> None:
        self.control.publish(topics.device_topic(device_id, "desired"), cmd.to_bytes(), qos=1,
                             retain=True)

    def send_command(self, device_id: str, cmd: SignedCommand) -> None:
        self.control.publish(topics.device_topic(device_id, "commands"), cmd.to_bytes(), qos=1)

    def publish_metadata(self, filename: str, data: bytes) -> None:
        self.control.publish(topics.tuf_metadata(filename), data, qos=1, retain=True)

    def clear_desired(self, device_id: str) -> None:
        """Remove the retained desired state (device decommissioned)."""
        self.control.publish(topics.device_topic(device_id, "desired"), b"", qos=1, retain=True)

    # -- observability ---------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        d = self.delivery.stats
        i = self.ingest.stats
        return {"client_id": self.client_id, "received": self.control.received_messages,
                "ingest": dict(i.counts), "telemetry_rows": i.telemetry_rows,
                "telemetry_messages": i.telemetry_messages, "flushes": i.flushes,
                "delivery": {"requests": d.requests, "rejected": d.rejected,
                             "chunks_requested": d.chunks_requested,
                             "chunks_published": d.chunks_published,
                             "bytes_published": d.bytes_published},
                "acks_sent": self.acks_sent, "errors": self.errors}

    def ingest_counts(self) -> dict[str, int]:
        """A copy of the ingest counters (read from another thread: /metrics)."""
        for _ in range(5):
            try:
                return dict(self.ingest.stats.counts)
            except RuntimeError:    # the consumer added a key while we copied: try again
                continue
        return {}

    # -- internals -------------------------------------------------------------------------
    def _publish_chunk(self, topic: str, frame: bytes) -> int:
        return self.chunks.publish(topic, frame, qos=1)

    def _consume(self) -> None:
        # Telemetry waits for a batch (rows or age, IngestConfig); everything else is handled
        # and acknowledged at once. Waking per message to commit would cap the rate at what one
        # transaction per message costs.
        inbound = self.control.inbound
        flush_s = self.config.ingest.telemetry_flush_s
        while True:
            timeout = flush_s if self.ingest.buffered_rows() else 0.2
            try:
                msg: Inbound | None = inbound.get(timeout=timeout)
            except queue.Empty:
                msg = None
            if msg is not None:
                self._retrying(functools.partial(self._handle, msg), attempts=5, give_up=msg.ack)
            if self.ingest.flush_due() or (msg is None and self._unacked):
                self._retrying(self._flush)
            if msg is None and self._stop.is_set():
                self._retrying(self._flush)
                self._send_acks()
                return
            self._send_acks()

    def _handle(self, msg: Inbound) -> None:
        outcome = self.ingest.handle(msg.topic, msg.payload)
        if outcome.value == "buffered":
            self._unacked.append(msg)
        else:
            msg.ack()

    def _flush(self) -> None:
        self.ingest.flush()
        self.control.ack_all(self._unacked)
        self._unacked.clear()

    def _send_acks(self) -> None:
        """Publish the end-to-end acks that ingest has due (QoS 0: a lost one only means the
        device re-sends, and the re-send is acknowledged again)."""
        acks = self.ingest.take_acks()
        if not self.config.send_acks:
            return
        for ack in acks:
            try:
                self.control.publish(topics.device_topic(ack.device_id, "ack"), ack.to_bytes(),
                                     qos=0)
                self.acks_sent += 1
            except TransportError as exc:
                log.info("ack for %s not sent (%s); the device will re-send", ack.device_id,
                         exc.message)

    def _retrying(self, fn: Callable[[], None], attempts: int = 0,
                  give_up: Callable[[], None] | None = None) -> None:
        """Store failures are transient (database restart): back off and retry, keeping the
        buffer, instead of dropping or acknowledging anything. A single message that keeps
        failing (``attempts``) is dropped with an error, so it cannot wedge the worker."""
        delay = 0.05
        tries = 0
        while True:
            try:
                fn()
                return
            except Exception as exc:  # the store's driver errors are not ours to enumerate
                self.errors += 1
                tries += 1
                if attempts and tries >= attempts:
                    log.error("dropped a message after %d failed attempts: %s", tries, exc)
                    if give_up is not None:
                        give_up()
                    return
                log.error("store write failed (%s); retrying in %.2f s", exc, delay)
                if self._stop.is_set() and delay >= self.config.store_retry_max_s:
                    log.error("giving up at shutdown; unacknowledged messages will be "
                              "redelivered by the broker")
                    return
                time.sleep(delay)
                delay = min(delay * 2, self.config.store_retry_max_s)

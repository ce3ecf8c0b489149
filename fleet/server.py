"""``edgeops fleet serve``: wire store, keys, TUF repository, rollout loop, MQTT worker, HTTP.

Start-up order matters: open (and migrate) the store; load the online keys and root.json from
the key store; make sure an admin token exists (first start writes DATA/admin.token, 0600);
connect the MQTT worker (or run without one and say so); re-publish the persisted commands of
every notified device (:meth:`RolloutEngine.recover`) so a restart mid-rollout skips nobody,
and ask every device in flight to report again (:meth:`RolloutEngine.reconcile`);
then serve HTTP while a background loop ticks the rollout engine and keeps TUF freshness
metadata signed. SIGTERM/SIGINT stop uvicorn, then the loop, the worker and the store.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuf.api.metadata import Metadata, Root

from edgeops.errors import ConfigError, KeyError_, UsageError
from edgeops.fsutil import atomic_write
from edgeops.keys import KeyStore
from edgeops.protocol import SignedCommand
from edgeops.trust import root_path
from fleet.api import Services, create_app
from fleet.api.auth import create_token
from fleet.drift.alert_service import AlertIntervals, AlertService
from fleet.drift.alerts import DriftAlerts, alert_store
from fleet.drift.webhook_sender import WebhookSender
from fleet.enroll import EnrolSettings
from fleet.ports import CommandSigner, DeviceChannel
from fleet.repository import Repository
from fleet.rollout import RolloutEngine
from fleet.store import Store, open_store

if TYPE_CHECKING:
    from fleet.broker_admin import BrokerAdmin
    from fleet.mqtt import TlsOptions
    from fleet.worker import ManagerWorker

__all__ = ["FleetServer", "OfflineChannel", "ServeOptions", "ensure_admin_token", "parse_listen",
           "remove_stale_uploads"]

log = logging.getLogger(__name__)

MANAGER_SESSION_EXPIRY_S = 10
"""How long the broker keeps a vanished worker's MQTT session (docs/PROTOCOL.md)."""


@dataclass(frozen=True)
class ServeOptions:
    db: str
    listen: str = "127.0.0.1:8080"
    data: Path = Path("fleet-data")
    broker: str | None = None
    broker_ca: Path | None = None           # mqtts://: CA that signed the broker's certificate
    broker_cert: Path | None = None         # the manager's client certificate (mutual TLS)
    broker_key: Path | None = None
    broker_password_file: Path | None = None  # manager.password: the generated broker's manager
    # listener, where the manager also administers the broker (enrolment grants a device)
    keys_home: Path | None = None
    public_url: str | None = None           # what enrolled agents use to reach the API
    device_broker_url: str | None = None    # what enrolled agents use to reach the broker
    require_blessing: bool = False
    tick_s: float = 1.0
    refresh_s: float = 60.0
    upload_ttl_s: float = 3600.0            # uploads never published are removed after this
    mlflow_tracking_uri: str | None = None  # tag deployment outcomes on MLflow model versions
    drift_evaluate_s: float = 60.0          # stored drift monitors are evaluated this often


class OfflineChannel:
    """Used when no broker is configured: commands stay persisted, nothing is sent yet.

    When the manager later runs with a broker, :meth:`RolloutEngine.recover` sends them.
    """

    def send_desired(self, device_id: str, cmd: SignedCommand) -> None:
        log.debug("no broker: desired command %d for %s kept in the store only",
                  cmd.command.seq, device_id)

    def send_command(self, device_id: str, cmd: SignedCommand) -> None:
        log.debug("no broker: command %d for %s dropped", cmd.command.seq, device_id)

    def publish_metadata(self, filename: str, data: bytes) -> None:
        log.debug("no broker: %s served over HTTP only", filename)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {listen!r} is not HOST:PORT", hint="e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def _fleet_ca(keys: KeyStore) -> Any:
    """The fleet CA under the key store's home, if it has been set up (`edgeops fleet ca init`)."""
    from fleet.pki import FleetCA

    ca = FleetCA(keys.home / "ca")
    return ca if ca.exists() else None


def remove_stale_uploads(upload_dir: Path, ttl_s: float, now: float | None = None) -> int:
    """Delete uploads older than ``ttl_s`` (a publisher that never sent the publish call)."""
    now = time.time() if now is None else now
    n = 0
    for p in upload_dir.glob("*.edgebundle"):
        try:
            if now - p.stat().st_mtime > ttl_s:
                p.unlink()
                n += 1
        except FileNotFoundError:  # published (and removed) meanwhile
            continue
    return n


def ensure_admin_token(store: Store, data: Path) -> str | None:
    """First start: create an admin token, write it to DATA/admin.token (0600), return it."""
    if store.list_tokens():
        return None
    token, _ = create_token(store, "admin", "admin (first start)")
    atomic_write(data / "admin.token", token.encode() + b"\n", mode=0o600)
    return token


class FleetServer:
    def __init__(self, opts: ServeOptions) -> None:
        self.opts = opts
        opts.data.mkdir(parents=True, exist_ok=True)
        keys = KeyStore(opts.keys_home) if opts.keys_home else KeyStore()
        rp = root_path(keys)
        if not rp.exists():
            raise KeyError_(f"no TUF root at {rp}", hint="run `edgeops keys init` first (or "
                                                         "pass --keys EDGEOPS_HOME)")
        self.root = Metadata[Root].from_file(str(rp))
        self.store = open_store(opts.db, opts.data)
        self.admin_token = ensure_admin_token(self.store, opts.data)
        self.worker: Any = None
        self.channel: DeviceChannel = OfflineChannel()
        self.signer = CommandSigner(keys.signer("manager"), self.store)
        self.repository = Repository(self.store, self.root, keys.signer("snapshot"),
                                     keys.signer("timestamp"))
        self.repository.import_roots(rp.parent)
        self.engine = RolloutEngine(self.store, self.channel, self.signer,
                                    require_blessing=opts.require_blessing)
        self.outcomes: Any = None
        if opts.mlflow_tracking_uri:
            from fleet.mlflow_outcomes import MlflowOutcomes

            self.outcomes = MlflowOutcomes(self.store, opts.mlflow_tracking_uri)
            self.engine.attach_outcome_listener(self.outcomes)
        host, port = parse_listen(opts.listen)
        manager_key = keys.public_key("manager")
        self.services = Services(
            self.store, self.repository, self.engine,
            EnrolSettings(broker_url=opts.device_broker_url or opts.broker
                          or "mqtt://127.0.0.1:1883",
                          fleet_url=opts.public_url or f"http://{opts.listen}",
                          manager_keys=({"keyid": manager_key.keyid, **manager_key.to_dict()},),
                          root_json=rp.read_bytes()),
            upload_dir=opts.data / "uploads", ca=_fleet_ca(keys))
        self.app = create_app(self.services, fleet_ca=self.services.ca)
        self.broker_password: str | None = None
        self.broker_admin: BrokerAdmin | None = None
        if opts.broker_password_file is not None:
            from fleet.broker_admin import BrokerAdmin, read_password

            if not opts.device_broker_url:   # the manager listener refuses every device
                raise UsageError("with --broker-password-file, --broker is the broker's manager "
                                 "listener: tell devices the device listener",
                                 hint="add --device-broker mqtts://HOST:8883")

            self.broker_password = read_password(opts.broker_password_file)
        if opts.broker and self.broker_password is not None:
            self.broker_admin = BrokerAdmin(opts.broker, self.broker_password,
                                            tls=self._broker_tls())
            self.app.state.broker_admin = self.broker_admin
        self.host, self.port = host, port
        self.alerts = _alert_service(self.store, opts)
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None

    def start_background(self) -> None:
        """Connect MQTT (if configured), recover, start the rollout loop."""
        if self.opts.broker:
            from fleet.mqtt import MqttOptions
            from fleet.pki import MANAGER_IDENTITY
            from fleet.worker import ManagerWorker, WorkerConfig, persistent_client_id

            # stable across restarts (a restart resumes its own session), distinct per
            # HTTP port (several managers sharing one data directory)
            cid = persistent_client_id(self.opts.data, str(self.port))
            # short: a worker killed for good leaves the shared-subscription group soon
            # (messages the broker hands its session meanwhile are re-sent by devices,
            # which keep them until a manager acks); a quick restart still resumes it
            password = self.broker_password     # the manager listener's login, if any
            config = WorkerConfig(mqtt=MqttOptions(
                client_id=cid, session_expiry_s=MANAGER_SESSION_EXPIRY_S,
                username=MANAGER_IDENTITY if password is not None else None,
                password=password))
            self.attach_worker(ManagerWorker(self.store, self.opts.broker, self.opts.data,
                                             tls=self._broker_tls(), client_id=cid,
                                             on_state=self.engine.on_state,
                                             on_status=self.engine.on_status, config=config))
        else:
            log.warning("no --broker given: running without MQTT (commands are kept and sent "
                        "once a broker is configured)")
        n = self.engine.recover()
        if n:
            log.info("re-sent %d persisted commands after restart", n)
        if self.worker is not None:
            self.engine.reconcile()
        self._loop = threading.Thread(target=self._run_loop, name="rollout", daemon=True)
        self._loop.start()
        self.alerts.start()

    def attach_worker(self, worker: ManagerWorker) -> None:
        """Start ``worker`` and make it the server's device channel (engine and repository too).

        ``start_background`` does this for ``--broker``; an embedder that builds its own worker
        (the demo: its own broker, MQTT version and client id) calls it after starting the
        server, instead of assigning the attributes itself.
        """
        worker.start()
        self.worker = worker
        self.services.ingest_counts = worker.ingest_counts     # sketch refusals in /metrics
        self.channel = worker
        self.engine.channel = worker
        self.repository.channel = worker
        self.repository.republish_all()

    def _run_loop(self) -> None:
        last_refresh = 0.0
        while not self._stop.wait(self.opts.tick_s):
            try:
                self.engine.tick()
                if time.monotonic() - last_refresh >= self.opts.refresh_s:
                    self.repository.refresh()
                    remove_stale_uploads(self.services.upload_dir, self.opts.upload_ttl_s)
                    last_refresh = time.monotonic()
            except Exception:  # keep the loop alive; the store or broker may be back soon
                log.exception("rollout loop iteration failed")

    def _broker_tls(self) -> TlsOptions | None:
        from fleet.mqtt import TlsOptions

        if self.opts.broker_ca or self.opts.broker_cert:
            return TlsOptions(ca=self.opts.broker_ca, cert=self.opts.broker_cert,
                              key=self.opts.broker_key)
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.join(timeout=10)
        self.alerts.stop()
        if self.broker_admin is not None:
            self.broker_admin.close()
        if self.worker is not None:
            try:
                self.worker.stop()
            except Exception:
                log.exception("stopping the MQTT worker failed")
        if self.outcomes is not None:
            self.outcomes.close()
        self.store.close()

    def bind(self) -> socket.socket:
        """Take the listening socket first, so a bad --listen fails before anything starts."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            return socket.create_server((self.host, self.port), family=family, backlog=512)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.opts.listen}: "
                              f"{exc.strerror or exc}",
                              hint="is the port in use or the address not local? pick another "
                                   "--listen") from None

    def serve(self, on_ready: Callable[[FleetServer], None] | None = None) -> None:
        """Run until SIGTERM/SIGINT (uvicorn handles the signals), then shut down cleanly."""
        import uvicorn

        sock = self.bind()
        config = uvicorn.Config(self.app, log_level="warning", access_log=False,
                                lifespan="off")
        server = uvicorn.Server(config)
        try:
            self.start_background()
            if on_ready is not None:
                on_ready(self)
            server.run(sockets=[sock])
        finally:
            self.stop()
            sock.close()


def _alert_service(store: Store, opts: ServeOptions) -> AlertService:
    """Drift monitors' evaluation and webhook delivery threads (fleet/drift/alert_service.py);
    events name this manager's public URL as their CloudEvents source."""
    base = (opts.public_url or f"http://{opts.listen}").rstrip("/")
    return AlertService(DriftAlerts(store, source=f"{base}/api/v1/drift"),
                        WebhookSender(alert_store(store)),
                        AlertIntervals(evaluate_s=opts.drift_evaluate_s))


def announce(server: FleetServer, out: Any = None) -> None:
    out = out or sys.stderr
    print(f"fleet manager listening on http://{server.host}:{server.port} "
          f"(db {server.opts.db}, data {server.opts.data}, "
          f"broker {server.opts.broker or 'none'})", file=out, flush=True)
    if server.admin_token:
        print(f"admin token (shown once, also in {server.opts.data / 'admin.token'}): "
              f"{server.admin_token}", file=out, flush=True)

"""Real services for the attack suite: Mosquitto running the *generated* configuration, a real
uvicorn server for the PKI routes, and MQTT 5 test clients that report what the broker did.

Reusable by other test directories: ``SecureBroker`` (a :class:`tests.mosquitto.MosquittoBroker`)
starts ``mosquitto -c`` on a config written by :func:`fleet.broker_config.write_broker_config`
(free loopback ports for the device and manager listeners, real TLS, the dynamic security
plugin), and grants or revokes devices through the plugin's control API as the manager does;
``MqttProbe`` is a paho MQTT 5 client that records connection results, PUBACK reason codes and
received messages. With ``EDGEOPS_REQUIRE_SERVICES=1`` a missing mosquitto fails, never skips.
"""

from __future__ import annotations

import contextlib
import getpass
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from starlette.applications import Starlette

from edgeops.errors import UsageError
from fleet.broker_admin import BrokerAdmin, read_password
from fleet.broker_config import BrokerFiles, copy_crl, find_dynsec_plugin, write_broker_config
from fleet.mqtt import TlsOptions
from fleet.pki import MANAGER_IDENTITY, FleetCA
from tests.mosquitto import MosquittoBroker, find_mosquitto
from tests.services import free_port, need

__all__ = ["Identity", "MqttProbe", "SecureBroker", "serve_app", "tls_alert"]


@dataclass(frozen=True)
class Identity:
    """TLS client material for one MQTT client (None fields: connect without them)."""

    name: str
    ca: Path
    cert: Path | None
    key: Path | None
    username: str | None = None   # with password: log in (the manager listener)
    password: str | None = None
    port: int | None = None       # the listener this identity must use, if not the device one


class SecureBroker(MosquittoBroker):
    """``mosquitto -c <generated mosquitto.conf>`` on 127.0.0.1, log captured to a file.

    The config, dynamic-security file and CRL are production's
    (:func:`fleet.broker_config.write_broker_config`); running, restarting and the log are
    :class:`tests.mosquitto.MosquittoBroker`'s. ``admin`` is the manager's
    :class:`fleet.broker_admin.BrokerAdmin` on the manager listener."""

    def __init__(self, ca: FleetCA, directory: Path) -> None:
        need("mosquitto", find_mosquitto() is not None, "apt-get install mosquitto")
        try:
            find_dynsec_plugin()
        except UsageError as exc:
            need("mosquitto_dynamic_security.so", False, exc.hint or "")
        port = free_port()
        files = write_broker_config(ca, directory, hostnames=("localhost", "127.0.0.1"),
                                    port=port, manager_port=free_port(), bind="127.0.0.1",
                                    manager_bind="127.0.0.1", user=getpass.getuser())
        super().__init__(directory, port=port, config_file=files.conf)
        self.ca = ca
        self.files: BrokerFiles = files
        self.manager_password = read_password(files.manager_password)
        self.admin_key, self.admin_cert = ca.issue_with_key(
            MANAGER_IDENTITY, directory / "admin", kind="manager")
        self._admin: BrokerAdmin | None = None

    @property
    def manager_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.files.manager_port}"

    @property
    def admin(self) -> BrokerAdmin:
        if self._admin is None:
            self._admin = BrokerAdmin(self.manager_url, self.manager_password,
                                      tls=TlsOptions(self.files.ca, self.admin_cert,
                                                     self.admin_key))
        return self._admin

    def grant(self, *device_ids: str) -> None:
        """What enrolment does on the broker (idempotent)."""
        for d in device_ids:
            self.admin.grant_device(d)

    def manager_identity(self, cert: Path, key: Path, name: str = "manager") -> Identity:
        """The manager on its own listener: certificate plus the manager password."""
        return Identity(name, self.files.ca, cert, key, MANAGER_IDENTITY, self.manager_password,
                        self.files.manager_port)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        super().stop()

    def start(self, timeout_s: float = 10.0) -> SecureBroker:
        need("mosquitto", find_mosquitto() is not None, "apt-get install mosquitto")
        super().start(timeout_s)
        return self

    def reload_crl(self) -> None:
        """What an operator does after ``ca revoke``: copy the CRL, then restart the broker."""
        copy_crl(self.ca, self.files.directory)
        self.restart()

    def restart(self, timeout_s: float = 10.0, down_s: float = 0.0) -> None:
        if self._admin is not None:   # its session died with the broker
            self._admin.close()
            self._admin = None
        super().restart(timeout_s, down_s)

    def identity(self, name: str, cert: Path | None, key: Path | None) -> Identity:
        return Identity(name, self.files.ca, cert, key)


@dataclass
class MqttProbe:
    """A paho MQTT 5 client that records everything the broker tells it."""

    identity: Identity
    port: int
    client_id: str
    connected: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    connect_error: str | None = None
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    puback: dict[int, str] = field(default_factory=dict)
    suback: dict[int, list[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    client: mqtt.Client | None = None
    # act as the manager for end-to-end acks: acknowledge every state report it receives
    ack_reports: bool = False

    def connect(self, timeout_s: float = 5.0) -> bool:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(self.identity.ca),
                  certfile=str(self.identity.cert) if self.identity.cert else None,
                  keyfile=str(self.identity.key) if self.identity.key else None)
        if self.identity.username is not None:
            c.username_pw_set(self.identity.username, self.identity.password)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        self.client = c
        try:
            c.connect("127.0.0.1", self.identity.port or self.port, keepalive=30)
        except (OSError, ValueError) as exc:
            # The broker refused the TLS handshake (no cert, revoked, expired, foreign CA).
            self.connect_error = f"{type(exc).__name__}: {exc}"
            return False
        c.loop_start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.connected.is_set():
                return True
            if self.disconnected.is_set():
                break
            time.sleep(0.02)
        c.loop_stop()
        with contextlib.suppress(Exception):
            c.disconnect()
        self.connect_error = self.connect_error or "no CONNACK (connection closed by broker)"
        return False

    def _on_connect(self, c: mqtt.Client, u: object, flags: object, rc: object,
                    props: object) -> None:
        if getattr(rc, "is_failure", False):
            self.connect_error = str(rc)
            self.disconnected.set()
        else:
            self.connected.set()

    def _on_disconnect(self, c: mqtt.Client, u: object, flags: object, rc: object,
                       props: object) -> None:
        self.connect_error = self.connect_error or f"disconnected: {rc}"
        self.disconnected.set()

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))
        if self.ack_reports and msg.topic.endswith("/state"):
            import json

            from edgeops.protocol import Ack

            d = json.loads(msg.payload)
            c.publish(msg.topic[: -len("state")] + "ack",
                      Ack(str(d["device_id"]), state=int(d["seq"])).to_bytes(), qos=0)

    def _on_publish(self, c: mqtt.Client, u: object, mid: int, rc: object, props: object) -> None:
        with self._lock:
            self.puback[mid] = str(rc)

    def _on_subscribe(self, c: mqtt.Client, u: object, mid: int, rcs: list[object],
                      props: object) -> None:
        with self._lock:
            self.suback[mid] = [str(r) for r in rcs]

    def publish(self, topic: str, payload: bytes, retain: bool = False,
                timeout_s: float = 5.0) -> str:
        """Publish at QoS 1 and return the broker's PUBACK reason ('Success', 'Not authorized')."""
        assert self.client is not None
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if info.mid in self.puback:
                    return self.puback[info.mid]
            time.sleep(0.02)
        return "no PUBACK"

    def subscribe(self, topic_filter: str, timeout_s: float = 5.0) -> list[str]:
        assert self.client is not None
        _, mid = self.client.subscribe(topic_filter, qos=1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if mid in self.suback:
                    return self.suback[mid]
            time.sleep(0.02)
        return ["no SUBACK"]

    def received(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    def wait_for(self, topic: str, timeout_s: float = 5.0) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.received(topic)
            if got:
                return got
            time.sleep(0.02)
        return []

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.disconnect()
            self.client.loop_stop()


def tls_alert(identity: Identity, port: int) -> str | None:
    """The broker's TLS verdict on this identity, read from the handshake alert (TLS 1.2, where
    a refused client certificate fails the handshake itself); None when it is accepted."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(identity.ca))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if identity.cert is not None and identity.key is not None:
        ctx.load_cert_chain(str(identity.cert), str(identity.key))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
            return None
    except ssl.SSLError as exc:
        return str(exc.reason or exc)


@contextlib.contextmanager
def serve_app(app: Starlette) -> Iterator[str]:
    """Run a Starlette app under a real uvicorn on a free loopback port; yield its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)

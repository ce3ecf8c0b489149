"""The agent's one paho adapter: connect, stay connected, publish, and queue what arrives.

Everything paho-specific lives here so the rest of the agent deals in topics and bytes. Why the
shape: paho's client mixes sockets, locks and callbacks; keeping it behind one small class lets
the daemon be a plain consumer of a bounded queue, and lets many agents share one process for
the fleet simulator (no per-connection thread: see below).

Behaviour that the fleet relies on (docs/PROTOCOL.md, docs/AGENT_NET.md):

- a retained ``status`` with ``online: true`` on every connect, a Last Will with
  ``online: false``, and a clean ``online: false`` on :meth:`MqttConnection.stop`;
- reconnect with exponential backoff and *full jitter* (bounded), so thousands of devices do not
  reconnect in lockstep after a broker restart;
- QoS 1 for everything, subscriptions restored after every reconnect, a persistent session;
- callbacks only enqueue (bounded; overflow is counted, never blocks the network thread).

Threads: paho is driven through its external-loop API by an :class:`edgeops.paho_loop.PahoMember`
on a :class:`edgeops.netloop.NetLoop`: one thread per process waits on an epoll selector
for every connection (no ``select()``, so descriptors above 1024 work) and runs their keepalive
and backoff timers; blocking connects (TCP, TLS handshake) run on its small connect pool.

**Only the loop thread touches a connected socket** (see :mod:`edgeops.paho_loop`): paho's
``publish``/``subscribe`` from other threads only queue packets. The remaining shared state is
paho's (re)connect (it clears the output deque), so every paho call from other threads holds
``_wire``, which the connect pool holds while it connects; those calls do no I/O, so the lock
is only contended during a connect.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeops.errors import ConfigError
from edgeops.mqtt_settings import InboundMessage as Inbound
from edgeops.mqtt_settings import TlsSettings as TlsFiles
from edgeops.mqtt_settings import parse_broker_address
from edgeops.netloop import NetLoop
from edgeops.paho_loop import PahoMember
from edgeops.protocol import topics

__all__ = ["Backoff", "BrokerSettings", "Inbound", "MqttConnection", "TlsFiles", "parse_broker_url"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: delay = uniform(0, min(max_s, base_s * 2**n)).

    Full jitter (rather than "exponential plus a little noise") spreads a fleet's reconnects
    evenly over the whole window, which is what keeps a restarted broker from being flattened.
    """

    base_s: float = 0.5
    max_s: float = 60.0

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay before reconnect ``attempt`` (0-based)."""
        return min(self.max_s, self.base_s * (2.0 ** min(attempt, 62)))

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))


@dataclass(frozen=True)
class BrokerSettings:
    """Where and how to connect; built from the agent config's ``broker`` section."""

    host: str
    port: int
    tls: TlsFiles | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    mqtt_version: int = 5                  # 5 or 3 (3.1.1)
    session_expiry_s: int = 7 * 24 * 3600  # keep QoS 1 commands for offline devices a week
    backoff: Backoff = Backoff()
    inbound_queue_max: int = 1024          # messages; overflow is dropped and counted
    connect_timeout_s: float = 10.0


def parse_broker_url(url: str, *, tls: TlsFiles | None = None, username: str | None = None,
                     password: str | None = None, keepalive_s: int = 30) -> BrokerSettings:
    """``mqtt://host:port`` (plain) or ``mqtts://host:port`` (TLS, needs ``tls``)."""
    address = parse_broker_address(url, schemes=("mqtt", "mqtts"), error=ConfigError,
                                   hint="set broker.url in the agent config")
    if address.tls and tls is None:
        raise ConfigError(f"broker url {url!r} asks for TLS but broker.tls is not set",
                          hint="set broker.tls.ca (and cert/key for mutual TLS)")
    return BrokerSettings(host=address.host, port=address.port, tls=tls, username=username,
                          password=password, keepalive_s=keepalive_s)


class MqttConnection:
    """One device's connection to the broker, served by a shared network loop.

    ``status_payload(online)`` builds the retained status message (the daemon owns the clock and
    the schema); it is called for the Last Will at construction and on every (dis)connect.
    ``net`` is the :class:`edgeops.netloop.NetLoop` whose thread reads and writes the
    socket; by default the process's shared one, so a hundred agents in one process cost one
    network thread, not a hundred.
    """

    def __init__(self, device_id: str, settings: BrokerSettings,
                 status_payload: Callable[[bool], bytes], *,
                 rng: random.Random | None = None, client_id: str | None = None,
                 net: NetLoop | None = None) -> None:
        self.device_id = device_id
        self.settings = settings
        self._status_payload = status_payload
        self._status_topic = topics.device_topic(device_id, "status")
        self._rng = rng or random.Random()
        self._net = net
        self._own_shared = False        # True once start() took NetLoop.shared()
        self._inbox: queue.Queue[Inbound] = queue.Queue(settings.inbound_queue_max)
        self._subs: set[str] = set()
        self._lock = threading.Lock()
        self._wire = threading.Lock()   # paho calls off the loop thread vs. a (re)connect
        self._stop = threading.Event()
        self._running = False
        self.connected = threading.Event()
        self.disconnects = 0          # connections lost or closed (not counting stop())
        self.generation = 0           # +1 per successful connect: lets downloads resume
        self.dropped_inbound = 0      # messages lost because the inbox was full
        self.attempts = 0             # consecutive failed connects (backoff exponent)
        self.last_error: str | None = None
        self.delays: list[float] = []  # recent backoff delays, for tests and diagnostics

        v5 = settings.mqtt_version == 5
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"edgeops-agent-{device_id}",
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else False)
        self._client.enable_logger(log)
        self._client.connect_timeout = settings.connect_timeout_s
        if settings.username is not None:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.tls is not None:
            self._client.tls_set_context(settings.tls.context(
                error=ConfigError, hint="check broker.tls in the agent config (PEM files)"))
        self._client.will_set(self._status_topic, status_payload(False), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._ready_mid: int | None = None
        # drives the client from the loop; sets paho's socket hooks, so a publish from any
        # thread is only queued and the loop writes it (module docstring)
        self._member = PahoMember(self._client, name=f"{device_id}: the connection",
                                  wire=self._wire, stopping=self._stop, connected=self.connected,
                                  connect=self._connect, connect_failed=self._connect_failed,
                                  loop_failed=self._loop_failed, next_delay=self._next_delay)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Join the network loop; it connects (and reconnects) in the background."""
        if self._running:
            return
        if self._net is None or (self._own_shared and self._net.closed):
            # the process's loop; a restart after NetLoop.close_shared_if_idle() takes a fresh one
            self._net = NetLoop.shared()
            self._own_shared = True
        self._running = True
        self._member.start(self._net)

    def stop(self, timeout_s: float = 3.0) -> None:
        """Say ``online: false`` (retained), disconnect cleanly, leave the network loop."""
        if not self._running or self._net is None:
            return
        if self.connected.is_set():
            info = self.publish(self._status_topic, self._status_payload(False), retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                pass  # connection dropped meanwhile: the Last Will says the same thing
        self._member.stop(timeout_s)
        self._running = False
        self.connected.clear()

    def wait_connected(self, timeout_s: float) -> bool:
        """Connected and every subscription acknowledged by the broker."""
        return self.connected.wait(timeout_s)

    # -- traffic ---------------------------------------------------------------------------
    def subscribe(self, topic_filter: str) -> None:
        """Subscribe at QoS 1 now (if connected) and after every reconnect."""
        with self._lock:
            self._subs.add(topic_filter)
        if self.connected.is_set():
            with self._wire:
                self._client.subscribe(topic_filter, qos=1)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._subs.discard(topic_filter)
        if self.connected.is_set():
            with self._wire:
                self._client.unsubscribe(topic_filter)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> paho.MQTTMessageInfo:
        """Publish at QoS 1 from any thread; the loop thread writes it.

        While offline paho keeps it and sends it after reconnecting, but the returned info then
        raises ``RuntimeError`` from ``is_published()`` forever (its ``rc`` stays
        ``MQTT_ERR_NO_CONN`` even once the broker acknowledged the resend): callers that track
        delivery must treat that as "not known to be delivered" and publish again.
        """
        with self._wire:
            return self._client.publish(topic, payload, qos=1, retain=retain)

    def get(self, timeout_s: float | None = None) -> Inbound | None:
        """The next received message, or None after ``timeout_s``."""
        try:
            return self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            return None

    # -- connecting (connect pool) -----------------------------------------------------------
    def _connect_properties(self) -> Properties | None:
        if self.settings.mqtt_version != 5:
            return None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        return props

    def _connect(self) -> None:
        """Blocking TCP (+TLS) connect with CONNECT queued (the member's ``connect`` hook)."""
        s = self.settings
        with self._wire:
            if s.mqtt_version == 5:
                self._client.connect(s.host, s.port, s.keepalive_s, clean_start=False,
                                     properties=self._connect_properties())
            else:
                self._client.connect(s.host, s.port, s.keepalive_s)

    def _connect_failed(self, exc: Exception) -> None:
        s = self.settings
        self.last_error = f"connect to {s.host}:{s.port} failed: {exc}"

    def _loop_failed(self, exc: BaseException) -> None:
        self.last_error = f"network loop error: {exc!r}"

    def _next_delay(self) -> float:
        """Full-jitter backoff before the next connect (loop thread)."""
        delay = self.settings.backoff.delay(self.attempts, self._rng)
        self.attempts += 1
        self.delays = [*self.delays[-31:], delay]
        return delay

    # -- paho callbacks: only record and enqueue ---------------------------------------------
    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            return
        self.attempts = 0
        self.generation += 1
        with self._lock:
            subs = sorted(self._subs)
        client.publish(self._status_topic, self._status_payload(True), qos=1, retain=True)
        if subs:
            # "connected" means ready: subscriptions acknowledged, so nothing sent to us from
            # now on can be missed
            self._ready_mid = client.subscribe([(t, 1) for t in subs])[1]
        else:
            self.connected.set()

    def _on_subscribe(self, _client: paho.Client, _userdata: Any, mid: int, _codes: Any,
                      _props: Any) -> None:
        if mid == self._ready_mid:
            self.connected.set()

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            self.disconnects += 1
            self.last_error = f"disconnected: {reason}"

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            self._inbox.put_nowait(Inbound(msg.topic, bytes(msg.payload), int(msg.qos),
                                           bool(msg.retain), int(msg.mid)))
        except queue.Full:
            self.dropped_inbound += 1

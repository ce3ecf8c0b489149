"""The manager's only contact with paho-mqtt: connect, subscribe, publish, hand messages over.

paho's client mixes sockets, locks, reconnection and callbacks in one class; keeping it behind
this one adapter means the delivery, ingest and worker logic never see it. The rules here:

* Callbacks do no work. ``on_message`` puts an :class:`Inbound` on a bounded queue; when the
  queue is full the callback *blocks*, so paho stops reading, TCP pushes back and the broker
  holds the messages (nothing is dropped, nothing grows without bound).
* QoS 1 messages are acknowledged by the consumer (``manual_ack``) after they are persisted,
  so a worker that dies mid-batch loses nothing: the broker redelivers.
* Only paho's public API here: no private method is overridden or called, so a paho upgrade
  cannot silently change what is received. URL parsing, TLS options and the inbound message
  type are the agent's too (:mod:`edgeops.mqtt_settings`).
* MQTT 5, with a Receive Maximum (how many unacknowledged messages the broker may push) and a
  large outgoing in-flight window; TCP_NODELAY is set on the socket (paho does not), which is
  what lifts QoS 1 round trips from tens to thousands per second on loopback.
* Subscriptions are (re)made in ``on_connect``, so a broker restart is survived.
* No ``select()``: each connection is served by its own :class:`edgeops.netloop.NetLoop` (an
  epoll selector thread, the agent's loop) through paho's external-loop API, driven by
  :class:`edgeops.paho_loop.PahoMember` (the agent's driver too), so the manager
  (re)connects with any number of descriptors open; paho's ``loop_start()`` waits with
  ``select()``, which refuses a descriptor numbered 1024 or above.

Threads, per connection: the loop thread reads and writes the socket, runs paho's callbacks and
keepalive; a connect thread (the loop's pool) makes the blocking TCP + TLS connection, holding
:attr:`LockedClient.write_lock`. Publishing and acknowledging threads only queue packets: with
paho's ``on_socket_register_write`` hook set, paho never writes on the caller's thread (which
over TLS would race the loop's reads), it asks the loop to select the socket for writing.
Why one loop per connection rather than one per process as in the agent: the back-pressure
below blocks the loop thread, which must stall only its own connection.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgeops.errors import TransportError, UsageError
from edgeops.mqtt_settings import BrokerAddress, InboundMessage, parse_broker_address
from edgeops.mqtt_settings import TlsSettings as TlsOptions
from edgeops.netloop import NetLoop
from edgeops.paho_loop import PahoMember

__all__ = [
    "BrokerAddress",
    "Inbound",
    "LockedClient",
    "MqttConnection",
    "MqttOptions",
    "TlsOptions",
    "parse_broker_url",
]

log = logging.getLogger(__name__)


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host:port`` (default 1883) or ``mqtts://host:port`` (default 8883); also
    ``tcp://`` and ``ssl://``."""
    return parse_broker_address(url, error=UsageError, hint="e.g. --broker mqtt://127.0.0.1:1883")


@dataclass(frozen=True)
class MqttOptions:
    """Connection tuning. Counts are messages, times seconds."""

    client_id: str
    keepalive_s: int = 30
    receive_maximum: int = 2000          # unacked QoS 1 messages the broker may push to us
    max_inflight_out: int = 2000         # our unacked outgoing QoS 1 publishes (paho window)
    inbound_queue_max: int = 4000        # Inbound objects waiting for the consumer
    session_expiry_s: int = 120          # broker keeps our subscriptions/unacked this long
    clean_start: bool = False            # resume the session, so unacked work is redelivered
    manual_ack: bool = True              # consumer acks after persisting
    tcp_nodelay: bool = True
    username: str | None = None
    password: str | None = None
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    protocol_version: int = 5            # 5, or 4 (3.1.1) for brokers without MQTT 5 (amqtt)
    # "selector": an epoll edgeops.netloop.NetLoop (any descriptor number); "paho": paho's
    # loop_start() thread, whose select() cannot use descriptors numbered 1024 or above
    # (docs/FLEET_MQTT.md: kept because end-to-end ingest measured faster with it)
    network_loop: str = "selector"


class LockedClient(paho.Client):
    """paho's Client whose reconnect and the manager's publishing threads exclude each other.

    Why: paho reconnects on the connect thread while the manager publishes from others
    (delivery workers, the rollout loop, acknowledgements). ``reconnect()`` drops
    the outgoing packet queue, opens a new socket and only then queues CONNECT; a publish that
    lands in that window queues its PUBLISH ahead of CONNECT (the broker drops the connection
    for the protocol error) or meets a socket being swapped. :class:`MqttConnection` takes
    :attr:`write_lock` around every ``publish``/``ack``, and ``reconnect`` (a public paho
    method) runs under it, so a publish happens wholly before or wholly after a reconnect; one
    that waits is queued on the new session (QoS > 0 messages from before are resent by paho).
    A publish can therefore wait as long as one connection attempt (paho's 5 s connect
    timeout at most).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.write_lock = threading.RLock()
        super().__init__(*args, **kwargs)

    def reconnect(self) -> MQTTErrorCode:
        with self.write_lock:
            return super().reconnect()


class Inbound(InboundMessage):
    """One received message; ``ack()`` it once handled (a no-op for QoS 0 or a stale session).

    ``generation`` is the connection it arrived on: a packet id from an earlier connection may
    name another message now, so it is never acknowledged.
    """

    __slots__ = ("connection", "generation")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int,
                 generation: int, connection: MqttConnection | None = None) -> None:
        super().__init__(topic, payload, qos, retain, mid)
        self.generation = generation
        self.connection = connection

    def ack(self) -> None:
        if self.connection is not None:
            self.connection.ack(self)

    # one delivery on one connection: two deliveries of the same bytes are two messages to ack
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


class MqttConnection:
    """One MQTT 5 client session: subscriptions, an inbound queue and publish accounting.

    ``on_published`` (optional) is called from the network thread with the message id of each
    acknowledged QoS 1 publish; it must only release a counter, never do work.
    """

    def __init__(self, broker: str | BrokerAddress, options: MqttOptions, *,
                 tls: TlsOptions | None = None,
                 subscriptions: Sequence[tuple[str, int]] = (),
                 will: tuple[str, bytes, int, bool] | None = None,
                 on_published: Callable[[int], None] | None = None,
                 on_connected: Callable[[], None] | None = None) -> None:
        self.address = parse_broker_url(broker) if isinstance(broker, str) else broker
        self.options = options
        self.subscriptions = list(subscriptions)
        # SimpleQueue (C, lock-free for one producer) with the bound enforced in on_message:
        # queue.Queue's Condition costs ten times more per message.
        self.inbound: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self.connected = threading.Event()
        self._closing = threading.Event()
        self._generation = 0
        self._on_published = on_published
        self._on_connected = on_connected
        self._lock = threading.Lock()
        self.published_messages = 0
        self.published_bytes = 0
        self.received_messages = 0
        self.last_error: str | None = None
        self._net: NetLoop | None = None  # this connection's loop, while started
        self._attempts = 0              # consecutive failed connects (backoff exponent)
        self._end_session = False       # end_session() was called: close() ends the session
        self._unsub_mid: int | None = None
        self._unsub_acked: int | None = None   # the last UNSUBACK's mid (under _unsub_lock)
        self._unsub_lock = threading.Lock()
        self._unsubscribed = threading.Event()

        if options.network_loop not in ("selector", "paho"):
            raise UsageError(f"MQTT network loop {options.network_loop!r} is not 'selector' or "
                             "'paho'", hint="leave MqttOptions.network_loop at 'selector'")
        self._paho_loop = options.network_loop == "paho"
        self._v5 = options.protocol_version == 5
        if self._v5:
            c = LockedClient(CallbackAPIVersion.VERSION2, client_id=options.client_id,
                             protocol=MQTTProtocolVersion.MQTTv5, manual_ack=options.manual_ack)
        else:   # 3.1.1: no session expiry or receive maximum; clean_session stands for both
            c = LockedClient(CallbackAPIVersion.VERSION2, client_id=options.client_id,
                    protocol=MQTTProtocolVersion.MQTTv311,
                    clean_session=options.clean_start, manual_ack=options.manual_ack)
        c.max_inflight_messages_set(options.max_inflight_out)
        c.max_queued_messages_set(0)
        if self._paho_loop:
            c.reconnect_delay_set(max(1, int(options.reconnect_min_s)), int(options.reconnect_max_s))
        if options.username is not None:
            c.username_pw_set(options.username, options.password)
        if self.address.tls or tls is not None:
            c.tls_set_context((tls or TlsOptions()).context())
        if will is not None:
            c.will_set(will[0], will[1], qos=will[2], retain=will[3])
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_unsubscribe = self._on_unsubscribe
        c.on_socket_open = self._on_socket_open
        self._client: LockedClient = c
        # The member sets paho's socket hooks, so paho never writes on the caller's thread: a
        # publish or an ack is queued and the loop is asked to select the socket for writing.
        self._member: PahoMember | None = None if self._paho_loop else PahoMember(
            c, name=f"MQTT connection to {self.address.url}", wire=c.write_lock,
            stopping=self._closing, connected=self.connected, connect=c.reconnect,
            connect_failed=self._connect_failed, loop_failed=self._loop_failed,
            next_delay=self._next_delay)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; raises TransportError if the broker is not there in time.

        Once started the connection is kept: lost connections are remade in the background
        (backoff from ``reconnect_min_s`` doubling to ``reconnect_max_s``) until :meth:`close`.
        """
        self._closing.clear()
        if self._paho_loop or self._net is None:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.options.session_expiry_s
            props.ReceiveMaximum = max(1, min(self.options.receive_maximum, 65535))
            try:   # records where to connect (no I/O); the connect thread connects
                if self._v5:
                    self._client.connect_async(self.address.host, self.address.port,
                                               keepalive=self.options.keepalive_s,
                                               clean_start=self.options.clean_start,
                                               properties=props)
                else:
                    self._client.connect_async(self.address.host, self.address.port,
                                               keepalive=self.options.keepalive_s)
            except (OSError, ValueError) as exc:
                raise TransportError(f"cannot reach MQTT broker {self.address.url}: {exc}"
                                     ) from None
        if self._paho_loop:
            self._client.loop_start()
        elif self._net is None and self._member is not None:
            self._attempts = 0
            self._net = NetLoop(f"mqtt-{self.options.client_id}", connect_threads=1)
            self._member.start(self._net)
        if not self.connected.wait(timeout_s):
            self.close()
            why = f" ({self.last_error})" if self.last_error else ""
            raise TransportError(f"no connection to MQTT broker {self.address.url} within "
                                 f"{timeout_s:.0f} s{why}",
                                 hint="check --broker, TLS options and that the broker runs")

    def end_session(self, timeout_s: float = 2.0) -> None:
        """Leave for good: unsubscribe, then have :meth:`close` end the broker session.

        Why: a persistent session left behind stays a member of its shared-subscription
        groups, and the broker keeps handing it a share of the messages until it expires.
        Unsubscribing first takes it out of the groups at once; the DISCONNECT then carries
        a session expiry of 0, so the broker discards the session (MQTT 5). Messages that
        were in flight to it are not lost: devices re-send what no manager acknowledged.
        """
        self._end_session = True
        if not self._v5 or not self.connected.is_set() or not self.subscriptions:
            return
        self._unsubscribed.clear()
        with self._client.write_lock:
            rc, mid = self._client.unsubscribe([f for f, _ in self.subscriptions])
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            with self._unsub_lock:       # the UNSUBACK may have been read before unsubscribe()
                self._unsub_mid = mid    # returned here: the loop thread noted its mid
                if self._unsub_acked == mid:
                    self._unsubscribed.set()
            if not self._unsubscribed.wait(timeout_s):
                log.warning("no UNSUBACK from %s within %.1f s; ending the session anyway",
                            self.address.url, timeout_s)

    def _disconnect_properties(self) -> Properties | None:
        if not (self._v5 and self._end_session):
            return None
        props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        return props

    def close(self, timeout_s: float = 3.0) -> None:
        """Disconnect cleanly (queued packets are written first) and stop the network thread.

        After :meth:`end_session` the DISCONNECT also ends the broker session.
        """
        self._closing.set()
        if self._paho_loop:
            try:
                self._client.disconnect(properties=self._disconnect_properties())
            finally:
                self._client.loop_stop()
                self.connected.clear()
            return
        net = self._net
        if net is None or self._member is None:
            return
        self._member.disconnect_properties = self._disconnect_properties()
        self._member.stop(timeout_s)   # a connect under way finishes first
        net.close()
        self._net = None
        self.connected.clear()

    # -- publishing ------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Queue one publish; returns its message id (for ``on_published``).

        Thread-safe, also while paho reconnects (see :class:`LockedClient`): without a
        connection a QoS > 0 message waits in paho's queue and goes out once connected.
        """
        try:
            with self._client.write_lock:
                info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except OSError as exc:   # paho's socket plumbing; the message may not be queued
            raise TransportError(f"publish to {topic} failed: {exc}",
                                 hint="the MQTT connection is failing; check the broker") from None
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise TransportError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        with self._lock:
            self.published_messages += 1
            self.published_bytes += len(payload)
        return int(info.mid)

    def ack(self, msg: Inbound) -> None:
        # A mid from an earlier connection may now name another message: never ack it.
        if msg.qos > 0 and self.options.manual_ack and msg.generation == self._generation:
            with self._client.write_lock:
                self._client.ack(msg.mid, msg.qos)

    def ack_all(self, msgs: Sequence[Inbound]) -> None:
        """Acknowledge a batch (paho's public ``ack``, one write lock for the whole batch)."""
        if not self.options.manual_ack:
            return
        gen = self._generation
        c = self._client
        with c.write_lock:
            for m in msgs:
                if m.qos > 0 and m.generation == gen:
                    c.ack(m.mid, m.qos)

    # -- the PahoMember's hooks ---------------------------------------------------------------
    def _connect_failed(self, exc: Exception) -> None:
        self.last_error = f"cannot connect to {self.address.url}: {exc}"

    def _loop_failed(self, exc: BaseException) -> None:
        self.last_error = f"network loop error: {exc!r}"

    def _next_delay(self) -> float:
        """Backoff before the next connect: reconnect_min_s doubling up to reconnect_max_s."""
        o = self.options
        delay = min(o.reconnect_max_s, o.reconnect_min_s * 2.0 ** min(self._attempts, 30))
        self._attempts += 1
        return delay

    # -- paho callbacks (network thread): hand over, do nothing else -----------------------
    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self.options.tcp_nodelay:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):  # not a TCP socket (e.g. websockets wrapper)
                pass

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self.last_error = str(reason)
            log.warning("MQTT connect to %s refused: %s", self.address.url, reason)
            return
        self._generation += 1
        self._attempts = 0
        for topic_filter, qos in self.subscriptions:
            if self._v5:
                client.subscribe(topic_filter, options=SubscribeOptions(qos=qos))
            else:
                client.subscribe(topic_filter, qos=qos)
        self.connected.set()
        if self._on_connected is not None:
            self._on_connected()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected.clear()
        if not self._closing.is_set():
            self.last_error = str(reason)
            log.warning("MQTT connection to %s lost (%s); reconnecting", self.address.url, reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            log.warning("dropped a message whose topic is not UTF-8")
            if message.qos > 0 and self.options.manual_ack:
                client.ack(message.mid, message.qos)
            return
        self._enqueue(Inbound(topic, bytes(message.payload), int(message.qos),
                              bool(message.retain), int(message.mid), self._generation, self))

    def _enqueue(self, msg: Inbound) -> None:
        self.received_messages += 1
        limit = self.options.inbound_queue_max
        while self.inbound.qsize() >= limit:
            if self._closing.is_set():
                return        # not acked: the broker redelivers it to the resumed session
            time.sleep(0.002)  # back-pressure: paho stops reading until the consumer catches up
        self.inbound.put(msg)

    def _on_unsubscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any,
                        properties: Any) -> None:
        with self._unsub_lock:
            self._unsub_acked = mid
            if mid == self._unsub_mid:
                self._unsubscribed.set()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        if self._on_published is not None:
            self._on_published(mid)

"""The manager's only contact with paho-mqtt: connect, subscribe, publish, hand messages over.

paho's client mixes sockets, locks, reconnection and callbacks in one class; keeping it behind
this one adapter means the delivery, ingest and worker logic never see it. The rules here:

* Callbacks do no work. ``on_message`` puts an :class:`Inbound` on a bounded queue; when the
  queue is full the callback *blocks*, so paho stops reading, TCP pushes back and the broker
  holds the messages (nothing is dropped, nothing grows without bound).
* QoS 1 messages are acknowledged by the consumer (``manual_ack``) after they are persisted,
  so a worker that dies mid-batch loses nothing: the broker redelivers.
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

import importlib.metadata
import logging
import queue
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgeops.errors import TransportError, UsageError
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

_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host:port`` (default 1883) or ``mqtts://host:port`` (default 8883)."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise UsageError(f"broker URL {url!r} is not mqtt://HOST:PORT or mqtts://HOST:PORT",
                         hint="e.g. --broker mqtt://127.0.0.1:1883")
    tls = _SCHEMES[parts.scheme]
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise UsageError(f"broker URL {url!r} has an invalid port") from None
    return BrokerAddress(parts.hostname, port, tls)


@dataclass(frozen=True)
class TlsOptions:
    """Server verification against ``ca``; ``cert``/``key`` add a client certificate (mTLS)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(self.ca) if self.ca else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert:
            try:
                ctx.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot load client certificate {self.cert}: {exc}",
                                 hint="check --tls-cert/--tls-key point at a PEM pair") from None
        return ctx


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
    fast_receive: bool = True            # FastClient's receive path (False: plain paho)
    # "selector": an epoll edgeops.netloop.NetLoop (any descriptor number); "paho": paho's
    # loop_start() thread, whose select() cannot use descriptors numbered 1024 or above
    # (docs/FLEET_MQTT.md: kept because end-to-end ingest measured faster with it)
    network_loop: str = "selector"


def _paho_version() -> str:
    try:
        return importlib.metadata.version("paho-mqtt")
    except importlib.metadata.PackageNotFoundError:
        return ""


_PUBACK = struct.Struct("!BBH")
_PUBACK_CMD = 0x40
_READ_CHUNK = 65536

# FastClient leans on three private methods of paho's Client; use it only where they exist
# with the signatures it was written against (paho 2.x), else fall back to plain paho.
_FAST_OK = _paho_version().startswith("2.") and all(
    hasattr(paho.Client, m) for m in ("_sock_recv", "_sock_close", "_handle_publish",
                                      "_packet_queue", "_send_puback"))


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


class FastClient(LockedClient):
    """paho's Client with a cheaper receive path for a high-rate subscriber.

    Why: profiling the worker at a few thousand QoS 1 messages per second showed paho's
    network thread costing more CPU than ingest itself. paho reads every packet with three or
    more ``recv()`` calls (the command byte, each length byte, the body), one ``select()`` per
    packet, builds an ``MQTTMessage`` and an MQTT 5 ``Properties`` object per publish, runs the
    topic matcher, and queues one PUBACK packet (plus a wake-up byte on its socket pair) per
    acknowledgement. Here:

    * reads go through a 64 KiB buffer, and ``loop_read`` keeps parsing while it holds bytes;
    * with ``fast_publish`` set, incoming QoS 0/1 PUBLISH packets are parsed in place (topic,
      packet id, properties skipped, payload) and handed to it, with no MQTTMessage;
    * :meth:`ack_many` queues the PUBACKs of a whole batch as one write.

    Everything else (connect, subscribe, TLS, keepalive, reconnect, publishing, QoS 2) is
    paho's own code. The protocol on the wire is unchanged.
    """

    fast_publish: Callable[[bytes, bytes, int, bool, int], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()

    def _sock_recv(self, bufsize: int) -> bytes:
        buf = self._rbuf
        if not buf:
            data = super()._sock_recv(max(bufsize, _READ_CHUNK))
            if len(data) <= bufsize:
                return data
            buf += data
        out = bytes(buf[:bufsize])
        del buf[:bufsize]          # O(1) at the front of a bytearray
        return out

    def _sock_close(self) -> None:
        self._rbuf.clear()         # bytes of a dead connection never reach the next one
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # paho reads one packet per select(); drain what is already buffered first. Each
        # round either completes a packet or empties the buffer, so this ends.
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._rbuf and self._sock is not None:
            rc = super().loop_read(max_packets)
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        hook = self.fast_publish
        header: int = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if hook is None or qos > 1 or self._protocol != MQTTProtocolVersion.MQTTv5:
            return super()._handle_publish()
        pkt = self._in_packet["packet"]
        try:
            pos = 2 + ((pkt[0] << 8) | pkt[1])
            topic = bytes(pkt[2:pos])
            mid = 0
            if qos:
                mid = (pkt[pos] << 8) | pkt[pos + 1]
                pos += 2
            plen, mult = 0, 1
            for _ in range(4):                  # properties length, variable byte integer
                b = pkt[pos]
                pos += 1
                plen += (b & 0x7F) * mult
                mult <<= 7
                if not b & 0x80:
                    break
            else:
                raise MalformedPacket("PUBLISH properties length is too long")
            pos += plen
            if pos > len(pkt) or not topic:
                raise MalformedPacket("PUBLISH packet is truncated or has no topic")
        except IndexError:
            raise MalformedPacket("PUBLISH packet is truncated") from None
        with self._in_callback_mutex:
            hook(topic, bytes(pkt[pos:]), qos, bool(header & 0x01), mid)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Sequence[int]) -> None:
        """PUBACK every ``mid`` (QoS 1, manual ack) in one queued write."""
        if mids:
            self._packet_queue(_PUBACK_CMD, b"".join(_PUBACK.pack(_PUBACK_CMD, 2, m)
                                                     for m in mids), 0, 0)


class Inbound:
    """One received message; ``ack()`` it once handled (a no-op for QoS 0 or a stale session).

    A slotted class rather than a dataclass: one is built per message on paho's thread.
    """

    __slots__ = ("connection", "generation", "mid", "payload", "qos", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int,
                 generation: int, connection: MqttConnection | None = None) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.mid = mid
        self.generation = generation
        self.connection = connection

    def ack(self) -> None:
        if self.connection is not None:
            self.connection.ack(self)


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
        self._unsubscribed = threading.Event()

        if options.network_loop not in ("selector", "paho"):
            raise UsageError(f"MQTT network loop {options.network_loop!r} is not 'selector' or "
                             "'paho'", hint="leave MqttOptions.network_loop at 'selector'")
        self._paho_loop = options.network_loop == "paho"
        self._v5 = options.protocol_version == 5
        cls = FastClient if _FAST_OK and options.fast_receive else LockedClient
        if self._v5:
            c = cls(CallbackAPIVersion.VERSION2, client_id=options.client_id,
                            protocol=MQTTProtocolVersion.MQTTv5, manual_ack=options.manual_ack)
        else:   # 3.1.1: no session expiry or receive maximum; clean_session stands for both
            c = cls(CallbackAPIVersion.VERSION2, client_id=options.client_id,
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
        if isinstance(c, FastClient):
            c.fast_publish = self._on_fast_message
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
            self._unsub_mid = mid
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
        """Acknowledge a batch; one write for all of its QoS 1 PUBACKs where paho allows."""
        if not self.options.manual_ack:
            return
        gen = self._generation
        c = self._client
        if isinstance(c, FastClient):
            with c.write_lock:
                c.ack_many([m.mid for m in msgs if m.qos == 1 and m.generation == gen])
                for m in msgs:
                    if m.qos == 2 and m.generation == gen:
                        c.ack(m.mid, 2)
            return
        for m in msgs:
            self.ack(m)

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

    def _on_fast_message(self, topic: bytes, payload: bytes, qos: int, retain: bool,
                         mid: int) -> None:
        try:
            name = topic.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("dropped a message whose topic is not UTF-8")
            if qos > 0 and self.options.manual_ack:
                self._client.ack(mid, qos)
            return
        self._enqueue(Inbound(name, payload, qos, retain, mid, self._generation, self))

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
        if mid == self._unsub_mid:
            self._unsubscribed.set()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        if self._on_published is not None:
            self._on_published(mid)

"""MQTT settings both sides share: broker URLs, TLS options, the inbound message type.

Why in ``edgeops/``: the manager (:mod:`fleet.mqtt.adapter`) and the agent
(:mod:`device_agent.mqtt`) each keep paho behind one adapter, but what they connect *to* and
*how* (``mqtt://`` or ``mqtts://``, default ports, a CA, a client certificate) and what a
received message *is* are the same contract; written once here, pure (no paho, no sockets),
the two adapters cannot drift apart. Each side keeps its own error wording (a CLI flag for the
manager, a config key for the agent) by passing the error class and hint.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgeops.errors import EdgeOpsError, UsageError

__all__ = [
    "DEFAULT_PORTS",
    "BrokerAddress",
    "InboundMessage",
    "TlsSettings",
    "parse_broker_address",
]

# scheme → TLS; "tcp"/"ssl" are the spellings paho's own tools and some brokers print
_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}
DEFAULT_PORTS = {False: 1883, True: 8883}


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is, and whether the connection is TLS."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_address(url: str, *, schemes: Iterable[str] = tuple(_SCHEMES),
                         error: type[EdgeOpsError] = UsageError,
                         hint: str = "e.g. --broker mqtt://127.0.0.1:1883") -> BrokerAddress:
    """``mqtt://host[:port]`` (default 1883) or ``mqtts://host[:port]`` (default 8883).

    ``schemes`` limits the accepted spellings; a bad URL raises ``error`` with ``hint``.
    """
    allowed = [s for s in schemes if s in _SCHEMES]
    parts = urlsplit(url)
    if parts.scheme not in allowed or not parts.hostname:
        raise error(f"broker URL {url!r} is not mqtt://HOST:PORT or mqtts://HOST:PORT",
                    hint=hint)
    tls = _SCHEMES[parts.scheme]
    try:
        port = parts.port or DEFAULT_PORTS[tls]
    except ValueError:
        raise error(f"broker URL {url!r} has an invalid port", hint=hint) from None
    return BrokerAddress(parts.hostname, port, tls)


@dataclass(frozen=True)
class TlsSettings:
    """Server verification against ``ca`` (system CAs when None); ``cert``/``key`` add a client
    certificate (mutual TLS). TLS 1.2 at least, host names checked."""

    ca: Path | str | None = None
    cert: Path | str | None = None
    key: Path | str | None = None

    def context(self, *, error: type[EdgeOpsError] = UsageError,
                hint: str = "check --tls-cert/--tls-key point at a PEM pair") -> ssl.SSLContext:
        """The client's SSL context; an unreadable CA or certificate raises ``error``."""
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(self.ca) if self.ca else None)
        except (OSError, ssl.SSLError) as exc:
            raise error(f"cannot load CA certificates {self.ca}: {exc}", hint=hint) from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert:
            try:
                ctx.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
            except (OSError, ssl.SSLError) as exc:
                raise error(f"cannot load client certificate {self.cert}: {exc}",
                            hint=hint) from None
        return ctx


class InboundMessage:
    """One received message as an adapter hands it from paho's thread to its consumer.

    ``mid`` is the packet id (QoS > 0), which the consumer needs to acknowledge it. A slotted
    class rather than a dataclass: one is built per message on the network thread.
    """

    __slots__ = ("mid", "payload", "qos", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 mid: int = 0) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.mid = mid

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(topic={self.topic!r}, {len(self.payload)} bytes, "
                f"qos={self.qos}, retain={self.retain}, mid={self.mid})")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, InboundMessage)
        return (self.topic, self.payload, self.qos, self.retain, self.mid) == (
            other.topic, other.payload, other.qos, other.retain, other.mid)

    def __hash__(self) -> int:
        return hash((self.topic, self.payload, self.qos, self.retain, self.mid))

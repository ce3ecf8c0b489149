"""End-to-end acknowledgements: the manager tells a device what of its traffic is stored.

Why it exists: a broker PUBACK only says the broker has a message, not that a manager took it
(no manager subscribed, or a dead manager session in the shared-subscription group, and the
broker drops or parks it). The agent therefore keeps each state report and telemetry batch in
its durable outbox until the manager acknowledges it here, on the device's own ``ack`` topic,
which only the manager may publish (docs/PROTOCOL.md, docs/SECURITY.md). Pure data, no I/O.

One message acknowledges, for one device, cumulatively:

* ``state``: every state report with ``seq`` up to this one is stored (or was superseded);
* ``telemetry``: the telemetry batch with this ``seq`` (and every earlier one the device sent:
  it sends one batch at a time) is stored;
* ``fetch``: fetch requests for these artifacts reached a manager, which will serve them.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeops.bundle.manifest import canonical_json
from edgeops.protocol.messages import PROTOCOL_VERSION, MessageError, _field, _load

__all__ = ["Ack"]

_MAX_FETCH = 64          # artifacts named in one ack (a device fetches one or two at a time)


@dataclass(frozen=True)
class Ack:
    """What a manager stored for one device (``None``/empty: nothing new of that kind)."""

    device_id: str
    state: int | None = None
    telemetry: int | None = None
    fetch: tuple[str, ...] = ()
    TYPE = "ack"

    def __post_init__(self) -> None:
        for name in ("state", "telemetry"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise MessageError(f"ack field '{name}' has the wrong type")
        if len(self.fetch) > _MAX_FETCH:
            raise MessageError(f"ack names more than {_MAX_FETCH} artifacts")

    @property
    def empty(self) -> bool:
        return self.state is None and self.telemetry is None and not self.fetch

    def merge(self, other: Ack) -> Ack:
        """Both acknowledgements in one (the higher seq of each kind, fetches united)."""
        def hi(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else max(a, b)

        fetch = tuple(dict.fromkeys((*self.fetch, *other.fetch)))[-_MAX_FETCH:]
        return Ack(self.device_id, hi(self.state, other.state),
                   hi(self.telemetry, other.telemetry), fetch)

    def to_bytes(self) -> bytes:
        return canonical_json({"v": PROTOCOL_VERSION, "type": self.TYPE,
                               "device_id": self.device_id, "state": self.state,
                               "telemetry": self.telemetry, "fetch": list(self.fetch)})

    @classmethod
    def from_bytes(cls, payload: bytes, max_bytes: int = 16 * 1024) -> Ack:
        d = _load(payload, max_bytes)
        if d.get("type") != cls.TYPE:
            raise MessageError(f"a {d.get('type')!r} message is not allowed on the ack topic")
        fetch = _field(d, "fetch", list, True) or []
        if not all(isinstance(f, str) and len(f) == 64 for f in fetch):
            raise MessageError("ack.fetch must list SHA-256 hex digests")
        return cls(_field(d, "device_id", str), _field(d, "state", int, True),
                   _field(d, "telemetry", int, True), tuple(fetch))

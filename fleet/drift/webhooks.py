"""Drift alerts on the wire: CloudEvents 1.0 bodies, HMAC-SHA256 signatures, the retry schedule.

Why apart from the sender (fleet/drift/webhook_sender.py): what a receiver must be able to
check (body shape, signature, replay window) is pure and tested on its own, and the receiver
side (:func:`verify`) is the same code docs/DRIFT.md shows. No sockets, no store here.

Signature: ``X-Edgeops-Signature: sha256=<hex>`` where hex is HMAC-SHA256 with the webhook's
secret over ``<timestamp>.<body>``; ``X-Edgeops-Timestamp`` is that unix time in seconds. The
timestamp is inside the MAC, so a captured request replayed later fails the receiver's age
check, and a changed timestamp fails the MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeops.errors import UsageError

__all__ = [
    "CONTENT_TYPE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TYPE_DETECTED",
    "TYPE_RESOLVED",
    "TYPE_RETRAIN",
    "RetryPolicy",
    "check_secret",
    "check_url",
    "cloudevent",
    "new_secret",
    "sign",
    "signed_headers",
    "verify",
]

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
SIGNATURE_HEADER = "X-Edgeops-Signature"
TIMESTAMP_HEADER = "X-Edgeops-Timestamp"
TYPE_DETECTED = "io.edgeops.drift.detected"
TYPE_RESOLVED = "io.edgeops.drift.resolved"
TYPE_RETRAIN = "io.edgeops.model.retrain"

MAX_URL_CHARS = 2048
MIN_SECRET_CHARS = 16            # 16 random printable characters: ~100 bits at the least
MAX_SECRET_CHARS = 256
_SECRET = re.compile(r"^[\x21-\x7e]+$")     # printable ASCII, no spaces: survives any header/env


def check_url(url: object) -> str:
    """The webhook URL, or a one-line :class:`UsageError` saying what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise UsageError("webhook url must be a non-empty string",
                         hint="e.g. https://hooks.example.com/edgeops")
    if len(url) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 0x20 for c in url):
        raise UsageError(f"webhook url is longer than {MAX_URL_CHARS} characters or holds "
                         "spaces/control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"webhook url {url[:80]!r} does not parse: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"webhook url {url[:80]!r} is not an http(s) URL with a host",
                         hint="e.g. https://hooks.example.com/edgeops")
    if parts.username is not None or parts.password is not None:
        raise UsageError("webhook url must not carry credentials (user:password@)",
                         hint="the HMAC signature authenticates the manager; the receiver "
                              "checks it")
    if parts.fragment:
        raise UsageError("webhook url must not have a #fragment")
    if port == 0:
        raise UsageError("webhook url has port 0")
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        if not re.match(r"^[A-Za-z0-9.-]{1,253}$", parts.hostname):
            raise UsageError(f"webhook url host {parts.hostname[:80]!r} is not a host name "
                             "or IP address") from None
    return url


def check_secret(secret: object) -> str:
    if not isinstance(secret, str):
        raise UsageError("webhook secret must be a string")
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS or not _SECRET.match(secret):
        raise UsageError(f"webhook secret must be {MIN_SECRET_CHARS}-{MAX_SECRET_CHARS} "
                         "printable ASCII characters without spaces",
                         hint="leave it out and the manager generates one (shown once)")
    return secret


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def cloudevent(event_type: str, *, source: str, subject: str, event_id: str, time_iso: str,
               data: Mapping[str, Any]) -> bytes:
    """A CloudEvents 1.0 event in structured JSON mode, serialised deterministically."""
    event = {"specversion": "1.0", "id": event_id, "source": source, "type": event_type,
             "subject": subject, "time": time_iso, "datacontenttype": "application/json",
             "data": dict(data)}
    return json.dumps(event, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: float) -> dict[str, str]:
    ts = int(now)
    return {"Content-Type": CONTENT_TYPE, TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(secret, ts, body)}


def verify(secret: str, body: bytes, headers: Mapping[str, str], now: float,
           tolerance_s: float = 300.0) -> str | None:
    """What a receiver checks: None when the request is authentic and fresh, else why not.

    ``headers`` lookups are case-insensitive when given an ``email.message.Message`` (what
    http.server hands you) or any mapping with lower-case keys.
    """
    ts_raw = headers.get(TIMESTAMP_HEADER) or headers.get(TIMESTAMP_HEADER.lower())
    sig = headers.get(SIGNATURE_HEADER) or headers.get(SIGNATURE_HEADER.lower())
    if not ts_raw or not sig:
        return "missing signature or timestamp header"
    try:
        ts = int(ts_raw)
    except ValueError:
        return "timestamp is not an integer"
    if abs(now - ts) > tolerance_s:
        return f"timestamp is {now - ts:.0f} s away from now (replay or clock skew)"
    if not hmac.compare_digest(sign(secret, ts, body), sig):
        return "signature does not match"
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How a delivery is retried: exponential backoff with jitter, bounded attempts.

    Attempt ``n`` (1-based) that fails is followed by a wait drawn uniformly from
    ``[d/2, d]`` with ``d = min(max_delay_s, base_s * 2**(n-1))``: with the defaults 5-10 s,
    10-20 s, 20-40 s, ... up to 8 attempts, the last about 10 to 21 minutes after the first.
    """

    max_attempts: int = 8
    base_s: float = 10.0
    max_delay_s: float = 900.0
    timeout_s: float = 10.0           # per attempt: connect + answer
    lease_s: float = 60.0             # a claimed delivery is retried after this if its sender died

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or not self.base_s > 0 or not self.max_delay_s >= self.base_s:
            raise UsageError("webhook retry policy: max_attempts >= 1, 0 < base_s <= "
                             "max_delay_s")
        if not 0 < self.timeout_s < self.lease_s:
            raise UsageError("webhook retry policy: 0 < timeout_s < lease_s")

    def delay_s(self, attempt: int, rand: float) -> float:
        """Wait after failed attempt ``attempt``; ``rand`` uniform in [0, 1)."""
        d = min(self.max_delay_s, self.base_s * 2.0 ** (attempt - 1))
        return d / 2 + d / 2 * rand

    @staticmethod
    def retryable(status: int | None) -> bool:
        """A transport error, a timeout, 408, 429 or any 5xx is retried; other answers not
        (a 4xx says the request itself is refused: retrying the same bytes cannot help)."""
        return status is None or status in (408, 429) or status >= 500

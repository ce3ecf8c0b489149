"""Delivers queued drift events to webhooks: one POST per attempt, every attempt recorded.

Why a sender apart from the evaluator (fleet/drift/alerts.py): a slow or dead receiver must
delay nothing else, neither telemetry ingest nor the next evaluation; both only write rows, and
this loop, on its own thread, reads the due ones (claimed with a lease so a second manager or
a restart never sends one twice at once), signs each body with its webhook's secret at send
time (fresh timestamp per attempt) and writes the outcome. Delivery is at least once: a
receiver de-duplicates on the CloudEvent ``id``, which is the same on every attempt.

Transport is one small interface (:class:`WebhookTransport`); :class:`UrllibTransport` is the
real one (standard library, no redirects followed).
"""

from __future__ import annotations

import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Protocol

from edgeops.errors import TransportError
from fleet.drift.webhooks import RetryPolicy, signed_headers
from fleet.store import DeliveryAttempt, DeliveryJob, WebhookDeliveryStore

__all__ = ["UrllibTransport", "WebhookSender", "WebhookTransport", "WebhookTransportError"]

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 300


class WebhookTransportError(TransportError):
    """No HTTP answer: connection refused, DNS, TLS, timeout."""


class WebhookTransport(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        """POST ``body``; the HTTP status. Raises :class:`WebhookTransportError` without one."""
        ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None        # a 3xx is an answer, recorded as such; never re-POSTed elsewhere


class UrllibTransport:
    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_NoRedirect())

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - checked at creation
                                     headers={**headers, "User-Agent": "edgeops-fleet"})
        try:
            with self._opener.open(req, timeout=timeout_s) as resp:
                resp.read(64 * 1024)
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WebhookTransportError(f"{type(exc).__name__}: {reason}") from None


class WebhookSender:
    """Claims due deliveries and makes one attempt each (call :meth:`run_once` in a loop)."""

    def __init__(self, store: WebhookDeliveryStore, *, transport: WebhookTransport | None = None,
                 policy: RetryPolicy | None = None, clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random, batch: int = 20) -> None:
        self.store = store
        self.transport = transport or UrllibTransport()
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.rand = rand
        self.batch = batch

    def run_once(self) -> int:
        """Attempt every due delivery once; the number of attempts made."""
        jobs = self.store.claim_deliveries(self.clock(), self.policy.lease_s, self.batch)
        for job in jobs:
            self._attempt(job)
        return len(jobs)

    def _attempt(self, job: DeliveryJob) -> None:
        n = job.attempts + 1
        started = self.clock()
        mono = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            status = self.transport.post(job.url, job.body,
                                         signed_headers(job.secret, job.body, started),
                                         self.policy.timeout_s)
        except WebhookTransportError as exc:
            error = exc.message[:MAX_ERROR_CHARS]
        except Exception as exc:  # a transport bug must not stop the loop: record it
            log.exception("webhook transport failed")
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        ms = (time.monotonic() - mono) * 1000.0
        if status is not None and 200 <= status < 300:
            state, next_at = "delivered", started
        elif RetryPolicy.retryable(status) and n < self.policy.max_attempts:
            state, next_at = "pending", started + self.policy.delay_s(n, self.rand())
        else:
            state, next_at = "failed", started
            log.warning("webhook delivery %d to %s failed after %d attempts (%s)", job.id,
                        job.url, n, error or f"HTTP {status}")
        self.store.record_attempt(job.id, DeliveryAttempt(n, started, status, error, ms),
                                  state, next_at)

"""The manager's two drift-alert threads: evaluate monitors, deliver webhooks.

Why two threads: evaluating every monitor reads sketches (seconds on a large fleet) and a
webhook attempt can wait ``timeout_s`` on a dead receiver; neither may hold up the other, and
neither runs on the ingest path (ingest only stores sketches). Started and stopped by
fleet/server.py; pending deliveries are rows, so a restart resumes them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from fleet.drift.alerts import DriftAlerts
from fleet.drift.webhook_sender import WebhookSender

__all__ = ["AlertIntervals", "AlertService"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertIntervals:
    evaluate_s: float = 60.0        # monitors are evaluated this often (windows are 15 min)
    poll_s: float = 1.0             # due deliveries are looked for this often


class AlertService:
    def __init__(self, alerts: DriftAlerts, sender: WebhookSender,
                 intervals: AlertIntervals = AlertIntervals()) -> None:
        self.alerts = alerts
        self.sender = sender
        self.intervals = intervals
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for name, target in (("drift-evaluate", self._evaluate_loop),
                             ("drift-webhooks", self._send_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=timeout_s)
        self._threads = []

    def run_now(self) -> int:
        """Evaluate every monitor at once (not waiting for the interval) and wake the sender;
        the number of transitions."""
        n = self.alerts.evaluate()
        self._wake.set()
        return n

    def _evaluate_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.alerts.evaluate():
                    self._wake.set()            # new deliveries: do not wait for the poll
            except Exception:  # keep the loop alive; the store may be back soon
                log.exception("drift monitor evaluation failed")
            self._stop.wait(self.intervals.evaluate_s)

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.sender.run_once() >= self.sender.batch
            except Exception:
                log.exception("webhook delivery round failed")
                busy = False
            if not busy:
                self._wake.wait(self.intervals.poll_s)
                self._wake.clear()

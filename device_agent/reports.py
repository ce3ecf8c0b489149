"""State reports: numbered, written to the durable outbox in order, never lost to a full disk.

Why its own part: every other part of the agent (command gate, deployer, the core's phase
hook) says what happened through :meth:`StateReporter.report`; this is where a report gets
its persisted increasing ``seq`` and the device's slot status, and where reports wait in
memory, oldest first, while the disk is full. Sending them is the outbox's job
(:mod:`device_agent.outbox`).
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from device_agent.diskspace import DiskFullError, DiskReserve
from device_agent.net_state import NetState
from device_agent.outbox import StateOutbox
from device_agent.parts import AgentPart
from edgeops.protocol import DevicePhase, StateReport

__all__ = ["PendingReport", "ReportFn", "StateReporter"]

log = logging.getLogger(__name__)

class ReportFn(Protocol):
    """What the other parts call to say something happened (:meth:`StateReporter.report`)."""

    def __call__(self, phase: DevicePhase | None, *, deployment_id: str | None = None,
                 bundle: str | None = None, reason: str | None = None
                 ) -> StateReport | None: ...


@dataclass(frozen=True)
class PendingReport:
    """A report taken (clock, slot status) but not yet written with its ``seq``."""

    ts: float
    phase: DevicePhase | None
    deployment_id: str | None
    bundle: str | None
    reason: str | None
    status: dict[str, Any]


class StateReporter(AgentPart):
    """Turns "this happened" into numbered :class:`StateReport` entries in the state outbox."""

    def __init__(self, device_id: str, *, net: NetState, outbox: StateOutbox,
                 disk: DiskReserve, status: Callable[[], dict[str, Any]],
                 clock: Callable[[], float], max_waiting: int) -> None:
        self.device_id = device_id
        self.net = net
        self.outbox = outbox
        self.disk = disk
        self.status = status
        self.clock = clock
        self.max_waiting = max_waiting
        # reports that found the disk full, oldest first: written before any newer one
        self.waiting: collections.deque[PendingReport] = collections.deque()
        self.disk_full_since: float | None = None
        self._lock = threading.Lock()
        self._next_try = 0.0

    def report(self, phase: DevicePhase | None, *, deployment_id: str | None = None,
               bundle: str | None = None, reason: str | None = None) -> StateReport | None:
        """Queue one state report (persisted seq) for sending; returns it.

        Never raises for lack of disk space: the report then waits in memory, in order, and is
        written by the next report or by :meth:`retry` once there is room (None is returned).
        """
        st = self.status()
        with self._lock:
            if len(self.waiting) >= self.max_waiting:
                log.error("dropping an unwritten state report: %d wait for disk space",
                          len(self.waiting))
                self.waiting.popleft()
            self.waiting.append(PendingReport(self.clock(), phase, deployment_id, bundle,
                                              reason, st))
            return self._write_waiting()

    def tick(self, now: float) -> None:
        """I/O loop: reports that found the disk full, tried again at most once a second."""
        if not self.waiting or time.monotonic() < self._next_try:
            return
        self._next_try = time.monotonic() + 1.0
        with self._lock:
            self._write_waiting()

    def _write_waiting(self) -> StateReport | None:
        """Write the waiting reports to the outbox, oldest first (under ``_lock``)."""
        rep: StateReport | None = None
        while self.waiting:
            item = self.waiting[0]
            try:
                rep = self.disk.run(functools.partial(self._write, item), "a state report")
            except DiskFullError as exc:
                if self.disk_full_since is None:
                    self.disk_full_since = self.clock()
                    log.error("%s; %d state report(s) wait in memory", exc.message,
                              len(self.waiting))
                return None
            self.waiting.popleft()
            if self.disk_full_since is not None:
                log.info("state reports are written again after %.0f s of a full disk",
                         self.clock() - self.disk_full_since)
                self.disk_full_since = None
        return rep

    def _write(self, p: PendingReport) -> StateReport:
        rep = StateReport(self.device_id, self.net.next_state_seq(), p.ts, p.phase,
                          p.deployment_id, p.bundle, p.reason, p.status.get("active"),
                          p.status.get("slots", {}))
        self.outbox.push(rep.to_bytes())
        return rep

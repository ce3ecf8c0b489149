"""The agent daemon: the fleet connection around the local core.

Why it exists: :mod:`device_agent.core` installs, health-checks and serves models but knows
nothing of the fleet. This module connects it: it verifies signed commands (pinned manager
keys, persisted sequence numbers), fetches bundles through TUF (MQTT chunks first, HTTP as a
fallback), drives the installer, reports every phase as a ``state`` message with a persisted
increasing ``seq``, and sends telemetry. State reports and telemetry go through on-disk queues
and leave them only once a manager acknowledged them end to end (:mod:`device_agent.outbox`),
so outages, restarts and dead manager sessions lose nothing.

Built for many agents in one process (the fleet simulator): no module state, an injectable
clock, :class:`Agent` with ``start()``/``stop()``; :func:`run` is the process entry point.
Threads per agent: paho's network thread, one I/O thread (routes messages, verifies commands,
sends queues, collects telemetry: never blocks) and one worker (downloads and installs).

Stopping is ordered: the threads stop first, and the state and telemetry queues and the core
(slot lock) close only once no thread can use them. A download is abandoned at its next check
(the chunks stay on disk; the deployment is neither failed nor marked handled, so the retained
``desired`` command resumes it after the restart); an install step that has begun runs to its
end, and if that outlasts ``stop``'s timeout, the worker closes the rest when it finishes.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import logging
import queue
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_agent import AGENT_VERSION
from device_agent.capture import CaptureSampler
from device_agent.config import AgentConfig
from device_agent.core import AgentCore, request_from_fetched
from device_agent.diskspace import (
    DiskFullError,
    DiskLimits,
    DiskReserve,
    free_bytes,
    is_disk_full,
    space_shortfall,
)
from device_agent.drift_sketch import DriftSketch
from device_agent.feedback import PredictionLog
from device_agent.memory import tune_allocator
from device_agent.mqtt import Backoff, MqttConnection, TlsFiles, parse_broker_url
from device_agent.outbox import AckSettings, Outbox, StateOutbox
from device_agent.telemetry import (
    DurableQueue,
    FeatureStats,
    TelemetryLimits,
    drift_record,
    system_record,
)
from device_agent.tuf_client import DownloadLimits, MqttTufTransport
from edgeops.bundle.manifest import Manifest
from edgeops.config import DEFAULT_LIMITS
from edgeops.errors import EdgeOpsError, TransportError
from edgeops.floors import DowngradeRefused, check_install
from edgeops.fsutil import atomic_write
from edgeops.protocol import (
    Ack,
    Command,
    DevicePhase,
    MessageError,
    SignedCommand,
    StateReport,
    StatusMessage,
    check_command,
    topics,
)

__all__ = ["Agent", "DaemonSettings", "DeploymentCancelled", "NetState", "run"]

log = logging.getLogger(__name__)

# ``scheme://user:password@host``: the credentials part of a URL in an error message
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")

PhaseCallback = Callable[[DevicePhase, str | None, str | None], None]
CoreFactory = Callable[[AgentConfig, PhaseCallback], AgentCore]


@dataclass(frozen=True)
class DaemonSettings:
    """Timing and bounds of the fleet side. Units are in the names."""

    deferred_retry_s: float = 30.0       # re-check policy for a deferred install this often
    idle_poll_s: float = 0.5             # I/O thread wake-up when nothing is in flight
    busy_poll_s: float = 0.02            # ... while a publish awaits its PUBACK
    work_queue_max: int = 16             # commands waiting for the worker
    state_outbox_max: int = 10_000       # state reports kept while offline
    metadata_wait_s: float = 10.0        # how long a deploy waits for newer TUF metadata
    http_fallback: bool = True           # fetch over fleet_url when MQTT transfer fails
    backoff: Backoff = field(default_factory=Backoff)
    inbound_queue_max: int = 1024
    download: DownloadLimits = field(default_factory=DownloadLimits)
    telemetry: TelemetryLimits = field(default_factory=TelemetryLimits)
    mqtt_version: int = 5
    stop_wait_s: float = 20.0            # run(): SIGTERM lets an install step finish this long
    disk: DiskLimits = field(default_factory=DiskLimits)   # the agent's own disk reserve
    loop_backoff: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0))  # loop restarts
    unwritten_reports_max: int = 1000    # state reports held in memory while the disk is full
    acks: AckSettings = field(default_factory=AckSettings)   # end-to-end ack re-sends


class DeploymentCancelled(EdgeOpsError):
    """The fleet cancelled the deployment this agent was working on."""

    default_hint = "nothing to do: the previous model keeps serving"


class _Stopping(Exception):
    """The agent is stopping: abandon the current download, report nothing, accept nothing.

    Deliberately outside :class:`EdgeOpsError`, so no handler that reports a failure catches it.
    """


@dataclass
class NetState:
    """Counters that must survive restarts: last accepted command, last state report seq."""

    path: Path
    command_seq: int = 0
    command_digest: str = ""
    state_seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: Path) -> NetState:
        try:
            d = json.loads(path.read_bytes())
            return cls(path, int(d["command_seq"]), str(d.get("command_digest", "")),
                       int(d["state_seq"]))
        except FileNotFoundError:
            return cls(path)
        except (ValueError, KeyError, TypeError):
            # A damaged file must not let replays through: refuse everything until re-enrolled
            # would brick the device, so keep going with seq 0 but say so loudly.
            log.error("%s is damaged; command replay protection restarts from 0", path)
            return cls(path)

    def _save(self) -> None:
        atomic_write(self.path, json.dumps({"command_seq": self.command_seq,
                                            "command_digest": self.command_digest,
                                            "state_seq": self.state_seq}).encode())

    def next_state_seq(self) -> int:
        with self._lock:
            self.state_seq += 1
            self._save()
            return self.state_seq

    def accept_command(self, seq: int, digest: str) -> None:
        with self._lock:
            if seq > self.command_seq:
                before = self.command_seq, self.command_digest
                self.command_seq, self.command_digest = seq, digest
                try:
                    self._save()
                except BaseException:     # not saved: a retry must save it, not skip it
                    self.command_seq, self.command_digest = before
                    raise


class _RepeatFilter:
    """Says whether an error is worth logging: a new one, or the same one once a period."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._last: tuple[str, float] | None = None

    def first(self, exc: BaseException, now: float) -> bool:
        key = f"{type(exc).__name__}: {exc}"
        if self._last is not None and self._last[0] == key and now - self._last[1] < self.period_s:
            return False
        self._last = (key, now)
        return True


class Agent:
    """One device's agent: core + fleet connection. Safe to run many in one process."""

    def __init__(self, config: AgentConfig, *, settings: DaemonSettings = DaemonSettings(),
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 core_factory: CoreFactory | None = None) -> None:
        self.config = config
        self.settings = settings
        self.clock = clock
        self.device_id = config.device_id
        data = config.data_dir
        data.mkdir(parents=True, exist_ok=True)
        factory = core_factory or (lambda c, cb: AgentCore(c, on_phase=cb))
        self.core = factory(config, self._on_phase)
        self.net = NetState.load(data / "net_state.json")
        self.disk = DiskReserve(data / "disk.reserve", settings.disk)
        self.disk.ensure()
        b = config.broker
        broker = parse_broker_url(
            b.url, username=b.username, password=b.password, keepalive_s=b.keepalive_s,
            tls=TlsFiles(str(b.tls.ca), str(b.tls.cert) if b.tls.cert else None,
                         str(b.tls.key) if b.tls.key else None) if b.tls else None)
        broker = dataclasses.replace(broker, backoff=settings.backoff,
                                     inbound_queue_max=settings.inbound_queue_max,
                                     mqtt_version=settings.mqtt_version)
        self.conn = MqttConnection(self.device_id, broker, self._status_payload, rng=rng)
        self.transport = MqttTufTransport(self.conn, self.device_id, data / "downloads",
                                          settings.download)
        self.telemetry_q = self.disk.run(lambda: DurableQueue(
            data / "telemetry.db", config.telemetry.queue_max_records), "the telemetry queue")
        self.state_q = self.disk.run(lambda: StateOutbox(
            data / "state_outbox.db", settings.state_outbox_max, data / "last_report.json"),
            "the state outbox")
        self.outbox = Outbox(self.device_id, self.state_q, self.telemetry_q,
                             lambda topic, body: self.conn.publish(topic, body),
                             lambda: self.conn.generation, settings=settings.acks,
                             telemetry=settings.telemetry, rng=rng)
        # State reports that found the disk full, oldest first: written before any newer one
        self._unwritten: collections.deque[tuple[Any, ...]] = collections.deque()
        self._report_lock = threading.Lock()
        self._next_unwritten_try = 0.0
        self.disk_full_since: float | None = None
        self.telemetry_lost = 0      # records not queued for lack of disk space
        self._io_errors = _RepeatFilter(60.0)
        self.features = FeatureStats(settings.telemetry.max_features,
                                     settings.telemetry.drift_sample_every)
        self.core.inference.observers.append(self.features.observe)
        self.drift_sketch = DriftSketch(clock)
        self.core.inference.output_observers.append(self.drift_sketch.observe)
        self._drift_ref_key: str | None = None
        # ground truth per prediction id, and the opt-in capture (off until a signed command)
        self.predictions = PredictionLog(clock)
        self.core.inference.predictions = self.predictions
        self.capture = CaptureSampler(data / "capture.json", clock, rng=rng)
        self.core.inference.output_observers.append(self.capture.observe)
        self._work: queue.Queue[tuple[Command, str]] = queue.Queue(settings.work_queue_max)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._close_lock = threading.Lock()
        self._running = 0            # agent threads not yet finished (under _close_lock)
        self._closing = False        # stop() has run: the last thread out closes the rest
        self.closed = threading.Event()   # queues and core closed: safe to reuse the data dir
        self._queued_seq = 0
        self._queued_digests: set[str] = set()
        self._current: tuple[str | None, str | None] = (None, None)  # deployment, bundle
        self._cancel: str | None = None
        self._deferred: tuple[str | None, str | None] | None = None   # (deployment, bundle)
        self._driving_topic: str | None = None
        self._ack_topic = topics.device_topic(self.device_id, "ack")
        self._baseline: tuple[str | None, dict[str, Any]] = (None, {})
        self._started_at = clock()
        self.rejected_commands = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Recover the local side, then connect and start the I/O and worker threads."""
        resumed = self.core.start()
        if resumed is not None:
            log.info("finished an install a restart interrupted: %s", resumed.phase.value)
        for t in (topics.device_topic(self.device_id, "desired"),
                  topics.device_topic(self.device_id, "commands"), self._ack_topic,
                  *self.transport.filters()):
            self.conn.subscribe(t)
        self._sync_driving_topic()
        self.conn.start()
        self._stop.clear()
        for role, loop in (("io", self._io_loop), ("work", self._work_loop)):
            thread = threading.Thread(target=self._thread_main, args=(loop,),
                                      name=f"agent-{role}-{self.device_id}", daemon=True)
            with self._close_lock:
                self._running += 1
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the threads, say ``online: false``, disconnect, then close queues and core.

        A download is abandoned within a second; an install step already begun is finished.
        Returns True when everything is closed; False when a thread was still busy after
        ``timeout_s``: that thread closes the queues and the core when it ends (``closed``
        is set then), so nothing is ever used after it was closed.
        """
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        io_done = all(not t.is_alive() for t in self._threads if t.name.startswith("agent-io"))
        self._threads.clear()
        if io_done:      # the I/O thread owns the in-flight publishes; never race it for them
            self._flush(final=True)
        self.conn.stop()
        with self._close_lock:
            self._closing = True
            last_out = self._running == 0
        if last_out:
            self._close()
        else:
            log.warning("agent %s: a step is still running after %.1f s; its thread closes "
                        "the queues and the core when it ends", self.device_id, timeout_s)
        return last_out

    def _thread_main(self, loop: Callable[[], None]) -> None:
        try:
            self._supervise(loop)
        finally:
            with self._close_lock:
                self._running -= 1
                last_out = self._closing and self._running == 0
            if last_out:
                self._close()

    def _supervise(self, loop: Callable[[], None]) -> None:
        """Run ``loop`` until stop; whatever it raises is logged and it restarts, backing off.

        A dead worker thread leaves an agent that serves its old model but never takes another
        command (issue 22: ENOSPC raised inside the worker's own error handler).
        """
        attempt = 0
        rng = random.Random()
        name = threading.current_thread().name
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                loop()
                return
            except Exception:
                attempt = 0 if time.monotonic() - began > self.settings.loop_backoff.max_s \
                    else attempt + 1
                delay = self.settings.loop_backoff.delay(attempt, rng)
                log.exception("%s: loop failed (current deployment %s); restarting it in "
                              "%.1f s", name, self._current[0], delay)
                self._stop.wait(delay)

    def _close(self) -> None:
        """Release what the threads used; runs once, after the last of them has finished."""
        try:
            self.core.close()
        finally:
            self.telemetry_q.close()
            self.state_q.close()
            self.closed.set()

    def _status_payload(self, online: bool) -> bytes:
        return StatusMessage(self.device_id, online, AGENT_VERSION, self.clock()).to_bytes()

    # -- state reports ---------------------------------------------------------------------
    def _on_phase(self, phase: DevicePhase, label: str | None, reason: str | None) -> None:
        dep, bundle = self._current
        if phase is DevicePhase.DEFERRED:
            if self._deferred is not None and dep is None:
                return            # a periodic re-check that still says "wait": said already
            self._deferred = (dep, label or bundle)
        elif phase.terminal:
            self._deferred = None
        self.report(phase, deployment_id=dep, bundle=label or bundle, reason=reason)

    def report(self, phase: DevicePhase | None, *, deployment_id: str | None = None,
               bundle: str | None = None, reason: str | None = None) -> StateReport | None:
        """Queue one state report (persisted seq) for sending; returns it.

        Never raises for lack of disk space: the report then waits in memory, in order, and is
        written by the next report or by the I/O loop once there is room (None is returned).
        """
        st = self.core.store.status()
        with self._report_lock:
            if len(self._unwritten) >= self.settings.unwritten_reports_max:
                log.error("dropping an unwritten state report: %d wait for disk space",
                          len(self._unwritten))
                self._unwritten.popleft()
            self._unwritten.append((self.clock(), phase, deployment_id, bundle, reason, st))
            return self._write_reports()

    def _write_reports(self) -> StateReport | None:
        """Write the waiting reports to the outbox, oldest first (under ``_report_lock``)."""
        rep: StateReport | None = None
        while self._unwritten:
            item = self._unwritten[0]
            try:
                rep = self.disk.run(functools.partial(self._write_report, *item),
                                    "a state report")
            except DiskFullError as exc:
                if self.disk_full_since is None:
                    self.disk_full_since = self.clock()
                    log.error("%s; %d state report(s) wait in memory", exc.message,
                              len(self._unwritten))
                return None
            self._unwritten.popleft()
            if self.disk_full_since is not None:
                log.info("state reports are written again after %.0f s of a full disk",
                         self.clock() - self.disk_full_since)
                self.disk_full_since = None
        return rep

    def _write_report(self, ts: float, phase: DevicePhase | None, dep: str | None,
                      bundle: str | None, reason: str | None, st: dict[str, Any]) -> StateReport:
        rep = StateReport(self.device_id, self.net.next_state_seq(), ts, phase, dep, bundle,
                          reason, st.get("active"), st.get("slots", {}))
        self.state_q.push(rep.to_bytes())
        return rep

    def _retry_unwritten(self) -> None:
        """I/O loop: reports that found the disk full, tried again at most once a second."""
        if not self._unwritten or time.monotonic() < self._next_unwritten_try:
            return
        self._next_unwritten_try = time.monotonic() + 1.0
        with self._report_lock:
            self._write_reports()

    # -- I/O thread: never blocks on the network ---------------------------------------------
    def _io_loop(self) -> None:
        next_tel = self.clock()
        while not self._stop.is_set():
            # an ack arrives as a message and wakes this loop: no busy polling while waiting
            msg = self.conn.get(self.settings.idle_poll_s)
            try:
                if msg is not None:
                    self._route(msg.topic, msg.payload)
                now = self.clock()
                if now >= next_tel:
                    next_tel = now + self.config.telemetry.interval_s
                    self.collect_telemetry(now)
                self._retry_unwritten()
                self._flush()
            except Exception as exc:  # the I/O loop must survive anything one message does
                if self._io_errors.first(exc, self.clock()):   # not every 20 ms on a full disk
                    log.exception("agent I/O loop error")

    def _route(self, topic: str, payload: bytes) -> None:
        if topic == self._ack_topic:
            self._on_ack(payload)
            return
        if self.transport.handle(topic, payload):
            return
        if self._driving_topic is not None and topic == self._driving_topic:
            self.core.policy.driving.on_topic_message(payload)
            return
        dt = topics.parse_device_topic(topic)
        if dt is not None and dt.device_id == self.device_id and dt.channel in (
                "commands", "desired") and payload:   # empty retained = cleared ``desired``
            self._on_command(payload, retained_desired=dt.channel == "desired")

    def _on_command(self, payload: bytes, retained_desired: bool = False) -> None:
        digest = hashlib.sha256(payload).hexdigest()
        if digest == self.net.command_digest or digest in self._queued_digests:
            return        # the retained ``desired`` again after a reconnect: already handled
        keys = list(self.config.trust.manager_keys)
        signed: SignedCommand | None = None
        try:
            signed = SignedCommand.from_bytes(payload, DEFAULT_LIMITS.max_mqtt_payload_bytes)
            cmd = check_command(signed, device_id=self.device_id, manager_keys=keys,
                                last_seq=max(self.net.command_seq, self._queued_seq),
                                now=self.clock())
        except MessageError as exc:
            if retained_desired and signed is not None and self._genuine(signed, keys):
                # A stale retained ``desired`` (older seq or expired) that the manager signed
                # for us: expected after a restart until it re-signs; not worth an alarm.
                log.info("ignoring stale desired command %s: %s", signed.command.seq,
                         exc.message)
                return
            self.rejected_commands += 1
            log.warning("rejected command: %s", exc.message)
            self.report(None, reason=f"command rejected: {exc.message}")
            return
        if cmd.kind == "report-state":
            self._report_again(cmd)      # not accepted: its seq must not hide a pending deploy
            return
        if cmd.kind == "capture":
            self._on_capture(cmd, digest)
            return
        if cmd.kind == "cancel":
            self._cancel = str(cmd.body.get("deployment_id"))
            self.net.accept_command(cmd.seq, digest)
            self.report(None, deployment_id=self._cancel, reason="cancel accepted")
            return
        try:
            self._work.put_nowait((cmd, digest))
        except queue.Full:
            self.report(None, reason=f"command {cmd.seq} dropped: agent busy")
            return
        self._queued_seq = cmd.seq
        self._queued_digests.add(digest)

    def _on_capture(self, cmd: Command, digest: str) -> None:
        """Open or close the data capture the verified command states (device_agent/capture.py)."""
        self.net.accept_command(cmd.seq, digest)
        try:
            order = self.capture.apply(cmd.body)
        except MessageError as exc:
            self.report(None, reason=f"capture refused: {exc.message}")
            return
        self.report(None, reason=f"capture {order.capture_id} "
                                 f"{'opened' if order.open else 'closed'}")

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = Ack.from_bytes(payload)
        except MessageError as exc:
            log.warning("ignored an ack: %s", exc.message)
            return
        self.outbox.on_ack(ack)
        if ack.fetch:
            self.transport.on_ack(ack.fetch)

    def _report_again(self, cmd: Command) -> None:
        """``report-state``: the manager lost track (a report went to a dead session).

        Sent again with a new ``seq``: the last report about the deployment it names, else
        a report without a phase saying there is none. Its ``seq`` is not recorded as
        accepted, so a ``deploy`` signed before it but not yet received still counts; a
        replay only causes another report.
        """
        dep = cmd.body.get("deployment_id")
        last = self.state_q.last_report()
        if last is not None and (dep is None or last.get("deployment_id") == dep):
            try:
                phase = DevicePhase(str(last.get("phase")))
            except ValueError:
                phase = None
            if phase is not None:
                self.report(phase, deployment_id=str(last["deployment_id"]),
                            bundle=last.get("bundle"), reason=last.get("reason"))
                return
        self.report(None, reason=f"report-state: no report about deployment {dep} here")

    def _genuine(self, signed: SignedCommand, keys: list[Any]) -> bool:
        """Signed by a pinned manager key and addressed to us (ignoring expiry and seq)."""
        try:
            check_command(signed, device_id=self.device_id, manager_keys=keys, last_seq=-1,
                          now=float("-inf"))
        except MessageError:
            return False
        return True

    def _sync_driving_topic(self) -> None:
        sig = self.core.policy.driving.signal
        want = sig.topic if sig is not None else None
        if want != self._driving_topic:
            if self._driving_topic is not None:
                self.conn.unsubscribe(self._driving_topic)
            if want is not None:
                self.conn.subscribe(want)
            self._driving_topic = want

    # -- sending the durable queues ----------------------------------------------------------
    def _flush(self, final: bool = False) -> None:
        """Send the queues (device_agent.outbox); ``final``: wait up to 2 s for their acks."""
        if not self.conn.connected.is_set():
            return
        self.outbox.pump()
        deadline = time.monotonic() + 2.0
        while final and self.outbox.busy and time.monotonic() < deadline:
            msg = self.conn.get(0.05)      # the I/O thread has stopped: only acks matter now
            if msg is not None and msg.topic == self._ack_topic:
                self._on_ack(msg.payload)
                self.outbox.pump()

    # -- telemetry ---------------------------------------------------------------------------
    def collect_telemetry(self, now: float) -> None:
        """Append this interval's records to the durable queue (sent by the I/O loop)."""
        st = self.core.store.status()
        active = st.get("active")
        label = f"{active['name']}@{active['version']}" if active else None
        records: list[dict[str, Any]] = [
            {"kind": "heartbeat", "ts": now, "agent_version": AGENT_VERSION,
             "uptime_s": round(now - self._started_at, 1), "active": active,
             "deferred": self._deferred is not None,
             "rejected_commands": self.rejected_commands,
             "mqtt_dropped_inbound": self.conn.dropped_inbound},
            system_record(now, self.config.data_dir),
            {"kind": "inference", "ts": now, "bundle": label,
             **self.core.inference.stats.snapshot(reset=True)}]
        drift = drift_record(now, self.features.drain(), self._baseline_for(active), label)
        if drift is not None:
            records.append(drift)
        sketch = self._drift_sketch_record(now, active, label)
        if sketch is not None:
            records.append(sketch)
        if self.predictions.due(now):
            records += self.predictions.take(now, self.device_id)
        records += self.capture.take(self.device_id, label)
        try:
            self.telemetry_q.push_many([json.dumps(r, sort_keys=True, separators=(",", ":"),
                                                   default=str).encode() for r in records])
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            # Measurements are let go; the disk reserve is kept for state reports.
            if not self.telemetry_lost:
                log.error("disk full: telemetry is not queued until there is room (%s)", exc)
            self.telemetry_lost += len(records)
            return
        if self.telemetry_lost:
            log.info("telemetry queued again; %d records were lost to a full disk",
                     self.telemetry_lost)
            self.telemetry_lost = 0

    def _drift_sketch_record(self, now: float, active: dict[str, Any] | None,
                             label: str | None) -> dict[str, Any] | None:
        """The closed sketch window, if due (device_agent/drift_sketch.py)."""
        key = None if active is None else f"{active.get('slot')}:{label}"
        if key != self._drift_ref_key:
            self._drift_ref_key = key
            ref = None
            if active is not None:
                try:
                    ref = Manifest.from_bytes(self.core.store.path(
                        str(active["slot"]), "manifest.json").read_bytes()).drift
                except (OSError, EdgeOpsError, KeyError):
                    ref = None
            self.drift_sketch.set_reference(label, ref)
        return self.drift_sketch.take(now, self.device_id) if self.drift_sketch.due(now) else None

    def _baseline_for(self, active: dict[str, Any] | None) -> dict[str, Any]:
        if active is None:
            return {}
        key = f"{active.get('slot')}:{active.get('name')}@{active.get('version')}"
        if self._baseline[0] != key:
            try:
                m = Manifest.from_bytes(self.core.store.path(str(active["slot"]),
                                                             "manifest.json").read_bytes())
                self._baseline = (key, dict(m.baseline))
            except (OSError, EdgeOpsError, KeyError):
                self._baseline = (key, {})
        return self._baseline[1]

    # -- worker: commands that take time -----------------------------------------------------
    def _work_loop(self) -> None:
        next_retry = self.clock() + self.settings.deferred_retry_s
        while not self._stop.is_set():
            try:
                cmd, digest = self._work.get(timeout=2 * self.settings.idle_poll_s)
            except queue.Empty:
                self.disk.restore_if_due()
                if self._deferred is not None and self.clock() >= next_retry:
                    next_retry = self.clock() + self.settings.deferred_retry_s
                    self._run_guarded(self._retry_deferred, self._deferred)
                continue
            handled = True
            try:
                self._execute(cmd)
            except _Stopping:
                # Not accepted: the retained ``desired`` command runs again after the restart
                # and the download resumes from the chunks already on disk.
                handled = False
                log.info("command %s interrupted by stop; it resumes after the restart", cmd.seq)
            except Exception as exc:  # report, never die: the old model keeps serving
                log.exception("command %s failed", cmd.seq)
                self.report(DevicePhase.FAILED, deployment_id=self._current[0],
                            bundle=self._current[1], reason=self.redact(f"agent error: {exc}"))
            finally:
                if handled:
                    self._accept(cmd.seq, digest)
                self._queued_digests.discard(digest)
                self._current = (None, None)

    def _accept(self, seq: int, digest: str) -> None:
        """Persist a handled command's seq; on a full disk it stays unsaved (the retained
        ``desired`` may run again after a restart, which a deploy survives: "already active").
        """
        try:
            self.disk.run(lambda: self.net.accept_command(seq, digest), "net_state.json")
        except DiskFullError as exc:
            log.error("command %d handled but not recorded: %s", seq, exc.message)

    def _retry_deferred(self, waiting: tuple[str | None, str | None]) -> None:
        self._current = (None, None)          # re-checks that still defer stay silent
        if self.core.installer.policy.evaluate().allowed:
            self._current = waiting           # phases from here on belong to the deployment
        try:
            self.core.retry_deferred()
        finally:
            self._current = (None, None)

    def _run_guarded(self, fn: Callable[[tuple[str | None, str | None]], object],
                     arg: tuple[str | None, str | None]) -> None:
        try:
            fn(arg)
        except Exception:
            log.exception("deferred install retry failed")

    def _execute(self, cmd: Command) -> None:
        body = cmd.body
        dep = body.get("deployment_id")
        dep = dep if isinstance(dep, str) else None
        if cmd.kind == "deploy":
            self._deploy(dep, body)
        elif cmd.kind == "rollback":
            self._current = (dep, None)
            if self._rollback_allowed(dep):
                self.core.rollback(dep)
        elif cmd.kind == "config":
            self.core.apply_config(body)
            self._sync_driving_topic()
            self.report(None, deployment_id=dep, reason="config applied")

    def _deploy(self, dep: str | None, body: dict[str, Any]) -> None:
        name, version, target = body.get("name"), body.get("version"), body.get("target")
        if not all(isinstance(v, str) and v for v in (name, version)):
            self.report(DevicePhase.FAILED, deployment_id=dep,
                        reason="deploy command lacks bundle name/version")
            return
        assert isinstance(name, str) and isinstance(version, str)
        label = f"{name}@{version}"
        self._current = (dep, label)
        if target is not None and target != self.config.target:
            self.report(DevicePhase.FAILED, deployment_id=dep, bundle=label,
                        reason=f"deployment is for target {target!r}, this device is "
                               f"{self.config.target!r}")
            return
        self._cancel = None
        self.disk.restore_if_due()
        self.report(DevicePhase.NOTIFIED, deployment_id=dep, bundle=label)
        self.report(DevicePhase.DOWNLOADING, deployment_id=dep, bundle=label)
        active = self.core.store.active()
        installed = active.version if active is not None and active.name == name else None
        try:
            fetched = self._fetch(name, version, dep, installed=installed,
                                  rollback=body.get("downgrade") is True)
        except DowngradeRefused as exc:
            log.warning("deployment %s: %s refused: %s", dep, label, exc.message)
            self.report(DevicePhase.FAILED, deployment_id=dep, bundle=label, reason=exc.message)
            return
        except DeploymentCancelled:
            self.report(DevicePhase.FAILED, deployment_id=dep, bundle=label,
                        reason="cancelled by the fleet before install")
            return
        except DiskFullError as exc:
            log.warning("deployment %s: %s not downloaded: %s", dep, label, exc.message)
            self.report(DevicePhase.FAILED, deployment_id=dep, bundle=label,
                        reason=self.redact(f"download failed: {exc.message}"))
            return
        except EdgeOpsError as exc:
            reason = self.redact(f"download rejected: {exc.message}")
            log.warning("deployment %s: %s refused: %s", dep, label, reason)
            self.report(DevicePhase.FAILED, deployment_id=dep, bundle=label, reason=reason)
            return
        self._note_delivery(dep, label, fetched)
        outcome = self.core.install(request_from_fetched(fetched, dep))
        self._record_delivery(dep, label, fetched)
        if outcome.phase in (DevicePhase.FAILED, DevicePhase.ROLLED_BACK):
            log.warning("deployment %s: %s %s: %s", dep, label, outcome.phase.value,
                        self.redact(outcome.reason or "no reason given"))
        else:
            log.info("deployment %s: %s", dep, outcome.phase.value)

    def _note_delivery(self, dep: str | None, label: str, fetched: Any) -> None:
        """A published delta that failed before the install: say why (issue 20)."""
        d = fetched.delivery
        if d is not None and d.delta_failed and d.reason:
            self.report(DevicePhase.DOWNLOADING, deployment_id=dep, bundle=label,
                        reason=self.redact(d.reason))

    def _record_delivery(self, dep: str | None, label: str, fetched: Any) -> None:
        """Delta, full or cached, and the bytes fetched: the fleet's bytes-saved figure."""
        from device_agent.tuf_update import delivery_record

        d = fetched.final_delivery()
        if d is not None:
            rec = delivery_record(self.clock(), dep, label, d)
            self.telemetry_q.push(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode())

    def redact(self, text: str) -> str:
        """``text`` without credentials (URL user:password, the broker password).

        Error messages quote URLs (python-tuf: "Failed to download <url>"), and ``fleet_url``
        may carry basic-auth credentials; neither the log nor the fleet may receive them.
        """
        text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
        password = self.config.broker.password
        return text.replace(password, "***") if password else text

    def _check_cancel(self, dep: str | None) -> None:
        if self._stop.is_set():
            raise _Stopping
        if self._cancel is not None and self._cancel == dep:
            raise DeploymentCancelled(f"deployment {dep} was cancelled")

    def _rollback_allowed(self, dep: str | None) -> bool:
        """A rollback command may not take the device below the model's release floor.

        The floor comes from the freshest targets TUF verifies now (retained metadata); if that
        fails, from the last targets this device verified.
        """
        from device_agent.tuf_update import TufClient

        store = self.core.store
        previous = store.pointer().previous
        info = store.info(previous) if previous else None
        if info is None:
            return True            # nothing to go back to: the installer reports that
        tuf = TufClient.over_mqtt(self.config.trust.root, self.config.data_dir / "tuf",
                                  self.transport)
        try:
            tuf.refresh()
        except EdgeOpsError as exc:
            log.warning("rollback: TUF refresh failed (%s); using the last verified floors",
                        self.redact(exc.message))
        try:
            check_install(info.name, info.version, installed=None,
                          floor=tuf.trusted_floors().get(info.name), rollback=True)
        except EdgeOpsError as exc:  # DowngradeRefused, or unreadable floors (fail closed)
            log.warning("rollback %s refused: %s", dep, exc.message)
            self.report(DevicePhase.FAILED, deployment_id=dep,
                        bundle=f"{info.name}@{info.version}", reason=exc.message)
            return False
        return True

    def _fetch(self, name: str, version: str, dep: str | None, *, installed: str | None = None,
               rollback: bool = False) -> Any:
        # ngclient and urllib3 load with the first update, not at start (module docstring of
        # device_agent.tuf_client)
        from device_agent.tuf_update import TufClient, active_artifact, fetch_bundle

        base = active_artifact(self.core.store)
        cache = self.config.data_dir / "tuf"
        tuf = TufClient.over_mqtt(self.config.trust.root, cache, self.transport)
        deadline = time.monotonic() + self.settings.metadata_wait_s
        gen = self.transport.metadata.generation

        def wait_for_metadata() -> bool:
            nonlocal gen
            self._check_cancel(dep)       # stopping: not "the bundle is not published"
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            newer = self.transport.metadata.wait_newer(gen, left)
            gen = self.transport.metadata.generation
            return newer

        def progress(_what: str) -> None:
            self._check_cancel(dep)

        def check_space(download_bytes: int) -> None:
            # chunks and the assembled file are on disk together; the install that follows
            # keeps the installer's floor free, so a download that cannot be installed is not
            # worth its bandwidth either; and a released disk reserve must fit again afterwards
            short = space_shortfall(
                2 * download_bytes, self.core.installer.reserve_free_bytes
                + self.disk.missing_bytes, free_bytes(self.config.data_dir),
                "download the model")
            if short is not None:
                raise DiskFullError(short)

        self.transport.check = lambda: self._check_cancel(dep)
        try:
            fetched = fetch_bundle(tuf, name, version, self.config.target,
                                   wait_for_metadata=wait_for_metadata, progress=progress,
                                   check_space=check_space, installed=installed,
                                   rollback=rollback, active=base)
        except TransportError as exc:
            if not (self.settings.http_fallback and self.config.fleet_url):
                raise
            log.warning("MQTT transfer failed (%s); trying %s", self.redact(exc.message),
                        self.redact(self.config.fleet_url))
            tuf = TufClient.over_http(self.config.trust.root, cache, self.config.fleet_url,
                                      self.settings.download)
            fetched = fetch_bundle(tuf, name, version, self.config.target, progress=progress,
                                   check_space=check_space, installed=installed,
                                   rollback=rollback, active=base)
        finally:
            self.transport.check = None
        root = tuf.trusted_root()
        if root.signed.version != self.core.root.signed.version:
            self.core.update_trust(root)
        return fetched


def run(config: AgentConfig, *, settings: DaemonSettings = DaemonSettings()) -> int:
    """Run one agent until SIGTERM/SIGINT; 0 on a clean stop, 1 if it cannot start."""
    agent: Agent | None = None
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _s, _f: stop.set())
    # Process-wide, so here and not in Agent (the simulator runs many Agents in one process).
    tune_allocator()
    try:
        agent = Agent(config, settings=settings)
        agent.start()
    except EdgeOpsError as exc:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        if agent is not None:
            agent.stop()
        return exc.exit_code
    log.info("agent %s running (broker %s)", config.device_id, config.broker.url)
    while not stop.wait(1.0):
        pass
    # An install step is finished rather than cut (systemd's TimeoutStopSec is 30 s); were it
    # cut anyway, the installer resumes it at the next start.
    agent.stop(timeout_s=settings.stop_wait_s)
    return 0

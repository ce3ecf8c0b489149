"""The agent daemon: the fleet connection around the local core, wired from its parts.

Why it exists: :mod:`device_agent.core` installs, health-checks and serves models but knows
nothing of the fleet. :class:`Agent` connects it by composing parts, each with one job:

* the command gate (:mod:`device_agent.command_gate`) decides which signed commands to act on
  (pinned manager keys, persisted sequence numbers, typed bodies);
* the deployer (:mod:`device_agent.deployer`) downloads through TUF (MQTT chunks first, HTTP
  as a fallback), installs and switches slots;
* the state reporter (:mod:`device_agent.reports`) numbers every phase as a ``state`` message
  with a persisted increasing ``seq``;
* the telemetry collector (:mod:`device_agent.collector`) measures each interval;
* the outbox (:mod:`device_agent.outbox`) sends state reports and telemetry from on-disk
  queues and lets them go only once a manager acknowledged them end to end, so outages,
  restarts and dead manager sessions lose nothing.

The agent owns the wiring and the threads: paho's network thread, one I/O thread (routes
messages, asks the gate, drives the parts' hooks, sends the queues: never blocks) and one
worker (hands admitted commands to the deployer). A new feature adds a part: an
:class:`~device_agent.parts.AgentPart` appended to ``Agent.parts`` gets subscriptions, the
messages no other route takes, a tick per I/O pass, heartbeat fields and a close.

Built for many agents in one process (the fleet simulator): no module state, an injectable
clock, :class:`Agent` with ``start()``/``stop()``; :func:`run` is the process entry point.

Stopping is ordered: the threads stop first, and the state and telemetry queues and the core
(slot lock) close only once no thread can use them. A download is abandoned at its next check
(the chunks stay on disk; the deployment is neither failed nor marked handled, so the retained
``desired`` command resumes it after the restart); an install step that has begun runs to its
end, and if that outlasts ``stop``'s timeout, the worker closes the rest when it finishes.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from device_agent import AGENT_VERSION
from device_agent.capture import CaptureSampler
from device_agent.collector import TelemetryCollector
from device_agent.command_gate import Admitted, BadBody, CommandGate, Refused
from device_agent.config import AgentConfig
from device_agent.core import AgentCore
from device_agent.deployer import Deployer, FetchSettings, Stopping
from device_agent.diskspace import DiskFullError, DiskLimits, DiskReserve
from device_agent.feedback import PredictionLog
from device_agent.memory import tune_allocator
from device_agent.mqtt import Backoff, MqttConnection, TlsFiles, parse_broker_url
from device_agent.net_state import NetState
from device_agent.outbox import AckSettings, Outbox, StateOutbox
from device_agent.parts import AgentPart
from device_agent.reports import StateReporter
from device_agent.telemetry import DurableQueue, TelemetryLimits
from device_agent.tuf_client import DownloadLimits, MqttTufTransport
from edgeops.errors import EdgeOpsError
from edgeops.protocol import (
    Ack,
    CancelCommand,
    ConfigCommand,
    DeployCommand,
    DevicePhase,
    MessageError,
    ReportStateCommand,
    RollbackCommand,
    StateReport,
    StatusMessage,
    topics,
)
from edgeops.protocol.bodies import raw_deployment_id
from edgeops.protocol.capture import CaptureOrder
from edgeops.protocol.records import TelemetryRecord

__all__ = ["Agent", "DaemonSettings", "run"]

log = logging.getLogger(__name__)

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

    def fetch(self) -> FetchSettings:
        """What the deployer needs of these."""
        return FetchSettings(self.metadata_wait_s, self.http_fallback, self.download)


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
    """One device's agent: core + fleet connection, composed of parts. Many fit one process."""

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
        self._stop = threading.Event()
        # -- the parts ----------------------------------------------------------------------
        self.reports = StateReporter(
            self.device_id, net=self.net, outbox=self.state_q, disk=self.disk,
            status=self.core.store.status, clock=clock,
            max_waiting=settings.unwritten_reports_max)
        self.gate = CommandGate(self.device_id, net=self.net,
                                manager_keys=lambda: config.trust.manager_keys, clock=clock)
        self.deployer = Deployer(
            config, core=self.core, transport=self.transport, disk=self.disk,
            report=self.reports.report, telemetry=self.telemetry_q, stopping=self._stop,
            clock=clock, settings=settings.fetch(), on_config=self._sync_driving_topic)
        self.collector = TelemetryCollector(
            self.device_id, core=self.core, queue=self.telemetry_q, limits=settings.telemetry,
            interval_s=config.telemetry.interval_s, data_dir=data, clock=clock,
            heartbeat=self._heartbeat)
        # ground truth per prediction id, and the opt-in capture (off until a signed command)
        self.predictions = PredictionLog(clock)
        self.core.inference.predictions = self.predictions
        self.capture = CaptureSampler(data / "capture.json", clock, rng=rng)
        self.core.inference.output_observers.append(self.capture.observe)
        self.collector.sources += [self._accuracy_records, self._capture_records]
        # driven from the I/O thread in this order (device_agent.parts); features append theirs
        self.parts: list[AgentPart] = [self.collector, self.reports]
        # -- threads ------------------------------------------------------------------------
        self._io_errors = _RepeatFilter(60.0)
        self._work: queue.Queue[Admitted] = queue.Queue(settings.work_queue_max)
        self._threads: list[threading.Thread] = []
        self._close_lock = threading.Lock()
        self._running = 0            # agent threads not yet finished (under _close_lock)
        self._closing = False        # stop() has run: the last thread out closes the rest
        self.closed = threading.Event()   # queues and core closed: safe to reuse the data dir
        self._driving_topic: str | None = None
        self._ack_topic = topics.device_topic(self.device_id, "ack")

    # -- what the parts count, under the names callers know ------------------------------------
    @property
    def rejected_commands(self) -> int:
        return self.gate.rejected

    @property
    def telemetry_lost(self) -> int:
        return self.collector.lost

    @property
    def disk_full_since(self) -> float | None:
        return self.reports.disk_full_since

    def report(self, phase: DevicePhase | None, *, deployment_id: str | None = None,
               bundle: str | None = None, reason: str | None = None) -> StateReport | None:
        """Queue one state report (:meth:`device_agent.reports.StateReporter.report`)."""
        return self.reports.report(phase, deployment_id=deployment_id, bundle=bundle,
                                   reason=reason)

    def collect_telemetry(self, now: float) -> None:
        """Queue this interval's telemetry now (:class:`TelemetryCollector`)."""
        self.collector.collect(now)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Recover the local side, then connect and start the I/O and worker threads."""
        resumed = self.core.start()
        if resumed is not None:
            log.info("finished an install a restart interrupted: %s", resumed.phase.value)
        for t in (topics.device_topic(self.device_id, "desired"),
                  topics.device_topic(self.device_id, "commands"), self._ack_topic,
                  *self.transport.filters(), *(f for p in self.parts for f in p.subscriptions())):
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
                              "%.1f s", name, self.deployer.current[0], delay)
                self._stop.wait(delay)

    def _close(self) -> None:
        """Release what the threads used; runs once, after the last of them has finished."""
        try:
            for part in reversed(self.parts):
                try:
                    part.close()
                except Exception:
                    log.exception("agent %s: closing %s failed", self.device_id,
                                  type(part).__name__)
            self.core.close()
        finally:
            self.telemetry_q.close()
            self.state_q.close()
            self.closed.set()

    def _status_payload(self, online: bool) -> bytes:
        return StatusMessage(self.device_id, online, AGENT_VERSION, self.clock()).to_bytes()

    def _on_phase(self, phase: DevicePhase, label: str | None, reason: str | None) -> None:
        self.deployer.on_phase(phase, label, reason)

    def _heartbeat(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"deferred": self.deployer.deferred is not None,
                                  "rejected_commands": self.gate.rejected,
                                  "mqtt_dropped_inbound": self.conn.dropped_inbound}
        for part in self.parts:
            fields.update(part.heartbeat())
        return fields

    # -- I/O thread: never blocks on the network ---------------------------------------------
    def _io_loop(self) -> None:
        while not self._stop.is_set():
            # an ack arrives as a message and wakes this loop: no busy polling while waiting
            msg = self.conn.get(self.settings.idle_poll_s)
            try:
                if msg is not None:
                    self._route(msg.topic, msg.payload)
                now = self.clock()
                for part in self.parts:
                    part.tick(now)
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
                "commands", "desired"):
            if payload:                   # empty retained = cleared ``desired``
                self._on_command(payload, retained_desired=dt.channel == "desired")
            return
        for part in self.parts:
            if part.handle(topic, payload):
                return

    def _on_command(self, payload: bytes, retained_desired: bool = False) -> None:
        decision = self.gate.check(payload, retained_desired=retained_desired)
        if decision is None:
            return
        if isinstance(decision, Refused):
            if decision.stale:
                log.info("ignoring stale desired command %s: %s", decision.seq, decision.reason)
            else:
                log.warning("rejected command: %s", decision.reason)
                self.report(None, reason=f"command rejected: {decision.reason}")
            return
        if isinstance(decision, BadBody):
            self._on_bad_body(decision)
            return
        body = decision.body
        if isinstance(body, CaptureOrder):
            self._on_capture(body, decision)
            return
        if isinstance(body, ReportStateCommand):
            self._report_again(body)      # not accepted: its seq must not hide a pending deploy
            return
        if isinstance(body, CancelCommand):
            self.deployer.cancel(body.deployment_id)
            self.gate.accept(decision.command.seq, decision.digest)
            self.report(None, deployment_id=body.deployment_id, reason="cancel accepted")
            return
        try:
            self._work.put_nowait(decision)
        except queue.Full:
            self.report(None, reason=f"command {decision.command.seq} dropped: agent busy")
            return
        self.gate.queued(decision.command.seq, decision.digest)

    def _on_bad_body(self, bad: BadBody) -> None:
        """Our manager signed a body we cannot read: fail what it names, do not run it again."""
        cmd = bad.command
        dep = raw_deployment_id(cmd.body)
        log.warning("command %s: %s", cmd.seq, bad.error.message)
        phase = DevicePhase.FAILED if cmd.kind in ("deploy", "rollback") and dep else None
        self.report(phase, deployment_id=dep, reason=bad.error.message)
        if cmd.kind != ReportStateCommand.KIND:
            self._accept(cmd.seq, bad.digest)

    def _on_capture(self, order: CaptureOrder, admitted: Admitted) -> None:
        """Open or close the data capture the verified command states (device_agent/capture.py)."""
        self.gate.accept(admitted.command.seq, admitted.digest)
        try:
            order = self.capture.apply(order.to_dict())
        except MessageError as exc:
            self.report(None, reason=f"capture refused: {exc.message}")
            return
        self.report(None, reason=f"capture {order.capture_id} "
                                 f"{'opened' if order.open else 'closed'}")

    def _accuracy_records(self, now: float, label: str | None) -> list[TelemetryRecord]:
        """Closed ground-truth windows (device_agent/feedback.py)."""
        if not self.predictions.due(now):
            return []
        return list(self.predictions.take(now, self.device_id))

    def _capture_records(self, now: float, label: str | None) -> list[TelemetryRecord]:
        """Captured samples waiting to be sent (device_agent/capture.py)."""
        return list(self.capture.take(self.device_id, label))

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = Ack.from_bytes(payload)
        except MessageError as exc:
            log.warning("ignored an ack: %s", exc.message)
            return
        self.outbox.on_ack(ack)
        if ack.fetch:
            self.transport.on_ack(ack.fetch)

    def _report_again(self, body: ReportStateCommand) -> None:
        """``report-state``: the manager lost track (a report went to a dead session).

        Sent again with a new ``seq``: the last report about the deployment it names, else
        a report without a phase saying there is none. Its ``seq`` is not recorded as
        accepted, so a ``deploy`` signed before it but not yet received still counts; a
        replay only causes another report.
        """
        dep = body.deployment_id
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

    # -- worker: commands that take time -----------------------------------------------------
    def _work_loop(self) -> None:
        next_retry = self.clock() + self.settings.deferred_retry_s
        while not self._stop.is_set():
            try:
                admitted = self._work.get(timeout=2 * self.settings.idle_poll_s)
            except queue.Empty:
                self.disk.restore_if_due()
                if self.deployer.deferred is not None and self.clock() >= next_retry:
                    next_retry = self.clock() + self.settings.deferred_retry_s
                    self._retry_deferred()
                continue
            cmd = admitted.command
            handled = True
            try:
                self._execute(admitted)
            except Stopping:
                # Not accepted: the retained ``desired`` command runs again after the restart
                # and the download resumes from the chunks already on disk.
                handled = False
                log.info("command %s interrupted by stop; it resumes after the restart", cmd.seq)
            except Exception as exc:  # report, never die: the old model keeps serving
                log.exception("command %s failed", cmd.seq)
                dep, bundle = self.deployer.current
                self.report(DevicePhase.FAILED, deployment_id=dep, bundle=bundle,
                            reason=self.deployer.redact(f"agent error: {exc}"))
            finally:
                if handled:
                    self._accept(cmd.seq, admitted.digest)
                self.gate.done(admitted.digest)
                self.deployer.done()

    def _execute(self, admitted: Admitted) -> None:
        body = admitted.body
        if isinstance(body, DeployCommand):
            self.deployer.deploy(body)
        elif isinstance(body, RollbackCommand):
            self.deployer.rollback(body)
        elif isinstance(body, ConfigCommand):
            self.deployer.config_change(body)

    def _accept(self, seq: int, digest: str) -> None:
        """Persist a handled command's seq; on a full disk it stays unsaved (the retained
        ``desired`` may run again after a restart, which a deploy survives: "already active").
        """
        try:
            self.disk.run(lambda: self.gate.accept(seq, digest), "net_state.json")
        except DiskFullError as exc:
            log.error("command %d handled but not recorded: %s", seq, exc.message)

    def _retry_deferred(self) -> None:
        try:
            self.deployer.retry_deferred()
        except Exception:
            log.exception("deferred install retry failed")


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

"""The deployer: carries out deploy, rollback and config commands on the device.

Why its own part: downloading (TUF over MQTT, HTTP as a fallback), the install, the slot
switch and the phases they report are one job with its own state (the deployment in hand, a
cancel request, an install deferred by policy). The agent's worker thread calls it with typed
command bodies (:mod:`edgeops.protocol.bodies`); it says what happened through the state
reporter, and never decides *whether* a command is acted on (that is the command gate's job).

A download is abandoned at its next check when the agent stops (:class:`Stopping`, which no
failure handler catches) or the fleet cancels the deployment (:class:`DeploymentCancelled`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from device_agent.config import AgentConfig
from device_agent.core import AgentCore, request_from_fetched
from device_agent.diskspace import DiskFullError, DiskReserve, free_bytes, space_shortfall
from device_agent.reports import ReportFn
from device_agent.telemetry import DurableQueue
from device_agent.tuf_client import DownloadLimits, MqttTufTransport
from edgeops.errors import EdgeOpsError, TransportError
from edgeops.floors import DowngradeRefused, check_install
from edgeops.protocol import ConfigCommand, DeployCommand, DevicePhase, RollbackCommand

if TYPE_CHECKING:
    from device_agent.tuf_update import FetchedBundle

__all__ = ["Deployer", "DeploymentCancelled", "FetchSettings", "Stopping"]

log = logging.getLogger(__name__)

# ``scheme://user:password@host``: the credentials part of a URL in an error message
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")

# (deployment id, "name@version") a phase belongs to; either may be unknown
Work = tuple[str | None, str | None]


class DeploymentCancelled(EdgeOpsError):
    """The fleet cancelled the deployment this agent was working on."""

    default_hint = "nothing to do: the previous model keeps serving"


class Stopping(Exception):
    """The agent is stopping: abandon the current download, report nothing, accept nothing.

    Deliberately outside :class:`EdgeOpsError`, so no handler that reports a failure catches it.
    """


@dataclass(frozen=True)
class FetchSettings:
    """How the deployer fetches bundles. Units are in the names."""

    metadata_wait_s: float = 10.0        # how long a deploy waits for newer TUF metadata
    http_fallback: bool = True           # fetch over fleet_url when MQTT transfer fails
    download: DownloadLimits = field(default_factory=DownloadLimits)


class Deployer:
    """Deploy, rollback and config for one device; phases go to ``report``."""

    def __init__(self, config: AgentConfig, *, core: AgentCore, transport: MqttTufTransport,
                 disk: DiskReserve, report: ReportFn, telemetry: DurableQueue,
                 stopping: threading.Event, clock: Callable[[], float],
                 settings: FetchSettings = FetchSettings(),
                 on_config: Callable[[], None] = lambda: None) -> None:
        """``on_config``: called after a config command changed the core's settings."""
        self.config = config
        self.core = core
        self.transport = transport
        self.disk = disk
        self.report = report
        self.telemetry = telemetry
        self.stopping = stopping
        self.clock = clock
        self.settings = settings
        self.on_config = on_config
        self.current: Work = (None, None)          # what phases reported now belong to
        self.cancelled: str | None = None          # deployment the fleet cancelled
        self.deferred: Work | None = None          # an install waiting for the policy

    # -- what the agent calls ------------------------------------------------------------------
    def cancel(self, deployment_id: str) -> None:
        """The fleet cancelled ``deployment_id``: a download of it stops at its next check."""
        self.cancelled = deployment_id

    def on_phase(self, phase: DevicePhase, label: str | None, reason: str | None) -> None:
        """The core's phase hook: report it for the deployment in hand."""
        dep, bundle = self.current
        if phase is DevicePhase.DEFERRED:
            if self.deferred is not None and dep is None:
                return            # a periodic re-check that still says "wait": said already
            self.deferred = (dep, label or bundle)
        elif phase.terminal:
            self.deferred = None
        self.report(phase, deployment_id=dep, bundle=label or bundle, reason=reason)

    def retry_deferred(self) -> None:
        """Check the policy again for an install it deferred (worker, when idle)."""
        waiting = self.deferred
        self.current = (None, None)          # re-checks that still defer stay silent
        if waiting is not None and self.core.installer.policy.evaluate().allowed:
            self.current = waiting           # phases from here on belong to the deployment
        try:
            self.core.retry_deferred()
        finally:
            self.current = (None, None)

    def done(self) -> None:
        """The worker finished a command: later phases belong to no deployment."""
        self.current = (None, None)

    def config_change(self, body: ConfigCommand) -> None:
        if body.sets_driving_signal:
            self.core.apply_config({"driving_signal": (
                dict(body.driving_signal) if body.driving_signal is not None else None)})
        self.on_config()
        self.report(None, deployment_id=body.deployment_id, reason="config applied")

    def rollback(self, body: RollbackCommand) -> None:
        self.current = (body.deployment_id, None)
        if self._rollback_allowed(body.deployment_id):
            self.core.rollback(body.deployment_id)

    def deploy(self, body: DeployCommand) -> None:
        dep, label = body.deployment_id, body.label
        self.current = (dep, label)
        if body.target is not None and body.target != self.config.target:
            self.report(DevicePhase.FAILED, deployment_id=dep, bundle=label,
                        reason=f"deployment is for target {body.target!r}, this device is "
                               f"{self.config.target!r}")
            return
        self.cancelled = None
        self.disk.restore_if_due()
        self.report(DevicePhase.NOTIFIED, deployment_id=dep, bundle=label)
        self.report(DevicePhase.DOWNLOADING, deployment_id=dep, bundle=label)
        active = self.core.store.active()
        installed = active.version if active is not None and active.name == body.name else None
        try:
            fetched = self._fetch(body.name, body.version, dep, installed=installed,
                                  rollback=body.downgrade)
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

    def redact(self, text: str) -> str:
        """``text`` without credentials (URL user:password, the broker password).

        Error messages quote URLs (python-tuf: "Failed to download <url>"), and ``fleet_url``
        may carry basic-auth credentials; neither the log nor the fleet may receive them.
        """
        text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
        password = self.config.broker.password
        return text.replace(password, "***") if password else text

    # -- inside ----------------------------------------------------------------------------------
    def _note_delivery(self, dep: str | None, label: str, fetched: FetchedBundle) -> None:
        """A published delta that failed before the install: say why (issue 20)."""
        d = fetched.delivery
        if d is not None and d.delta_failed and d.reason:
            self.report(DevicePhase.DOWNLOADING, deployment_id=dep, bundle=label,
                        reason=self.redact(d.reason))

    def _record_delivery(self, dep: str | None, label: str, fetched: FetchedBundle) -> None:
        """Delta, full or cached, and the bytes fetched: the fleet's bytes-saved figure."""
        from device_agent.tuf_update import delivery_record

        d = fetched.final_delivery()
        if d is not None:
            rec = delivery_record(self.clock(), dep, label, d)
            self.telemetry.push(json.dumps(rec.to_dict(), sort_keys=True,
                                           separators=(",", ":")).encode())

    def _check_cancel(self, dep: str | None) -> None:
        if self.stopping.is_set():
            raise Stopping
        if self.cancelled is not None and self.cancelled == dep:
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
               rollback: bool = False) -> FetchedBundle:
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

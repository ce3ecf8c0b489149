"""The rollout engine: applies :func:`fleet.rollout.plan.decide` through the store and channel.

Every change goes through the store's compare-and-set transitions *before* anything is sent
(persist, then publish), and the signed command is persisted with the device's row. A manager
that dies between the two re-publishes the stored command on restart (:meth:`recover`): the
device sees the same signed bytes again (same ``seq``: a replay it ignores, or the first copy
it never got), so no device is skipped and none is deployed twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from edgeops.bundle import Manifest
from edgeops.errors import UsageError
from edgeops.protocol import (
    BundleRef,
    CancelCommand,
    DeployCommand,
    MessageError,
    ReportStateCommand,
    RollbackCommand,
    SignedCommand,
    StateReport,
    StatusMessage,
)
from edgeops.targets import hardware_class
from fleet.errors import ConflictError, DeploymentRejected, NotFoundError
from fleet.ports import CommandSigner, DeviceChannel
from fleet.rollout.plan import Health, Plan, decide
from fleet.rollout.strategy import Strategy, assign_waves
from fleet.selector import parse_selector
from fleet.states import IN_FLIGHT_STATES
from fleet.store import (
    BlessingStore,
    BundleStore,
    Deployment,
    DeploymentDevice,
    DeploymentStore,
    DeviceStore,
    TelemetryStore,
)

__all__ = ["RolloutEngine", "hardware_class"]

log = logging.getLogger(__name__)

_NOTIFY_BATCH = 200      # devices per store transaction when notifying
REPORT_STATE_TTL_S = 600.0   # a report-state command is only worth answering this long
_CANCELLABLE = ("notified", "downloading", "verifying", "installing", "deferred")


class RolloutStore(DeploymentStore, DeviceStore, BundleStore, BlessingStore, TelemetryStore,
                   Protocol):
    """What the engine reads and writes: deployments and their device rows, the devices it
    selects and whose reports it applies, the bundle and its blessings, health telemetry."""


class RolloutEngine:
    def __init__(self, store: RolloutStore, channel: DeviceChannel, signer: CommandSigner, *,
                 clock: Callable[[], float] = time.time, require_blessing: bool = False,
                 hardware_for: Callable[[str], str | None] = hardware_class) -> None:
        self.store = store
        self.channel = channel
        self.signer = signer
        self.clock = clock
        self.require_blessing = require_blessing
        self.hardware_for = hardware_for
        self._outcome_listeners: list[Callable[[Deployment], None]] = []

    def attach_outcome_listener(self, listener: Callable[[Deployment], None]) -> None:
        """Called once with the deployment when it ends (completed, aborted, cancelled, rolled
        back), by the manager whose compare-and-set ended it; must not block (see
        fleet.mlflow_outcomes)."""
        self._outcome_listeners.append(listener)

    def _ended(self, deployment_id: str) -> None:
        if not self._outcome_listeners:
            return
        dep = self.store.get_deployment(deployment_id)
        for listener in self._outcome_listeners:
            try:
                if dep is not None:
                    listener(dep)
            except Exception:  # a listener must never stop the rollout loop
                log.exception("outcome listener failed for %s", deployment_id)

    # -- creating ----------------------------------------------------------------------------
    def create(self, name: str, version: str, selector: str, strategy: Strategy,
               created_by: str | None = None) -> Deployment:
        """Validate and persist a deployment with every selected device's wave fixed."""
        bundle = self.store.get_bundle(name, version)
        if bundle is None:
            raise NotFoundError(f"bundle {name}@{version} is not published on this fleet",
                                hint="publish it first: edgeops publish BUNDLE --fleet URL")
        sel = parse_selector(selector)
        devices = [d for d in self.store.select_devices(sel.prefilter()) if sel.matches(d)]
        if not devices:
            raise DeploymentRejected(f"selector {str(sel)!r} selects no device",
                                     hint="list devices with `edgeops fleet devices` and adjust "
                                          "--select")
        manifest = Manifest.from_bytes(bundle.manifest)
        missing: dict[str, list[str]] = {}
        for d in devices:
            if manifest.artifact_for(d.target) is None:
                missing.setdefault(d.target, []).append(d.id)
        if missing:
            detail = "; ".join(f"{t}: {', '.join(ids[:5])}{' …' if len(ids) > 5 else ''}"
                               for t, ids in sorted(missing.items()))
            raise DeploymentRejected(
                f"bundle {name}@{version} has no artifact for the target of selected devices "
                f"({detail})",
                hint=f"build the bundle with --target {','.join(sorted(missing))} or narrow "
                     "--select")
        if self.require_blessing:
            unblessed = sorted({hw for d in devices
                                if (hw := self.hardware_for(d.target) or d.target)
                                and not self.store.has_blessing(name, version, hw)})
            if unblessed:
                raise DeploymentRejected(
                    f"bundle {name}@{version} is not blessed for hardware class "
                    f"{', '.join(unblessed)} (this fleet requires a passing hardware test)",
                    hint="run hardware_tests on that hardware and upload the report "
                         "(`edgeops fleet bless`)")
        now = self.clock()
        dep_id = "d-" + uuid.uuid4().hex[:10]
        waves = assign_waves([d.id for d in devices], strategy.phases, dep_id)
        dep = Deployment(dep_id, name, version, str(sel), strategy.to_dict(), "running", 0, now,
                         now, now, None, created_by)
        rows = [DeploymentDevice(dep_id, d.id, waves[d.id], "pending", d.target, now,
                                 previous=d.active_bundle) for d in devices]
        self.store.create_deployment(dep, rows)
        log.info("deployment %s: %s to %d devices in %d phases", dep_id, dep.bundle, len(rows),
                 len(strategy.phases))
        return dep

    # -- the loop ----------------------------------------------------------------------------
    def tick(self) -> dict[str, Plan]:
        """One pass over running deployments; returns the plan applied to each."""
        out = {}
        for dep in self.store.list_deployments(["running"], limit=1000):
            try:
                out[dep.id] = self.step(dep.id)
            except Exception:  # one bad deployment must not stop the others
                log.exception("rollout step failed for %s", dep.id)
        return out

    def step(self, deployment_id: str) -> Plan:
        dep = self._get(deployment_id)
        strategy = Strategy.from_dict(dep.strategy)
        rows = self.store.deployment_devices(dep.id)
        now = self.clock()
        plan = decide(dep, rows, strategy, now, self._health(dep, strategy))
        for device_id in plan.time_out:
            self.store.transition_device(dep.id, device_id, state="timed-out", now=now,
                                         expect=sorted(IN_FLIGHT_STATES),
                                         reason="no terminal report before the device timeout")
        if plan.finish:
            moved = self.store.update_deployment(dep.id, now=now, status=plan.finish,
                                                 expect_status=["running"], reason=plan.reason)
            log.info("deployment %s %s: %s", dep.id, plan.finish, plan.reason)
            if moved and plan.finish == "aborted" and strategy.auto_rollback:
                self._roll_back_aborted(dep.id, plan.reason or "aborted")
            if moved:
                self._ended(dep.id)
            return plan
        if plan.advance_to is not None:
            self.store.update_deployment(dep.id, now=now, phase_index=plan.advance_to,
                                         phase_started_at=now, expect_status=["running"])
            log.info("deployment %s: phase %d", dep.id, plan.advance_to)
        if plan.notify:
            body = self._deploy_body(dep)
            by_id = {r.device_id: r for r in rows}
            for i in range(0, len(plan.notify), _NOTIFY_BATCH):
                self._notify([by_id[d] for d in plan.notify[i : i + _NOTIFY_BATCH]], dep,
                             body, now)
        return plan

    def _notify(self, rows: list[DeploymentDevice], dep: Deployment,
                body: dict[str, dict[str, Any]], now: float) -> None:
        cmds = self.signer.issue_many([(r.device_id, DeployCommand.KIND, body[r.target])
                                       for r in rows])
        by_device = {c.command.device_id: c for c in cmds}
        # persist first: if we die before sending, recover() re-sends these exact bytes; a
        # device another manager notified meanwhile is not moved and gets nothing from us
        moved = self.store.notify_devices(
            dep.id, {d: c.to_bytes() for d, c in by_device.items()}, now)
        for device_id in moved:
            self.channel.send_desired(device_id, by_device[device_id])

    def _deploy_body(self, dep: Deployment) -> dict[str, dict[str, Any]]:
        bundle = self.store.get_bundle(dep.bundle_name, dep.bundle_version)
        if bundle is None:
            raise NotFoundError(f"bundle {dep.bundle} vanished from the store")
        m = Manifest.from_bytes(bundle.manifest)
        # an operator rollback may go below what a device runs (never below the release floor,
        # which the agent checks against the offline-signed targets: edgeops.floors)
        downgrade = Strategy.from_dict(dep.strategy).allow_downgrade
        return {a.target: DeployCommand(
                    name=dep.bundle_name, version=dep.bundle_version, deployment_id=dep.id,
                    target=a.target, manifest_path=f"bundles/{dep.bundle_name}/"
                                                   f"{dep.bundle_version}/manifest.json",
                    artifact=a.file.sha256, size=a.file.size, downgrade=downgrade).to_dict()
                for a in m.artifacts}

    def _health(self, dep: Deployment, s: Strategy) -> Health | None:
        if s.max_error_rate is None and s.max_latency_factor is None:
            return None
        agg = self.store.aggregate_deployment(dep.id, since=dep.phase_started_at,
                                              states=["activated", "healthy"])
        bundle = self.store.get_bundle(dep.bundle_name, dep.bundle_version)
        figure = None
        if bundle is not None:
            figures = [float(a.metrics.get("latency", {}).get("p95_ms") or 0)
                       for a in Manifest.from_bytes(bundle.manifest).artifacts]
            figure = max(figures, default=0.0) or None
        return Health(agg["inferences"], agg["error_rate"], agg["p95_ms_mean"], figure)

    def recover(self) -> int:
        """After a restart: re-publish the persisted command of every notified device."""
        n = 0
        for dep in self.store.list_deployments(["running", "paused"], limit=1000):
            for row in self.store.deployment_devices(dep.id, ["notified"]):
                if row.command:
                    try:
                        self.channel.send_desired(row.device_id,
                                                  SignedCommand.from_bytes(row.command))
                        n += 1
                    except MessageError:
                        log.warning("stored command for %s is unreadable", row.device_id)
        return n

    def reconcile(self) -> int:
        """After a start: ask every device in flight in a running deployment to report again.

        Why: a report sent before the restart may have gone to a manager session that no
        longer exists; rather than wait for news that will not come, each such device gets a
        signed ``report-state`` command (not retained, short-lived) and answers with its last
        report about the deployment. The agent does not record a ``report-state`` seq as
        accepted, so a ``deploy`` it has not yet received stays valid. Returns how many
        devices were asked.
        """
        n = 0
        for dep in self.store.list_deployments(["running", "paused"], limit=1000):
            rows = self.store.deployment_devices(dep.id, sorted(IN_FLIGHT_STATES))
            for i in range(0, len(rows), _NOTIFY_BATCH):
                part = rows[i : i + _NOTIFY_BATCH]
                cmds = self.signer.issue_many(
                    [(r.device_id, ReportStateCommand.KIND,
                      ReportStateCommand(dep.id).to_dict()) for r in part],
                    ttl_s=REPORT_STATE_TTL_S)
                for cmd in cmds:
                    self.channel.send_command(cmd.command.device_id, cmd)
                    n += 1
        if n:
            log.info("asked %d in-flight devices to report their state again", n)
        return n

    # -- device events ------------------------------------------------------------------------
    # The MQTT worker's ingest persists state/status itself and then calls on_state/on_status;
    # record_state/record_status do both, for callers without that ingest (tests, tools).
    def on_state(self, report: StateReport) -> None:
        """A state report was stored; progress is picked up by the next :meth:`tick`."""
        log.debug("state %s from %s: %s", report.seq, report.device_id, report.phase)

    def on_status(self, device_id: str, online: bool) -> None:
        """A device came online: re-sign its desired command if it is close to expiry."""
        if not online:
            return
        now = self.clock()
        for row in self.store.device_deployments(device_id, ("running",)):
            if row.state not in IN_FLIGHT_STATES or not row.command:
                continue
            try:
                old = SignedCommand.from_bytes(row.command).command
            except MessageError:
                continue
            if old.expires - now > self.signer.ttl_s / 2:
                continue
            cmd = self.signer.issue(device_id, old.kind, old.body)
            self.store.set_device_command(row.deployment_id, device_id, cmd.to_bytes())
            self.channel.send_desired(device_id, cmd)

    def record_state(self, report: StateReport) -> bool:
        """Persist a state report; False if it was replayed, stale or from an unknown device."""
        ok = self.store.record_state(report, received_at=self.clock())
        if ok:
            self.on_state(report)
        else:
            log.info("dropped state report %d from %s (unknown device or not newer)",
                     report.seq, report.device_id)
        return ok

    def record_status(self, msg: StatusMessage) -> bool:
        ok = self.store.set_status(msg.device_id, msg.online, msg.ts or self.clock(),
                                   msg.agent_version)
        if ok:
            self.on_status(msg.device_id, msg.online)
        return ok

    # -- operator actions --------------------------------------------------------------------
    def _get(self, deployment_id: str) -> Deployment:
        dep = self.store.get_deployment(deployment_id)
        if dep is None:
            raise NotFoundError(f"no deployment {deployment_id!r}")
        return dep

    def _set(self, deployment_id: str, status: str, expect: list[str], verb: str,
             reason: str | None = None) -> Deployment:
        dep = self._get(deployment_id)
        if not self.store.update_deployment(dep.id, now=self.clock(), status=status,
                                            expect_status=expect, reason=reason):
            raise ConflictError(f"cannot {verb} deployment {dep.id}: it is {dep.status}")
        return self._get(dep.id)

    def pause(self, deployment_id: str) -> Deployment:
        return self._set(deployment_id, "paused", ["running"], "pause", "paused by operator")

    def resume(self, deployment_id: str) -> Deployment:
        return self._set(deployment_id, "running", ["paused"], "resume", None)

    def cancel(self, deployment_id: str) -> Deployment:
        """Stop notifying; devices still downloading or installing are told to stop."""
        dep = self._set(deployment_id, "cancelled", ["running", "paused"], "cancel",
                        "cancelled by operator")
        for row in self.store.deployment_devices(dep.id, list(_CANCELLABLE)):
            cmd = self.signer.issue(row.device_id, CancelCommand.KIND,
                                    CancelCommand(dep.id).to_dict())
            self.store.set_device_command(dep.id, row.device_id, cmd.to_bytes())
            self.channel.send_desired(row.device_id, cmd)
        self._ended(dep.id)
        return dep

    def rollback(self, deployment_id: str) -> Deployment:
        """Fleet-wide: every device this deployment reached goes back to its previous bundle."""
        dep = self._get(deployment_id)
        if dep.status == "rolled-back":
            raise ConflictError(f"deployment {dep.id} is already rolled back")
        dep = self._set(deployment_id, "rolled-back", [dep.status], "roll back",
                        "rolled back by operator")
        for row in self.store.deployment_devices(dep.id):
            if row.state == "pending":
                continue
            self._send_rollback(dep, row)
        self._ended(dep.id)
        return dep

    def _send_rollback(self, dep: Deployment, row: DeploymentDevice) -> None:
        prev_name, _, prev_version = (row.previous or "").partition("@")
        body = RollbackCommand(dep.id, dep.bundle_name, dep.bundle_version,
                               BundleRef(prev_name, prev_version) if row.previous else None)
        cmd = self.signer.issue(row.device_id, RollbackCommand.KIND, body.to_dict())
        self.store.set_device_command(dep.id, row.device_id, cmd.to_bytes())
        self.channel.send_desired(row.device_id, cmd)

    def _roll_back_aborted(self, deployment_id: str, reason: str) -> None:
        """``Strategy.auto_rollback``: the abort also undoes what the deployment changed.

        Devices that activated the new bundle (``activated``/``healthy``) are sent a signed
        ``rollback`` to the bundle they ran before; devices still downloading or installing get
        a ``cancel``. Devices whose own health check failed already rolled back on their own
        (agent side) and get nothing. Only the manager whose compare-and-set moves the
        deployment from ``aborted`` to ``rolled-back`` sends anything.
        """
        dep = self._get(deployment_id)
        if not self.store.update_deployment(dep.id, now=self.clock(), status="rolled-back",
                                            expect_status=["aborted"],
                                            reason=f"aborted: {reason}; rolled back "
                                                   "automatically"):
            return
        rolled = cancelled = 0
        for row in self.store.deployment_devices(dep.id):
            if row.state in ("activated", "healthy"):
                self._send_rollback(dep, row)
                rolled += 1
            elif row.state in _CANCELLABLE:
                cmd = self.signer.issue(row.device_id, CancelCommand.KIND,
                                        CancelCommand(dep.id).to_dict())
                self.store.set_device_command(dep.id, row.device_id, cmd.to_bytes())
                self.channel.send_desired(row.device_id, cmd)
                cancelled += 1
        log.info("deployment %s: automatic rollback sent to %d devices, cancel to %d",
                 dep.id, rolled, cancelled)

    def status(self, deployment_id: str) -> dict[str, Any]:
        """The deployment, counts per state, offline devices shown as pending, progress."""
        dep = self._get(deployment_id)
        # counted in the store (GROUP BY): no device row is loaded, whatever the fleet's size
        counts = self.store.deployment_counts(dep.id)
        total = sum(counts.values())
        waiting_offline = self.store.waiting_offline(dep.id) if counts.get("notified") else 0
        done = sum(counts.get(s, 0) for s in ("healthy", "activated"))
        return {**dep.to_dict(), "devices": total, "counts": counts,
                "waiting_offline": waiting_offline,
                "phases": len(Strategy.from_dict(dep.strategy).phases),
                "progress": done / total if total else 0.0}


def strategy_from_options(phases: str | None, **kw: Any) -> Strategy:
    """CLI/API helper: a Strategy from flat options, None meaning the default."""
    from fleet.rollout.strategy import parse_phases

    args: dict[str, Any] = {k: v for k, v in kw.items() if v is not None}
    if phases:
        args["phases"] = parse_phases(phases)
    try:
        return Strategy(**args)
    except TypeError as exc:
        raise UsageError(f"bad strategy option: {exc}") from None

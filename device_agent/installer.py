"""The install decision: verify, stage, wait for policy, activate, health-check, keep or roll back.

Why it is its own module: this is the part that must be right. It is a small state machine fed
with *bytes* (manifest, signatures, artifact, golden) and the clock; it does no network I/O. The
daemon around it downloads through TUF and hands the results in; the slot store does the
crash-safe writes; the health check runs the model in a child process. Every step reports its
:class:`~edgeops.protocol.DevicePhase` through ``on_phase`` so the daemon can tell the fleet.

Order and why:

1. ``verifying`` — the bundle signature against the fleet's targets keys (from the TUF root),
   the manifest's name/version against what the deploy asked for (no mix-and-match), our
   target's artifact and golden digests and sizes, ``min_agent_version``, and whether this CPU
   computes the artifact as built (8-bit x86 weights need VNNI: :mod:`edgeops.cpu`). Nothing
   is written until all of this passes.
2. ``installing`` — into the inactive slot (fixed file names: nothing can escape the slot).
   An artifact that came as a delta is rebuilt here, from the active slot's model straight
   into the inactive slot; if that fails, the request's ``fallback`` (the daemon's TUF
   client) fetches the full artifact, the only network I/O an install may trigger.
3. policy — outside a maintenance window or while driving: ``deferred`` (not failed); the slot
   stays staged and :meth:`Installer.activate_staged` finishes the job later.
4. ``activated`` — pointer switched, on trial. Inference still serves the old model.
5. health check — pass: confirm, swap inference, ``healthy``. Fail: roll the pointer back,
   ``rolled-back`` with the reason (or ``failed`` when there was nothing to go back to).

After a crash, :meth:`Installer.resume` finishes step 5 for a slot left on trial.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key

from device_agent import AGENT_VERSION
from device_agent.health import DEFAULT_HEALTH, HealthResult, HealthSettings, check_slot_isolated
from device_agent.policy import InstallPolicy, PolicyDecision
from device_agent.slots import SLOT_FILES, SlotInfo, SlotStore, SlotWriter
from edgeops.bundle.manifest import ArtifactEntry, Manifest, parse_version
from edgeops.bundle.signing import SignatureSet, verify_signatures
from edgeops.cpu import CpuFacts, isa_shortfall, read_cpu_facts
from edgeops.errors import BadContentError, EdgeOpsError, VerificationError
from edgeops.fsutil import atomic_write
from edgeops.protocol.messages import DevicePhase

__all__ = [
    "DeltaArtifact",
    "IncompatibleBundleError",
    "InstallOutcome",
    "InstallRequest",
    "Installer",
    "VerifiedUpdate",
    "verify_update",
]

log = logging.getLogger(__name__)

PhaseCallback = Callable[[DevicePhase, str | None, str | None], None]
HealthCheck = Callable[[Path, str], HealthResult]


class IncompatibleBundleError(BadContentError):
    """Signed and intact, but not for this device (target, agent version)."""

    default_hint = "deploy a bundle built for this device's target and agent version"


@dataclass(frozen=True)
class DeltaArtifact:
    """The new artifact as a signed delta from the active slot's model (issue 20).

    It is rebuilt straight into the inactive slot as the slot is written, checked against the
    signed manifest's digest and size there; if the rebuild fails (corrupt payload, full disk),
    ``fallback(reason)`` fetches the full artifact, which is installed instead.
    """

    base: Path
    delta: Path
    sha256: str
    size: int
    fallback: Callable[[str], Path]


@dataclass(frozen=True)
class InstallRequest:
    """What a download produced. ``artifact`` may be bytes or a file (large models)."""

    manifest: bytes
    signatures: bytes
    artifact: bytes | Path | DeltaArtifact
    golden: bytes | Path | None
    deployment_id: str | None = None
    expect_name: str | None = None        # from the deploy command: refuse anything else
    expect_version: str | None = None


@dataclass(frozen=True)
class VerifiedUpdate:
    manifest: Manifest
    entry: ArtifactEntry
    signed_by: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.manifest.name}@{self.manifest.version}"


@dataclass(frozen=True)
class InstallOutcome:
    phase: DevicePhase
    bundle: str | None
    reason: str | None = None
    deployment_id: str | None = None
    active: dict[str, Any] | None = None
    health: HealthResult | None = None
    ts: float = field(default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase.value, "bundle": self.bundle, "reason": self.reason,
                "deployment_id": self.deployment_id, "active": self.active,
                "health": self.health.to_dict() if self.health else None, "ts": self.ts}


def _digest_and_size(data: bytes | Path) -> tuple[str, int]:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest(), len(data)
    h, size = hashlib.sha256(), 0
    with open(data, "rb") as f:
        while block := f.read(1024 * 1024):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def verify_update(req: InstallRequest, *, target: str, trusted: Sequence[Key], threshold: int,
                  agent_version: str = AGENT_VERSION,
                  cpu: CpuFacts | None = None) -> VerifiedUpdate:
    """Every check that needs no disk writes. Raises a BadContentError naming the first failure.

    With ``cpu``, an artifact this CPU would compute wrongly (8-bit x86 weights without VNNI:
    :func:`edgeops.cpu.isa_shortfall`) is refused too; the reason says what to do in the same
    line, since a device's report carries the message alone.
    """
    sigs = SignatureSet.from_bytes(req.signatures)
    signed_by = verify_signatures(req.manifest, sigs, trusted, threshold)
    manifest = Manifest.from_bytes(req.manifest)
    label = f"{manifest.name}@{manifest.version}"
    if req.expect_name is not None and (manifest.name, manifest.version) != (
            req.expect_name, req.expect_version):
        raise VerificationError(f"downloaded bundle is {label}, but the deployment asked for "
                                f"{req.expect_name}@{req.expect_version} (mix-and-match)")
    entry = manifest.artifact_for(target)
    if entry is None:
        raise IncompatibleBundleError(
            f"{label} has no artifact for target {target!r} "
            f"(it has: {', '.join(a.target for a in manifest.artifacts)})")
    if parse_version(manifest.min_agent_version) > parse_version(agent_version):
        raise IncompatibleBundleError(f"{label} needs agent {manifest.min_agent_version} or "
                                      f"newer; this agent is {agent_version}",
                                      hint="upgrade the agent before deploying this bundle")
    if isinstance(req.artifact, DeltaArtifact):    # what it yields; checked again as written
        sha, size = req.artifact.sha256, req.artifact.size
    else:
        sha, size = _digest_and_size(req.artifact)
    if (sha, size) != (entry.file.sha256, entry.file.size):
        raise VerificationError(f"artifact for {target} does not match the signed manifest "
                                f"(sha256 {sha[:12]}…, {size} bytes; manifest "
                                f"{entry.file.sha256[:12]}…, {entry.file.size} bytes)")
    if entry.golden is not None:
        if req.golden is None:
            raise VerificationError(f"golden samples for {target} were not delivered")
        if _digest_and_size(req.golden) != (entry.golden.sha256, entry.golden.size):
            raise VerificationError(f"golden samples for {target} do not match the signed "
                                    "manifest")
    if entry.format not in ("onnx", "tflite"):
        raise IncompatibleBundleError(f"artifact format {entry.format!r} is not one this "
                                      "agent runs")
    shortfall = isa_shortfall(entry, cpu) if cpu is not None else None
    if shortfall is not None:
        raise IncompatibleBundleError(
            f"{label}: {shortfall}; enrol this device as x86-cpu",
            hint="re-enrol it with `edgeops fleet enroll ... --target x86-cpu` and deploy a "
                 "bundle that has an x86-cpu artifact")
    return VerifiedUpdate(manifest, entry, tuple(signed_by))


class Installer:
    """Drives one device's slots through installs, deferrals, rollbacks and crash recovery."""

    def __init__(self, store: SlotStore, *, target: str, trusted: Sequence[Key],
                 threshold: int = 1, agent_version: str = AGENT_VERSION,
                 policy: InstallPolicy | None = None,
                 health: HealthCheck | None = None,
                 health_settings: HealthSettings = DEFAULT_HEALTH,
                 on_phase: PhaseCallback | None = None,
                 on_activate: Callable[[SlotInfo | None], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 state_file: Path | None = None,
                 reserve_free_bytes: int = 64 * 1024**2,
                 cpu: CpuFacts | None = None) -> None:
        self.store = store
        self.target = target
        # What this CPU computes correctly (VNNI or not); read from /proc/cpuinfo unless given.
        self.cpu = cpu if cpu is not None else read_cpu_facts()
        self.trusted = list(trusted)
        self.threshold = threshold
        self.agent_version = agent_version
        self.policy = policy or InstallPolicy()
        self._health = health or (lambda d, t: check_slot_isolated(d, t, health_settings))
        self._on_phase = on_phase or (lambda _p, _b, _r: None)
        self._on_activate = on_activate or (lambda _i: None)
        self._clock = clock
        self.state_file = state_file or store.root.parent / "install_state.json"
        # Disk left free after an install, for logs, telemetry queue and the TUF cache.
        self.reserve_free_bytes = reserve_free_bytes
        # One slot operation at a time, whichever thread asks (worker installs, I/O thread
        # retries deferred installs or handles a rollback command).
        self._lock = threading.RLock()

    # -- public operations ---------------------------------------------------------------
    def install(self, req: InstallRequest) -> InstallOutcome:
        """Verify, stage, and (policy permitting) activate and health-check one update."""
        with self._lock:
            return self._install(req)

    def activate_staged(self) -> InstallOutcome | None:
        """Finish a deferred install when policy now allows it; None if nothing is staged."""
        with self._lock:
            return self._activate_staged()

    def rollback(self, reason: str = "rollback requested by the fleet",
                 deployment_id: str | None = None) -> InstallOutcome:
        """Serve the previous slot again (a fleet ``rollback`` command)."""
        with self._lock:
            return self._rollback(reason, deployment_id)

    def resume(self) -> InstallOutcome | None:
        """At start-up: finish the health check of a slot a crash left on trial."""
        with self._lock:
            return self._resume()

    def _install(self, req: InstallRequest) -> InstallOutcome:
        self._phase(DevicePhase.VERIFYING, None, None)
        try:
            update = verify_update(req, target=self.target, trusted=self.trusted,
                                   threshold=self.threshold, agent_version=self.agent_version,
                                   cpu=self.cpu)
        except EdgeOpsError as exc:
            return self._finish(DevicePhase.FAILED, None, f"rejected: {exc.message}",
                                req.deployment_id)
        active = self.store.active()
        pointer = self.store.pointer()
        if active is not None and not pointer.trial and (active.name, active.version,
                                                          active.target) == (
                update.manifest.name, update.manifest.version, self.target):
            return self._finish(DevicePhase.HEALTHY, update.label, "already active",
                                req.deployment_id)
        self._phase(DevicePhase.INSTALLING, update.label, None)
        short = self._space_shortfall(update)
        if short is not None:
            return self._finish(DevicePhase.FAILED, update.label, short, req.deployment_id)
        try:
            slot = self._stage(update, req)
        except EdgeOpsError as exc:
            return self._finish(DevicePhase.FAILED, update.label,
                                f"install failed: {exc.message}", req.deployment_id)
        except OSError as exc:
            return self._finish(DevicePhase.FAILED, update.label,
                                f"install failed: cannot write the slot ({exc.strerror})",
                                req.deployment_id)
        return self._activate_if_allowed(slot, update.label, req.deployment_id)

    def _activate_staged(self) -> InstallOutcome | None:
        """Finish a deferred install when policy now allows it; None if nothing is staged."""
        staged = self.staged()
        if staged is None:
            return None
        label = f"{staged.name}@{staged.version}"
        return self._activate_if_allowed(staged, label, staged.extra.get("deployment_id"))

    def staged(self) -> SlotInfo | None:
        """A committed slot the pointer does not name: verified, installed, awaiting policy."""
        p = self.store.pointer()
        for s in ("a", "b"):
            if s not in (p.active, p.previous):
                info = self.store.info(s)
                if info is not None:
                    return info
        return None

    def shortfall(self, info: SlotInfo) -> str | None:
        """Why this CPU would compute a committed slot's artifact wrongly (None: it would not,
        or the slot's manifest cannot be read, which loading it reports)."""
        try:
            manifest = Manifest.from_bytes(
                self.store.path(info.slot, SLOT_FILES["manifest"]).read_bytes())
        except (OSError, EdgeOpsError):
            return None
        entry = manifest.artifact_for(info.target)
        return isa_shortfall(entry, self.cpu) if entry is not None else None

    def _previous_shortfall(self) -> str | None:
        """Why the rollback slot must not serve on this CPU: installed before the agent checked
        the CPU (or found wanting at start and never served), it would give wrong outputs."""
        previous = self.store.pointer().previous
        back = self.store.info(previous) if previous else None
        wrong = self.shortfall(back) if back is not None else None
        if wrong is None:
            return None
        return f"will not roll back to {_label(back)}: {wrong}; enrol this device as x86-cpu"

    def _rollback(self, reason: str = "rollback requested by the fleet",
                 deployment_id: str | None = None) -> InstallOutcome:
        before = self.store.active()
        wrong = self._previous_shortfall()
        if wrong is not None:
            return self._finish(DevicePhase.FAILED, _label(before), wrong, deployment_id)
        if self.store.rollback() is None:
            return self._finish(DevicePhase.FAILED, _label(before),
                                "no previous model to roll back to", deployment_id)
        after = self.store.active()
        self._on_activate(after)
        return self._finish(DevicePhase.ROLLED_BACK, _label(before), reason, deployment_id)

    def _resume(self) -> InstallOutcome | None:
        """At start-up: finish the health check of a slot a crash left on trial."""
        p = self.store.recover()
        if not p.active:
            return None
        if not p.trial:
            return None
        info = self.store.info(p.active)
        assert info is not None  # recover() only keeps committed slots
        return self._check_and_settle(info, f"{info.name}@{info.version}",
                                      info.extra.get("deployment_id"))

    def last_outcome(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_bytes())
            return data
        except (OSError, ValueError):
            return None

    # -- steps ---------------------------------------------------------------------------
    def _stage(self, update: VerifiedUpdate, req: InstallRequest) -> SlotInfo:
        entry = update.entry
        model_file = f"model.{entry.format}"
        writer = self.store.begin_install()
        writer.write_bytes(SLOT_FILES["manifest"], req.manifest)
        writer.write_bytes(SLOT_FILES["signatures"], req.signatures)
        for name, src, ref in ((model_file, req.artifact, entry.file),
                               (SLOT_FILES["golden"], req.golden, entry.golden)):
            if src is None or ref is None:
                continue
            if isinstance(src, DeltaArtifact):
                self._stage_delta(writer, name, src, ref.sha256, ref.size, update.label)
            elif isinstance(src, bytes):
                writer.write_stream(name, io.BytesIO(src), ref.sha256, ref.size)
            else:
                writer.write_file(name, src, ref.sha256, ref.size)
        return writer.commit(name=update.manifest.name, version=update.manifest.version,
                             target=self.target, model_file=model_file,
                             extra={"deployment_id": req.deployment_id,
                                    "installed_at": self._clock(),
                                    "runtime": entry.runtime,
                                    "providers": list(entry.providers)})

    def _stage_delta(self, writer: SlotWriter, name: str, src: DeltaArtifact, sha256: str,
                     size: int, label: str) -> None:
        """Rebuild the artifact from the active model and the delta into the slot; on any
        failure fetch the full artifact and write that (saying why in an ``installing``
        report). The active slot is only read."""
        from edgeops.delta import FileId, apply_delta  # zstandard: only when a delta comes

        try:
            writer.write_from(name, lambda out: apply_delta(src.base, src.delta, out,
                                                            expect=FileId(sha256, size)),
                              sha256, size)
            return
        except EdgeOpsError as exc:
            why = exc.message
        except OSError as exc:                 # a full disk, an unreadable old model
            why = exc.strerror or str(exc)
        reason = f"delta failed ({why}); fetching the full artifact"
        log.warning("%s: %s", label, reason)
        self._phase(DevicePhase.INSTALLING, label, reason)
        writer.write_file(name, src.fallback(reason), sha256, size)

    def _space_shortfall(self, update: VerifiedUpdate) -> str | None:
        """Refuse early (nothing written) when the slot would not fit beside the reserve."""
        entry = update.entry
        need = entry.file.size + (entry.golden.size if entry.golden else 0) \
            + len(update.manifest.to_bytes()) + 64 * 1024
        pointer = self.store.pointer()
        inactive = "b" if pointer.active == "a" else "a"
        reclaimable = 0
        old = self.store.info(inactive)
        if old is not None:             # the inactive slot's files are deleted first
            reclaimable = sum(size for _, size in old.files.values())
        self.store.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.store.root).free + reclaimable
        if free - need < self.reserve_free_bytes:
            mib = 1024 * 1024
            return (f"not enough disk space: the model needs {need / mib:.1f} MiB, "
                    f"{free / mib:.1f} MiB are free and {self.reserve_free_bytes / mib:.0f} MiB "
                    "must stay free")
        return None

    def _activate_if_allowed(self, slot: SlotInfo, label: str,
                             deployment_id: str | None) -> InstallOutcome:
        decision: PolicyDecision = self.policy.evaluate()
        if not decision.allowed:
            return self._finish(DevicePhase.DEFERRED, label, decision.reason, deployment_id)
        self.store.activate(slot.slot, trial=True)
        self._phase(DevicePhase.ACTIVATED, label, None)
        return self._check_and_settle(slot, label, deployment_id)

    def _check_and_settle(self, slot: SlotInfo, label: str,
                          deployment_id: str | None) -> InstallOutcome:
        result = self._health(self.store.root / slot.slot, self.target)
        if result.ok:
            self.store.confirm()
            try:
                self._on_activate(slot)
            except EdgeOpsError as exc:
                result = HealthResult(False, f"serving process cannot load it: {exc.message}")
            else:
                return self._finish(DevicePhase.HEALTHY, label, None, deployment_id, result)
        reason = f"health check failed: {result.reason}"
        wrong = self._previous_shortfall()
        if wrong is not None or self.store.rollback() is None:
            self.store.deactivate()
            self._on_activate(None)
            return self._finish(DevicePhase.FAILED, label,
                                f"{reason}; {wrong or 'no previous model to go back to'}",
                                deployment_id, result)
        self._on_activate(self.store.active())
        return self._finish(DevicePhase.ROLLED_BACK, label, reason, deployment_id, result)

    def _phase(self, phase: DevicePhase, label: str | None, reason: str | None) -> None:
        self._on_phase(phase, label, reason)

    def _finish(self, phase: DevicePhase, label: str | None, reason: str | None,
                deployment_id: str | None,
                health: HealthResult | None = None) -> InstallOutcome:
        active = self.store.active()
        outcome = InstallOutcome(phase, label, reason, deployment_id,
                                 active.summary() if active else None, health, self._clock())
        atomic_write(self.state_file, json.dumps(outcome.to_dict(), sort_keys=True).encode())
        self._phase(phase, label, reason)
        return outcome


def _label(info: SlotInfo | None) -> str | None:
    return f"{info.name}@{info.version}" if info else None

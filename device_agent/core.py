"""The agent's local half assembled from its config: slots, installer, policy, inference, API.

Why it exists: the daemon (fleet connection, TUF, telemetry: :mod:`device_agent.daemon`) and
the ``agent`` CLI both need the same local machinery built the same way, started in the right
order (recover the slots, finish any install a crash left on trial, load the active model, open
the local API) and guarded against two agents sharing one state directory. The daemon only has
to feed :meth:`AgentCore.install` with what TUF downloaded and forward phases to the fleet.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Root

from device_agent import AGENT_VERSION
from device_agent.config import AgentConfig, parse_driving_signal
from device_agent.health import DEFAULT_HEALTH, HealthSettings
from device_agent.inference import InferenceService
from device_agent.installer import DeltaArtifact, Installer, InstallOutcome, InstallRequest
from device_agent.policy import InstallPolicy
from device_agent.slots import SlotInfo, SlotStore
from edgeops.cpu import CpuFacts, read_cpu_facts, target_shortfall
from edgeops.errors import ConfigError, EdgeOpsError
from edgeops.protocol.messages import DevicePhase
from edgeops.trust import trusted_targets_keys

__all__ = ["AgentCore", "AgentLock", "load_trusted_root", "request_from_fetched"]

log = logging.getLogger(__name__)

PhaseCallback = Callable[[DevicePhase, str | None, str | None], None]


def load_trusted_root(path: Path) -> Metadata[Root]:
    """The fleet's TUF root from the config (self-signature checked by python-tuf on parse)."""
    try:
        root = Metadata[Root].from_bytes(Path(path).read_bytes())
        root.verify_delegate("root", root)
    except FileNotFoundError:
        raise ConfigError(f"trust root {path} does not exist",
                          hint="copy the fleet's root.json (`edgeops keys init`) next to the "
                               "agent config, or enrol again") from None
    except Exception as exc:  # python-tuf raises several unrelated classes for bad metadata
        raise ConfigError(f"trust root {path} is not a valid self-signed TUF root ({exc})",
                          hint="re-provision the device with the fleet's root.json") from None
    return root


def request_from_fetched(fetched: Any, deployment_id: str | None) -> InstallRequest:
    """Turn :class:`device_agent.tuf_update.FetchedBundle` into the installer's input."""
    return InstallRequest(manifest=fetched.manifest_bytes, signatures=fetched.signatures_bytes,
                          artifact=(fetched.artifact if isinstance(fetched.artifact, DeltaArtifact)
                                    else Path(fetched.artifact)),
                          golden=Path(fetched.golden) if fetched.golden else None,
                          deployment_id=deployment_id, expect_name=fetched.name,
                          expect_version=fetched.version)


class AgentLock:
    """An exclusive ``flock`` on ``<data_dir>/agent.lock``: one agent per state directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "agent.lock"
        self._fd: int | None = None

    def acquire(self) -> AgentLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another agent is using {self.path.parent}",
                              hint="stop it first (systemctl stop edgeops-agent), or deploy "
                                   "through the fleet instead") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class AgentCore:
    """Slots + installer + policy + inference for one device, built from its config."""

    def __init__(self, config: AgentConfig, *, on_phase: PhaseCallback | None = None,
                 health_settings: HealthSettings = DEFAULT_HEALTH,
                 inference_threads: int = 1, cpu: CpuFacts | None = None) -> None:
        self.config = config
        # This CPU's flags decide which INT8 artifacts it computes correctly (edgeops.cpu).
        self.cpu = cpu if cpu is not None else read_cpu_facts()
        self.store = SlotStore(config.slots_dir)
        self.policy = InstallPolicy.from_config(config.policy)
        self.inference = InferenceService(threads=inference_threads)
        self._on_phase = on_phase
        self.root = load_trusted_root(config.trust.root)
        keys, threshold = trusted_targets_keys(self.root)
        self.installer = Installer(
            self.store, target=config.target, trusted=keys,  # type: ignore[arg-type]
            threshold=threshold, agent_version=AGENT_VERSION, policy=self.policy,
            health_settings=health_settings, on_phase=self._phase,
            on_activate=self._activate, state_file=config.data_dir / "install_state.json",
            cpu=self.cpu)
        self.api: Any = None            # device_agent.local_api.LocalApiServer when serving
        self._lock = AgentLock(config.data_dir)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, *, serve_api: bool = True) -> InstallOutcome | None:
        """Lock, recover, settle a trial left by a crash, load the active model, open the API.

        Returns the outcome of a resumed trial (the daemon reports it), if there was one.
        """
        self._lock.acquire()
        try:
            enrolment = target_shortfall(self.config.target, self.cpu)
            if enrolment is not None:
                # A warning, not a refusal: FP32 artifacts of the target still run correctly,
                # every INT8 one is refused at install and reported to the fleet, and a
                # running agent is one the fleet can see (docs/AGENT.md).
                log.warning("%s; enrol this device as x86-cpu", enrolment)
            resumed = self.installer.resume()
            active = self.store.active()
            wrong = self.installer.shortfall(active) if active is not None else None
            if wrong is not None and active is not None:
                # Installed before the agent checked the CPU: serving nothing is a clear
                # "no model" answer, serving it would be silently wrong outputs.
                log.error("active model %s@%s is not served: %s; enrol this device as x86-cpu",
                          active.name, active.version, wrong)
                if self.inference.model is not None:     # a resumed trial loaded it
                    self.inference.load_slot(self.store, None)
            elif active is not None and self.inference.model is None:
                try:
                    self.inference.load_slot(self.store, active)
                except EdgeOpsError as exc:
                    # The runtime changed under a model that was healthy before: go back.
                    log.error("active model does not load any more: %s", exc.message)
                    resumed = self.installer.rollback(f"active model no longer loads: "
                                                      f"{exc.message}")
            inf = self.config.inference
            if serve_api and (inf.http or inf.socket):
                from device_agent.local_api import LocalApiServer

                self.api = LocalApiServer(self.inference, http=inf.http_address,
                                          unix_socket=inf.socket).start()
        except BaseException:
            self.close()
            raise
        return resumed

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
            self.api = None
        self._lock.release()

    def __enter__(self) -> AgentCore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations the daemon calls -----------------------------------------------------
    def install(self, request: InstallRequest) -> InstallOutcome:
        return self.installer.install(request)

    def retry_deferred(self) -> InstallOutcome | None:
        """Call periodically: activates a staged install once policy allows it."""
        return self.installer.activate_staged()

    def rollback(self, deployment_id: str | None = None) -> InstallOutcome:
        return self.installer.rollback(deployment_id=deployment_id)

    def apply_config(self, body: dict[str, Any]) -> None:
        """A verified ``config`` command: today it may set ``driving_signal``."""
        if "driving_signal" in body:
            base = self.config.source.parent if self.config.source else Path.cwd()
            self.policy.driving.set_signal(parse_driving_signal(body["driving_signal"], base))

    def update_trust(self, root: Metadata[Root]) -> None:
        """After TUF rotated the root: the installer checks bundles against the new keys."""
        self.root = root
        keys, threshold = trusted_targets_keys(root)
        self.installer.trusted, self.installer.threshold = list(keys), threshold  # type: ignore[arg-type]

    def status(self) -> dict[str, Any]:
        model = self.inference.model
        return {"device_id": self.config.device_id, "target": self.config.target,
                "agent_version": AGENT_VERSION, **self.store.status(),
                "serving": model.describe() if model else None,
                "staged": (lambda s: s.summary() if s else None)(self.installer.staged()),
                "last_install": self.installer.last_outcome(),
                "policy": self.policy.describe(),
                "inference": self.inference.stats.snapshot()}

    # -- hooks ---------------------------------------------------------------------------
    def _phase(self, phase: DevicePhase, label: str | None, reason: str | None) -> None:
        log.info("install %s: %s%s", label or "-", phase.value, f" ({reason})" if reason else "")
        if self._on_phase is not None:
            self._on_phase(phase, label, reason)

    def _activate(self, info: SlotInfo | None) -> None:
        self.inference.load_slot(self.store, info)

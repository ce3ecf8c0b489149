"""The device under attack: the real agent pieces, wired the way the deploy flow wires them.

``device_agent.tuf_client`` (python-tuf ngclient over HTTP) downloads and proves the files,
``device_agent.installer.Installer`` verifies the bundle signature and installs into A/B slots
with the real isolated health check, and the model in the active slot is run with ONNX Runtime
to show what the device is serving. The agent daemon (command loop, state reports) is not part
of this harness: only the steps from "deploy tiny@2.0.0" to "installed or refused".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tuf.api.metadata import Metadata, Root

from device_agent.installer import Installer, InstallOutcome, InstallRequest
from device_agent.slots import SlotStore
from device_agent.tuf_update import TufClient, fetch_bundle
from edgeops.errors import EdgeOpsError
from edgeops.trust import trusted_targets_keys

__all__ = ["Device", "Serving"]

log = logging.getLogger("tests.security.device")
TARGET = "x86-cpu"
_X = np.random.default_rng(7).standard_normal((1, 4)).astype(np.float32)


@dataclass(frozen=True)
class Serving:
    """What the device serves now: the active bundle and the model's answer to a fixed input."""

    label: str | None
    output: tuple[float, ...] | None
    pointer: str


class Device:
    def __init__(self, home: Path, fleet_url: str, root_bytes: bytes) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        (home / "root.json").write_bytes(root_bytes)
        self.tuf = TufClient.over_http(home / "root.json", home / "tuf", fleet_url)
        root = Metadata[Root].from_bytes(root_bytes)
        keys, threshold = trusted_targets_keys(root)
        self.slots = SlotStore(home / "slots")
        self.installer = Installer(self.slots, target=TARGET, trusted=keys,  # type: ignore[arg-type]
                                   threshold=threshold)

    def deploy(self, name: str, version: str) -> InstallOutcome:
        """Fetch through TUF and install; raises the edgeops error TUF or the bundle caused."""
        try:
            fetched = fetch_bundle(self.tuf, name, version, TARGET)
        except EdgeOpsError as exc:
            log.warning("deploy %s@%s refused: %s", name, version, exc.message)
            raise
        return self.installer.install(InstallRequest(
            manifest=fetched.manifest_bytes, signatures=fetched.signatures_bytes,
            artifact=fetched.artifact, golden=fetched.golden, deployment_id=f"d-{version}",
            expect_name=name, expect_version=version))

    def serving(self) -> Serving:
        from edgeops.runtime import OnnxRunner

        pointer = self.slots.pointer()
        active = self.slots.active()
        if active is None:
            return Serving(None, None, pointer.to_bytes().decode())
        runner = OnnxRunner(self.slots.path(active.slot, active.model_file))
        try:
            out = next(iter(runner.run({"x": _X}).values()))
        finally:
            runner.close()
        return Serving(f"{active.name}@{active.version}",
                       tuple(round(float(v), 5) for v in out.ravel()),
                       pointer.to_bytes().decode())

    def staged_or_partial(self) -> list[str]:
        """Slot directories other than the active one that hold anything (should be none)."""
        active = self.slots.pointer().active
        out = []
        for s in ("a", "b"):
            d = self.slots.root / s
            if s != active and d.exists() and any(d.iterdir()):
                out.append(s)
        return out

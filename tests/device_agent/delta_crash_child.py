"""Child process for the delta kill test: installs from deltas, forever.

Run as ``python -m tests.device_agent.delta_crash_child SLOTS ROOT V1 V2 D12 D21``:
V1/V2 are bundles, D12/D21 the deltas between their artifacts. Each round installs the other
version as a delta from the active slot's model, rebuilt by the installer straight into the
inactive slot (as the agent does after a delta download). Reads of the old model are slowed
down (a slow flash chip) so the parent's SIGKILL often lands mid-reconstruction; it prints
``rebuild <version>`` before and ``rebuilt`` after each reconstruction so the parent knows
where the kill landed.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import edgeops.delta
import edgeops.delta.apply as ap
from device_agent.core import load_trusted_root
from device_agent.health import HealthSettings, check_slot
from device_agent.installer import DeltaArtifact, Installer, InstallRequest
from device_agent.slots import SlotStore
from device_agent.tuf_update import active_artifact
from edgeops.trust import trusted_targets_keys
from tests.device_agent.bundles import bundle_parts

FAST = HealthSettings(warmup_runs=1, timed_runs=3)


def _slow(real):  # type: ignore[no-untyped-def]
    def pread(f, offset, n):  # type: ignore[no-untyped-def]
        time.sleep(0.02)
        return real(f, offset, n)
    return pread


def main(slots: str, root: str, v1: str, v2: str, d12: str, d21: str) -> None:
    keys, threshold = trusted_targets_keys(load_trusted_root(Path(root)))
    store = SlotStore(Path(slots))
    inst = Installer(store, target="x86-cpu", trusted=keys,  # type: ignore[arg-type]
                     threshold=threshold, health=lambda d, t: check_slot(d, t, FAST))
    inst.resume()
    parts = {"1.0.0": bundle_parts(Path(v1)), "2.0.0": bundle_parts(Path(v2))}
    deltas = {"1.0.0": Path(d12), "2.0.0": Path(d21)}        # from the active version
    if store.active() is None:
        p = parts["1.0.0"]
        inst.install(InstallRequest(p.manifest, p.signatures, p.artifact, p.golden))
    ap._pread = _slow(ap._pread)  # type: ignore[assignment]
    real_apply = edgeops.delta.apply_delta

    def apply_and_say(*a, **kw):  # type: ignore[no-untyped-def]
        got = real_apply(*a, **kw)
        sys.stdout.write("rebuilt\n")
        sys.stdout.flush()
        return got

    edgeops.delta.apply_delta = apply_and_say  # type: ignore[assignment]

    def no_fallback(reason: str) -> Path:
        raise RuntimeError(f"the delta must apply: {reason}")

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        info = store.active()
        base = active_artifact(store)
        assert info is not None and base is not None
        new = parts["2.0.0" if info.version == "1.0.0" else "1.0.0"]
        sys.stdout.write(f"rebuild {info.version}\n")
        sys.stdout.flush()
        art = DeltaArtifact(base.path, deltas[info.version],
                            hashlib.sha256(new.artifact).hexdigest(), len(new.artifact),
                            no_fallback)
        inst.install(InstallRequest(new.manifest, new.signatures, art, new.golden))


if __name__ == "__main__":
    main(*sys.argv[1:7])

"""Child process for the installer kill test: installs good and bad bundles forever.

Run as ``python -m tests.device_agent.install_crash_child SLOTS ROOT BUNDLE...``; the parent
SIGKILLs it at a random instant (mid-verify, mid-write, on trial, mid-health-check, mid-rollback)
and checks that a restarted installer settles on a whole, healthy model.
"""

from __future__ import annotations

import sys
from pathlib import Path

from device_agent.core import load_trusted_root
from device_agent.health import HealthSettings, check_slot
from device_agent.installer import Installer, InstallRequest
from device_agent.slots import SlotStore
from edgeops.trust import trusted_targets_keys
from tests.device_agent.bundles import bundle_parts

FAST = HealthSettings(warmup_runs=1, timed_runs=3)


def main(slots: str, root: str, bundles: list[str]) -> None:
    keys, threshold = trusted_targets_keys(load_trusted_root(Path(root)))
    inst = Installer(SlotStore(Path(slots)), target="x86-cpu", trusted=keys,  # type: ignore[arg-type]
                     threshold=threshold, health=lambda d, t: check_slot(d, t, FAST))
    inst.resume()
    parts = [bundle_parts(Path(b)) for b in bundles]
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    i = 0
    while True:
        p = parts[i % len(parts)]
        inst.install(InstallRequest(p.manifest, p.signatures, p.artifact, p.golden))
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])

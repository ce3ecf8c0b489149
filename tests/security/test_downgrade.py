"""A stolen online manager key must not downgrade a device below the offline-signed floor.

The real agent daemon on the generated broker config (the rig of ``test_agent_e2e``: enrolled
device, mutual TLS, the attacker holding the manager's broker certificate *and* its online
``manager`` key). The fleet's offline targets key published tiny 1.0.0, 2.0.0 and 3.0.0 and set
the release floor of ``tiny`` to 2.0.0 (``edgeops publish --floor``). The device runs 3.0.0.
Every genuinely signed command that would take it below the floor is refused on the device and
reported on its ``state`` topic with the reason; an operator rollback within the floor (a
``--allow-downgrade`` deploy, and a ``rollback`` command) still works.
"""

from __future__ import annotations

import pytest

from edgeops.floors import raise_floor
from edgeops.protocol import DevicePhase, StateReport
from tests.security import test_agent_e2e as e2e
from tests.security.bundles import build_bundle
from tests.security.test_agent_e2e import ChunkResponder, Rig, _publish_metadata

pytestmark = pytest.mark.slow

# the enrolled device running the real daemon, its own instance in this module (fixture "rig")
rig = e2e.rig


def _active(rig: Rig) -> str:
    info = rig.agent.core.store.active()
    return f"{info.name}@{info.version}" if info else "nothing"


def _deploy(rig: Rig, version: str, dep: str, **extra: object) -> StateReport:
    """Send a deploy signed with the manager's online key; the terminal report it caused."""
    n = len(rig.reports())
    body = {"deployment_id": dep, "name": "tiny", "version": version, "target": "x86-cpu",
            **extra}
    with ChunkResponder(rig, tamper_suffix=None):
        rig.send(rig.command("deploy", body=body))
        return rig.wait_report(lambda r: r.deployment_id == dep and r.phase in (
            DevicePhase.HEALTHY, DevicePhase.FAILED, DevicePhase.ROLLED_BACK), n, timeout_s=60)


def _rollback(rig: Rig, dep: str) -> StateReport:
    n = len(rig.reports())
    rig.send(rig.command("rollback", body={"deployment_id": dep}))
    return rig.wait_report(lambda r: r.deployment_id == dep and r.phase in (
        DevicePhase.FAILED, DevicePhase.ROLLED_BACK), n, timeout_s=30)


@pytest.fixture(scope="module")
def floored(rig: Rig) -> Rig:
    """1.0.0, 2.0.0 and 3.0.0 signed offline, floor 2.0.0; the device upgraded to 3.0.0."""
    repo = rig.repo
    for version, seed in (("2.0.0", 2), ("3.0.0", 5)):
        if f"bundles/tiny/{version}/manifest.json" not in repo.targets.signed.targets:
            repo.add_bundle(rig.bundles.get(version) or build_bundle(
                rig.repo_dir, repo.targets_signers, version=version, seed=seed))
    repo.add_bundle(rig.bundles["1.0.0"])
    raise_floor(repo.targets.signed, "tiny", "2.0.0")
    repo.publish()                         # signed by the offline targets key(s)
    _publish_metadata(rig)
    rep = _deploy(rig, "3.0.0", "d-up")
    assert rep.phase is DevicePhase.HEALTHY, rep.reason
    assert _active(rig) == "tiny@3.0.0"
    return rig


@pytest.mark.parametrize("extra", [{}, {"downgrade": True}], ids=["plain", "as-rollback"])
def test_forged_deploy_below_the_floor_is_refused_and_reported(
        floored: Rig, extra: dict[str, object], attack) -> None:
    """The issue's attack: online key, a bundle the offline key once signed, older than now."""
    before = floored.serving()
    rep = _deploy(floored, "1.0.0", f"d-evil-{len(extra)}", **extra)
    assert rep.phase is DevicePhase.FAILED
    assert "below the release floor 2.0.0" in (rep.reason or "")
    assert rep.bundle == "tiny@1.0.0"
    assert floored.serving() == before and _active(floored) == "tiny@3.0.0"
    assert any("downgrade refused" in r.getMessage() for r in floored.agent_log.records)
    attack(f"agent: online-key deploy below the floor ({'rollback flag' if extra else 'plain'})",
           "FAILED reported, 3.0.0 serving", (rep.reason or "")[:60])


def test_rollback_command_below_the_floor_is_refused(floored: Rig, attack) -> None:
    """The previous slot holds 1.0.0, below the floor: a rollback command may not go there."""
    before = floored.serving()
    assert _active(floored) == "tiny@3.0.0"
    rep = _rollback(floored, "d-evil-rollback")
    assert rep.phase is DevicePhase.FAILED
    assert "tiny@1.0.0 is below the release floor 2.0.0" in (rep.reason or "")
    assert floored.serving() == before
    attack("agent: rollback command below the floor", "FAILED reported, 3.0.0 serving",
           (rep.reason or "")[:60])


def test_operator_rollback_within_the_floor_succeeds(floored: Rig, attack) -> None:
    # not marked as a rollback: older than installed is refused, with the reason
    rep = _deploy(floored, "2.0.0", "d-plain-down")
    assert rep.phase is DevicePhase.FAILED
    assert "older than the installed 3.0.0" in (rep.reason or "")
    assert _active(floored) == "tiny@3.0.0"
    # `edgeops fleet deploy tiny@2.0.0 --allow-downgrade`: at the floor, accepted
    rep = _deploy(floored, "2.0.0", "d-back", downgrade=True)
    assert rep.phase is DevicePhase.HEALTHY, rep.reason
    assert _active(floored) == "tiny@2.0.0"
    attack("operator rollback deploy to the floor (2.0.0)", "HEALTHY", "HEALTHY, 2.0.0 serving")
    # forward again, then a `rollback` command to the previous slot (2.0.0, at the floor)
    assert _deploy(floored, "3.0.0", "d-up-again").phase is DevicePhase.HEALTHY
    rep = _rollback(floored, "d-up-again")
    assert rep.phase is DevicePhase.ROLLED_BACK, rep.reason
    assert _active(floored) == "tiny@2.0.0"
    attack("operator rollback command within the floor", "ROLLED_BACK", "rolled back to 2.0.0")

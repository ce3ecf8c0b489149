"""Release floors at the manager: published with the offline signature, only ever raised, and
``fleet deploy --allow-downgrade`` marking the deploy command as an operator rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root, Targets

from edgeops.bundle import read_bundle
from edgeops.errors import VerificationError
from edgeops.floors import FLOORS_FIELD, floors_of
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from fleet.repository import sign_targets_update, targets_update
from fleet.rollout import Strategy
from fleet.store import Store
from tests.edgeops.bundles import PASSPHRASE
from tests.fleet.fakes import FakeDeviceChannel
from tests.fleet.helpers import engine, enrol, repository


def _root(keys: KeyStore) -> Metadata[Root]:
    return Metadata[Root].from_file(str(root_path(keys)))


def _latest_floors(store: Store) -> dict[str, str]:
    latest = store.latest_metadata("targets")
    assert latest is not None
    return floors_of(Metadata[Targets].from_bytes(latest[1]).signed)


def test_floor_is_published_and_raised_for_an_already_published_bundle(
        store: Store, keystore: KeyStore, bundles: dict[str, Path]) -> None:
    repo = repository(store, keystore)
    signer = keystore.signer("targets", PASSPHRASE)
    b1 = read_bundle(bundles["1.0.0"])
    r = repo.publish(bundles["1.0.0"], sign_targets_update(None, b1, _root(keystore), signer,
                                                           floor="1.0.0"))
    assert r.targets_version == 1 and _latest_floors(store) == {"tiny": "1.0.0"}
    b2 = read_bundle(bundles["1.1.0"])
    r = repo.publish(bundles["1.1.0"], sign_targets_update(repo.current_targets(), b2,
                                                           _root(keystore), signer))
    assert r.targets_version == 2 and _latest_floors(store) == {"tiny": "1.0.0"}   # carried
    # raising the floor needs no new bundle: 1.1.0 again, with --floor 1.1.0
    r = repo.publish(bundles["1.1.0"], sign_targets_update(repo.current_targets(), b2,
                                                           _root(keystore), signer,
                                                           floor="1.1.0"))
    assert r.targets_version == 3 and _latest_floors(store) == {"tiny": "1.1.0"}
    # the same bundle with the same floor again: nothing to do
    again = repo.publish(bundles["1.1.0"], sign_targets_update(
        repo.current_targets(), b2, _root(keystore), signer))
    assert not again.new and again.targets_version == 3


@pytest.mark.parametrize("floors", [{}, {"tiny": "1.0.0"}])
def test_an_update_that_lowers_or_drops_a_floor_is_refused(
        store: Store, keystore: KeyStore, bundles: dict[str, Path], floors: dict[str, str]
        ) -> None:
    """Signed offline or not, a floor never goes down (the publisher's CLI refuses it too)."""
    repo = repository(store, keystore)
    signer = keystore.signer("targets", PASSPHRASE)
    b = read_bundle(bundles["1.1.0"])
    repo.publish(bundles["1.1.0"], sign_targets_update(None, b, _root(keystore), signer,
                                                       floor="1.1.0"))
    md = targets_update(repo.current_targets(), read_bundle(bundles["1.0.0"]), _root(keystore))
    md.signed.unrecognized_fields[FLOORS_FIELD] = floors
    md.sign(signer)
    with pytest.raises(VerificationError, match="lowers the release floor of tiny"):
        repo.publish(bundles["1.0.0"], md.to_bytes())
    assert _latest_floors(store) == {"tiny": "1.1.0"} and store.get_bundle("tiny", "1.0.0") is None


def test_allow_downgrade_marks_the_deploy_command(store: Store, keystore: KeyStore,
                                                  bundles: dict[str, Path]) -> None:
    from tests.fleet.helpers import publish

    repo = repository(store, keystore)
    for b in bundles.values():
        publish(repo, keystore, b)
    enrol(store, 2)
    ch = FakeDeviceChannel()
    eng = engine(store, keystore, ch)
    plain = eng.create("tiny", "1.0.0", "all", Strategy())
    eng.step(plain.id)
    assert all("downgrade" not in c.command.body for c in ch.desired.values())
    back = eng.create("tiny", "1.0.0", "all", Strategy(allow_downgrade=True))
    eng.step(back.id)
    bodies = [c.command.body for _d, c in ch.desired_log if c.command.body.get(
        "deployment_id") == back.id]
    assert bodies and all(b["downgrade"] is True for b in bodies)
    assert Strategy.from_dict(Strategy(allow_downgrade=True).to_dict()).allow_downgrade
    assert not Strategy.from_dict({}).allow_downgrade      # strategies stored before: no flag


def test_publish_floor_from_the_cli(keystore: KeyStore, bundles: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fleet.live import cli_fleet, run_cli

    def run(*argv: str) -> tuple[int, str, str]:
        return run_cli(capsys, *argv)

    with cli_fleet(keystore, tmp_path, monkeypatch) as lf:
        code, _, err = run("publish", str(bundles["1.1.0"]), "--floor", "1.1.0")
        assert code == 0, err
        before = lf.server.store.latest_metadata("targets")
        code, _, err = run("publish", str(bundles["1.0.0"]), "--floor", "1.0.0")
        assert code == 2 and "the floor of tiny is already 1.1.0; floors never go down" in err
        assert lf.server.store.latest_metadata("targets") == before      # nothing published
        code, _, err = run("publish", str(bundles["1.0.0"]))     # older bundle, floor kept
        assert code == 0, err
        assert _latest_floors(lf.server.store) == {"tiny": "1.1.0"}
        code, _, err = run("publish", str(bundles["1.0.0"]), "--sign-only")
        assert code == 2 and "--sign-only needs -o/--out" in err
        code, _, err = run("publish", str(bundles["1.0.0"]), "--with-signatures",
                           str(bundles["1.0.0"]), "--floor", "1.2.0")
        assert code == 2 and "uploads an update as it was signed" in err
        code, out, err = run("publish", str(bundles["1.0.0"]), "--sign-only", "-o",
                             str(tmp_path / "p.json"))
        assert code == 0 and "1 of 1 required" in out and "next:" not in out, err
        enrol(lf.server.store, 1)
        code, out, err = run("fleet", "deploy", "tiny@1.1.0", "--allow-downgrade", "--json")
        assert code == 0, err
        dep = lf.server.store.get_deployment(json.loads(out)["id"])
        assert dep is not None and dep.strategy["allow_downgrade"] is True


def test_a_refused_downgrade_shows_in_the_deployment_status(store: Store, keystore: KeyStore,
                                                            bundles: dict[str, Path]) -> None:
    """What the agent reports (tests/security/test_downgrade.py) lands on the device's row."""
    from edgeops.protocol import DevicePhase, StateReport
    from tests.fleet.helpers import publish

    repo = repository(store, keystore)
    for b in bundles.values():
        publish(repo, keystore, b)
    (dev,) = enrol(store, 1)
    eng = engine(store, keystore, FakeDeviceChannel())
    dep = eng.create("tiny", "1.0.0", "all", Strategy())
    eng.step(dep.id)
    reason = ("downgrade refused: tiny@1.0.0 is below the release floor 1.1.0 signed offline "
              "in the TUF targets")
    device = store.get_device(dev)
    assert device is not None
    assert eng.record_state(StateReport(dev, device.last_state_seq + 1, 1.0, DevicePhase.FAILED,
                                        dep.id, "tiny@1.0.0", reason))
    (row,) = store.deployment_devices(dep.id)
    assert (row.state, row.reason) == ("failed", reason)

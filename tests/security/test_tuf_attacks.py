"""Every TUF attack class against the real device-side code, with a model already serving.

Each test: the device runs tiny@1.0.0 (installed through TUF, health-checked); the attacker
then tries to get tiny@2.0.0 (or something else) onto it by making the repository lie. The
attack must be refused with a bad-content error, nothing staged, and the device must still
serve the old model with the same answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from edgeops.errors import VerificationError
from edgeops.keys import KeyStore
from edgeops.protocol import DevicePhase
from tests.edgeops.bundles import make_keystore
from tests.security.bundles import build_bundle
from tests.security.device import Device
from tests.tuf_repo import HttpRepoServer, TufRepo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("keys"))


def _bundles(tmp: Path, repo: TufRepo) -> tuple[Path, Path]:
    return (build_bundle(tmp, repo.targets_signers, version="1.0.0", seed=1),
            build_bundle(tmp, repo.targets_signers, version="2.0.0", seed=2))


class World:
    """One repository, its HTTP server and one device serving tiny@1.0.0."""

    def __init__(self, tmp: Path, store: KeyStore, threshold: int = 1) -> None:
        self.repo = TufRepo(store, targets_threshold=threshold)
        self.v1, self.v2 = _bundles(tmp / "bundles", self.repo)
        self.repo.add_bundle(self.v1)
        self.repo.publish()
        self.http = HttpRepoServer(self.repo)
        self.device = Device(tmp / "device", self.http.url, self.repo.root_bytes)
        outcome = self.device.deploy("tiny", "1.0.0")
        assert outcome.phase is DevicePhase.HEALTHY, outcome.reason
        self.before = self.device.serving()
        assert self.before.label == "tiny@1.0.0" and self.before.output

    def assert_untouched(self) -> None:
        now = self.device.serving()
        assert now == self.before, "the device no longer serves the old model unchanged"
        assert self.device.staged_or_partial() == []


@pytest.fixture
def world(tmp_path: Path, store: KeyStore, caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    caplog.set_level(logging.WARNING)
    w = World(tmp_path, store)
    try:
        yield w
    finally:
        w.http.close()


def _refused(world: World, caplog: pytest.LogCaptureFixture, match: str,
             version: str = "2.0.0") -> str:
    with pytest.raises(VerificationError, match=match) as info:
        world.device.deploy("tiny", version)
    world.assert_untouched()
    assert "refused" in caplog.text
    msg = info.value.message
    # drop the "TUF refresh: " / "download of <path>: " prefix for the summary table
    return msg.split(": ", 1)[1] if msg.startswith(("TUF ", "download of ")) else msg


def test_baseline_legitimate_update_installs(world: World) -> None:
    """Control: without an attack the same path installs 2.0.0 (so refusals mean something)."""
    world.repo.add_bundle(world.v2)
    world.repo.publish()
    outcome = world.device.deploy("tiny", "2.0.0")
    assert outcome.phase is DevicePhase.HEALTHY
    after = world.device.serving()
    assert after.label == "tiny@2.0.0" and after.output != world.before.output


def test_arbitrary_installation_replaced_artifact(world: World, caplog, attack) -> None:
    """Network attacker swaps the model bytes for the listed target file."""
    world.repo.add_bundle(world.v2)
    world.repo.publish()
    for path, data in list(world.repo.target_files.items()):
        if path.startswith("bundles/tiny/2.0.0/artifacts/") and path.endswith("model.onnx"):
            evil = bytearray(data)
            evil[-1] ^= 0x01                    # same length, other content
            world.http.overrides["/tuf/targets/" + path] = bytes(evil)
    msg = _refused(world, caplog, "length or hash mismatch")
    attack("arbitrary installation (swapped artifact)", "refused, old model serving",
           msg[:60])


def test_arbitrary_installation_unsigned_targets(world: World, caplog, attack) -> None:
    """A compromised manager (online keys only) lists an evil bundle in targets."""
    world.repo.add_bundle(world.v2)
    world.repo.publish(targets_signers=[world.repo.online["snapshot"]])
    msg = _refused(world, caplog, "not signed by trusted keys")
    attack("compromised manager signs targets (online key)", "refused, old model serving",
           msg[:60])


def test_rollback_of_metadata(world: World, caplog, attack) -> None:
    """After seeing version 3, the device is served the older, validly signed version 2."""
    world.repo.add_bundle(world.v2)
    world.repo.publish()
    world.device.tuf.refresh()                  # device has now seen the newest metadata
    world.repo.metadata["timestamp.json"] = world.repo.history[-1]["timestamp.json"]
    msg = _refused(world, caplog, "rollback|version")
    attack("rollback (older signed timestamp)", "refused, old model serving", msg[:60])


def test_indefinite_freeze(world: World, caplog, attack) -> None:
    """The repository keeps serving metadata that has expired."""
    world.repo.add_bundle(world.v2)
    world.repo.publish(timestamp_expires=datetime.now(UTC) - timedelta(minutes=1))
    msg = _refused(world, caplog, "expired")
    attack("indefinite freeze (expired timestamp)", "refused, old model serving", msg[:60])


def test_mix_and_match_metadata(world: World, caplog, attack) -> None:
    """Snapshot names targets version N, but an older targets file is served under N."""
    world.repo.add_bundle(world.v2)
    world.repo.publish()
    v = world.repo.targets.signed.version
    world.repo.metadata[f"{v}.targets.json"] = world.repo.history[-1][f"{v - 1}.targets.json"]
    msg = _refused(world, caplog, "mix-and-match")
    attack("mix-and-match (old targets as new)", "refused, old model serving", msg[:60])


def test_mix_and_match_bundle(world: World, caplog, attack, tmp_path: Path) -> None:
    """Validly signed pieces of different releases: 1.0.0's manifest listed as 2.0.0's."""
    from edgeops.bundle import read_bundle

    b1 = read_bundle(world.v1)
    base = "bundles/tiny/2.0.0"
    world.repo.add_target(f"{base}/manifest.json", b1.manifest_bytes)
    world.repo.add_target(f"{base}/signatures.json", b1.signatures.to_bytes())
    for ref in b1.manifest.files():
        world.repo.add_target(f"{base}/{ref.path}", b1.read_file(ref.path))
    world.repo.publish()
    msg = _refused(world, caplog, "mix-and-match")
    attack("mix-and-match (1.0.0 files as 2.0.0)", "refused, old model serving", msg[:60])


def test_endless_metadata(world: World, caplog, attack) -> None:
    world.repo.add_bundle(world.v2)
    world.repo.publish()
    world.http.endless.add("/tuf/metadata/timestamp.json")
    with pytest.raises(VerificationError, match="more than the signed length|length"):
        world.device.deploy("tiny", "2.0.0")
    world.assert_untouched()
    attack("endless data (timestamp.json)", "refused at the length cap",
           "DownloadLengthMismatch, old model serving")


def test_endless_target(world: World, caplog, attack) -> None:
    world.repo.add_bundle(world.v2)
    world.repo.publish()
    for path in list(world.repo.target_files):
        if path.startswith("bundles/tiny/2.0.0/artifacts/") and path.endswith("model.onnx"):
            world.http.endless.add("/tuf/targets/" + path)
    msg = _refused(world, caplog, "more than the signed length|length")
    attack("endless data (artifact)", "refused at the signed length", msg[:60])


def test_key_compromise_below_threshold(tmp_path: Path, store: KeyStore, caplog,
                                        attack) -> None:
    """Targets needs 2 of 2 keys; the attacker holds one of them (and signs the bundle too)."""
    caplog.set_level(logging.WARNING)
    w = World(tmp_path, store, threshold=2)
    try:
        stolen = w.repo.targets_signers[:1]
        evil = build_bundle(tmp_path / "evil", stolen, version="2.0.0", seed=3)
        w.repo.add_bundle(evil)
        w.repo.publish(targets_signers=stolen)
        msg = _refused(w, caplog, "not signed by trusted keys|threshold")
        attack("key compromise below threshold (1 of 2)", "refused, old model serving",
               msg[:60])
    finally:
        w.http.close()


def test_foreign_root_key_cannot_rotate_root(world: World, caplog, attack) -> None:
    """A new root version signed by an attacker's key is not accepted as the next root."""
    from tuf.api.metadata import Metadata, Root
    from tuf.api.serialization.json import JSONSerializer

    root = Metadata[Root].from_bytes(world.repo.root_bytes)
    evil_key = CryptoSigner.generate_ed25519()
    root.signed.version = 2
    for keyid in list(root.signed.roles["targets"].keyids):
        root.signed.revoke_key(keyid, "targets")
    root.signed.add_key(evil_key.public_key, "targets")
    root.signatures.clear()
    root.sign(evil_key)
    world.repo.metadata["2.root.json"] = root.to_bytes(JSONSerializer(compact=True))
    world.repo.add_bundle(world.v2)
    world.repo.publish()
    msg = _refused(world, caplog, "not signed by trusted keys|root")
    attack("root rotation signed by a foreign key", "refused, old model serving", msg[:60])
    assert json.loads((world.device.home / "tuf" / "metadata" / "root.json").read_bytes())[
        "signed"]["version"] == 1

"""TUF repository side: publish checks, metadata chain, and a real ngclient reading it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root
from tuf.ngclient import FetcherInterface, Updater

from edgeops.bundle import read_bundle
from edgeops.errors import InvalidBundleError, VerificationError
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from fleet.errors import ConflictError, NotFoundError
from fleet.repository import Repository, sign_targets_update
from fleet.store import Store
from tests.edgeops.bundles import PASSPHRASE, make_bundle, make_keystore
from tests.fleet.fakes import FakeDeviceChannel
from tests.fleet.helpers import publish, repository


def _root(keys: KeyStore) -> Metadata[Root]:
    return Metadata[Root].from_file(str(root_path(keys)))


class RepoFetcher(FetcherInterface):
    """ngclient transport straight into Repository (the HTTP route does the same calls)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def _fetch(self, url: str):  # type: ignore[no-untyped-def]
        from tuf.api.exceptions import DownloadHTTPError

        try:
            if url.startswith("mem://m/"):
                return iter([self.repo.metadata(url.removeprefix("mem://m/"))])
            return iter([self.repo.target_file(url.removeprefix("mem://t/")).read_bytes()])
        except NotFoundError:
            raise DownloadHTTPError("not found", 404) from None


def test_publish_then_device_side_ngclient_downloads_only_its_target(
        store: Store, keystore: KeyStore, bundles: dict[str, Path], tmp_path: Path) -> None:
    channel = FakeDeviceChannel()
    repo = repository(store, keystore, channel)
    publish(repo, keystore, bundles["1.0.0"])
    publish(repo, keystore, bundles["1.1.0"])
    assert store.latest_metadata("targets") is not None
    assert {"2.targets.json", "2.snapshot.json", "timestamp.json"} <= set(channel.metadata)
    meta_dir = tmp_path / "device-meta"
    meta_dir.mkdir()
    up = Updater(str(meta_dir), "mem://m/", str(tmp_path / "dl"), "mem://t/",
                 fetcher=RepoFetcher(repo), bootstrap=root_path(keystore).read_bytes())
    up.refresh()
    info = up.get_targetinfo("bundles/tiny/1.1.0/artifacts/x86-cpu/model.onnx")
    assert info is not None
    (tmp_path / "dl").mkdir()
    got = up.download_target(info)
    b = read_bundle(bundles["1.1.0"])
    assert Path(got).read_bytes() == b.read_file("artifacts/x86-cpu/model.onnx")
    assert up.get_targetinfo("bundles/tiny/1.0.0/manifest.json") is not None


def test_republishing_the_same_bundle_is_idempotent(store: Store, keystore: KeyStore,
                                                    bundles: dict[str, Path]) -> None:
    repo = repository(store, keystore)
    root = _root(keystore)
    targets = sign_targets_update(None, read_bundle(bundles["1.0.0"]), root,
                                  keystore.signer("targets", PASSPHRASE))
    assert repo.publish(bundles["1.0.0"], targets).new
    assert not repo.publish(bundles["1.0.0"], targets).new
    with pytest.raises(ConflictError):                        # stale version from a 2nd client
        repo.publish(bundles["1.1.0"], targets)


def test_unsigned_or_foreign_signed_bundle_is_refused(store: Store, keystore: KeyStore,
                                                      tmp_path: Path) -> None:
    foreign = make_keystore(tmp_path / "mallory")
    evil = make_bundle(tmp_path, foreign, version="6.6.6")
    repo = repository(store, keystore)
    targets = sign_targets_update(None, read_bundle(evil), _root(keystore),
                                  keystore.signer("targets", PASSPHRASE))
    with pytest.raises(VerificationError, match="not signed by a trusted targets key"):
        repo.publish(evil, targets)
    assert store.list_bundles() == [] and store.latest_metadata("targets") is None


def test_tampered_bundle_is_refused_and_nothing_is_stored(store: Store, keystore: KeyStore,
                                                          bundles: dict[str, Path],
                                                          tmp_path: Path) -> None:
    bad = tmp_path / "tampered.edgebundle"
    data = bytearray(bundles["1.0.0"].read_bytes())
    b = read_bundle(bundles["1.0.0"])
    off = b._members["artifacts/x86-cpu/model.onnx"].offset_data + 40
    data[off] ^= 0xFF
    bad.write_bytes(bytes(data))
    repo = repository(store, keystore)
    targets = sign_targets_update(None, b, _root(keystore), keystore.signer("targets", PASSPHRASE))
    with pytest.raises(VerificationError, match="SHA-256"):
        repo.publish(bad, targets)
    assert store.list_bundles() == [] and store.latest_metadata("snapshot") is None
    trunc = tmp_path / "trunc.edgebundle"
    trunc.write_bytes(bytes(data[:2000]))
    with pytest.raises(InvalidBundleError):
        repo.publish(trunc, targets)


def test_targets_metadata_must_be_signed_offline_and_pin_the_bundle(
        store: Store, keystore: KeyStore, bundles: dict[str, Path]) -> None:
    repo = repository(store, keystore)
    b = read_bundle(bundles["1.0.0"])
    # signed with the manager's online key instead of the offline targets key
    wrong = sign_targets_update(None, b, _root(keystore), keystore.signer("manager"))
    with pytest.raises(VerificationError, match="not signed by the targets key"):
        repo.publish(bundles["1.0.0"], wrong)
    # properly signed, but for another bundle: does not pin this one's files
    other = sign_targets_update(None, read_bundle(bundles["1.1.0"]), _root(keystore),
                                keystore.signer("targets", PASSPHRASE))
    with pytest.raises(VerificationError, match="does not pin"):
        repo.publish(bundles["1.0.0"], other)
    with pytest.raises(VerificationError, match="malformed"):
        repo.publish(bundles["1.0.0"], b"{not json")
    assert store.list_bundles() == []


def test_metadata_names_and_targets_are_served_strictly(store: Store, keystore: KeyStore,
                                                        bundles: dict[str, Path]) -> None:
    repo = repository(store, keystore)
    assert repo.metadata("1.root.json") == repo.metadata("root.json")
    for bad in ("../etc/passwd", "settings.json", "x.json"):
        with pytest.raises(NotFoundError):
            repo.metadata(bad)
    with pytest.raises(NotFoundError):
        repo.metadata("timestamp.json")                        # nothing published yet
    publish(repo, keystore, bundles["1.0.0"])
    sha = read_bundle(bundles["1.0.0"]).manifest.artifacts[0].file.sha256
    assert repo.target_file(f"bundles/tiny/1.0.0/artifacts/x86-cpu/{sha}.model.onnx").is_file()
    with pytest.raises(NotFoundError):
        repo.target_file("bundles/tiny/1.0.0/model.onnx")
    assert not repo.refresh()                                  # fresh timestamp: nothing to do


def test_an_unsigned_bundle_is_refused(store: Store, keystore: KeyStore, bundles: dict[str, Path],
                                       tmp_path: Path) -> None:
    from edgeops.bundle import write_bundle

    signed = read_bundle(bundles["1.0.0"])
    files = {}
    for ref in signed.manifest.files():
        files[ref.path] = signed.extract_file(ref.path, tmp_path / "x" / ref.path)
    unsigned = write_bundle(tmp_path / "unsigned.edgebundle", signed.manifest, files, [])
    repo = repository(store, keystore)
    targets = sign_targets_update(None, read_bundle(unsigned), _root(keystore),
                                  keystore.signer("targets", PASSPHRASE))
    with pytest.raises(VerificationError, match="unsigned"):
        repo.publish(unsigned, targets)
    assert store.list_bundles() == [] and store.latest_metadata("targets") is None

"""The agent fetches a delta when one fits its active model, and the full artifact otherwise.

Real TUF repository and keys (tests/tuf_repo.py); the delta is a signed target like any other.
Every way a delta can be bad ends in the full artifact, with the reason in ``Delivery``, and
the base (the active slot's model) untouched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import device_agent.tuf_update as tu
from device_agent.installer import DeltaArtifact
from device_agent.tuf_client import DownloadLimits, MqttTufTransport
from device_agent.tuf_update import ActiveArtifact, TufClient, fetch_bundle
from edgeops.bundle import read_bundle
from edgeops.delta import delta_target_path, diff_artifacts
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from tests.device_agent.net.fake_manager import FakeManager
from tests.device_agent.net.helpers import Pump, make_bundle2, mqtt_link
from tests.edgeops.bundles import make_keystore
from tests.mosquitto import MosquittoBroker
from tests.tuf_repo import HttpRepoServer, TufRepo

DEV = "cam-17"
TARGET = "x86-cpu"
ART = f"artifacts/{TARGET}/model.onnx"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def versions(keys: KeyStore, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, Path]:
    """(v1 artifact, v2 artifact, v2 bundle)."""
    tmp = tmp_path_factory.mktemp("bundles")
    v1 = read_bundle(make_bundle2(tmp, keys, version="1.0.0", seed=0)).read_file(ART)
    b2 = make_bundle2(tmp, keys, version="2.0.0", seed=10)
    return v1, read_bundle(b2).read_file(ART), b2


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _repo(keys: KeyStore, versions: tuple[bytes, bytes, Path], delta: bytes | None) -> TufRepo:
    v1, v2, b2 = versions
    r = TufRepo(keys)
    r.add_bundle(b2)
    if delta is not None:
        r.add_target(delta_target_path("tiny", "2.0.0", TARGET, _sha(v1), _sha(v2)), delta)
    r.publish()
    return r


@pytest.fixture
def base(tmp_path: Path, versions: tuple[bytes, bytes, Path]) -> ActiveArtifact:
    p = tmp_path / "slots" / "a" / "model.onnx"
    p.parent.mkdir(parents=True)
    p.write_bytes(versions[0])
    return ActiveArtifact(p, _sha(versions[0]), len(versions[0]))


def _fetch(tmp_path: Path, keys: KeyStore, repo: TufRepo, base: ActiveArtifact | None,
           ) -> tuple[tu.FetchedBundle, HttpRepoServer]:
    server = HttpRepoServer(repo)
    try:
        client = TufClient.over_http(root_path(keys), tmp_path / "tuf", server.url,
                                     DownloadLimits(http_timeout_s=5))
        return fetch_bundle(client, "tiny", "2.0.0", TARGET, active=base), server
    finally:
        server.close()


def _full_requested(server: HttpRepoServer, v2: bytes) -> bool:
    return any(f"/{_sha(v2)}.model.onnx" in p for p in server.requests)


def test_delta_is_used_when_it_starts_from_the_active_model(
        tmp_path: Path, keys: KeyStore, versions: tuple[bytes, bytes, Path],
        base: ActiveArtifact) -> None:
    v1, v2, _ = versions
    delta = diff_artifacts(v1, v2).to_bytes()
    fb, server = _fetch(tmp_path, keys, _repo(keys, versions, delta), base)
    assert isinstance(fb.artifact, DeltaArtifact)          # rebuilt by the installer, in a slot
    assert fb.artifact_path(tmp_path / "rebuilt").read_bytes() == v2
    assert fb.delivery is not None and fb.delivery.method == "delta"
    assert (fb.delivery.fetched_bytes, fb.delivery.full_bytes) == (len(delta), len(v2))
    assert not _full_requested(server, v2)
    assert any(p.endswith(".edgedelta") for p in server.requests)


def test_an_artifact_already_cached_is_neither_fetched_nor_rebuilt(
        tmp_path: Path, keys: KeyStore, versions: tuple[bytes, bytes, Path],
        base: ActiveArtifact) -> None:
    v1, v2, _ = versions
    repo = _repo(keys, versions, diff_artifacts(v1, v2).to_bytes())
    _fetch(tmp_path, keys, repo, None)                        # fetched in full once
    fb, server = _fetch(tmp_path, keys, repo, base)           # same TUF cache directory
    assert fb.artifact.read_bytes() == v2
    assert fb.delivery is not None and (fb.delivery.method, fb.delivery.fetched_bytes) == (
        "cached", 0)
    assert not any(p.endswith(".edgedelta") for p in server.requests)
    assert not _full_requested(server, v2)


def test_no_delta_for_the_active_version_fetches_full_and_says_why(
        tmp_path: Path, keys: KeyStore, versions: tuple[bytes, bytes, Path],
        base: ActiveArtifact) -> None:
    v1, v2, _ = versions
    other = base.path.with_name("other.onnx")
    other.write_bytes(v1 + b"\0")                        # a version the fleet made no delta from
    fb, server = _fetch(tmp_path, keys, _repo(keys, versions, diff_artifacts(v1, v2).to_bytes()),
                        ActiveArtifact(other, _sha(v1 + b"\0"), len(v1) + 1))
    assert fb.artifact.read_bytes() == v2
    assert fb.delivery is not None and fb.delivery.method == "full"
    assert "no delta from the active model" in str(fb.delivery.reason)
    assert not fb.delivery.delta_failed          # nothing went wrong: no state report needed
    assert _full_requested(server, v2)


def test_without_an_active_model_no_delta_is_looked_for(
        tmp_path: Path, keys: KeyStore, versions: tuple[bytes, bytes, Path]) -> None:
    fb, server = _fetch(tmp_path, keys, _repo(keys, versions, None), None)
    assert fb.delivery is not None and (fb.delivery.method, fb.delivery.reason) == ("full", None)
    assert not any(".edgedelta" in p for p in server.requests)


def _bad_deltas(v1: bytes, v2: bytes) -> dict[str, tuple[bytes, str]]:
    """Deltas the agent refuses from their header, before the install (a corrupt payload is
    found while rebuilding: tests/device_agent/test_installer_delta.py)."""
    good = diff_artifacts(v1, v2).to_bytes()
    return {
        "truncated": (good[:-7], "truncated or padded"),
        # signed and well-formed, but made from another model than the one its name says
        "mismatched": (diff_artifacts(v1 + b"x", v2).to_bytes(), "does not hold"),
        "wrong result": (diff_artifacts(v1, v2 + b"x").to_bytes(), "not the signed artifact"),
    }


@pytest.mark.parametrize("case", ["truncated", "mismatched", "wrong result"])
def test_bad_signed_delta_falls_back_to_full_and_leaves_the_base(
        tmp_path: Path, keys: KeyStore, versions: tuple[bytes, bytes, Path],
        base: ActiveArtifact, case: str) -> None:
    v1, v2, _ = versions
    data, why = _bad_deltas(v1, v2)[case]
    fb, server = _fetch(tmp_path, keys, _repo(keys, versions, data), base)
    assert fb.artifact.read_bytes() == v2
    assert fb.delivery is not None and fb.delivery.method == "full"
    assert "delta failed" in str(fb.delivery.reason) and why in str(fb.delivery.reason)
    assert fb.delivery.delta_failed
    assert _full_requested(server, v2)
    assert base.path.read_bytes() == v1                  # the active model is untouched
    assert not [p for p in (tmp_path / "tuf" / "targets").iterdir() if p.name.startswith(".")]


def test_delta_altered_in_transit_is_refused_by_tuf_then_full(
        tmp_path: Path, keys: KeyStore, versions: tuple[bytes, bytes, Path],
        base: ActiveArtifact) -> None:
    v1, v2, _ = versions
    delta = diff_artifacts(v1, v2).to_bytes()
    repo = _repo(keys, versions, delta)
    for name in list(repo.target_files):
        if name.endswith(".edgedelta"):
            repo.target_files[name] = delta[:-1] + bytes([delta[-1] ^ 1])
    fb, _ = _fetch(tmp_path, keys, repo, base)
    assert fb.artifact.read_bytes() == v2
    assert fb.delivery is not None and fb.delivery.method == "full"
    assert "delta failed" in str(fb.delivery.reason)


def test_delta_over_mqtt_chunks(tmp_path: Path, broker: MosquittoBroker, keys: KeyStore,
                                versions: tuple[bytes, bytes, Path],
                                base: ActiveArtifact) -> None:
    v1, v2, _ = versions
    delta = diff_artifacts(v1, v2).to_bytes()
    repo = _repo(keys, versions, delta)
    mgr = FakeManager(broker.port, repo, keys.signer("manager"), chunk_bytes=64)
    mgr.publish_metadata()
    conn = mqtt_link(broker.port, DEV)
    limits = DownloadLimits(chunk_bytes=64, idle_timeout_s=0.5, max_requests=3,
                            metadata_wait_s=5)
    transport = MqttTufTransport(conn, DEV, tmp_path / "dl", limits)
    for f in transport.filters():
        conn.subscribe(f)
    conn.start()
    try:
        assert conn.wait_connected(10)
        pump = Pump(conn, transport)
        client = TufClient.over_mqtt(root_path(keys), tmp_path / "tuf", transport)
        fb = fetch_bundle(client, "tiny", "2.0.0", TARGET, active=base)
        pump.close()
    finally:
        conn.stop()
        mgr.close()
    assert isinstance(fb.artifact, DeltaArtifact)
    assert fb.artifact_path(tmp_path / "rebuilt").read_bytes() == v2
    assert fb.delivery is not None and fb.delivery.method == "delta"
    fetched = {f.artifact for f in mgr.fetches}
    assert _sha(delta) in fetched and _sha(v2) not in fetched

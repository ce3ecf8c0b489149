"""A refused MQTT download leaves nothing on disk, not even frames that arrive after it.

When python-tuf stops reading (endless data) or every chunk is refused (tampered frames), the
transport deletes ``<downloads>/<sha>/``. Frames of that artifact still on their way (the fake
manager keeps streaming) must not re-create it. Real broker, real TUF repository and keys; the
fake manager plays the fleet side. A marker message published after the manager's last frame,
and seen by the device's message loop, proves every straggler was handled before the check.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from device_agent.tuf_client import ChunkAssembler, DownloadLimits, MqttTufTransport
from device_agent.tuf_update import TufClient, fetch_bundle
from edgeops.bundle import read_bundle
from edgeops.errors import VerificationError
from edgeops.keys import KeyStore
from edgeops.protocol import Chunk
from edgeops.trust import root_path
from tests.device_agent.net.fake_manager import FakeManager
from tests.device_agent.net.helpers import Pump, make_bundle2, mqtt_link
from tests.edgeops.bundles import make_keystore
from tests.mosquitto import MosquittoBroker
from tests.tuf_repo import TufRepo

DEV = "cam-17"
MARKER = "test/marker"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def bundle(keys: KeyStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle2(tmp_path_factory.mktemp("bundle"), keys)


@dataclass
class Env:
    mgr: FakeManager
    transport: MqttTufTransport
    client: TufClient
    pump: Pump
    repo: TufRepo
    tuf_dir: Path

    def settle(self) -> None:
        """Every frame the manager sent so far has been through the device's message loop."""
        self.mgr.wait(lambda: self.mgr.served == len(self.mgr.fetches) > 0)
        self.mgr.client.publish(MARKER, b"1", qos=1).wait_for_publish(5)
        assert self.pump.wait_unclaimed(MARKER), "marker never reached the device"

    def leftovers(self) -> list[str]:
        dl = self.transport.download_dir
        found = [str(p.relative_to(dl)) for p in dl.rglob("*")] if dl.exists() else []
        return found + [p.name for p in self.tuf_dir.rglob("*.part")]


@pytest.fixture
def env(tmp_path: Path, broker: MosquittoBroker, keys: KeyStore, bundle: Path
        ) -> Iterator[Env]:
    repo = TufRepo(keys)
    repo.add_bundle(bundle)
    repo.publish()
    mgr = FakeManager(broker.port, repo, keys.signer("manager"), chunk_bytes=64)
    mgr.publish_metadata()
    conn = mqtt_link(broker.port, DEV)
    transport = MqttTufTransport(conn, DEV, tmp_path / "dl", DownloadLimits(
        chunk_bytes=64, idle_timeout_s=0.5, max_requests=3, metadata_wait_s=5))
    for f in [*transport.filters(), MARKER]:
        conn.subscribe(f)
    conn.start()
    assert conn.wait_connected(10)
    pump = Pump(conn, transport)
    client = TufClient.over_mqtt(root_path(keys), tmp_path / "tuf", transport)
    yield Env(mgr, transport, client, pump, repo, tmp_path / "tuf")
    pump.close()
    conn.stop()
    mgr.close()


def _artifact_sha(bundle: Path) -> str:
    ref = read_bundle(bundle).manifest.artifact_for("x86-cpu")
    assert ref is not None
    return ref.file.sha256


def test_assembler_ignores_frames_after_discard(tmp_path: Path) -> None:
    limits = DownloadLimits(chunk_bytes=4)
    asm = ChunkAssembler("ab" * 32, tmp_path / "dl" / "x", limits)
    assert asm.add(Chunk("ab" * 32, 0, 2, 8, b"0123"))
    asm.discard()
    assert not asm.add(Chunk("ab" * 32, 1, 2, 8, b"4567"))   # a straggler
    assert not (tmp_path / "dl" / "x").exists()


def test_endless_data_download_leaves_nothing_on_disk(env: Env, bundle: Path) -> None:
    sha = _artifact_sha(bundle)
    env.repo.by_sha[sha] = env.repo.by_sha[sha] + b"\0" * 20_000   # ~300 frames too many
    with pytest.raises(VerificationError, match="more than the signed length"):
        fetch_bundle(env.client, "tiny", "1.0.0", "x86-cpu")
    env.settle()
    assert env.leftovers() == []


def test_tampered_chunks_download_leaves_nothing_on_disk(env: Env) -> None:
    env.mgr.corrupt = lambda _i, frame: frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(VerificationError, match="SHA-256"):
        fetch_bundle(env.client, "tiny", "1.0.0", "x86-cpu")
    env.settle()
    assert env.leftovers() == []


def test_wrong_bytes_download_leaves_nothing_on_disk(env: Env, bundle: Path) -> None:
    sha = _artifact_sha(bundle)
    good = env.repo.by_sha[sha]
    env.repo.by_sha[sha] = bytes([good[0] ^ 0xFF]) + good[1:]
    with pytest.raises(VerificationError, match="hash mismatch"):
        fetch_bundle(env.client, "tiny", "1.0.0", "x86-cpu")
    env.settle()
    assert env.leftovers() == []

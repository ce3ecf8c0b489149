"""TUF client: real repository, real keys, both fetchers; every attack python-tuf must stop."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.tuf_client import ChunkAssembler, DownloadLimits, MqttTufTransport
from device_agent.tuf_update import FetchedBundle, TufClient, fetch_bundle
from edgeops.bundle import read_bundle
from edgeops.errors import TransportError, VerificationError
from edgeops.keys import KeyStore
from edgeops.protocol import Chunk, FetchRequest, encode_chunk, topics
from edgeops.protocol.messages import decode_json
from edgeops.trust import root_path
from tests.device_agent.net.fake_manager import FakeManager
from tests.device_agent.net.helpers import Pump, make_bundle2, mqtt_link
from tests.edgeops.bundles import make_keystore
from tests.mosquitto import MosquittoBroker
from tests.tuf_repo import HttpRepoServer, TufRepo, foreign_signer

DEV = "cam-17"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def bundle(keys: KeyStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle2(tmp_path_factory.mktemp("bundle"), keys)


@pytest.fixture
def repo(keys: KeyStore, bundle: Path) -> TufRepo:
    r = TufRepo(keys)
    r.add_bundle(bundle)
    r.publish()
    return r


@pytest.fixture
def http(repo: TufRepo) -> Iterator[HttpRepoServer]:
    s = HttpRepoServer(repo)
    yield s
    s.close()


def _client(tmp_path: Path, keys: KeyStore, http: HttpRepoServer) -> TufClient:
    return TufClient.over_http(root_path(keys), tmp_path / "tuf", http.url,
                               DownloadLimits(http_timeout_s=5))


def _check(fb: FetchedBundle, bundle: Path) -> None:
    b = read_bundle(bundle)
    assert fb.manifest_bytes == b.manifest_bytes
    assert fb.artifact.read_bytes() == b.read_file("artifacts/x86-cpu/model.onnx")
    assert fb.golden is not None
    assert fb.golden.read_bytes() == b.read_file("artifacts/x86-cpu/golden.npz")


def test_http_downloads_only_this_targets_artifact(tmp_path: Path, keys: KeyStore,
                                                   bundle: Path, http: HttpRepoServer) -> None:
    fb = fetch_bundle(_client(tmp_path, keys, http), "tiny", "1.0.0", "x86-cpu")
    _check(fb, bundle)
    assert any("x86-cpu" in r for r in http.requests)
    assert not any("arm64-cpu" in r for r in http.requests)
    staged = fb.stage(tmp_path / "staged")
    assert (staged / "artifacts/x86-cpu/model.onnx").read_bytes() == fb.artifact.read_bytes()
    assert (staged / "manifest.json").read_bytes() == fb.manifest_bytes


def test_cached_targets_are_not_fetched_twice(tmp_path: Path, keys: KeyStore,
                                              http: HttpRepoServer) -> None:
    c = _client(tmp_path, keys, http)
    fetch_bundle(c, "tiny", "1.0.0", "x86-cpu")
    n = len([r for r in http.requests if "/tuf/targets/" in r])
    fetch_bundle(c, "tiny", "1.0.0", "x86-cpu")
    assert len([r for r in http.requests if "/tuf/targets/" in r]) == n


def test_rollback_to_older_timestamp_is_rejected(tmp_path: Path, keys: KeyStore,
                                                 repo: TufRepo, http: HttpRepoServer) -> None:
    c = _client(tmp_path, keys, http)
    c.refresh()
    repo.rollback_timestamp()
    with pytest.raises(VerificationError, match="rollback"):
        c.refresh()


def test_expired_metadata_is_rejected(tmp_path: Path, keys: KeyStore, repo: TufRepo,
                                      http: HttpRepoServer) -> None:
    repo.publish(timestamp_expires=datetime.now(UTC).replace(microsecond=0)
                 - timedelta(hours=1))
    with pytest.raises(VerificationError, match="expired"):
        _client(tmp_path, keys, http).refresh()


def test_mix_and_match_targets_is_rejected(tmp_path: Path, keys: KeyStore, repo: TufRepo,
                                           http: HttpRepoServer) -> None:
    # snapshot v2 pins targets v2; the server hands out (validly signed) targets v1 under v2
    repo.metadata["2.targets.json"] = repo.metadata["1.targets.json"]
    with pytest.raises(VerificationError, match="rollback or mix-and-match"):
        fetch_bundle(_client(tmp_path, keys, http), "tiny", "1.0.0", "x86-cpu")


def test_tampered_targets_metadata_is_rejected(tmp_path: Path, keys: KeyStore, repo: TufRepo,
                                               http: HttpRepoServer, bundle: Path) -> None:
    size = str(read_bundle(bundle).manifest.artifact_for("x86-cpu").file.size)  # type: ignore[union-attr]
    repo.tamper("2.targets.json", f'"length":{size}'.encode(),
                f'"length":{int(size) + 1}'.encode())
    with pytest.raises(VerificationError, match="not signed by trusted keys"):
        fetch_bundle(_client(tmp_path, keys, http), "tiny", "1.0.0", "x86-cpu")


def test_foreign_signed_targets_metadata_is_rejected(tmp_path: Path, keys: KeyStore,
                                                     repo: TufRepo,
                                                     http: HttpRepoServer) -> None:
    repo.publish(targets_signers=[foreign_signer()])
    with pytest.raises(VerificationError, match="not signed by trusted keys"):
        _client(tmp_path, keys, http).refresh()


def _artifact_url(repo: TufRepo) -> str:
    return next(f"/tuf/targets/{p}" for p in repo.target_files
                if p.startswith("bundles/tiny/1.0.0/artifacts/x86-cpu/") and "model" in p)


def test_wrong_artifact_hash_is_rejected(tmp_path: Path, keys: KeyStore, repo: TufRepo,
                                         http: HttpRepoServer) -> None:
    url = _artifact_url(repo)
    good = repo.target_files[url[len("/tuf/targets/"):]]
    http.overrides[url] = bytes([good[0] ^ 0xFF]) + good[1:]
    c = _client(tmp_path, keys, http)
    with pytest.raises(VerificationError, match="hash mismatch"):
        fetch_bundle(c, "tiny", "1.0.0", "x86-cpu")
    assert not list((tmp_path / "tuf" / "targets").glob("*model.onnx"))


def test_endless_data_is_cut_off_at_the_signed_length(tmp_path: Path, keys: KeyStore,
                                                      repo: TufRepo,
                                                      http: HttpRepoServer) -> None:
    url = _artifact_url(repo)
    http.overrides[url] = repo.target_files[url[len("/tuf/targets/"):]] + b"\0" * 1_000_000
    with pytest.raises(VerificationError, match="more than the signed length"):
        fetch_bundle(_client(tmp_path, keys, http), "tiny", "1.0.0", "x86-cpu")


def test_bundle_signed_by_foreign_key_is_rejected_even_if_listed(
        tmp_path: Path, keys: KeyStore, repo: TufRepo, http: HttpRepoServer) -> None:
    foreign = make_keystore(tmp_path / "foreign")
    evil = make_bundle2(tmp_path, keys, version="6.6.6", signer_store=foreign)
    repo.add_bundle(evil)
    repo.publish()
    with pytest.raises(VerificationError, match="not signed by a trusted targets key"):
        fetch_bundle(_client(tmp_path, keys, http), "tiny", "6.6.6", "x86-cpu")


def test_unknown_bundle_and_missing_target_are_bad_content(tmp_path: Path, keys: KeyStore,
                                                           http: HttpRepoServer) -> None:
    c = _client(tmp_path, keys, http)
    with pytest.raises(VerificationError, match="not in the fleet's signed TUF targets"):
        fetch_bundle(c, "tiny", "9.9.9", "x86-cpu")
    with pytest.raises(VerificationError, match="no artifact for target"):
        fetch_bundle(c, "tiny", "1.0.0", "riscv-npu")


def test_unreachable_server_is_a_transport_error(tmp_path: Path, keys: KeyStore,
                                                 http: HttpRepoServer) -> None:
    url = http.url
    http.close()
    c = TufClient.over_http(root_path(keys), tmp_path / "tuf", url, DownloadLimits(
        http_timeout_s=2))
    with pytest.raises(TransportError):
        c.refresh()


# -- chunk assembly (pure, on disk) ----------------------------------------------------------
def _chunks(data: bytes, size: int, sha: str) -> list[Chunk]:
    n = max(1, -(-len(data) // size))
    return [Chunk(sha, i, n, len(data), data[i * size:(i + 1) * size]) for i in range(n)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=3000), st.integers(1, 700), st.randoms(),
       st.floats(0, 1))
def test_chunk_assembly_round_trip_any_order_resumable(tmp_path: Path, data: bytes, size: int,
                                                       rnd: random.Random, cut: float) -> None:
    import hashlib
    import shutil

    sha = hashlib.sha256(data).hexdigest()
    d = tmp_path / "asm" / sha
    shutil.rmtree(d, ignore_errors=True)
    limits = DownloadLimits(chunk_bytes=700, max_artifact_bytes=10_000)
    chunks = _chunks(data, size, sha)
    rnd.shuffle(chunks)
    k = int(len(chunks) * cut)
    a = ChunkAssembler(sha, d, limits)
    for c in chunks[:k] + chunks[:k]:            # duplicates are harmless
        assert a.add_frame(encode_chunk(c))
    # an agent restart: a new assembler resumes from disk and asks only for the rest
    b = ChunkAssembler(sha, d, limits)
    missing = b.missing()
    have = {c.index for c in chunks[:k]}
    if k:
        assert missing is not None
        assert {i for s, e in missing for i in range(s, e)} == set(range(len(chunks))) - have
    for c in chunks[k:]:
        assert b.add(c)
    b.check_complete()
    assert b.missing() == ()
    assert b"".join(b.read(i) for i in range(len(chunks))) == data


def test_torn_chunks_after_a_power_cut_are_fetched_again(tmp_path: Path) -> None:
    """Chunks are written without fsync; a torn or emptied one is dropped on resume, not used."""
    import hashlib

    data = bytes(range(256)) * 10
    sha = hashlib.sha256(data).hexdigest()
    limits = DownloadLimits(chunk_bytes=700, max_artifact_bytes=10_000)
    d = tmp_path / "asm"
    a = ChunkAssembler(sha, d, limits)
    chunks = _chunks(data, 700, sha)
    for c in chunks:
        assert a.add(c)
    files = sorted(d.glob("*.chunk"), key=lambda p: int(p.name.split(".")[0]))
    assert [p.name.split(".")[1] for p in files] == [c.sha256 for c in chunks]
    files[1].write_bytes(files[1].read_bytes()[:100])     # torn write
    files[2].write_bytes(b"")                              # data never reached the disk
    (d / "3.deadbeef.chunk.part").write_bytes(b"half")     # a write cut short
    b = ChunkAssembler(sha, d, limits)
    assert b.missing() == ((1, 3),)
    assert not list(d.glob("*.part"))
    for c in chunks[1:3]:
        assert b.add(c)
    b.check_complete()
    assert b"".join(b.read(i) for i in range(len(chunks))) == data


def test_assembler_rejects_oversized_inconsistent_and_overflowing_chunks(tmp_path: Path) -> None:
    sha = "ab" * 32
    lim = DownloadLimits(chunk_bytes=100, max_artifact_bytes=1000)
    a = ChunkAssembler(sha, tmp_path / "a", lim)
    assert not a.add_frame(encode_chunk(Chunk(sha, 0, 2, 150, b"x" * 101)))  # oversized
    assert "exceeds" in (a.last_rejection or "")
    assert not a.add(Chunk(sha, 0, 20, 2000, b"x"))                           # too big total
    assert not a.add(Chunk("cd" * 32, 0, 2, 150, b"x"))                       # other artifact
    assert a.add(Chunk(sha, 0, 2, 150, b"x" * 100))
    assert not a.add(Chunk(sha, 1, 3, 150, b"x" * 50))                        # plan changed
    assert not a.add(Chunk(sha, 1, 2, 150, b"x" * 60))                        # overflow
    assert not a.add_frame(b"EOC1garbage")
    assert a.rejected == 6


# -- the MQTT transport against a real broker and the fake manager -------------------------
@pytest.fixture
def mqtt_env(tmp_path: Path, broker: MosquittoBroker, repo: TufRepo, keys: KeyStore
             ) -> Iterator[tuple[FakeManager, MqttTufTransport, TufClient]]:
    mgr = FakeManager(broker.port, repo, keys.signer("manager"), chunk_bytes=64)
    mgr.publish_metadata()
    conn = mqtt_link(broker.port, DEV)
    # this link does not route acks: no re-send for a missing ack within these tests
    limits = DownloadLimits(chunk_bytes=64, idle_timeout_s=0.5, max_requests=3,
                            metadata_wait_s=5, fetch_ack_timeout_s=60.0)
    transport = MqttTufTransport(conn, DEV, tmp_path / "dl", limits)
    for f in transport.filters():
        conn.subscribe(f)
    conn.start()
    assert conn.wait_connected(10)
    pump = Pump(conn, transport)
    client = TufClient.over_mqtt(root_path(keys), tmp_path / "tuf", transport)
    yield mgr, transport, client
    pump.close()
    conn.stop()
    mgr.close()


def test_mqtt_fetch_resumes_missing_ranges(mqtt_env: tuple[FakeManager, MqttTufTransport,
                                                           TufClient], bundle: Path) -> None:
    mgr, transport, client = mqtt_env
    mgr.chunk_bytes = 32            # many small chunks; some left out of the first answer
    mgr.skip_first = {1, 2, 5}
    fb = fetch_bundle(client, "tiny", "1.0.0", "x86-cpu")
    _check(fb, bundle)
    resumed = [f for f in mgr.fetches if f.missing]
    assert resumed and resumed[0].missing is not None
    assert set(resumed[0].missing) >= {(1, 3)}
    arm = read_bundle(bundle).manifest.artifact_for("arm64-cpu")
    assert arm is not None and arm.file.sha256 not in {f.artifact for f in mgr.fetches}
    assert arm.file.sha256 not in {p.name for p in transport.download_dir.glob("*")}


def test_mqtt_corrupted_chunks_are_rejected(mqtt_env: tuple[FakeManager, MqttTufTransport,
                                                            TufClient]) -> None:
    mgr, _, client = mqtt_env
    mgr.corrupt = lambda _i, frame: frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(VerificationError, match="SHA-256"):
        fetch_bundle(client, "tiny", "1.0.0", "x86-cpu")


def test_mqtt_oversized_chunks_are_rejected(mqtt_env: tuple[FakeManager, MqttTufTransport,
                                                            TufClient]) -> None:
    mgr, _, client = mqtt_env
    mgr.chunk_bytes = 128           # over the device's 64-byte chunk limit
    with pytest.raises(VerificationError, match="exceeds the 64-byte limit"):
        fetch_bundle(client, "tiny", "1.0.0", "x86-cpu")


def test_mqtt_endless_and_wrong_artifact_bytes_are_rejected(
        mqtt_env: tuple[FakeManager, MqttTufTransport, TufClient], repo: TufRepo,
        bundle: Path) -> None:
    _, _, client = mqtt_env
    ref = read_bundle(bundle).manifest.artifact_for("x86-cpu")
    assert ref is not None
    good = repo.by_sha[ref.file.sha256]
    repo.by_sha[ref.file.sha256] = bytes([good[0] ^ 0xFF]) + good[1:]
    with pytest.raises(VerificationError, match="hash mismatch"):
        fetch_bundle(client, "tiny", "1.0.0", "x86-cpu")
    repo.by_sha[ref.file.sha256] = good + b"\0" * 5_000
    with pytest.raises(VerificationError, match="more than the signed length"):
        fetch_bundle(client, "tiny", "1.0.0", "x86-cpu")


def test_mqtt_silent_manager_is_a_transport_error(
        mqtt_env: tuple[FakeManager, MqttTufTransport, TufClient]) -> None:
    mgr, _, client = mqtt_env
    mgr.answer = False
    with pytest.raises(TransportError, match="no chunks after 3 fetch requests"):
        fetch_bundle(client, "tiny", "1.0.0", "x86-cpu")
    assert len(mgr.fetches) == 3


def test_mqtt_metadata_published_after_the_command_is_waited_for(
        mqtt_env: tuple[FakeManager, MqttTufTransport, TufClient], repo: TufRepo,
        keys: KeyStore, tmp_path: Path) -> None:
    mgr, transport, client = mqtt_env
    client.refresh()
    newer = make_bundle2(tmp_path, keys, version="1.1.0", seed=5)
    repo.add_bundle(newer)
    repo.publish()
    gen = transport.metadata.generation

    def wait() -> bool:
        nonlocal gen
        ok = transport.metadata.wait_newer(gen, 5)
        gen = transport.metadata.generation
        return ok

    import threading
    threading.Timer(0.3, mgr.publish_metadata).start()
    fb = fetch_bundle(client, "tiny", "1.1.0", "x86-cpu", wait_for_metadata=wait)
    assert fb.version == "1.1.0"


def test_signed_manifest_with_traversal_path_is_rejected(tmp_path: Path, keys: KeyStore,
                                                         repo: TufRepo, bundle: Path,
                                                         http: HttpRepoServer) -> None:
    """Even a manifest signed by the real targets key cannot name a path outside the slot."""
    from edgeops.bundle import SignatureSet, sign_manifest
    from edgeops.errors import InvalidBundleError
    from tests.edgeops.bundles import PASSPHRASE

    b = read_bundle(bundle)
    evil = b.manifest_bytes.replace(b'"version":"1.0.0"', b'"version":"7.0.0"').replace(
        b'"path":"artifacts/x86-cpu/model.onnx"', b'"path":"../../../etc/model.onnx"')
    assert evil.count(b"../") == 3
    sigs: SignatureSet = sign_manifest(evil, [keys.signer("targets", PASSPHRASE)])
    repo.add_target("bundles/tiny/7.0.0/manifest.json", evil)
    repo.add_target("bundles/tiny/7.0.0/signatures.json", sigs.to_bytes())
    repo.publish()
    with pytest.raises(InvalidBundleError, match="unsafe path"):
        fetch_bundle(_client(tmp_path, keys, http), "tiny", "7.0.0", "x86-cpu")


def test_mqtt_fetch_asks_for_missing_ranges_after_a_reconnect(
        tmp_path: Path, broker: MosquittoBroker, repo: TufRepo, keys: KeyStore,
        bundle: Path) -> None:
    import socket

    mgr = FakeManager(broker.port, repo, keys.signer("manager"), chunk_bytes=32)
    mgr.publish_metadata()
    mgr.skip_first = {2, 3, 4}
    conn = mqtt_link(broker.port, DEV)
    # stall detection far away: only the reconnect can trigger the resume
    limits = DownloadLimits(chunk_bytes=64, idle_timeout_s=60, max_requests=2,
                            metadata_wait_s=5)
    transport = MqttTufTransport(conn, DEV, tmp_path / "dl", limits)
    for f in transport.filters():
        conn.subscribe(f)
    conn.start()
    assert conn.wait_connected(10)
    pump = Pump(conn, transport)
    client = TufClient.over_mqtt(root_path(keys), tmp_path / "tuf", transport)
    try:
        client.refresh()
        ref = read_bundle(bundle).manifest.artifact_for("x86-cpu")
        assert ref is not None
        info = client.target_info(f"bundles/tiny/1.0.0/{ref.file.path}")
        assert info is not None

        def drop_once_stalled() -> None:
            mgr.wait(lambda: any(f.artifact == ref.file.sha256 for f in mgr.fetches), 10)
            time.sleep(0.5)
            sock = conn._client.socket()
            assert isinstance(sock, socket.socket)
            sock.shutdown(socket.SHUT_RDWR)

        import threading
        t = threading.Thread(target=drop_once_stalled)
        t.start()
        t0 = time.monotonic()
        path = client.download(info)
        t.join()
        assert path.read_bytes() == read_bundle(bundle).read_file(ref.file.path)
        assert time.monotonic() - t0 < 30
        asks = [f for f in mgr.fetches if f.artifact == ref.file.sha256]
        assert len(asks) == 2 and asks[1].missing is not None
        assert (2, 5) in asks[1].missing
    finally:
        pump.close()
        conn.stop()
        mgr.close()


def test_metadata_cache_bounds_clears_and_knows_when_a_root_is_absent() -> None:
    from device_agent.tuf_client import MetadataCache

    c = MetadataCache(max_bytes=100)
    c.put("2.root.json", b"r" * 101)                    # over the limit: dropped
    assert c.get("2.root.json", 0.05) is None
    c.put("2.root.json", b"r2")
    c.put("timestamp.json", b"ts")
    assert c.get("2.root.json", 0) == b"r2"
    t0 = time.monotonic()
    assert c.get("3.root.json", 5) is None               # synced: absent root is not waited for
    assert time.monotonic() - t0 < 1
    gen = c.generation
    c.put("timestamp.json", b"")                         # empty retained message clears it
    assert c.get("timestamp.json", 0) is None and c.wait_newer(gen, 0)


# -- when a stalled download asks again ------------------------------------------------------
class FakeLink:
    """A FAKE MessageLink: records the fetch requests the transport publishes, sends nothing."""

    generation = 1

    def __init__(self) -> None:
        self.fetches: list[tuple[float, FetchRequest]] = []
        self._cond = threading.Condition()

    def subscribe(self, topic_filter: str) -> None:
        pass

    def unsubscribe(self, topic_filter: str) -> None:
        pass

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> object:
        with self._cond:
            self.fetches.append((time.monotonic(), decode_json(payload, expect=FetchRequest)))
            self._cond.notify_all()
        return None

    def wait_fetches(self, n: int, timeout_s: float = 10.0) -> list[tuple[float, FetchRequest]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.fetches) >= n, timeout_s), self.fetches
            return list(self.fetches)


def test_stalled_download_waits_while_frames_flow_and_backs_off_when_silent(
        tmp_path: Path) -> None:
    """Repeats of held chunks (a carousel serving others) keep the download from re-asking;
    silence makes it ask for the missing ranges only, each ask waiting twice as long."""
    sha, data = "ef" * 32, b"abcdefghij"              # 3 chunks of 4 bytes
    frames = [encode_chunk(Chunk(sha, i, 3, len(data), data[i * 4:(i + 1) * 4]))
              for i in range(3)]
    link = FakeLink()
    idle = 0.3
    transport = MqttTufTransport(link, DEV, tmp_path / "dl", DownloadLimits(
        chunk_bytes=4, idle_timeout_s=idle, idle_backoff_max_s=4 * idle, max_requests=10))
    topic = topics.artifact_chunks(sha)
    out: list[bytes] = []
    worker = threading.Thread(target=lambda: out.append(b"".join(transport.download(sha))))
    worker.start()
    try:
        link.wait_fetches(1)
        transport.handle(topic, frames[0])
        until = time.monotonic() + 5 * idle           # repeats for five idle timeouts
        while time.monotonic() < until:
            transport.handle(topic, frames[0])
            time.sleep(idle / 4)
        assert len(link.fetches) == 1                 # never re-asked while frames flowed
        got = link.wait_fetches(3)                    # then silence: two asks, backing off
        assert [f.missing for _, f in got[1:3]] == [((1, 3),), ((1, 3),)]
        assert got[1][0] - until >= idle / 2         # the last repeat came < idle/4 before
        assert got[2][0] - got[1][0] >= 2 * idle
        transport.handle(topic, frames[2])
        transport.handle(topic, frames[1])
        worker.join(10)
        assert out == [data]
    finally:
        transport.check = _raise_stop
        worker.join(10)


def _raise_stop() -> None:
    raise TransportError("test over")

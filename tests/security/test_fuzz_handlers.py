"""Fuzzing the handlers that take bytes from the broker: no crash, one error type, no state change.

Manager side: ``fleet.ingest.Ingest.handle`` on a real SQLite store (every device-published
channel). Device side: the command acceptance path, the TUF/chunk message router
(``device_agent.tuf_client.MqttTufTransport.handle``) and ``ChunkAssembler.add_frame``. The
protocol decoders underneath are fuzzed directly too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner

from edgeops.protocol import (
    Chunk,
    FetchRequest,
    SignedCommand,
    StateReport,
    StatusMessage,
    TelemetryBatch,
    check_command,
    decode_chunk,
    decode_json,
    encode_chunk,
    topics,
)
from edgeops.protocol.messages import MessageError

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

SHA = "ab" * 32
VALID: dict[str, bytes] = {
    "status": StatusMessage("cam-1", True, "0.1.0", 1.0).to_bytes(),
    "state": StateReport("cam-1", 10**6, 1.0).to_bytes(),
    "telemetry": TelemetryBatch("cam-1", 1, ({"kind": "heartbeat", "ts": 1.0},)).to_bytes(),
    "fetch": FetchRequest("cam-1", SHA, None).to_bytes(),
}
REQUIRED = {"status": ["device_id", "online"], "state": ["device_id", "seq", "ts"],
            "telemetry": ["device_id", "seq", "records"], "fetch": ["device_id", "artifact"]}
WRONG = st.one_of(st.none(), st.booleans().map(lambda b: {"x": b}), st.lists(st.integers(), min_size=1,
                  max_size=2), st.just(float("nan")))


@st.composite
def malformed(draw: st.DrawFn) -> tuple[str, bytes]:
    """A payload that must be refused: random bytes, a cut message, or one field broken."""
    channel = draw(st.sampled_from(sorted(VALID)))
    valid = VALID[channel]
    how = draw(st.sampled_from(["bytes", "cut", "missing", "wrong-type", "version", "type",
                                "other-device"]))
    if how == "bytes":
        return channel, draw(st.binary(max_size=300).filter(lambda b: not b.startswith(b"{")))
    if how == "cut":
        return channel, valid[:draw(st.integers(0, len(valid) - 1))]
    d: dict[str, Any] = json.loads(valid)
    key = draw(st.sampled_from(REQUIRED[channel]))
    if how == "missing":
        del d[key]
    elif how == "wrong-type":
        d[key] = draw(WRONG)
    elif how == "version":
        d["v"] = draw(st.integers().filter(lambda v: v != 1))
    elif how == "type":
        d["type"] = draw(st.sampled_from([*sorted(set(VALID) - {channel}), "command", "x"]))
    else:
        d["device_id"] = "cam-2"   # topic says cam-1
    return channel, json.dumps(d, allow_nan=True).encode()


# -- protocol decoders -------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=2048))
def test_decoders_raise_only_message_error(payload: bytes) -> None:
    for decode in (lambda p: decode_json(p), lambda p: decode_chunk(p, 64 * 1024),
                   SignedCommand.from_bytes):
        try:
            decode(payload)
        except MessageError:
            pass


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                        max_size=4),
                    max_leaves=20),
       st.sampled_from(["status", "state", "telemetry", "fetch", "command"]))
def test_decoders_on_json_shaped_garbage(value: Any, kind: str) -> None:
    d = {"v": 1, "type": kind, "payload": value} if not isinstance(value, dict) else {
        "v": 1, "type": kind, **value}
    payload = json.dumps(d).encode()
    for decode in (decode_json, SignedCommand.from_bytes):
        try:
            decode(payload)
        except MessageError:
            pass


# -- manager: fleet.ingest on a real store -----------------------------------------------------
@pytest.fixture(scope="module")
def ingest_world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from fleet.ingest import Ingest
    from fleet.store import open_store
    from fleet.store.models import Device

    d = tmp_path_factory.mktemp("store")
    store = open_store(f"sqlite:///{d / 'fleet.db'}", d)
    store.migrate()
    for i in ("cam-1", "cam-2"):
        store.upsert_device(Device(i, "camera", "x86-cpu", {"city": "lyon"}, enrolled_at=1.0))

    class Delivery:
        def __init__(self) -> None:
            self.calls: list[FetchRequest] = []

        def submit(self, req: FetchRequest, device_target: str | None) -> int:
            self.calls.append(req)
            return 1

    delivery = Delivery()
    yield store, Ingest(store, delivery=delivery), delivery
    store.close()


def _snapshot(store: Any, delivery: Any) -> tuple[Any, ...]:
    return (repr(store.get_device("cam-1")), repr(store.get_device("cam-2")),
            store.count_telemetry(), len(delivery.calls))


@FUZZ
@given(malformed())
def test_ingest_refuses_malformed_without_state_change(ingest_world: Any,
                                                       case: tuple[str, bytes]) -> None:
    from fleet.ingest import Outcome

    store, ingest, delivery = ingest_world
    channel, payload = case
    before = _snapshot(store, delivery)
    outcome = ingest.handle(topics.device_topic("cam-1", channel), payload)
    ingest.flush()
    allowed = {Outcome.MALFORMED, Outcome.MISMATCH}
    if payload == b"":
        allowed.add(Outcome.IGNORED)   # an empty retained message only clears the topic
    assert outcome in allowed, (channel, payload, outcome)
    assert _snapshot(store, delivery) == before


@FUZZ
@given(st.text(max_size=80), st.binary(max_size=200))
def test_ingest_ignores_foreign_topics(ingest_world: Any, topic: str, payload: bytes) -> None:
    from fleet.ingest import Outcome

    store, ingest, delivery = ingest_world
    if topics.parse_device_topic(topic) is not None:
        return
    before = _snapshot(store, delivery)
    assert ingest.handle(topic, payload) is Outcome.IGNORED
    assert _snapshot(store, delivery) == before


# -- device: command acceptance, TUF/chunk routing ---------------------------------------------
@pytest.fixture(scope="module")
def manager_key() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


@FUZZ
@given(st.binary(max_size=1024) | st.builds(lambda b: b'{"v":1,"type":"command",' + b,
                                            st.binary(max_size=400)))
def test_command_path_refuses_garbage(manager_key: CryptoSigner, payload: bytes) -> None:
    try:
        signed = SignedCommand.from_bytes(payload)
        check_command(signed, device_id="cam-1", manager_keys=[manager_key.public_key],
                      last_seq=0, now=1.0)
    except MessageError:  # CommandRejected is a MessageError
        return
    pytest.fail("garbage was accepted as a command")


@pytest.fixture
def transport(tmp_path: Path) -> Any:
    from device_agent.tuf_client import DownloadLimits, MqttTufTransport

    class Link:
        generation = 0

        def __init__(self) -> None:
            self.published: list[tuple[str, bytes]] = []

        def subscribe(self, f: str) -> None: ...
        def unsubscribe(self, f: str) -> None: ...

        def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
            self.published.append((topic, payload))

    return MqttTufTransport(Link(), "cam-1", tmp_path / "dl", DownloadLimits(chunk_bytes=64))


@FUZZ
@given(st.binary(max_size=600))
def test_chunk_assembler_rejects_garbage_frames(tmp_path: Path, payload: bytes) -> None:
    from device_agent.tuf_client import ChunkAssembler, DownloadLimits

    asm = ChunkAssembler(SHA, tmp_path / f"a-{abs(hash(payload))}", DownloadLimits(chunk_bytes=64))
    try:
        chunk = decode_chunk(payload, 64)
    except MessageError:
        assert asm.add_frame(payload) is False
        assert asm.missing() is None and not list(asm.dir.glob("*.chunk"))
        return
    # a well-formed frame for another artifact must not be stored either
    if chunk.artifact != SHA:
        assert asm.add_frame(payload) is False
    asm.discard()


@FUZZ
@given(st.sampled_from(["tuf/metadata/", "artifacts/", "devices/cam-1/", "other/"]),
       st.text(max_size=30), st.binary(max_size=300))
def test_transport_router_never_raises(transport: Any, area: str, rest: str,
                                       payload: bytes) -> None:
    before = dict(transport.metadata._files)
    handled = transport.handle(f"{topics.PREFIX}/{area}{rest}", payload)
    assert isinstance(handled, bool)
    if not area.startswith("tuf/metadata/"):
        assert transport.metadata._files == before  # only metadata topics fill the cache


def test_valid_chunk_round_trip_is_accepted(tmp_path: Path) -> None:
    """Control for the fuzzers above: a genuine frame is taken."""
    from device_agent.tuf_client import ChunkAssembler, DownloadLimits

    data = b"x" * 10
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    asm = ChunkAssembler(sha, tmp_path / "ok", DownloadLimits(chunk_bytes=64))
    assert asm.add_frame(encode_chunk(Chunk(sha, 0, 1, 10, data))) is True
    assert asm.missing() == ()


# -- device: the agent daemon's message router -------------------------------------------------
@pytest.fixture(scope="module")
def idle_agent(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real ``device_agent.daemon.Agent``, never connected: messages are fed to its router."""
    from device_agent.config import AgentConfig
    from device_agent.daemon import Agent
    from tests.edgeops.bundles import make_keystore

    tmp = tmp_path_factory.mktemp("agent")
    store = make_keystore(tmp / "home")
    key = store.public_key("manager")
    cfg = AgentConfig.from_dict({
        "schema": "edgeops.agent-config/v1", "device_id": "cam-1", "target": "x86-cpu",
        "broker": {"url": "mqtt://127.0.0.1:9"}, "data_dir": str(tmp / "state"),
        "trust": {"root": str(tmp / "home" / "trust" / "root.json"),
                  "manager_keys": [{"keyid": key.keyid, **key.to_dict()}]}}, base_dir=tmp)
    agent = Agent(cfg)
    yield agent
    agent.core.close()
    agent.telemetry_q.close()
    agent.state_q.close()


@FUZZ
@given(st.sampled_from(["commands", "desired"]),
       st.binary(max_size=600) | malformed().map(lambda c: c[1])
       | st.builds(lambda b: b'{"v":1,"type":"command","command":' + b + b"}",
                   st.binary(max_size=300)))
def test_agent_router_refuses_garbage_without_state_change(idle_agent: Any, channel: str,
                                                           payload: bytes) -> None:
    agent = idle_agent
    before = (agent.net.command_seq, agent.core.store.pointer(), agent._work.qsize())
    rejected = agent.rejected_commands
    agent._route(topics.device_topic("cam-1", channel), payload)
    assert (agent.net.command_seq, agent.core.store.pointer(), agent._work.qsize()) == before
    # every non-empty payload was seen and refused (an empty one clears retained ``desired``)
    assert agent.rejected_commands == rejected + (1 if payload else 0)

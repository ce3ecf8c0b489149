"""The protocol contract: topic tree, message round trips, chunk frames, signed commands."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner

from edgeops.protocol import (
    Chunk,
    Command,
    CommandRejected,
    DevicePhase,
    FetchRequest,
    MessageError,
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

device_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=4e9)


# -- topics -------------------------------------------------------------------------------------

@given(device_ids, st.sampled_from(topics.DEVICE_CHANNELS))
def test_device_topics_round_trip(device_id: str, channel: str) -> None:
    t = topics.device_topic(device_id, channel)
    assert topics.parse_device_topic(t) == topics.DeviceTopic(device_id, channel)
    assert topics.matches(f"{topics.PREFIX}/devices/+/{channel}", t)
    assert topics.matches(topics.shared(f"{topics.PREFIX}/devices/+/{channel}"), t)
    assert topics.matches(f"{topics.PREFIX}/#", t)


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "", ".hidden", "x" * 200])
def test_topic_unsafe_device_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid device id"):
        topics.device_topic(bad, "state")


@pytest.mark.parametrize(("flt", "topic", "want"), [
    ("a/+/c", "a/b/c", True), ("a/+/c", "a/b/d", False), ("a/#", "a", True),
    ("a/#", "a/b/c", True), ("+/b", "$SYS/b", False), ("a/b", "a/b/c", False),
    ("edgeops/v1/devices/cam-1/desired", "edgeops/v1/devices/cam-2/desired", False),
])
def test_matcher(flt: str, topic: str, want: bool) -> None:
    assert topics.matches(flt, topic) is want


def test_parse_rejects_foreign_topics() -> None:
    assert topics.parse_device_topic("edgeops/v2/devices/a/state") is None
    assert topics.parse_device_topic("edgeops/v1/devices/a/b/state") is None
    assert topics.parse_device_topic("edgeops/v1/devices/a/unknown") is None


# -- JSON messages ------------------------------------------------------------------------------

@given(device_ids, st.integers(0, 2**40), finite, st.none() | st.sampled_from(list(DevicePhase)),
       st.none() | st.text(max_size=50))
def test_state_report_round_trips(device_id: str, seq: int, ts: float,
                                  phase: DevicePhase | None, reason: str | None) -> None:
    r = StateReport(device_id, seq, ts, phase, "d-1", "m@1.0.0", reason or None,
                    {"name": "m", "version": "1.0.0"}, {"a": {"version": "0.9.0"}})
    assert decode_json(r.to_bytes(), expect=StateReport) == r


@given(device_ids, st.booleans(), finite)
def test_status_round_trips(device_id: str, online: bool, ts: float) -> None:
    m = StatusMessage(device_id, online, "0.1.0", ts)
    assert decode_json(m.to_bytes()) == m


@given(device_ids, st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 50)), max_size=5))
def test_fetch_round_trips(device_id: str, ranges: list[tuple[int, int]]) -> None:
    missing = tuple((a, a + n) for a, n in ranges)
    m = FetchRequest(device_id, "ab" * 32, missing or None)
    assert decode_json(m.to_bytes(), expect=FetchRequest) == m


def test_telemetry_round_trips_and_is_bounded() -> None:
    recs = tuple({"kind": "heartbeat", "ts": float(i)} for i in range(3))
    b = TelemetryBatch("cam-1", 5, recs, dropped=2)
    assert decode_json(b.to_bytes()) == b
    big = TelemetryBatch("cam-1", 6, tuple({"kind": "x", "ts": 0} for _ in range(1001)))
    with pytest.raises(MessageError, match="over 1000 records"):
        decode_json(big.to_bytes(), max_bytes=10**7)


@pytest.mark.parametrize(("payload", "why"), [
    (b"\xff\xfe", "not valid JSON"), (b"[1,2]", "not a JSON object"),
    (b'{"v":2,"type":"state"}', "unsupported protocol version"),
    (b'{"v":1,"type":"nope"}', "unknown message type"),
    (b'{"v":1,"type":"state","device_id":"a","ts":1}', "missing 'seq'"),
    (b'{"v":1,"type":"state","device_id":"a","seq":true,"ts":1}', "wrong type"),
    (b'{"v":1,"type":"state","device_id":"a","seq":1,"ts":1,"phase":"exploded"}', "unknown phase"),
    (b'{"v":1,"type":"fetch","device_id":"a","artifact":"xyz"}', "SHA-256"),
    (b'[' * 100000, "not valid JSON"),
])
def test_malformed_messages_are_one_error(payload: bytes, why: str) -> None:
    with pytest.raises(MessageError, match=why):
        decode_json(payload, max_bytes=10**6)


def test_oversized_and_wrong_topic_messages_are_rejected() -> None:
    with pytest.raises(MessageError, match="exceeds"):
        decode_json(b" " * 300_000)
    status = StatusMessage("a", True).to_bytes()
    with pytest.raises(MessageError, match="not allowed on this topic"):
        decode_json(status, expect=StateReport)


@given(st.binary(max_size=300))
def test_decoders_never_crash_on_garbage(data: bytes) -> None:
    for fn in (lambda: decode_json(data), lambda: decode_chunk(data, 1024),
               lambda: SignedCommand.from_bytes(data)):
        try:
            fn()
        except MessageError:
            pass


# -- chunks -------------------------------------------------------------------------------------

@given(st.binary(max_size=2048), st.integers(0, 9))
def test_chunks_round_trip(data: bytes, index: int) -> None:
    c = Chunk("cd" * 32, index, 10, 12345, data)
    assert decode_chunk(encode_chunk(c), 4096) == c


def test_corrupted_or_oversized_chunks_are_rejected() -> None:
    frame = bytearray(encode_chunk(Chunk("cd" * 32, 0, 1, 4, b"data")))
    frame[-1] ^= 1
    with pytest.raises(MessageError, match="fails its SHA-256"):
        decode_chunk(bytes(frame), 1024)
    with pytest.raises(MessageError, match="exceeds"):
        decode_chunk(encode_chunk(Chunk("cd" * 32, 0, 1, 4096, b"x" * 4096)), 1024)
    with pytest.raises(MessageError, match="out of range"):
        decode_chunk(encode_chunk(Chunk("cd" * 32, 5, 2, 4, b"data")), 1024)


# -- signed commands ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manager() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


def deploy(seq: int = 5, device: str = "cam-1", expires: float = 2000.0) -> Command:
    return Command(device, seq, "deploy", issued=1000.0, expires=expires,
                   body={"deployment_id": "d-1", "name": "m", "version": "1.0.0",
                         "target": "x86-cpu"})


def test_valid_command_is_accepted_after_a_round_trip(manager: CryptoSigner) -> None:
    signed = SignedCommand.from_bytes(SignedCommand.sign(deploy(), manager).to_bytes())
    cmd = check_command(signed, device_id="cam-1", manager_keys=[manager.public_key],
                        last_seq=4, now=1500.0)
    assert cmd == deploy()


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"device_id": "cam-2"}, "addressed to"),
    ({"now": 2500.0}, "expired"),
    ({"last_seq": 5}, "replay"),
    ({"last_seq": 9}, "replay"),
])
def test_misaddressed_expired_and_replayed_commands_are_rejected(
        manager: CryptoSigner, kwargs: dict[str, object], why: str) -> None:
    args: dict[str, object] = {"device_id": "cam-1", "manager_keys": [manager.public_key],
                               "last_seq": 4, "now": 1500.0} | kwargs
    with pytest.raises(CommandRejected, match=why):
        check_command(SignedCommand.sign(deploy(), manager), **args)  # type: ignore[arg-type]


def test_foreign_key_and_altered_commands_are_rejected(manager: CryptoSigner) -> None:
    other = CryptoSigner.generate_ed25519()
    with pytest.raises(CommandRejected, match="does not trust"):
        check_command(SignedCommand.sign(deploy(), other), device_id="cam-1",
                      manager_keys=[manager.public_key], last_seq=0, now=1500.0)
    wire = json.loads(SignedCommand.sign(deploy(), manager).to_bytes())
    wire["command"]["body"]["version"] = "6.6.6"
    tampered = SignedCommand.from_bytes(json.dumps(wire).encode())
    with pytest.raises(CommandRejected, match="does not verify"):
        check_command(tampered, device_id="cam-1", manager_keys=[manager.public_key],
                      last_seq=0, now=1500.0)

"""Signed commands: replayed, expired, misaddressed, foreign-signed and altered ones are refused.

The rule is ``edgeops.protocol.check_command`` (what the agent applies to every command before
acting on it), with the manager's real online key from a ``KeyStore``. The broker test shows the
point of it: an attacker holding full broker access (the manager's own broker certificate)
gets commands *delivered* to the device, and the device still acts on none of them.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from edgeops.keys import KeyStore
from edgeops.protocol import Command, SignedCommand, check_command, topics
from edgeops.protocol.commands import CommandRejected
from edgeops.protocol.messages import MessageError
from tests.security._services import MqttProbe, SecureBroker

NOW = 1_800_000_000.0
_ids = itertools.count()


@pytest.fixture(scope="module")
def manager_key(tmp_path_factory: pytest.TempPathFactory) -> CryptoSigner:
    store = KeyStore(tmp_path_factory.mktemp("home"))
    store.generate("manager", None)
    return store.signer("manager")


def _deploy(device: str = "cam-1", seq: int = 5, expires: float = NOW + 600) -> Command:
    return Command(device_id=device, seq=seq, kind="deploy", issued=NOW, expires=expires,
                   body={"deployment_id": "d-1", "name": "tiny", "version": "2.0.0",
                         "target": "x86-cpu"})


def _accept(payload: bytes, key: CryptoSigner, last_seq: int, device: str = "cam-1",
            now: float = NOW) -> Command:
    """Decode and check a command exactly as it arrives off the wire."""
    return check_command(SignedCommand.from_bytes(payload), device_id=device,
                         manager_keys=[key.public_key], last_seq=last_seq, now=now)


def test_valid_command_is_accepted(manager_key: CryptoSigner) -> None:
    wire = SignedCommand.sign(_deploy(), manager_key).to_bytes()
    assert _accept(wire, manager_key, last_seq=4).seq == 5


@pytest.mark.parametrize("last_seq", [5, 6, 10_000])
def test_replayed_command_is_refused(manager_key: CryptoSigner, last_seq: int, attack) -> None:
    wire = SignedCommand.sign(_deploy(seq=5), manager_key).to_bytes()
    with pytest.raises(CommandRejected, match="replay") as info:
        _accept(wire, manager_key, last_seq=last_seq)
    attack(f"replayed command (seq 5, last {last_seq})", "refused", info.value.message[:60])


def test_expired_command_is_refused(manager_key: CryptoSigner, attack) -> None:
    wire = SignedCommand.sign(_deploy(expires=NOW - 1), manager_key).to_bytes()
    with pytest.raises(CommandRejected, match="expired") as info:
        _accept(wire, manager_key, last_seq=0)
    attack("expired command", "refused", info.value.message[:60])


def test_misaddressed_command_is_refused(manager_key: CryptoSigner, attack) -> None:
    wire = SignedCommand.sign(_deploy(device="cam-2"), manager_key).to_bytes()
    with pytest.raises(CommandRejected, match="addressed to 'cam-2'") as info:
        _accept(wire, manager_key, last_seq=0, device="cam-1")
    attack("command for cam-2 delivered to cam-1", "refused", info.value.message[:60])


def test_command_signed_by_a_foreign_key_is_refused(manager_key: CryptoSigner, attack) -> None:
    wire = SignedCommand.sign(_deploy(), CryptoSigner.generate_ed25519()).to_bytes()
    with pytest.raises(CommandRejected, match="does not trust") as info:
        _accept(wire, manager_key, last_seq=0)
    attack("command signed by a foreign key", "refused", info.value.message[:60])


@pytest.mark.parametrize("field, value", [
    ("device_id", "cam-1x"), ("seq", 99), ("expires", NOW + 10**9), ("kind", "rollback")])
def test_altered_command_is_refused(manager_key: CryptoSigner, field: str, value: object,
                                    attack) -> None:
    """Signed for one thing, edited in transit into another (keeping the signature)."""
    signed = SignedCommand.sign(_deploy(), manager_key)
    forged = SignedCommand(replace(signed.command, **{field: value}), signed.signature)
    with pytest.raises(CommandRejected, match="does not verify") as info:
        _accept(forged.to_bytes(), manager_key, last_seq=0, device=str(forged.command.device_id))
    attack(f"command altered in transit ({field})", "refused", info.value.message[:60])


def test_altered_body_is_refused(manager_key: CryptoSigner) -> None:
    signed = SignedCommand.sign(_deploy(), manager_key)
    body = dict(signed.command.body, version="6.6.6")
    forged = SignedCommand(replace(signed.command, body=body), signed.signature)
    with pytest.raises(CommandRejected, match="does not verify"):
        _accept(forged.to_bytes(), manager_key, last_seq=0)


def test_malformed_command_is_one_message_error(manager_key: CryptoSigner) -> None:
    with pytest.raises(MessageError):
        SignedCommand.from_bytes(b'{"v":1,"type":"command","command":{}}')
    with pytest.raises(MessageError, match="exceeds"):
        SignedCommand.from_bytes(b" " * (64 * 1024 + 1))


def test_full_broker_access_cannot_push_a_command(
        manager_key: CryptoSigner, secure_broker: SecureBroker, ident, attack,
        tmp_path: Path) -> None:
    """The attacker holds the manager's broker certificate: delivery works, acceptance never."""
    device = MqttProbe(ident("cam-1"), secure_broker.port, f"cam-1-{next(_ids)}")
    thief = MqttProbe(ident("manager"), secure_broker.port, f"thief-{next(_ids)}")
    try:
        assert device.connect() and thief.connect()
        topic = topics.device_topic("cam-1", "commands")
        assert device.subscribe(topic) == ["Granted QoS 1"]
        now = time.time()
        legit = SignedCommand.sign(replace(_deploy(seq=7), issued=now, expires=now + 600),
                                   manager_key).to_bytes()
        for_cam2 = SignedCommand.sign(replace(_deploy(device="cam-2", seq=8), issued=now,
                                              expires=now + 600), manager_key).to_bytes()
        forged = SignedCommand.sign(replace(_deploy(seq=9), issued=now, expires=now + 600),
                                    CryptoSigner.generate_ed25519()).to_bytes()
        stale = SignedCommand.sign(replace(_deploy(seq=10), issued=now - 7200,
                                           expires=now - 3600), manager_key).to_bytes()
        last_seq = 0
        # the genuine command arrives first and is accepted: seq 7 becomes the last accepted
        assert thief.publish(topic, legit) == "Success"
        got = device.wait_for(topic)
        last_seq = _accept(got[0], manager_key, last_seq, now=time.time()).seq
        attacks = {"replay": legit, "misaddressed": for_cam2, "forged": forged,
                   "expired": stale}
        for payload in attacks.values():
            assert thief.publish(topic, payload) == "Success"   # the broker lets it through
        deadline = time.monotonic() + 5
        while len(device.received(topic)) < 1 + len(attacks) and time.monotonic() < deadline:
            time.sleep(0.05)
        delivered = device.received(topic)[1:]
        assert delivered == list(attacks.values())
        for name, payload in zip(attacks, delivered, strict=True):
            with pytest.raises(CommandRejected):
                _accept(payload, manager_key, last_seq, now=time.time())
            attack(f"broker-level attacker: {name} command", "delivered but refused",
                   "CommandRejected, last seq unchanged")
        assert last_seq == 7
    finally:
        device.close()
        thief.close()

"""The agent's command gate on its own: bytes and the clock in, a decision out (no broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner

from device_agent.command_gate import Admitted, BadBody, CommandGate, Refused
from device_agent.net_state import NetState
from edgeops.protocol import (
    BodyError,
    CancelCommand,
    Command,
    DeployCommand,
    ReportStateCommand,
    SignedCommand,
)

NOW = 1_000.0


@pytest.fixture(scope="module")
def manager() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


@pytest.fixture
def gate(tmp_path: Path, manager: CryptoSigner) -> CommandGate:
    return CommandGate("cam-1", net=NetState.load(tmp_path / "net_state.json"),
                       manager_keys=lambda: [manager.public_key], clock=lambda: NOW)


def signed(signer: CryptoSigner, seq: int, kind: str = "deploy", body: Any = None, *,
           device: str = "cam-1", expires: float = NOW + 60) -> bytes:
    if body is None:
        body = DeployCommand("m", "1.0.0", deployment_id="d-1").to_dict()
    return SignedCommand.sign(Command(device, seq, kind, NOW - 1, expires, body),
                              signer).to_bytes()


def test_a_genuine_command_is_admitted_with_its_typed_body(gate: CommandGate,
                                                           manager: CryptoSigner) -> None:
    d = gate.check(signed(manager, 1))
    assert isinstance(d, Admitted)
    assert d.body == DeployCommand("m", "1.0.0", deployment_id="d-1")
    assert d.command.seq == 1 and len(d.digest) == 64
    d2 = gate.check(signed(manager, 2, "cancel", CancelCommand("d-1").to_dict()))
    assert isinstance(d2, Admitted) and d2.body == CancelCommand("d-1")
    assert gate.rejected == 0


def test_queued_and_handled_commands_are_not_run_twice(gate: CommandGate,
                                                       manager: CryptoSigner) -> None:
    payload = signed(manager, 3)
    d = gate.check(payload, retained_desired=True)
    assert isinstance(d, Admitted)
    gate.queued(d.command.seq, d.digest)
    assert gate.check(payload, retained_desired=True) is None       # the retained copy again
    older = gate.check(signed(manager, 2))                            # below a queued seq
    assert isinstance(older, Refused) and "replay" in older.reason
    gate.done(d.digest)
    gate.accept(d.command.seq, d.digest)
    assert gate.net.command_seq == 3
    assert gate.check(payload, retained_desired=True) is None       # handled: same digest
    assert NetState.load(gate.net.path).command_seq == 3              # persisted


@pytest.mark.parametrize(("make", "why"), [
    (lambda m, f: b"{not json", "malformed"),
    (lambda m, f: signed(f, 5), "does not trust"),
    (lambda m, f: signed(m, 5, device="cam-2"), "addressed to 'cam-2'"),
    (lambda m, f: signed(m, 5, expires=NOW - 1), "expired"),
])
def test_refused_commands_are_counted(gate: CommandGate, manager: CryptoSigner, make: Any,
                                      why: str) -> None:
    foreign = CryptoSigner.generate_ed25519()
    d = gate.check(make(manager, foreign))
    assert isinstance(d, Refused) and why in d.reason and not d.stale
    assert gate.rejected == 1


def test_a_stale_retained_desired_from_our_manager_is_no_alarm(gate: CommandGate,
                                                                manager: CryptoSigner) -> None:
    gate.accept(10, "x" * 64)
    d = gate.check(signed(manager, 7), retained_desired=True)
    assert isinstance(d, Refused) and d.stale and d.seq == 7 and "replay" in d.reason
    expired = gate.check(signed(manager, 11, expires=NOW - 5), retained_desired=True)
    assert isinstance(expired, Refused) and expired.stale
    assert gate.rejected == 0
    # the same on the commands topic, or signed by someone else, is an alarm
    assert not gate.check(signed(manager, 7)).stale                   # type: ignore[union-attr]
    forged = gate.check(signed(CryptoSigner.generate_ed25519(), 12), retained_desired=True)
    assert isinstance(forged, Refused) and not forged.stale
    assert gate.rejected == 2


def test_a_genuine_command_with_a_bad_body_says_which_field(gate: CommandGate,
                                                            manager: CryptoSigner) -> None:
    d = gate.check(signed(manager, 1, "deploy", {"deployment_id": "d-9", "version": "1"}))
    assert isinstance(d, BadBody)
    assert isinstance(d.error, BodyError) and "'name'" in d.error.message
    assert d.command.body["deployment_id"] == "d-9"
    d2 = gate.check(signed(manager, 2, "report-state", {"deployment_id": 5}))
    assert isinstance(d2, BadBody)
    ok = gate.check(signed(manager, 3, "report-state", ReportStateCommand().to_dict()))
    assert isinstance(ok, Admitted) and ok.body == ReportStateCommand(None)

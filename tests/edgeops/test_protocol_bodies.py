"""Typed command and report bodies: round trips, the manager's exact bytes, every rejection."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeops.bundle.manifest import canonical_json
from edgeops.protocol import (
    BodyError,
    BundleRef,
    CancelCommand,
    ConfigCommand,
    DeployCommand,
    DevicePhase,
    MessageError,
    ReportStateCommand,
    RollbackCommand,
    StateReport,
    StatusMessage,
    parse_body,
)

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                max_size=20)
maybe_names = st.none() | names
digests = st.text("0123456789abcdef", min_size=64, max_size=64)

deploys = st.builds(DeployCommand, name=names, version=names, deployment_id=maybe_names,
                    target=maybe_names, manifest_path=maybe_names,
                    artifact=st.none() | digests, size=st.none() | st.integers(0, 2**40),
                    downgrade=st.booleans())
rollbacks = st.builds(RollbackCommand, deployment_id=names, name=maybe_names,
                      version=maybe_names,
                      to=st.none() | st.builds(BundleRef, st.text(max_size=10),
                                               st.text(max_size=10)))
cancels = st.builds(CancelCommand, names)
report_states = st.builds(ReportStateCommand, maybe_names)
configs = st.one_of(
    st.builds(ConfigCommand, maybe_names),
    st.builds(ConfigCommand, maybe_names,
              st.none() | st.fixed_dictionaries({"file": st.text(max_size=10)}),
              st.just(True)))
bodies = st.one_of(deploys, rollbacks, cancels, report_states, configs)


@given(bodies)
def test_bodies_round_trip(body: Any) -> None:
    assert type(body).from_dict(body.to_dict()) == body
    assert parse_body(body.KIND, body.to_dict()) == body
    # and through the signed JSON bytes (what actually travels)
    assert parse_body(body.KIND, json.loads(canonical_json(body.to_dict()))) == body


def test_deploy_body_is_the_bytes_the_manager_always_sent() -> None:
    """Wire format unchanged: the same dict (and so the same signed bytes) as before."""
    sha = "ab" * 32
    old = {"deployment_id": "d-1", "name": "m", "version": "1.0.0", "target": "x86-cpu",
           "manifest_path": "bundles/m/1.0.0/manifest.json", "artifact": sha, "size": 123}
    new = DeployCommand(name="m", version="1.0.0", deployment_id="d-1", target="x86-cpu",
                        manifest_path="bundles/m/1.0.0/manifest.json", artifact=sha, size=123)
    assert canonical_json(new.to_dict()) == canonical_json(old)
    down = DeployCommand(**{**new.__dict__, "downgrade": True})   # type: ignore[arg-type]
    assert down.to_dict() == old | {"downgrade": True}
    assert RollbackCommand("d-1", "m", "2.0.0", BundleRef("m", "1.0.0")).to_dict() == {
        "deployment_id": "d-1", "name": "m", "version": "2.0.0",
        "to": {"name": "m", "version": "1.0.0"}}
    assert RollbackCommand("d-1", "m", "2.0.0").to_dict()["to"] is None
    assert CancelCommand("d-1").to_dict() == {"deployment_id": "d-1"}
    assert ReportStateCommand("d-1").to_dict() == {"deployment_id": "d-1"}


def test_older_and_newer_senders_are_read() -> None:
    """Fields an agent does not need may be absent; fields it does not know are ignored."""
    assert DeployCommand.from_dict({"name": "m", "version": "1", "future": [1]}) == \
        DeployCommand("m", "1")
    assert RollbackCommand.from_dict({"deployment_id": "d"}) == RollbackCommand("d")
    assert ReportStateCommand.from_dict({}) == ReportStateCommand(None)
    assert ConfigCommand.from_dict({}) == ConfigCommand()
    off = ConfigCommand.from_dict({"driving_signal": None})
    assert off.sets_driving_signal and off.driving_signal is None


@pytest.mark.parametrize(("kind", "body", "why"), [
    ("deploy", {"version": "1"}, "'name' must be a non-empty string"),
    ("deploy", {"name": "", "version": "1"}, "'name' must be a non-empty string"),
    ("deploy", {"name": "m", "version": 1}, "'version' must be a non-empty string"),
    ("deploy", {"name": "m", "version": "1", "target": 5}, "'target'"),
    ("deploy", {"name": "m", "version": "1", "deployment_id": ["d"]}, "'deployment_id'"),
    ("deploy", {"name": "m", "version": "1", "manifest_path": {}}, "'manifest_path'"),
    ("deploy", {"name": "m", "version": "1", "artifact": "xyz"}, "SHA-256"),
    ("deploy", {"name": "m", "version": "1", "artifact": "AB" * 32}, "SHA-256"),
    ("deploy", {"name": "m", "version": "1", "size": -1}, "'size' must be a byte count"),
    ("deploy", {"name": "m", "version": "1", "size": True}, "'size' must be a byte count"),
    ("deploy", {"name": "m", "version": "1", "size": "12"}, "'size' must be a byte count"),
    ("deploy", {"name": "m", "version": "1", "downgrade": "yes"}, "'downgrade'"),
    ("rollback", {}, "'deployment_id' must be a non-empty string"),
    ("rollback", {"deployment_id": "d", "name": 3}, "'name'"),
    ("rollback", {"deployment_id": "d", "to": "m@1"}, "'to' must be an object"),
    ("rollback", {"deployment_id": "d", "to": {"name": "m"}}, "'to.version'"),
    ("cancel", {}, "'deployment_id' must be a non-empty string"),
    ("cancel", {"deployment_id": 7}, "'deployment_id'"),
    ("report-state", {"deployment_id": 7}, "'deployment_id' must be"),
    ("config", {"deployment_id": 7}, "'deployment_id' must be"),
    ("config", {"driving_signal": "on"}, "'driving_signal' must be an object or null"),
    ("no-such-kind", {}, "unknown command kind"),
    ("deploy", ["name", "m"], "the body is not an object"),
])
def test_each_bad_field_is_one_body_error(kind: str, body: Any, why: str) -> None:
    with pytest.raises(BodyError, match=why) as info:
        parse_body(kind, body)
    assert isinstance(info.value, MessageError)          # bad content, not a transport error
    assert kind.split("-")[0] in str(info.value) or kind == "no-such-kind"
    assert info.value.diagnostics()                       # says what to do next


def test_construction_validates_as_parsing_does() -> None:
    with pytest.raises(BodyError, match="'name'"):
        DeployCommand(name="", version="1")
    with pytest.raises(BodyError, match="'to' must be a bundle reference"):
        RollbackCommand("d", to={"name": "m", "version": "1"})  # type: ignore[arg-type]
    with pytest.raises(BodyError, match="must be set"):
        ConfigCommand(driving_signal={"file": "x"})


# -- report bodies: validated when built, on the device as on the manager ----------------------

texts = st.none() | st.text(max_size=30)
reports = st.builds(StateReport, names, st.integers(0, 2**40),
                    st.floats(0, 4e9, allow_nan=False), st.none() | st.sampled_from(
                        list(DevicePhase)), texts, texts,
                    # the manager reads an empty reason as none (and cuts one at 1000 chars)
                    st.none() | st.text(min_size=1, max_size=30),
                    st.none() | st.fixed_dictionaries({"name": names, "slot": st.just("a")}),
                    st.dictionaries(st.sampled_from(["a", "b"]), st.none()))
statuses = st.builds(StatusMessage, names, st.booleans(), st.text(max_size=10),
                     st.floats(0, 4e9, allow_nan=False))


@given(st.one_of(reports, statuses))
def test_reports_round_trip(msg: Any) -> None:
    assert type(msg).from_dict(msg.to_dict()) == msg
    assert type(msg).from_dict(json.loads(msg.to_bytes())) == msg


@pytest.mark.parametrize(("build", "why"), [
    (lambda: StateReport("cam-1", -1, 1.0), "seq must not be negative"),
    (lambda: StateReport("cam-1", True, 1.0), "'seq' has the wrong type"),
    (lambda: StateReport("cam-1", 1, "now"), "'ts' has the wrong type"),
    (lambda: StateReport(None, 1, 1.0), "missing 'device_id'"),
    (lambda: StateReport("cam-1", 1, 1.0, "healthy"), "unknown phase"),
    (lambda: StateReport("cam-1", 1, 1.0, reason=5), "'reason' has the wrong type"),
    (lambda: StateReport("cam-1", 1, 1.0, active=["m"]), "'active' has the wrong type"),
    (lambda: StateReport("cam-1", 1, 1.0, slots=None), "missing 'slots'"),
    (lambda: StatusMessage("cam-1", "yes"), "'online' has the wrong type"),
    (lambda: StatusMessage("cam-1", True, None), "missing 'agent_version'"),
    (lambda: StatusMessage("cam-1", True, "1", ts=False), "'ts' has the wrong type"),
])
def test_reports_refuse_bad_fields_when_built(build: Any, why: str) -> None:
    with pytest.raises(MessageError, match=why):
        build()

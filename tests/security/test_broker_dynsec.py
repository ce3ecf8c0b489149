"""Issue 17's broker attacks: a rogue device with its own valid certificate tries to blind the
manager and knock other devices off; a revoked device must lose its live session at once.

Setup: the generated config (``edgeops fleet broker-config``: mutual TLS, dynamic security,
client id bound to the certificate CN) run by a real Mosquitto on free loopback ports; the two
devices enrolled for real (key made on the device, ``POST /pki/enroll`` on the manager's PKI
routes under uvicorn, which grant them on the broker through the plugin's control API); the
manager on its own listener with its certificate and password, consuming device reports through
the shared subscription its workers use (``$share/edgeops-managers/...``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeops.protocol import topics
from fleet.pki import FleetCA
from tests.security._services import Identity, MqttProbe, SecureBroker, serve_app, tls_alert

pytestmark = pytest.mark.broker

N_MESSAGES = 40
_DELIVERED = ("Success", "No matching subscribers")   # MQTT 5 PUBACK 0x00 / 0x10: accepted
_ids = itertools.count()
_SHARED = [topics.shared(f"{topics.PREFIX}/devices/+/{ch}")
           for ch in ("telemetry", "state", "fetch")]


@pytest.fixture(scope="module")
def enrolled(fleet_ca: FleetCA, secure_broker: SecureBroker,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity]:
    """rogue and victim, enrolled over HTTP as `edgeops agent enroll` does."""
    from starlette.applications import Starlette

    from edgeops.enrolment import request_certificate
    from fleet.api.pki_routes import routes

    app = Starlette(routes=routes)
    app.state.fleet_ca = fleet_ca
    app.state.broker_admin = secure_broker.admin
    out = {}
    with serve_app(app) as url:
        for dev in ("cam-rogue", "cam-victim"):
            files = request_certificate(url, fleet_ca.create_token(dev),
                                        tmp_path_factory.mktemp(dev), dev)
            out[dev] = secure_broker.identity(dev, files.cert, files.key)
    return out


@pytest.fixture
def connect(secure_broker: SecureBroker) -> Iterator[Callable[..., MqttProbe]]:
    probes: list[MqttProbe] = []

    def make(identity: Identity, client_id: str | None = None) -> MqttProbe:
        p = MqttProbe(identity, secure_broker.port, client_id or f"{identity.name}-{next(_ids)}")
        probes.append(p)
        return p

    yield make
    for p in probes:
        p.close()


def test_rogue_device_cannot_blind_the_manager_or_knock_others_off(
        secure_broker: SecureBroker, connect: Callable[..., MqttProbe],
        ident: Callable[[str], Identity], enrolled: dict[str, Identity], attack) -> None:
    manager = connect(ident("manager"), "mgr-worker-1")
    assert manager.connect(), manager.connect_error
    for f in _SHARED:   # what every manager worker subscribes to
        assert manager.subscribe(f) == ["Granted QoS 1"]
    a, b = "cam-rogue", "cam-victim"
    victim = connect(enrolled[b], f"edgeops-agent-{b}")
    assert victim.connect(), victim.connect_error
    # A connects with B's client id: the broker names the session after A's certificate
    rogue = connect(enrolled[a], f"edgeops-agent-{b}")
    assert rogue.connect(), rogue.connect_error
    b_tel, b_cmd = topics.device_topic(b, "telemetry"), topics.device_topic(b, "commands")
    subscriptions = [*_SHARED, "#", f"{topics.PREFIX}/#", f"{topics.PREFIX}/devices/+/telemetry",
                     b_tel, b_cmd, topics.device_topic(b, "desired"),
                     topics.shared(topics.device_topic(a, "commands"), "rogue"),
                     "$CONTROL/dynamic-security/#", "$SYS/#"]
    publications = [b_tel, topics.device_topic(b, "state"), b_cmd,
                    topics.device_topic(a, "commands"), topics.tuf_metadata("timestamp.json"),
                    topics.artifact_chunks("ab" * 32), "$CONTROL/dynamic-security/v1"]
    sub_answers: dict[str, list[str]] = {}
    pub_answers: dict[str, str] = {}
    for i in range(N_MESSAGES):   # B reports while A attacks, one attack between two reports
        sub = subscriptions[i % len(subscriptions)]
        sub_answers.setdefault(sub, rogue.subscribe(sub))
        pub = publications[i % len(publications)]
        pub_answers.setdefault(pub, rogue.publish(pub, b'{"forged": true}'))
        assert victim.publish(b_tel, f'{{"n": {i}}}'.encode()) == "Success"
    assert set(map(tuple, sub_answers.values())) == {("Not authorized",)}, sub_answers
    assert set(pub_answers.values()) == {"Not authorized"}, pub_answers
    # the control: A's own topics work, so the refusals above are the ACL, not a dead session
    own = topics.device_topic(a, "telemetry")
    assert rogue.publish(own, b"own") == "Success"
    assert manager.wait_for(own) == [b"own"]
    deadline = time.monotonic() + 10
    while len(manager.received(b_tel)) < N_MESSAGES and time.monotonic() < deadline:
        time.sleep(0.05)
    got = manager.received(b_tel)
    assert sorted(got) == sorted(f'{{"n": {i}}}'.encode() for i in range(N_MESSAGES))
    assert not victim.disconnected.is_set() and not rogue.disconnected.is_set()
    assert rogue.messages == []
    log = secure_broker.log_text()
    assert f"as {a} (" in log and "already connected" not in log
    attack("dev A subscribes $share/edgeops-managers/... (3)", "SUBACK refused",
           f"SUBACK {sub_answers[_SHARED[0]][0]}")
    attack("dev A subscribes #, edgeops/v1/#, devices/+/...", "SUBACK refused",
           f"SUBACK {sub_answers['#'][0]}")
    attack("dev A subscribes B's telemetry/commands/desired", "SUBACK refused",
           f"SUBACK {sub_answers[b_cmd][0]}")
    attack("dev A connects with B's client id", "B stays connected",
           "session named after A's CN; B never dropped")
    attack("dev A publishes B's and manager topics", "PUBACK refused",
           f"PUBACK {pub_answers[b_tel]}")
    attack(f"manager gets B's telemetry during attack (N={N_MESSAGES})", "100%",
           f"{len(got)}/{N_MESSAGES} received")


def test_device_certificate_cannot_use_the_manager_listener(
        secure_broker: SecureBroker, connect: Callable[..., MqttProbe],
        ident: Callable[[str], Identity], attack) -> None:
    victim = connect(ident("cam-2"), "edgeops-agent-cam-2")
    assert victim.connect()
    a = ident("cam-1")
    tries = {"no login": Identity(a.name, a.ca, a.cert, a.key, None, None,
                                  secure_broker.files.manager_port),
             "own CN": Identity(a.name, a.ca, a.cert, a.key, "cam-1", "x",
                                secure_broker.files.manager_port),
             "manager, wrong password": Identity(a.name, a.ca, a.cert, a.key, "manager@edgeops",
                                                 "not-the-password-at-all",
                                                 secure_broker.files.manager_port)}
    answers = {}
    for what, identity in tries.items():
        p = connect(identity, "edgeops-agent-cam-2")
        assert not p.connect(), what
        answers[what] = p.connect_error
    assert set(answers.values()) == {"Not authorized"}, answers
    time.sleep(0.3)
    assert not victim.disconnected.is_set()
    attack("cam-1 on the manager listener with cam-2's id", "CONNACK refused",
           f"CONNACK {answers['no login']}; cam-2 stays")


def test_revoked_device_is_disconnected_at_once_and_cannot_come_back(
        fleet_ca: FleetCA, tmp_path: Path, identities: dict[str, tuple[Path, Path]],
        attack) -> None:
    """The operator's revocation, one command: ``edgeops fleet ca revoke ID --crl-out ...
    --broker ... --reload-broker PID`` closes the session through the control API and makes the
    broker re-read its CRL (SIGHUP), so the certificate cannot connect again. No restart."""
    from fleet.cli.pki import ca as ca_cli

    broker = SecureBroker(fleet_ca, tmp_path / "broker")
    key, cert = fleet_ca.issue_with_key("cam-9", tmp_path / "cam-9", kind="device")
    mgr_key, mgr_cert = identities["manager"]
    broker.start()
    try:
        assert broker.proc is not None
        broker.grant("cam-9")
        live = MqttProbe(broker.identity("cam-9", cert, key), broker.port, "edgeops-agent-cam-9")
        assert live.connect(), live.connect_error
        own = topics.device_topic("cam-9", "telemetry")
        assert live.publish(own, b"before") in _DELIVERED   # control: a working device
        pidfile = tmp_path / "mosquitto.pid"
        pidfile.write_text(f"{broker.proc.pid}\n")
        broker_args = ["--broker", broker.manager_url, "--broker-ca", str(broker.files.ca),
                       "--broker-cert", str(mgr_cert), "--broker-key", str(mgr_key),
                       "--broker-password-file", str(broker.files.manager_password)]
        t0 = time.monotonic()
        result = CliRunner().invoke(ca_cli, [
            "revoke", "cam-9", "--ca-dir", str(fleet_ca.dir), "--crl-out", str(broker.files.crl),
            *broker_args, "--reload-broker", str(pidfile)])
        assert result.exit_code == 0, result.output
        assert live.disconnected.wait(5), "the revoked device's session is still open"
        cut_s = time.monotonic() - t0
        assert "broker: cam-9 disconnected" in result.output
        assert f"broker (pid {broker.proc.pid}) re-read its CRL" in result.output
        live.close()
        time.sleep(0.5)   # the broker handles SIGHUP in its next loop pass
        alert = tls_alert(broker.identity("cam-9", cert, key), broker.port)
        assert alert is not None and "REVOKED" in alert.upper()
        after = MqttProbe(broker.identity("cam-9", cert, key), broker.port, "cam-9-late")
        assert not after.connect()
        again_cli = CliRunner().invoke(ca_cli, [
            "revoke", "cam-9", "--ca-dir", str(fleet_ca.dir), *broker_args])
        assert again_cli.exit_code == 0, again_cli.output   # a retry only re-syncs the broker
        attack("revoked device's open session", "closed within 5 s", f"closed in {cut_s:.2f} s")
        attack("revoked device reconnects", "refused (TLS)", f"alert {alert}")
    finally:
        broker.stop()


def test_revoked_device_is_powerless_until_the_broker_rereads_its_crl(
        fleet_ca: FleetCA, tmp_path: Path, identities: dict[str, tuple[Path, Path]],
        attack) -> None:
    """Without --reload-broker (a broker on another host): the control API closes the session
    and deletes the role at once; until the CRL is re-read, the certificate can open a session
    in which nothing is allowed; after SIGHUP its handshake fails."""
    from fleet.cli.pki import ca as ca_cli

    broker = SecureBroker(fleet_ca, tmp_path / "broker")
    key, cert = fleet_ca.issue_with_key("cam-8", tmp_path / "cam-8", kind="device")
    mgr_key, mgr_cert = identities["manager"]
    broker.start()
    try:
        broker.grant("cam-8")
        live = MqttProbe(broker.identity("cam-8", cert, key), broker.port, "edgeops-agent-cam-8")
        assert live.connect(), live.connect_error
        result = CliRunner().invoke(ca_cli, [
            "revoke", "cam-8", "--ca-dir", str(fleet_ca.dir), "--crl-out", str(broker.files.crl),
            "--broker", broker.manager_url, "--broker-ca", str(broker.files.ca),
            "--broker-cert", str(mgr_cert), "--broker-key", str(mgr_key),
            "--broker-password-file", str(broker.files.manager_password)])
        assert result.exit_code == 0, result.output
        assert live.disconnected.wait(5), "the revoked device's session is still open"
        live.close()
        own = topics.device_topic("cam-8", "telemetry")
        again = MqttProbe(broker.identity("cam-8", cert, key), broker.port, "cam-8-again")
        if again.connect():
            assert again.publish(own, b"after") == "Not authorized"
            assert again.subscribe(topics.device_topic("cam-8", "commands")) == [
                "Not authorized"]
            again.close()
        broker.reload()   # SIGHUP by hand: the CRL written by --crl-out, no restart
        alert = tls_alert(broker.identity("cam-8", cert, key), broker.port)
        assert alert is not None and "REVOKED" in alert.upper()
        attack("revoked device reconnects, broker not reloaded", "no permission",
               "PUBACK/SUBACK Not authorized; TLS refused after SIGHUP")
    finally:
        broker.stop()


def test_unenrolled_certificate_gets_nothing(fleet_ca: FleetCA, secure_broker: SecureBroker,
                                             tmp_path: Path, attack) -> None:
    """A certificate the broker was never told about (no grant): connected, but powerless."""
    key, cert = fleet_ca.issue_with_key("cam-ghost", tmp_path, kind="device")
    p = MqttProbe(secure_broker.identity("cam-ghost", cert, key), secure_broker.port, "g")
    try:
        assert p.connect()
        own = topics.device_topic("cam-ghost", "telemetry")
        assert p.publish(own, b"x") == "Not authorized"
        assert p.subscribe(topics.device_topic("cam-ghost", "commands")) == ["Not authorized"]
        secure_broker.grant("cam-ghost")   # what enrolment does: now it may
        assert p.publish(own, b"x") in _DELIVERED
    finally:
        p.close()
    attack("certificate without broker grant", "nothing allowed", "PUBACK/SUBACK Not authorized")

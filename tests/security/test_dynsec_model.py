"""The broker's authorisation as data (fleet.dynsec) and its error paths, without a broker.

The live behaviour (what Mosquitto does with these roles) is in test_broker_dynsec.py; here:
the roles follow the topic builders, nothing a device gets reaches past its own subtree, the
plugin's answers map onto one error, and the callers fail with one clear line.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette

from edgeops.errors import TransportError, UsageError
from edgeops.protocol import topics
from fleet import dynsec
from fleet.api.pki_routes import routes
from fleet.certs import generate_key, make_csr
from fleet.pki import MANAGER_IDENTITY, FleetCA
from tests.security._services import serve_app

PASSWORD = "correct horse battery staple"


def _topics(acls: list[dynsec.Acl], acltype: str) -> list[str]:
    return [a.topic for a in acls if a.acltype == acltype and a.allow]


def test_a_device_role_names_only_its_own_topics() -> None:
    acls = dynsec.device_acls("cam-1")
    own = f"{topics.PREFIX}/devices/cam-1/"
    assert _topics(acls, "publishClientSend") == [own + c for c in ("status", "state",
                                                                    "telemetry", "fetch")]
    downlink = [own + c for c in ("desired", "commands", "ack")]   # ack: manager's e2e acks
    assert _topics(acls, "subscribeLiteral") == downlink
    assert _topics(acls, "publishClientReceive") == downlink
    assert not _topics(acls, "subscribePattern")          # literal only: no wildcards at all
    shared = dynsec.shared_device_acls()
    assert set(_topics(shared, "subscribePattern")) == {f"{topics.PREFIX}/artifacts/+/chunks",
                                                        f"{topics.PREFIX}/tuf/metadata/#"}
    assert not _topics(shared, "publishClientSend")       # read-only
    for a in acls + shared:
        assert not a.topic.startswith("$") and a.topic not in ("#", f"{topics.PREFIX}/#")


def test_only_the_manager_role_joins_the_shared_group() -> None:
    conf = dynsec.initial_config(MANAGER_IDENTITY, PASSWORD, salt=b"\0" * 12)
    share = topics.shared(f"{topics.PREFIX}/#")
    holders = [r["rolename"] for r in conf["roles"]
               if any(a["topic"].startswith("$share/") for a in r["acls"])]
    assert holders == [dynsec.MANAGER_ROLE]
    assert share in [a.topic for a in dynsec.manager_acls()]
    assert conf["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                        "subscribe": False, "unsubscribe": True}
    (manager,) = conf["clients"]
    assert manager["username"] == MANAGER_IDENTITY and PASSWORD not in json.dumps(conf)


def test_password_is_stored_as_the_plugins_pbkdf2() -> None:
    entry = dynsec.password_entry(PASSWORD, salt=b"s" * 12, iterations=101)
    want = hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), b"s" * 12, 101, 64)
    assert base64.b64decode(entry["password"]) == want
    assert base64.b64decode(entry["salt"]) == b"s" * 12 and entry["iterations"] == 101
    with pytest.raises(UsageError, match="shorter than 16"):
        dynsec.password_entry("short")


@pytest.mark.parametrize("bad", ["cam/1", "+", "#", "", "manager@edgeops"])
def test_device_commands_refuse_ids_that_are_not_device_ids(bad: str) -> None:
    with pytest.raises(UsageError):
        dynsec.grant_device(bad)
    with pytest.raises(UsageError):
        dynsec.revoke_device(bad)


def test_manager_identity_must_not_be_a_device_id() -> None:
    with pytest.raises(UsageError, match="could also be a device id"):
        dynsec.initial_config("cam-1", PASSWORD)


def _answer(*responses: dict[str, Any]) -> bytes:
    return json.dumps({"responses": list(responses)}).encode()


def test_answers_that_leave_the_broker_as_asked_are_success() -> None:
    grant = dynsec.grant_device("cam-1")
    dynsec.check_responses(grant, _answer({"command": "createRole"}, {"command": "createClient"}))
    dynsec.check_responses(grant, _answer({"command": "createRole", "error": "Role already "
                                           "exists"}, {"command": "createClient",
                                                       "error": "Client already exists"}))
    revoke = dynsec.revoke_device("cam-1")
    dynsec.check_responses(revoke, _answer(*({"command": c["command"], "error": "Client not "
                                              "found"} for c in revoke)))


@pytest.mark.parametrize("answer", [
    _answer({"command": "createRole", "error": "Permission denied"}, {"command": "createClient"}),
    _answer({"command": "createRole"}),                      # one answer for two commands
    b"not json", b'{"no": "responses"}', b'{"responses": 3}',
])
def test_refusals_and_garbled_answers_are_one_error(answer: bytes) -> None:
    with pytest.raises(dynsec.DynsecRefused) as info:
        dynsec.check_responses(dynsec.grant_device("cam-1"), answer)
    assert info.value.message


class _DownBroker:
    def grant_device(self, device_id: str) -> None:
        raise TransportError("cannot connect to mqtts://127.0.0.1:1")


def test_enrolment_with_the_broker_down_is_503_with_a_reason(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    ca = FleetCA(tmp_path / "ca")
    ca.init()
    app = Starlette(routes=routes)
    app.state.fleet_ca = ca
    app.state.broker_admin = _DownBroker()
    body = json.dumps({"token": ca.create_token("cam-3"),
                       "csr": make_csr(generate_key(), "cam-3").decode()}).encode()
    with serve_app(app) as url:
        req = urllib.request.Request(f"{url}/pki/enroll", data=body, method="POST")  # noqa: S310
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)  # noqa: S310 - loopback
    assert info.value.code == 503
    assert "cannot connect" in json.loads(info.value.read())["error"]
    assert ca.records() == []                         # nothing issued...
    assert ca.token_device(json.loads(body)["token"]) == "cam-3"   # ...and the token kept


def test_revoke_with_broker_needs_the_password_file(tmp_path: Path) -> None:
    from fleet.cli.pki import ca as ca_cli

    ca = FleetCA(tmp_path / "ca")
    ca.init()
    ca.issue_with_key("cam-5", tmp_path / "cam-5", kind="device")
    r = CliRunner().invoke(ca_cli, ["revoke", "cam-5", "--ca-dir", str(ca.dir), "--broker",
                                    "mqtts://127.0.0.1:8884"])
    assert isinstance(r.exception, UsageError) and "--broker-password-file" in r.exception.message
    assert not [x for x in ca.records() if x.revoked_at]       # nothing half-done
    for url, says in (("http://nowhere", "is not mqtt://"),
                      ("mqtts://127.0.0.1:8884", "cannot read the broker password file")):
        r = CliRunner().invoke(ca_cli, ["revoke", "cam-5", "--ca-dir", str(ca.dir), "--broker",
                                        url, "--broker-password-file", str(tmp_path / "missing")])
        assert isinstance(r.exception, UsageError) and says in r.exception.message
        assert not [x for x in ca.records() if x.revoked_at]


def test_reload_broker_is_checked_before_anything_is_revoked(tmp_path: Path) -> None:
    """--reload-broker needs the CRL it makes the broker re-read, and a live process: a wrong
    pid or pid file is one usage line, and the certificate stays unrevoked."""
    import subprocess
    import sys

    from fleet.cli.pki import ca as ca_cli

    ca = FleetCA(tmp_path / "ca")
    ca.init()
    ca.issue_with_key("cam-7", tmp_path / "cam-7", kind="device")
    crl = ["--crl-out", str(tmp_path / "crl.pem")]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "junk.pid").write_text("mosquitto\n")
    for extra, says in (([], "--reload-broker needs --crl-out"),
                        (crl, "cannot read the pid file"),
                        (crl, "holds no process id"),
                        (crl, f"no process {gone.pid} is running")):
        target = {"cannot read the pid file": str(tmp_path / "missing.pid"),
                  "holds no process id": str(tmp_path / "junk.pid")}.get(says, str(gone.pid))
        r = CliRunner().invoke(ca_cli, ["revoke", "cam-7", "--ca-dir", str(ca.dir), *extra,
                                        "--reload-broker", target])
        assert isinstance(r.exception, UsageError), r.output
        assert says in r.exception.message
        assert not [x for x in ca.records() if x.revoked_at]       # nothing half-done
        assert not (tmp_path / "crl.pem").exists()


def test_broker_admin_without_a_broker_is_a_transport_error() -> None:
    from fleet.broker_admin import BrokerAdmin
    from tests.services import free_port

    with BrokerAdmin(f"mqtt://127.0.0.1:{free_port()}", PASSWORD, timeout_s=1.0) as admin, \
            pytest.raises(TransportError):
        admin.grant_device("cam-1")


def test_broker_config_grants_devices_enrolled_before_it(tmp_path: Path) -> None:
    """A fleet moving from the ACL file keeps its devices; revoked ones are left out."""
    from fleet.broker_config import write_broker_config

    ca = FleetCA(tmp_path / "ca")
    ca.init()
    for dev in ("cam-1", "cam-2"):
        ca.issue_with_key(dev, tmp_path / dev, kind="device")
    ca.revoke("cam-2")
    plugin = tmp_path / "mosquitto_dynamic_security.so"
    plugin.write_bytes(b"")
    files = write_broker_config(ca, tmp_path / "b", plugin=plugin)
    conf = json.loads(files.dynsec.read_text())
    assert [c["username"] for c in conf["clients"]] == [MANAGER_IDENTITY, "cam-1"]
    roles = {r["rolename"]: r["acls"] for r in conf["roles"]}
    assert roles[dynsec.device_role("cam-1")] == [a.to_dict() for a in dynsec.device_acls("cam-1")]
    assert dynsec.device_role("cam-2") not in roles


def test_revoke_with_the_broker_down_says_what_was_done(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import fleet.broker_admin
    from fleet.cli.pki import ca as ca_cli
    from tests.services import free_port

    monkeypatch.setattr(fleet.broker_admin, "DEFAULT_TIMEOUT_S", 1.0)
    ca = FleetCA(tmp_path / "ca")
    ca.init()
    ca.issue_with_key("cam-6", tmp_path / "cam-6", kind="device")
    (tmp_path / "pw").write_text(PASSWORD)
    args = ["revoke", "cam-6", "--ca-dir", str(ca.dir), "--broker",
            f"mqtt://127.0.0.1:{free_port()}", "--broker-password-file", str(tmp_path / "pw")]
    r = CliRunner().invoke(ca_cli, args)
    assert isinstance(r.exception, TransportError)
    assert "revoked in the CA (1 certificate(s), CRL written) but the broker was not updated" \
        in r.exception.message and "again" in r.exception.hint
    assert [x.identity for x in ca.records() if x.revoked_at] == ["cam-6"]
    # the retry the hint names reaches the broker step again (here: still down)
    r = CliRunner().invoke(ca_cli, args)
    assert isinstance(r.exception, TransportError) and "(0 certificate(s)" in r.exception.message
    # without --broker, revoking twice is still the CA's usage error
    r = CliRunner().invoke(ca_cli, args[:4])
    assert isinstance(r.exception, UsageError) and "no unrevoked certificate" in r.exception.message

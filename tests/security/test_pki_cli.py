"""``edgeops fleet ca ...`` and ``broker-config`` through click, as a user types them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from device_agent.enroll_cli import enroll as device_enroll
from edgeops.errors import EdgeOpsError
from fleet.certs import make_csr
from fleet.cli.pki import broker_config, ca
from fleet.pki import MANAGER_IDENTITY


def run(cmd, args: list[str]) -> tuple[int, str, EdgeOpsError | None]:
    """Invoke like edgeops.cli.main does: EdgeOpsError propagates, click errors exit 2."""
    result = CliRunner().invoke(cmd, args, catch_exceptions=True)
    exc = result.exception if isinstance(result.exception, EdgeOpsError) else None
    if result.exception is not None and exc is None and not isinstance(result.exception,
                                                                        SystemExit):
        raise result.exception
    return result.exit_code, result.output, exc


def test_ca_lifecycle(tmp_path: Path) -> None:
    d = str(tmp_path / "ca")
    code, out, _ = run(ca, ["init", "--ca-dir", d, "--json"])
    assert code == 0 and json.loads(out)["ca_dir"] == d
    code, out, exc = run(ca, ["init", "--ca-dir", d])
    assert exc is not None and exc.exit_code == 2 and "already exists" in exc.message

    code, out, _ = run(ca, ["token", "cam-3", "--ca-dir", d, "--ttl", "2h", "--json"])
    tok = json.loads(out)
    assert tok["ttl_s"] == 7200 and len(tok["token"]) >= 40
    assert tok["token"] not in (tmp_path / "ca" / "tokens.json").read_text()

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cam-3.csr").write_bytes(make_csr(key, "cam-3"))
    code, out, _ = run(ca, ["issue", "cam-3", "--csr", str(tmp_path / "cam-3.csr"), "--out",
                            str(tmp_path / "cam-3.crt"), "--ca-dir", d, "--json"])
    assert code == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "cam-3.crt").read_bytes())
    assert cert.public_key() == key.public_key()

    code, out, _ = run(ca, ["issue", "--manager", "--out", str(tmp_path / "mgr"), "--ca-dir", d])
    assert code == 0 and MANAGER_IDENTITY in out
    assert stat.S_IMODE((tmp_path / "mgr" / "manager.key").stat().st_mode) == 0o600

    code, out, _ = run(ca, ["revoke", "cam-3", "--ca-dir", d, "--crl-out",
                            str(tmp_path / "copy.pem"), "--json"])
    assert json.loads(out)["revoked"] == [format(cert.serial_number, "x")]
    crl = x509.load_pem_x509_crl((tmp_path / "copy.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None

    code, out, _ = run(ca, ["crl", "--ca-dir", d, "--json"])
    assert json.loads(out)["revoked"] == [format(cert.serial_number, "x")]
    code, out, _ = run(ca, ["list", "--ca-dir", d, "--json"])
    rows = json.loads(out)
    assert {r["identity"] for r in rows} == {"cam-3", MANAGER_IDENTITY}
    assert next(r for r in rows if r["identity"] == "cam-3")["revoked_at"]


@pytest.mark.parametrize("args, needle", [
    (["token", "bad/id"], "invalid device id"),
    (["token", "cam-1", "--ttl", "soon"], "invalid duration"),
    (["token", "cam-1", "--ttl", "0"], "positive"),
    (["revoke", "nobody"], "no unrevoked certificate"),
    (["revoke", "0xzz"], "invalid serial"),
    (["issue", "--out", "x"], "exactly one"),
])
def test_ca_usage_errors_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    d = str(tmp_path / "ca")
    run(ca, ["init", "--ca-dir", d])
    _, _, exc = run(ca, [*args, "--ca-dir", d])
    assert exc is not None and needle in exc.message and exc.exit_code == 2


def test_commands_without_a_ca_say_how_to_make_one(tmp_path: Path) -> None:
    _, _, exc = run(ca, ["token", "cam-1", "--ca-dir", str(tmp_path / "none")])
    assert exc is not None and exc.exit_code == 1 and "ca init" in exc.hint


def _fake_plugin(tmp_path: Path) -> str:
    (tmp_path / "mosquitto_dynamic_security.so").write_bytes(b"")
    return str(tmp_path / "mosquitto_dynamic_security.so")


def test_broker_config_writes_everything(tmp_path: Path) -> None:
    d = str(tmp_path / "ca")
    run(ca, ["init", "--ca-dir", d])
    import getpass

    plugin = _fake_plugin(tmp_path)   # written into the config, not loaded here
    code, out, _ = run(broker_config, ["--ca-dir", d, "--out", str(tmp_path / "b"), "--port",
                                       "8885", "--user", getpass.getuser(), "--json",
                                       "--dynsec-plugin", plugin])
    assert code == 0
    files = json.loads(out)
    conf = Path(files["conf"]).read_text()
    for line in ("require_certificate true", "use_identity_as_username true",
                 "use_username_as_clientid true", "allow_anonymous false", "listener 8885",
                 "listener 8884", f"crlfile {files['crl']}",
                 f"plugin {plugin}", f"plugin_opt_config_file {files['dynsec']}"):
        assert line in conf
    assert "acl_file" not in conf
    for secret in ("key", "dynsec", "manager_password"):
        assert stat.S_IMODE(Path(files[secret]).stat().st_mode) == 0o600
    dynsec = json.loads(Path(files["dynsec"]).read_text())
    assert Path(files["manager_password"]).read_text().strip() not in json.dumps(dynsec)
    # a second run keeps the broker's state (devices enrolled since) and the password
    Path(files["dynsec"]).write_text(json.dumps(dynsec | {"groups": [{"groupname": "kept"}]}))
    password = Path(files["manager_password"]).read_text()
    assert run(broker_config, ["--ca-dir", d, "--out", str(tmp_path / "b"), "--port", "8885",
                               "--user", getpass.getuser(), "--dynsec-plugin", plugin])[0] == 0
    assert json.loads(Path(files["dynsec"]).read_text())["groups"] == [{"groupname": "kept"}]
    assert Path(files["manager_password"]).read_text() == password
    server = x509.load_pem_x509_certificate(Path(files["cert"]).read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)


def test_broker_config_refuses_one_port_for_both_listeners(tmp_path: Path) -> None:
    d = str(tmp_path / "ca")
    run(ca, ["init", "--ca-dir", d])
    _, _, exc = run(broker_config, ["--ca-dir", d, "--out", str(tmp_path / "b"), "--port",
                                    "8884", "--manager-port", "8884",
                                    "--dynsec-plugin", _fake_plugin(tmp_path)])
    assert exc is not None and exc.exit_code == 2 and "--manager-port" in (exc.hint or "")
    assert not (tmp_path / "b").exists()


def test_broker_config_without_the_plugin_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fleet.broker_config as bc

    monkeypatch.setattr(bc, "_PLUGIN_DIRS", (str(tmp_path / "nowhere"),))
    d = str(tmp_path / "ca")
    run(ca, ["init", "--ca-dir", d])
    _, _, exc = run(broker_config, ["--ca-dir", d, "--out", str(tmp_path / "b")])
    assert exc is not None and exc.exit_code == 2 and "apt-get install mosquitto" in exc.hint
    assert not (tmp_path / "b").exists()


def test_broker_config_rejects_unknown_user(tmp_path: Path) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("the key is handed to --user only when run as root")
    d = str(tmp_path / "ca")
    run(ca, ["init", "--ca-dir", d])
    _, _, exc = run(broker_config, ["--ca-dir", d, "--out", str(tmp_path / "b"), "--user",
                                    "no-such-user-xyz", "--dynsec-plugin", _fake_plugin(tmp_path)])
    assert exc is not None and "does not exist" in exc.message


def test_device_enroll_needs_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEOPS_ENROLL_TOKEN", raising=False)
    _, _, exc = run(device_enroll, ["--fleet", "http://127.0.0.1:9", "--device-id", "cam-1",
                                    "--out", str(tmp_path / "o")])
    assert exc is not None and exc.exit_code == 2 and "token" in exc.message


def test_device_enroll_unreachable_fleet_is_a_transport_error(tmp_path: Path) -> None:
    from tests.services import free_port

    _, _, exc = run(device_enroll, ["--fleet", f"http://127.0.0.1:{free_port()}", "--device-id",
                                    "cam-1", "--token", "t", "--out", str(tmp_path / "o")])
    assert exc is not None and "cannot reach" in exc.message
    assert not (tmp_path / "o").exists()


def test_acl_is_generated_from_the_topic_builders() -> None:
    from fleet.broker_config import device_permissions, render_acl

    write, read = device_permissions()
    assert write == [f"edgeops/v1/devices/%u/{c}" for c in ("status", "state", "telemetry",
                                                           "fetch")]
    assert read == ["edgeops/v1/devices/%u/desired", "edgeops/v1/devices/%u/commands",
                    "edgeops/v1/devices/%u/ack", "edgeops/v1/artifacts/+/chunks",
                    "edgeops/v1/tuf/metadata/#"]
    from edgeops.errors import UsageError

    with pytest.raises(UsageError):
        render_acl("cam-1")  # a manager identity a device could also hold


def test_crl_distribution_point_is_written_into_certificates(tmp_path: Path) -> None:
    d = str(tmp_path / "ca")
    url = "https://manager.example/pki/crl"
    code, _, _ = run(ca, ["init", "--ca-dir", d, "--crl-url", url])
    assert code == 0
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "c.csr").write_bytes(make_csr(key, "cam-4"))
    run(ca, ["issue", "cam-4", "--csr", str(tmp_path / "c.csr"), "--out",
             str(tmp_path / "c.crt"), "--ca-dir", d])
    cert = x509.load_pem_x509_certificate((tmp_path / "c.crt").read_bytes())
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for n in cdp[0].full_name] == [url]
    _, _, exc = run(ca, ["init", "--ca-dir", str(tmp_path / "ca2"), "--crl-url", "ftp://x"])
    assert exc is not None and exc.exit_code == 2 and not (tmp_path / "ca2").exists()


def test_without_crl_url_no_distribution_point(tmp_path: Path) -> None:
    d = str(tmp_path / "ca")
    run(ca, ["init", "--ca-dir", d])
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "c.csr").write_bytes(make_csr(key, "cam-4"))
    run(ca, ["issue", "cam-4", "--csr", str(tmp_path / "c.csr"), "--out",
             str(tmp_path / "c.crt"), "--ca-dir", d])
    cert = x509.load_pem_x509_certificate((tmp_path / "c.crt").read_bytes())
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)

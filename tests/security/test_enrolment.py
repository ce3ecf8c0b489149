"""Enrolment and renewal over the real HTTP routes: the device keeps its key, tokens are one-time.

A real uvicorn serves ``fleet.api.pki_routes.routes``; the device side is
``edgeops.enrolment``. Each refusal path has its own test.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette

from edgeops.enrolment import due_for_renewal, renew_certificate, request_certificate
from edgeops.errors import UsageError, VerificationError
from fleet.api.pki_routes import routes
from fleet.certs import certificate_identity, make_csr
from fleet.pki import FleetCA, hash_token
from tests.security._services import serve_app


@pytest.fixture
def ca(tmp_path: Path) -> FleetCA:
    c = FleetCA(tmp_path / "ca")
    c.init()
    return c


@pytest.fixture
def fleet_url(ca: FleetCA) -> Iterator[str]:
    app = Starlette(routes=routes)
    app.state.fleet_ca = ca
    with serve_app(app) as url:
        yield url


def _post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - loopback
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_enrolment_issues_a_certificate_for_a_key_that_never_left_the_device(
        ca: FleetCA, fleet_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = ca.create_token("cam-17")
    caplog.set_level(logging.DEBUG)
    files = request_certificate(fleet_url, token, tmp_path / "dev", "cam-17")
    key_pem = files.key.read_bytes()
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    key = serialization.load_pem_private_key(key_pem, None)
    assert certificate_identity(cert) == "cam-17"
    assert cert.public_key() == key.public_key()
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    cert.verify_directly_issued_by(ca.certificate())
    # the CA side holds no trace of the device's private key, nor the token in clear
    ca_bytes = b"".join(p.read_bytes() for p in ca.dir.iterdir() if p.is_file())
    key_body = b"".join(key_pem.splitlines()[1:-1])
    assert key_body not in ca_bytes.replace(b"\n", b"")
    assert token.encode() not in ca_bytes
    assert hash_token(token).encode() in (ca.dir / "tokens.json").read_bytes()
    # secrets never logged
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "cam-17" in logged  # the enrolment itself is logged ...
    assert token not in logged and key_body.decode() not in logged.replace("\n", "")


def test_token_is_single_use(ca: FleetCA, fleet_url: str, tmp_path: Path, attack,
                             caplog: pytest.LogCaptureFixture) -> None:
    token = ca.create_token("cam-1")
    request_certificate(fleet_url, token, tmp_path / "a", "cam-1")
    caplog.set_level(logging.INFO)
    with pytest.raises(VerificationError, match="already been used"):
        request_certificate(fleet_url, token, tmp_path / "b", "cam-1")
    assert not (tmp_path / "b").exists()  # nothing half-written
    assert len(ca.records()) == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused an enrolment" in logged and token not in logged
    attack("enrolment token reused", "403, nothing issued", "403 already been used")


def test_expired_token_is_refused(ca: FleetCA, fleet_url: str, tmp_path: Path) -> None:
    token = ca.create_token("cam-1", ttl_s=60, now=datetime.now(UTC) - timedelta(minutes=5))
    with pytest.raises(VerificationError, match="expired"):
        request_certificate(fleet_url, token, tmp_path / "d", "cam-1")
    assert len(ca.records()) == 0


def test_unknown_token_is_refused(ca: FleetCA, fleet_url: str, tmp_path: Path, attack) -> None:
    ca.create_token("cam-1")
    with pytest.raises(VerificationError, match="not known"):
        request_certificate(fleet_url, "guessed-" + "A" * 35, tmp_path / "d", "cam-1")
    attack("enrol with a guessed token", "403, nothing issued", "403 token not known")


def test_token_for_one_device_cannot_enrol_another(ca: FleetCA, fleet_url: str,
                                                   tmp_path: Path, attack) -> None:
    token = ca.create_token("cam-1")
    with pytest.raises(VerificationError, match="token is for another device"):
        request_certificate(fleet_url, token, tmp_path / "d", "cam-2")
    assert ca.records() == []
    attack("cam-1's token used to enrol cam-2", "403, nothing issued", "403 CN mismatch")


def test_ca_refuses_manager_identity_for_a_device(ca: FleetCA) -> None:
    with pytest.raises(UsageError):
        ca.create_token("manager@edgeops")
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(UsageError):
        ca.issue(make_csr(key, "manager@edgeops"), "manager@edgeops", kind="device")


@pytest.mark.parametrize("body, status", [
    (b"not json", 400),
    (b"[]", 400),
    (b'{"token": "x"}', 400),
    (b'{"token": 1, "csr": "x"}', 400),
    (b'{"token": "x", "csr": "not a csr"}', 403),
    (b'{"token": "x", "csr": "' + b"A" * 70000 + b'"}', 400),
])
def test_malformed_enrolment_requests_get_one_clear_error(ca: FleetCA, fleet_url: str,
                                                          body: bytes, status: int) -> None:
    code, answer = _post(fleet_url + "/pki/enroll", body)
    assert code == status
    assert isinstance(answer["error"], str) and answer["error"]
    assert ca.records() == []


def test_tampered_csr_is_refused(ca: FleetCA, fleet_url: str) -> None:
    token = ca.create_token("cam-1")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_pem_x509_csr(make_csr(key, "cam-1"))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # flip a bit of the signature
    pem = (b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(der))
           + b"-----END CERTIFICATE REQUEST-----\n")
    code, answer = _post(fleet_url + "/pki/enroll",
                         json.dumps({"token": token, "csr": pem.decode()}).encode())
    assert code == 403 and ("signature" in str(answer["error"]) or "PEM" in str(answer["error"]))


def _enrolled_long_ago(ca: FleetCA, tmp_path: Path, device: str, days_ago: int) -> Path:
    out = tmp_path / device
    ca.issue_with_key(device, out, kind="device", basename="device",
                      now=datetime.now(UTC) - timedelta(days=days_ago))
    (out / "ca.pem").write_bytes(ca.cert_path.read_bytes())
    return out


def test_renewal_before_expiry_gives_a_new_key_and_certificate(ca: FleetCA, fleet_url: str,
                                                               tmp_path: Path) -> None:
    out = _enrolled_long_ago(ca, tmp_path, "cam-5", days_ago=70)  # 20 days left of 90
    assert due_for_renewal(out / "device.crt")
    old_cert = (out / "device.crt").read_bytes()
    old_key = (out / "device.key").read_bytes()
    files = renew_certificate(fleet_url, out)
    new = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert files.cert.read_bytes() != old_cert and files.key.read_bytes() != old_key
    assert certificate_identity(new) == "cam-5"
    assert new.not_valid_after_utc > x509.load_pem_x509_certificate(old_cert).not_valid_after_utc
    assert not due_for_renewal(files.cert)
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600


def test_renewal_too_early_is_refused(ca: FleetCA, fleet_url: str, tmp_path: Path) -> None:
    out = _enrolled_long_ago(ca, tmp_path, "cam-5", days_ago=1)
    before = (out / "device.crt").read_bytes()
    with pytest.raises(VerificationError, match="not yet due"):
        renew_certificate(fleet_url, out)
    assert (out / "device.crt").read_bytes() == before


def test_revoked_device_cannot_renew(ca: FleetCA, fleet_url: str, tmp_path: Path,
                                     attack) -> None:
    out = _enrolled_long_ago(ca, tmp_path, "cam-6", days_ago=70)
    ca.revoke("cam-6")
    with pytest.raises(VerificationError, match="revoked"):
        renew_certificate(fleet_url, out)
    attack("revoked device renews its certificate", "403", "403 revoked")


def test_expired_certificate_cannot_renew(ca: FleetCA, fleet_url: str, tmp_path: Path) -> None:
    out = _enrolled_long_ago(ca, tmp_path, "cam-6", days_ago=95)
    with pytest.raises(VerificationError, match="expired"):
        renew_certificate(fleet_url, out)


def test_renewal_without_the_current_key_is_refused(ca: FleetCA, fleet_url: str,
                                                    tmp_path: Path, attack) -> None:
    """An attacker with a copy of the (public) certificate but another key."""
    out = _enrolled_long_ago(ca, tmp_path, "cam-8", days_ago=70)
    thief = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(thief, "cam-8")
    proof = thief.sign(csr, ec.ECDSA(hashes.SHA256()))
    code, answer = _post(fleet_url + "/pki/renew", json.dumps({
        "csr": csr.decode(), "certificate": (out / "device.crt").read_text(),
        "proof": base64.b64encode(proof).decode()}).encode())
    assert code == 403 and "proof" in str(answer["error"])
    attack("renew a stolen certificate without its key", "403", "403 proof does not verify")


def test_crl_endpoint_lists_revoked_serials(ca: FleetCA, fleet_url: str, tmp_path: Path) -> None:
    _key, cert_path = ca.issue_with_key("cam-9", tmp_path, kind="device")
    serial = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
    ca.revoke("cam-9")
    with urllib.request.urlopen(fleet_url + "/pki/crl", timeout=10) as r:  # noqa: S310
        crl = x509.load_pem_x509_crl(r.read())
    assert crl.is_signature_valid(ca.certificate().public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    # the manager's own check honours the same CRL
    with pytest.raises(VerificationError, match="revoked"):
        ca.check(cert_path.read_bytes())


def test_private_files_are_0600(ca: FleetCA, tmp_path: Path) -> None:
    for p in (ca.key_path, ca.tokens_path, ca.issued_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.dir.stat().st_mode) == 0o700
    key, _ = ca.issue_with_key("manager@edgeops", tmp_path / "m", kind="manager")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_encrypted_ca_key_needs_its_passphrase(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeops.errors import ConfigError

    monkeypatch.delenv("EDGEOPS_CA_PASSPHRASE", raising=False)
    c = FleetCA(tmp_path / "enc")
    c.init(passphrase=b"correct horse")
    assert b"ENCRYPTED" in c.key_path.read_bytes()
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ConfigError, match="no passphrase"):
        c.issue(make_csr(key, "cam-1"), "cam-1")
    with pytest.raises(ConfigError, match="wrong passphrase"):
        c.issue(make_csr(key, "cam-1"), "cam-1", passphrase=b"wrong")
    assert c.records() == []
    monkeypatch.setenv("EDGEOPS_CA_PASSPHRASE", "correct horse")
    assert certificate_identity(c.issue(make_csr(key, "cam-1"), "cam-1")) == "cam-1"


def test_enroll_command_end_to_end(ca: FleetCA, fleet_url: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``edgeops agent enroll`` (device_agent.enroll_cli.enroll) as a device runs it."""
    from click.testing import CliRunner

    from device_agent.enroll_cli import enroll

    monkeypatch.setenv("EDGEOPS_ENROLL_TOKEN", ca.create_token("cam-21"))
    out = tmp_path / "etc"
    result = CliRunner().invoke(enroll, ["--fleet", fleet_url, "--device-id", "cam-21", "--out",
                                         str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["device_id"] == "cam-21" and Path(info["key"]).exists()
    assert os.environ["EDGEOPS_ENROLL_TOKEN"] not in result.output
    # renewal through the same command is refused while the certificate is fresh
    result = CliRunner().invoke(enroll, ["--fleet", fleet_url, "--out", str(out), "--renew"])
    assert isinstance(result.exception, VerificationError)
    assert "not yet due" in result.exception.message
    result = CliRunner().invoke(enroll, ["--fleet", fleet_url, "--out", str(out)])
    assert isinstance(result.exception, UsageError)

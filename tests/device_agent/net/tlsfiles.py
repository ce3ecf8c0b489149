"""Test-only PKI: a CA, a broker certificate for 127.0.0.1 and a device client certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.mosquitto import TlsMaterial

__all__ = ["make_tls"]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, ip: str | None = None
          ) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip is not None:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(
            ipaddress.ip_address(ip))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_tls(directory: Path, device_id: str) -> TlsMaterial:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeops-test-ca")])
    ca = _cert("edgeops-test-ca", ca_key, ca_name, ca_key, ca=True)
    srv_key, cli_key = _key(), _key()
    srv = _cert("127.0.0.1", srv_key, ca_name, ca_key, ca=False, ip="127.0.0.1")
    cli = _cert(device_id, cli_key, ca_name, ca_key, ca=False)
    m = TlsMaterial(ca=directory / "ca.pem", server_cert=directory / "server.crt",
                    server_key=directory / "server.key", client_cert=directory / "device.crt",
                    client_key=directory / "device.key")
    for path, cert in ((m.ca, ca), (m.server_cert, srv), (m.client_cert, cli)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(m.server_key, srv_key)
    _write_key(m.client_key, cli_key)
    return m

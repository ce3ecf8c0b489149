"""Device-side enrolment: make a key on the device, send only a CSR, store the certificate.

Why it exists: the device's TLS identity must be its own. The private key is generated here,
written 0600 and never sent anywhere; the fleet manager sees a certificate signing request and a
one-time enrolment token (``POST /pki/enroll``), and later a renewal request signed with the
current key (``POST /pki/renew``). The token is never logged. It is the client half of the
enrolment protocol, in edgeops because two parts run it: the agent (``edgeops agent enroll``) and
the operator's ``edgeops fleet enroll``, which provisions a device's files in one step.

Files written to ``out_dir``: ``device.key`` (0600), ``device.crt``, ``ca.pem``, matching the
``broker.tls`` block of ``agent.json`` ({"ca": "ca.pem", "cert": "device.crt",
"key": "device.key"}).
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgeops.errors import BadContentError, TransportError, UsageError, VerificationError
from edgeops.fsutil import atomic_write
from edgeops.protocol.topics import valid_device_id

__all__ = ["EnrolledFiles", "due_for_renewal", "renew_certificate", "request_certificate"]

log = logging.getLogger(__name__)

KEY_NAME, CERT_NAME, CA_NAME = "device.key", "device.crt", "ca.pem"
_TIMEOUT_S = 30.0
_MAX_RESPONSE_BYTES = 256 * 1024


@dataclass(frozen=True)
class EnrolledFiles:
    key: Path
    cert: Path
    ca: Path
    device_id: str
    not_after: datetime


def _csr(key: ec.EllipticCurvePrivateKey, device_id: str) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"fleet URL {url!r} is not http(s)")
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",  # noqa: S310
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as resp:  # noqa: S310
            data = resp.read(_MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read(_MAX_RESPONSE_BYTES))
            message, hint = str(err["error"]), err.get("hint")
        except (ValueError, KeyError, TypeError):
            message, hint = f"HTTP {exc.code}", None
        if 400 <= exc.code < 500:
            raise VerificationError(f"the fleet refused the request: {message}",
                                    hint=hint or "ask the operator for a new enrolment token"
                                    ) from None
        raise TransportError(f"the fleet answered HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TransportError(f"cannot reach the fleet at {url}: {exc}") from None
    if len(data) > _MAX_RESPONSE_BYTES:
        raise BadContentError("the fleet's answer is too large")
    try:
        out = json.loads(data)
    except ValueError:
        raise BadContentError("the fleet's answer is not JSON") from None
    if not isinstance(out, dict):
        raise BadContentError("the fleet's answer is not a JSON object")
    return out


def _store(out_dir: Path, key: ec.EllipticCurvePrivateKey, answer: dict[str, Any],
           device_id: str) -> EnrolledFiles:
    try:
        cert = x509.load_pem_x509_certificate(str(answer["certificate"]).encode())
        ca = x509.load_pem_x509_certificate(str(answer["ca"]).encode())
    except (KeyError, ValueError):
        raise BadContentError("the fleet's answer holds no PEM certificate") from None
    if cert.public_key() != key.public_key():
        raise VerificationError("the issued certificate is not for this device's key")
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cn or cn[0].value != device_id:
        raise VerificationError("the issued certificate names another device")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise VerificationError(f"the certificate does not verify against the CA: {exc}"
                                ) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    files = EnrolledFiles(out_dir / KEY_NAME, out_dir / CERT_NAME, out_dir / CA_NAME, device_id,
                          cert.not_valid_after_utc)
    atomic_write(files.key, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()), mode=0o600)
    atomic_write(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    atomic_write(files.ca, ca.public_bytes(serialization.Encoding.PEM))
    log.info("stored certificate for %s, valid until %s", device_id, files.not_after)
    return files


def request_certificate(fleet_url: str, token: str, out_dir: Path,
                        device_id: str) -> EnrolledFiles:
    """First enrolment: new key here, CSR + one-time token to ``POST {fleet_url}/pki/enroll``."""
    if not valid_device_id(device_id):
        raise UsageError(f"invalid device id {device_id!r}")
    if not token:
        raise UsageError("an enrolment token is needed",
                         hint="ask the operator: `edgeops fleet ca token DEVICE_ID`")
    key = ec.generate_private_key(ec.SECP256R1())
    log.info("requesting a certificate for %s from %s", device_id, fleet_url)
    answer = _post(fleet_url.rstrip("/") + "/pki/enroll",
                   {"token": token, "csr": _csr(key, device_id).decode()})
    return _store(Path(out_dir), key, answer, device_id)


def due_for_renewal(cert_path: Path, renew_before: timedelta = timedelta(days=30),
                    now: datetime | None = None) -> bool:
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return cert.not_valid_after_utc - (now or datetime.now(UTC)) <= renew_before


def renew_certificate(fleet_url: str, out_dir: Path) -> EnrolledFiles:
    """Renewal before expiry: a new key, its CSR signed as proof by the current key."""
    out_dir = Path(out_dir)
    try:
        current_pem = (out_dir / CERT_NAME).read_bytes()
        old_key = serialization.load_pem_private_key((out_dir / KEY_NAME).read_bytes(), None)
    except FileNotFoundError:
        raise UsageError(f"no enrolled certificate in {out_dir}",
                         hint="enrol first with a token") from None
    if not isinstance(old_key, ec.EllipticCurvePrivateKey):
        raise UsageError("the current device key is not an EC key")
    cn = x509.load_pem_x509_certificate(current_pem).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)
    device_id = str(cn[0].value) if cn else ""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = _csr(key, device_id)
    proof = old_key.sign(csr, ec.ECDSA(hashes.SHA256()))
    answer = _post(fleet_url.rstrip("/") + "/pki/renew",
                   {"csr": csr.decode(), "certificate": current_pem.decode(),
                    "proof": base64.b64encode(proof).decode()})
    return _store(out_dir, key, answer, device_id)

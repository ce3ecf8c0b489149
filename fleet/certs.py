"""Pure X.509 for the fleet PKI: build and parse certificates, CSRs and CRLs; no files, no state.

Why apart from :class:`fleet.pki.FleetCA`: the acceptance rules (which CSR is signable, which
client certificate is accepted) are keys, bytes and a clock in, objects out, so they can be
read and tested without a CA directory, and the stateful CA (files, locks, tokens, the issued
list) only does the bookkeeping around them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeops.errors import VerificationError

__all__ = [
    "DEFAULT_PKI_LIMITS",
    "EnrolmentError",
    "PkiLimits",
    "PrivateKey",
    "build_ca_certificate",
    "build_crl",
    "certificate_identity",
    "check_certificate",
    "csr_common_name",
    "generate_key",
    "key_pem",
    "load_csr",
    "make_csr",
    "needs_renewal",
    "sign_csr",
    "utc_now",
]


class EnrolmentError(VerificationError):
    """An enrolment or renewal request was refused (bad token, bad CSR, revoked, expired)."""

    default_hint = "ask the fleet operator for a new token: `edgeops fleet ca token DEVICE_ID`"


@dataclass(frozen=True)
class PkiLimits:
    """Lifetimes and bounds of the fleet PKI. Units are in the names."""

    ca_lifetime_days: int = 3650
    device_cert_lifetime_days: int = 90
    manager_cert_lifetime_days: int = 365
    server_cert_lifetime_days: int = 365
    renew_before_days: int = 30
    token_ttl_s: int = 24 * 3600
    crl_lifetime_days: int = 7
    max_csr_bytes: int = 16 * 1024
    max_request_bytes: int = 64 * 1024


DEFAULT_PKI_LIMITS = PkiLimits()

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)


def utc_now() -> datetime:
    """Now, in UTC, to the second (X.509 times have no fractions)."""
    return datetime.now(UTC).replace(microsecond=0)


def generate_key() -> ec.EllipticCurvePrivateKey:
    """EC P-256: supported by every TLS stack the fleet meets (OpenSSL, mbedTLS, EMQX)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def build_ca_certificate(key: PrivateKey, name: str, now: datetime,
                         lifetime: timedelta) -> x509.Certificate:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    pub = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(pub)
    return (x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(pub).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, _hash_for(key)))


def load_csr(data: bytes, limits: PkiLimits = DEFAULT_PKI_LIMITS) -> x509.CertificateSigningRequest:
    """Parse and check a CSR: size-bounded, self-signature valid, an accepted key type."""
    if len(data) > limits.max_csr_bytes:
        raise EnrolmentError(f"CSR of {len(data)} bytes exceeds the {limits.max_csr_bytes}-byte "
                             "limit", hint="send one PEM certificate request")
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError:
        raise EnrolmentError("the CSR is not a PEM certificate signing request",
                             hint="generate it with `edgeops fleet device-enroll`") from None
    if not csr.is_signature_valid:
        raise EnrolmentError("the CSR's signature does not verify",
                             hint="the request was altered; generate a new one")
    pub = csr.public_key()
    ok = isinstance(pub, ed25519.Ed25519PublicKey) or (
        isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, _ALLOWED_CURVES))
    if not ok:
        raise EnrolmentError("the CSR's key type is not accepted",
                             hint="use an EC P-256/P-384 or Ed25519 key")
    return csr


def csr_common_name(csr: x509.CertificateSigningRequest) -> str | None:
    attrs = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else None
    return value if isinstance(value, str) else None


def sign_csr(ca_key: PrivateKey, ca_cert: x509.Certificate, csr: x509.CertificateSigningRequest,
             identity: str, now: datetime, lifetime: timedelta, *, server_names: Sequence[str]
             = (), crl_url: str | None = None) -> x509.Certificate:
    """Issue a leaf certificate with CN ``identity`` for the CSR's key.

    Client certificates (devices, the manager) get ``clientAuth``; with ``server_names`` the
    certificate is a TLS server certificate (the broker) with those DNS names / IPs as SANs.
    The CSR's requested subject and extensions are ignored: the CA decides the name. With
    ``crl_url`` the certificate names where its CRL is published (CRL Distribution Points),
    which brokers that fetch CRLs themselves (EMQX ``enable_crl_check``) need.
    """
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    b = (x509.CertificateBuilder()
         .subject_name(_name(identity)).issuer_name(ca_cert.subject)
         .public_key(csr.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - timedelta(minutes=5)).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=False, crl_sign=False,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             ca_cert.public_key()), critical=False))  # type: ignore[arg-type]
    if crl_url:
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None,
            reasons=None, crl_issuer=None)]), critical=False)
    if server_names:
        sans: list[x509.GeneralName] = []
        for n in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        b = (b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False))
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    return b.sign(ca_key, _hash_for(ca_key))


def build_crl(ca_key: PrivateKey, ca_cert: x509.Certificate,
              revoked: Sequence[tuple[int, datetime]], now: datetime, lifetime: timedelta,
              number: int) -> x509.CertificateRevocationList:
    b = (x509.CertificateRevocationListBuilder()
         .issuer_name(ca_cert.subject).last_update(now - timedelta(minutes=5))
         .next_update(now + lifetime)
         .add_extension(x509.CRLNumber(number), critical=False))
    for serial, when in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder()
                                      .serial_number(serial).revocation_date(when).build())
    return b.sign(ca_key, _hash_for(ca_key))


def certificate_identity(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode()


def check_certificate(cert: x509.Certificate, ca_cert: x509.Certificate,
                      crl: x509.CertificateRevocationList | None, now: datetime) -> str:
    """The manager's acceptance rule for a client certificate; returns its identity (CN)."""
    if cert.issuer != ca_cert.subject:
        raise EnrolmentError("the certificate was not issued by this fleet's CA")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise EnrolmentError("the certificate's signature does not verify against the fleet CA"
                             ) from None
    if not (cert.not_valid_before_utc <= now < cert.not_valid_after_utc):
        raise EnrolmentError("the certificate has expired or is not yet valid",
                             hint="enrol the device again with a new token")
    if crl is not None and crl.get_revoked_certificate_by_serial_number(cert.serial_number):
        raise EnrolmentError("the certificate has been revoked",
                             hint="a revoked device must be re-enrolled by an operator")
    return certificate_identity(cert)


def needs_renewal(cert: x509.Certificate, now: datetime,
                  limits: PkiLimits = DEFAULT_PKI_LIMITS) -> bool:
    return cert.not_valid_after_utc - now <= timedelta(days=limits.renew_before_days)


def make_csr(key: PrivateKey, identity: str) -> bytes:
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(identity)).sign(
        key, _hash_for(key))
    return csr.public_bytes(serialization.Encoding.PEM)

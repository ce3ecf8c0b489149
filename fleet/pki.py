"""The fleet's device PKI: a small X.509 CA that gives every device its own TLS identity.

Why it exists: the broker ACL (``fleet/broker_config.py``) keys every permission on the
certificate's common name, so the certificate *is* the device's identity on the wire. The
device generates its key itself and sends only a CSR, so its private key never leaves it; a
one-time enrolment token (stored only as a SHA-256 hash, single use, expiring) authorises the
first certificate, and the device's current key authorises each renewal before expiry.
Revocation produces a CRL that Mosquitto (``crlfile``) and the manager both check.

Layout under ``$EDGEOPS_HOME/ca`` (directory 0700)::

    ca.key      EC P-256 private key of the CA (0600; optionally passphrase-encrypted)
    ca.crt      self-signed CA certificate, given to devices and the broker
    ca.json     CA settings (the CRL distribution point URL, if any)
    issued.json every certificate issued: serial, identity, validity, revocation
    tokens.json enrolment tokens: sha256 of the token, device id, expiry, used time
    crl.pem     the current certificate revocation list

The certificate logic (:mod:`fleet.certs`: ``build_ca_certificate``, ``sign_csr``,
``build_crl``, ``check_certificate``) is pure: keys, bytes and a clock in, objects out.
:class:`FleetCA` does the file handling around it, under a file lock so concurrent
enrolments cannot reuse a token.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from edgeops.config import edgeops_home
from edgeops.errors import BadContentError, ConfigError, UsageError
from edgeops.fsutil import atomic_write
from edgeops.protocol.topics import valid_device_id
from fleet.certs import (
    DEFAULT_PKI_LIMITS,
    EnrolmentError,
    PkiLimits,
    PrivateKey,
    build_ca_certificate,
    build_crl,
    certificate_identity,
    check_certificate,
    csr_common_name,
    generate_key,
    key_pem,
    load_csr,
    make_csr,
    needs_renewal,
    sign_csr,
    utc_now,
)

__all__ = ["MANAGER_IDENTITY", "CertificateRecord", "FleetCA", "hash_token"]

log = logging.getLogger(__name__)

MANAGER_IDENTITY = "manager@edgeops"
"""The manager's certificate CN. '@' is not allowed in device ids, so no device can claim it."""

_PRIVATE = 0o600


def hash_token(token: str) -> str:
    """Tokens are 256-bit random strings, so an unsalted SHA-256 is enough to store them."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class CertificateRecord:
    """One issued certificate, as kept in ``issued.json`` (no key material)."""

    serial: int
    identity: str
    kind: str  # "device", "manager" or "server"
    not_before: str
    not_after: str
    fingerprint_sha256: str
    revoked_at: str | None = None
    reason: str | None = None


class FleetCA:
    """The CA's files and the operations on them. Key material is never logged."""

    def __init__(self, directory: Path | None = None,
                 limits: PkiLimits = DEFAULT_PKI_LIMITS) -> None:
        self.dir = Path(directory) if directory is not None else edgeops_home() / "ca"
        self.limits = limits
        self.key_path = self.dir / "ca.key"
        self.cert_path = self.dir / "ca.crt"
        self.issued_path = self.dir / "issued.json"
        self.tokens_path = self.dir / "tokens.json"
        self.crl_path = self.dir / "crl.pem"
        self.settings_path = self.dir / "ca.json"

    # -- setup -------------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.key_path.exists() and self.cert_path.exists()

    def init(self, name: str = "edgeops fleet CA", passphrase: bytes | None = None,
             now: datetime | None = None, force: bool = False,
             crl_url: str | None = None) -> x509.Certificate:
        """Create the CA. ``crl_url`` (e.g. ``https://manager/pki/crl``) goes into every
        certificate issued afterwards as its CRL distribution point."""
        if crl_url is not None and not crl_url.startswith(("http://", "https://")):
            raise UsageError(f"CRL URL {crl_url!r} is not http(s)",
                             hint="e.g. https://manager.example/pki/crl")
        if self.exists() and not force:
            raise UsageError(f"a fleet CA already exists in {self.dir}",
                             hint="pass --force to replace it (every device must re-enrol)")
        now = now or utc_now()
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        key = generate_key()
        cert = build_ca_certificate(key, name, now, timedelta(days=self.limits.ca_lifetime_days))
        atomic_write(self.key_path, key_pem(key, passphrase), mode=_PRIVATE)
        atomic_write(self.cert_path, cert.public_bytes(serialization.Encoding.PEM))
        atomic_write(self.issued_path, b"[]\n", mode=_PRIVATE)
        atomic_write(self.tokens_path, b"[]\n", mode=_PRIVATE)
        atomic_write(self.settings_path, json.dumps({"crl_url": crl_url}).encode() + b"\n")
        self._write_crl(key, cert, [], now)
        log.info("created fleet CA %s in %s", name, self.dir)
        return cert

    @property
    def crl_url(self) -> str | None:
        try:
            value = json.loads(self.settings_path.read_text()).get("crl_url")
        except (FileNotFoundError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"no fleet CA in {self.dir}",
                              hint="run `edgeops fleet ca init`") from None

    def _key(self, passphrase: bytes | None) -> PrivateKey:
        try:
            pem = self.key_path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"no fleet CA key in {self.dir}",
                              hint="run `edgeops fleet ca init`") from None
        encrypted = b"ENCRYPTED" in pem
        if encrypted and not passphrase:
            passphrase = os.environ.get("EDGEOPS_CA_PASSPHRASE", "").encode() or None
            if not passphrase:
                raise ConfigError("the fleet CA key is encrypted and no passphrase was given",
                                  hint="set EDGEOPS_CA_PASSPHRASE")
        try:
            key = serialization.load_pem_private_key(pem, passphrase if encrypted else None)
        except (ValueError, TypeError):
            raise ConfigError("cannot load the fleet CA key: wrong passphrase?",
                              hint="check EDGEOPS_CA_PASSPHRASE") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise ConfigError("the fleet CA key is of an unsupported type")
        return key

    # -- state files -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across processes (HTTP workers, CLI)."""
        self.certificate()  # fail clearly if there is no CA
        with open(self.dir / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read(self, path: Path) -> list[dict[str, Any]]:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return []
        except ValueError:
            raise ConfigError(f"{path} is corrupt", hint="restore it from a backup") from None
        if not isinstance(data, list):
            raise ConfigError(f"{path} is corrupt", hint="restore it from a backup")
        return data

    def _write(self, path: Path, data: list[dict[str, Any]]) -> None:
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode() + b"\n",
                     mode=_PRIVATE)

    def records(self) -> list[CertificateRecord]:
        return [CertificateRecord(**r) for r in self._read(self.issued_path)]

    # -- tokens ------------------------------------------------------------------------------

    def create_token(self, device_id: str, ttl_s: int | None = None,
                     now: datetime | None = None) -> str:
        """A one-time enrolment token for ``device_id``; only its hash is stored."""
        if not valid_device_id(device_id):
            raise UsageError(f"invalid device id {device_id!r}",
                             hint="use letters, digits, '.', '_' and '-' (max 128)")
        now = now or utc_now()
        ttl = self.limits.token_ttl_s if ttl_s is None else ttl_s
        if ttl <= 0:
            raise UsageError("the token lifetime must be positive")
        token = secrets.token_urlsafe(32)
        with self._locked():
            tokens = [t for t in self._read(self.tokens_path)
                      if t["used_at"] is None and t["expires"] > now.timestamp()]
            tokens.append({"sha256": hash_token(token), "device_id": device_id,
                           "expires": (now + timedelta(seconds=ttl)).timestamp(),
                           "used_at": None})
            self._write(self.tokens_path, tokens)
        log.info("created an enrolment token for %s (valid %d s)", device_id, ttl)
        return token

    def _valid_token(self, tokens: list[dict[str, Any]], token: str,
                     now: datetime) -> dict[str, Any]:
        digest = hash_token(token)
        match = next((t for t in tokens if hmac.compare_digest(t["sha256"], digest)), None)
        if match is None:
            raise EnrolmentError("the enrolment token is not known to this fleet")
        if match["used_at"] is not None:
            raise EnrolmentError("the enrolment token has already been used")
        if match["expires"] <= now.timestamp():
            raise EnrolmentError("the enrolment token has expired")
        return match

    def token_device(self, token: str, now: datetime | None = None) -> str:
        """The device a valid, unused token names, without using it up (the manager grants
        the device on the broker first, so a broker outage does not burn the token)."""
        with self._locked():
            return str(self._valid_token(self._read(self.tokens_path), token,
                                         now or utc_now())["device_id"])

    def _consume_token(self, token: str, now: datetime) -> str:
        """Mark the token used and return its device id. Caller holds the lock."""
        tokens = self._read(self.tokens_path)
        match = self._valid_token(tokens, token, now)
        match["used_at"] = now.timestamp()
        self._write(self.tokens_path, tokens)
        return str(match["device_id"])

    # -- issuing -----------------------------------------------------------------------------

    def _record(self, cert: x509.Certificate, kind: str) -> None:
        records = self._read(self.issued_path)
        records.append(asdict(CertificateRecord(
            serial=cert.serial_number, identity=certificate_identity(cert), kind=kind,
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex())))
        self._write(self.issued_path, records)

    def issue(self, csr_pem: bytes, identity: str, *, kind: str = "device",
              server_names: Sequence[str] = (), passphrase: bytes | None = None,
              now: datetime | None = None) -> x509.Certificate:
        """Sign a CSR for ``identity`` (operator path; devices normally use :meth:`enroll`)."""
        if kind == "device" and not valid_device_id(identity):
            raise UsageError(f"invalid device id {identity!r}",
                             hint="use letters, digits, '.', '_' and '-' (max 128)")
        if kind not in ("device", "manager", "server"):
            raise UsageError(f"unknown certificate kind {kind!r}")
        now = now or utc_now()
        csr = load_csr(csr_pem, self.limits)
        days = {"device": self.limits.device_cert_lifetime_days,
                "manager": self.limits.manager_cert_lifetime_days,
                "server": self.limits.server_cert_lifetime_days}[kind]
        with self._locked():
            key = self._key(passphrase)
            cert = sign_csr(key, self.certificate(), csr, identity, now, timedelta(days=days),
                            server_names=server_names if kind == "server" else (),
                            crl_url=self.crl_url)
            self._record(cert, kind)
        log.info("issued %s certificate serial %x for %s", kind, cert.serial_number, identity)
        return cert

    def issue_with_key(self, identity: str, out_dir: Path, *, kind: str,
                       server_names: Sequence[str] = (), passphrase: bytes | None = None,
                       now: datetime | None = None, basename: str | None = None
                       ) -> tuple[Path, Path]:
        """For identities that live beside the CA (manager, broker): key made here, 0600."""
        key = generate_key()
        name = basename or kind
        cert = self.issue(make_csr(key, identity), identity, kind=kind,
                          server_names=server_names, passphrase=passphrase, now=now)
        key_path, cert_path = Path(out_dir) / f"{name}.key", Path(out_dir) / f"{name}.crt"
        atomic_write(key_path, key_pem(key), mode=_PRIVATE)
        atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return key_path, cert_path

    def enroll(self, csr_pem: bytes, token: str, *, passphrase: bytes | None = None,
               now: datetime | None = None) -> x509.Certificate:
        """A device's first certificate: the token names the device and is used up."""
        now = now or utc_now()
        csr = load_csr(csr_pem, self.limits)
        with self._locked():
            device_id = self._consume_token(token, now)
            cn = csr_common_name(csr)
            if cn is not None and cn != device_id:
                raise EnrolmentError(f"the CSR asks for {cn!r} but the token is for another "
                                     "device", hint="enrol with the device id the token names")
            key = self._key(passphrase)
            cert = sign_csr(key, self.certificate(), csr, device_id, now,
                            timedelta(days=self.limits.device_cert_lifetime_days),
                            crl_url=self.crl_url)
            self._record(cert, "device")
        log.info("enrolled %s: certificate serial %x", device_id, cert.serial_number)
        return cert

    def renew(self, csr_pem: bytes, current_pem: bytes, proof: bytes, *,
              passphrase: bytes | None = None, now: datetime | None = None) -> x509.Certificate:
        """A new certificate for a device that proves it holds its current, valid key.

        ``proof`` is the current key's signature over the new CSR's PEM bytes, so a stolen copy
        of the (public) current certificate is not enough to renew it.
        """
        now = now or utc_now()
        csr = load_csr(csr_pem, self.limits)
        try:
            current = x509.load_pem_x509_certificate(current_pem)
        except ValueError:
            raise EnrolmentError("the current certificate is not PEM") from None
        identity = check_certificate(current, self.certificate(), self.crl(), now)
        if not valid_device_id(identity):
            raise EnrolmentError("only device certificates renew over the enrolment API")
        if not needs_renewal(current, now, self.limits):
            raise EnrolmentError("the certificate is not yet due for renewal",
                                 hint=f"renewal opens {self.limits.renew_before_days} days "
                                 "before expiry")
        pub = current.public_key()
        try:
            if isinstance(pub, ed25519.Ed25519PublicKey):
                pub.verify(proof, csr_pem)
            elif isinstance(pub, ec.EllipticCurvePublicKey):
                pub.verify(proof, csr_pem, ec.ECDSA(hashes.SHA256()))
            else:
                raise EnrolmentError("the current certificate's key type is not accepted")
        except InvalidSignature:
            raise EnrolmentError("the renewal proof does not verify with the current key"
                                 ) from None
        cn = csr_common_name(csr)
        if cn is not None and cn != identity:
            raise EnrolmentError(f"the CSR asks for {cn!r} but the certificate is {identity!r}")
        with self._locked():
            key = self._key(passphrase)
            cert = sign_csr(key, self.certificate(), csr, identity, now,
                            timedelta(days=self.limits.device_cert_lifetime_days),
                            crl_url=self.crl_url)
            self._record(cert, "device")
        log.info("renewed %s: certificate serial %x", identity, cert.serial_number)
        return cert

    # -- revocation --------------------------------------------------------------------------

    def revoke(self, what: str, *, reason: str | None = None, passphrase: bytes | None = None,
               now: datetime | None = None) -> list[CertificateRecord]:
        """Revoke every valid certificate of an identity, or one serial (hex, ``0x`` prefix)."""
        now = now or utc_now()
        with self._locked():
            records = self._read(self.issued_path)
            serial: int | None = None
            if what.lower().startswith("0x"):
                try:
                    serial = int(what, 16)
                except ValueError:
                    raise UsageError(f"invalid serial {what!r}") from None
            hit = [r for r in records if r["revoked_at"] is None and (
                r["serial"] == serial if serial is not None else r["identity"] == what)]
            if not hit:
                raise UsageError(f"no unrevoked certificate for {what!r}",
                                 hint="see `edgeops fleet ca list`")
            for r in hit:
                r["revoked_at"] = now.isoformat()
                r["reason"] = reason
            self._write(self.issued_path, records)
            self._write_crl(self._key(passphrase), self.certificate(), records, now)
        log.info("revoked %d certificate(s) of %s", len(hit), what)
        return [CertificateRecord(**r) for r in hit]

    def _write_crl(self, key: PrivateKey, cert: x509.Certificate,
                   records: list[dict[str, Any]], now: datetime) -> x509.CertificateRevocationList:
        revoked = [(int(r["serial"]), datetime.fromisoformat(r["revoked_at"]))
                   for r in records if r["revoked_at"] is not None]
        number = 1
        with contextlib.suppress(ConfigError):
            old = self.crl()
            if old is not None:
                ext = old.extensions.get_extension_for_class(x509.CRLNumber)
                number = ext.value.crl_number + 1
        crl = build_crl(key, cert, revoked, now, timedelta(days=self.limits.crl_lifetime_days),
                        number)
        atomic_write(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))
        return crl

    def refresh_crl(self, passphrase: bytes | None = None,
                    now: datetime | None = None) -> x509.CertificateRevocationList:
        """Re-sign the CRL (it expires after ``crl_lifetime_days``; run this from cron)."""
        with self._locked():
            return self._write_crl(self._key(passphrase), self.certificate(),
                                   self._read(self.issued_path), now or utc_now())

    def crl(self) -> x509.CertificateRevocationList | None:
        try:
            data = self.crl_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return x509.load_pem_x509_crl(data)
        except ValueError:
            raise ConfigError(f"{self.crl_path} is corrupt",
                              hint="run `edgeops fleet ca crl` to re-sign it") from None

    def check(self, cert_pem: bytes, now: datetime | None = None) -> str:
        """Manager-side check of a presented client certificate (chain, expiry, CRL)."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise BadContentError("the client certificate is not PEM") from None
        return check_certificate(cert, self.certificate(), self.crl(), now or utc_now())

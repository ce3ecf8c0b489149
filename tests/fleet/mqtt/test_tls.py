"""The worker over real TLS (mutual): a CA, a broker certificate and a manager certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgeops.errors import TransportError
from edgeops.protocol import StatusMessage, topics
from fleet.mqtt import TlsOptions
from fleet.store import Store
from fleet.worker import ManagerWorker, WorkerConfig
from tests.fleet.mqtt.conftest import enroll
from tests.mosquitto import MosquittoBroker, start_or_skip


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey,
          issuer: str, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(d: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    (d / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, ca_key, "test CA", ca=True)
    _write(tmp_path, "ca", ca, ca_key)
    for name in ("broker", "manager", "cam-1"):
        k = ec.generate_private_key(ec.SECP256R1())
        _write(tmp_path, name, _cert(name, k, ca_key, "test CA", ca=False), k)
    other_key = ec.generate_private_key(ec.SECP256R1())
    _write(tmp_path, "other-ca", _cert("other", other_key, other_key, "other", ca=True),
           other_key)
    return tmp_path


@pytest.fixture
def tls_broker(pki: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(tls={"cafile": str(pki / "ca.crt"), "certfile": str(pki / "broker.crt"),
                             "keyfile": str(pki / "broker.key")}, require_certificate=True)
    start_or_skip(b)
    try:
        yield b
    finally:
        b.stop()


def test_worker_ingests_over_mutual_tls(store: Store, tls_broker: MosquittoBroker,
                                        pki: Path) -> None:
    enroll(store, "cam-1")
    tls = TlsOptions(ca=pki / "ca.crt", cert=pki / "manager.crt", key=pki / "manager.key")
    assert tls_broker.url.startswith("mqtts://")
    with ManagerWorker(store, tls_broker.url, tls=tls, client_id="mgr-tls",
                       config=WorkerConfig(connect_timeout_s=5)):
        dev = paho.Client(CallbackAPIVersion.VERSION2, client_id="cam-1",
                          protocol=MQTTProtocolVersion.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "cam-1.crt"), str(pki / "cam-1.key"))
        dev.tls_set_context(ctx)
        dev.connect(tls_broker.host, tls_broker.port)
        dev.loop_start()
        try:
            dev.publish(topics.device_topic("cam-1", "status"),
                        StatusMessage("cam-1", True, "1.0", 42.0).to_bytes(), qos=1, retain=True)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not store.get_device("cam-1").online:  # type: ignore[union-attr]
                time.sleep(0.05)
            assert store.get_device("cam-1").online  # type: ignore[union-attr]
        finally:
            dev.disconnect()
            dev.loop_stop()


@pytest.mark.parametrize(("ca", "with_cert"), [("ca", False), ("other-ca", True)],
                         ids=["no-client-cert", "untrusted-broker"])
def test_tls_failures_are_transport_errors(store: Store, tls_broker: MosquittoBroker, pki: Path,
                                           ca: str, with_cert: bool) -> None:
    tls = TlsOptions(ca=pki / f"{ca}.crt", cert=pki / "manager.crt" if with_cert else None,
                     key=pki / "manager.key" if with_cert else None)
    w = ManagerWorker(store, tls_broker.url, tls=tls, config=WorkerConfig(connect_timeout_s=2))
    with pytest.raises(TransportError, match="no connection to MQTT broker"):
        w.start()

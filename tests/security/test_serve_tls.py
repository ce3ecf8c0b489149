"""`edgeops fleet serve` reaches the generated broker with the manager's own mTLS identity.

A real `fleet serve` process connects with --broker-ca/--broker-cert/--broker-key and
--broker-password-file (the manager listener) to Mosquitto
running the configuration from `edgeops fleet broker-config`; an enrolled device then receives the
retained TUF root it publishes. Without the client certificate the broker refuses the manager,
and `fleet serve` says so instead of serving devices silently.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from edgeops.protocol import topics
from tests.edgeops.bundles import make_keystore
from tests.security._services import Identity, MqttProbe, SecureBroker
from tests.services import free_port

_ids = itertools.count()


def _serve(tmp: Path, broker: SecureBroker, tls_args: list[str]) -> tuple[subprocess.Popen[str], int]:
    keys = make_keystore(tmp / "home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEOPS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeops.cli.main", "fleet", "serve",
         "--broker", broker.manager_url, "--broker-password-file",
         str(broker.files.manager_password), "--device-broker",
         f"mqtts://127.0.0.1:{broker.port}", *tls_args,
         "--db", f"sqlite:///{tmp / 'fleet.db'}", "--listen", f"127.0.0.1:{port}",
         "--data", str(tmp / "data"), "--keys", str(keys.home)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc, port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"fleet serve did not come up: {proc.communicate()[0]}")


def test_fleet_serve_connects_with_the_manager_certificate(
        tmp_path: Path, secure_broker: SecureBroker, identities: dict[str, tuple[Path, Path]],
        ident: Callable[[str], Identity], attack: Callable[[str, str, str], None]) -> None:
    key, cert = identities["manager"]
    proc, _ = _serve(tmp_path, secure_broker, ["--broker-ca", str(secure_broker.files.ca),
                                               "--broker-cert", str(cert), "--broker-key", str(key)])
    dev = MqttProbe(ident("cam-1"), secure_broker.port, f"cam-1-serve-{next(_ids)}")
    try:
        assert dev.connect()
        assert dev.subscribe(f"{topics.PREFIX}/tuf/metadata/#") == ["Granted QoS 1"]
        root = dev.wait_for(topics.tuf_metadata("1.root.json"), timeout_s=15)
        assert root, "no retained root metadata from the manager"
        assert json.loads(root[0])["signed"]["_type"] == "root"
        attack("fleet serve over mTLS as the manager identity", "connects, publishes metadata",
               "retained root received by an enrolled device")
    finally:
        dev.close()
        proc.terminate()
        proc.wait(15)


def test_fleet_serve_without_client_certificate_is_refused(
        tmp_path: Path, secure_broker: SecureBroker,
        attack: Callable[[str, str, str], None]) -> None:
    keys = make_keystore(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEOPS_")}
    r = subprocess.run(
        [sys.executable, "-m", "edgeops.cli.main", "fleet", "serve",
         "--broker", secure_broker.manager_url, "--broker-password-file",
         str(secure_broker.files.manager_password), "--device-broker",
         f"mqtts://127.0.0.1:{secure_broker.port}",
         "--broker-ca", str(secure_broker.files.ca), "--db", f"sqlite:///{tmp_path / 'f.db'}",
         "--listen", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "data"),
         "--keys", str(keys.home)], env=env, capture_output=True, text=True, timeout=90)
    # the broker refuses the handshake; the manager exits with one clear line, not a traceback
    assert r.returncode == 1
    assert "error: no connection to MQTT broker" in r.stderr and "TLS" in r.stderr
    assert "Traceback" not in r.stderr
    attack("manager without client certificate", "broker refuses", "refused; serve exits 1")


def test_broker_cert_without_key_is_a_usage_error(tmp_path: Path,
                                                  identities: dict[str, tuple[Path, Path]]) -> None:
    _, cert = identities["manager"]
    r = subprocess.run([sys.executable, "-m", "edgeops.cli.main", "fleet", "serve",
                        "--broker", "mqtts://127.0.0.1:1", "--broker-cert", str(cert),
                        "--data", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--broker-cert and --broker-key go together" in r.stderr


def test_manager_listener_without_device_broker_is_a_usage_error(
        tmp_path: Path, secure_broker: SecureBroker) -> None:
    """Enrolled agents would be told the manager listener, which refuses every device."""
    keys = make_keystore(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEOPS_")}
    r = subprocess.run(
        [sys.executable, "-m", "edgeops.cli.main", "fleet", "serve",
         "--broker", secure_broker.manager_url, "--broker-password-file",
         str(secure_broker.files.manager_password), "--db", f"sqlite:///{tmp_path / 'f.db'}",
         "--listen", f"127.0.0.1:{free_port()}", "--data", str(tmp_path / "data"),
         "--keys", str(keys.home)], env=env, capture_output=True, text=True, timeout=90)
    assert r.returncode == 2 and "--device-broker" in r.stderr and "Traceback" not in r.stderr

"""`edgeops fleet serve` as a real process: clean SIGTERM, and SIGKILL mid-rollout + restart.

The restart test runs a real Mosquitto and a real manager subprocess; a paho subscriber plays
the fleet and records every retained ``desired`` command it receives. The manager is killed
(SIGKILL) while it is notifying devices, then started again: every device must end up with
exactly one deploy command (the same signed seq, even if it was re-sent), none skipped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from edgeops.keys import KeyStore
from edgeops.protocol import SignedCommand
from fleet.rollout import Strategy
from fleet.server import OfflineChannel
from fleet.store import open_store
from tests.fleet.helpers import engine, enrol, publish, repository
from tests.fleet.live import free_port

pytestmark = pytest.mark.slow


def _serve(keys: KeyStore, tmp: Path, port: int, broker: str | None = None
           ) -> subprocess.Popen[str]:
    exe = Path(sys.executable).with_name("edgeops")
    args = [str(exe), "fleet", "serve", "--db", f"sqlite:///{tmp / 'fleet.db'}", "--data",
            str(tmp / "data"), "--listen", f"127.0.0.1:{port}", "--keys", str(keys.home),
            "--tick", "0.2"]
    if broker:
        args += ["--broker", broker]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "EDGEOPS_HOME": str(keys.home)})


def _wait_healthy(port: int, proc: subprocess.Popen[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if json.loads(r.read())["ok"]:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("serve did not become healthy")


def test_sigterm_shuts_down_cleanly(keystore: KeyStore, tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(keystore, tmp_path, port)
    try:
        _wait_healthy(port, proc)
        token = (tmp_path / "data" / "admin.token").read_text().strip()
        assert token.startswith("eot_")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err
    assert f"admin token (shown once, also in {tmp_path / 'data' / 'admin.token'})" in err
    # second start: the admin token is not printed again
    proc = _serve(keystore, tmp_path, port)
    try:
        _wait_healthy(port, proc)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "admin token" not in err


def test_a_port_in_use_is_one_error_line(keystore: KeyStore, tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = _serve(keystore, tmp_path, port)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "hint:" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_killed_mid_rollout_resumes_with_nobody_skipped_or_repeated(
        keystore: KeyStore, bundles: dict[str, Path], tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    from tests.mosquitto import MosquittoBroker, start_or_skip

    n = 600
    store = open_store(f"sqlite:///{tmp_path / 'fleet.db'}", tmp_path / "data")
    publish(repository(store, keystore), keystore, bundles["1.0.0"])
    ids = enrol(store, n)
    dep = engine(store, keystore, OfflineChannel()).create(  # type: ignore[arg-type]
        "tiny", "1.0.0", "all", Strategy(device_timeout_s=3600))
    store.close()

    broker = start_or_skip(MosquittoBroker())
    seen: dict[str, set[int]] = {}
    lock = threading.Lock()
    first = threading.Event()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        cmd = SignedCommand.from_bytes(msg.payload).command
        with lock:
            seen.setdefault(cmd.device_id, set()).add(cmd.seq)
        first.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-spy",
                      protocol=mqtt.MQTTv311)
    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("edgeops/v1/devices/+/desired", qos=1)
    sub.loop_start()
    port = free_port()
    proc = _serve(keystore, tmp_path, port, broker.url)
    try:
        assert first.wait(60), proc.stderr.read() if proc.poll() is not None and proc.stderr \
            else "no command seen"
        proc.kill()                                            # SIGKILL, mid-notification
        proc.wait(timeout=10)
        store = open_store(f"sqlite:///{tmp_path / 'fleet.db'}", tmp_path / "data")
        counts = store.deployment_counts(dep.id)
        store.close()
        assert counts.get("pending", 0) > 0, f"not killed mid-rollout: {counts}"
        proc = _serve(keystore, tmp_path, port, broker.url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                if len(seen) == n:
                    break
            time.sleep(0.2)
        time.sleep(1.0)                                        # let any duplicate arrive
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
    with lock:
        assert sorted(seen) == ids                             # nobody skipped
        repeated = {d: s for d, s in seen.items() if len(s) != 1}
    assert repeated == {}                                      # nobody sent two commands
    store = open_store(f"sqlite:///{tmp_path / 'fleet.db'}", tmp_path / "data")
    rows = store.deployment_devices(dep.id)
    assert {r.state for r in rows} == {"notified"}
    for r in rows:
        assert r.command is not None
        assert {SignedCommand.from_bytes(r.command).command.seq} == seen[r.device_id]
    store.close()

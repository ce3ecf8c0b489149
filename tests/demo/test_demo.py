"""``edgeops demo`` end to end, in a subprocess, bounded in time; asserts on its JSON summary.

Real everything: training, build, signatures, TUF, broker, manager on SQLite, real agents.
The good version must reach 100 % healthy; the broken one must be caught in the canary phase,
aborted and rolled back automatically, every device still serving the good version; nothing
may be left running (no stray threads in the process, no child processes after exit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.embedded_broker import find_mosquitto

pytestmark = [pytest.mark.slow]


def _run_demo(tmp_path: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "EDGEOPS_KEY_PASSPHRASE": "edgeops-demo-passphrase"}
    proc = subprocess.run(
        [sys.executable, "-m", "edgeops.cli.main", "demo", "--workdir", str(tmp_path / "w"),
         "--devices", "8", "--fast", "--json", *extra],
        capture_output=True, text=True, timeout=290, env=env, cwd=tmp_path,
        check=False, start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _check(summary: dict) -> None:  # type: ignore[type-arg]
    good, bad = summary["good"], summary["broken"]
    assert good["status"] == "completed" and good["healthy_pct"] == 100.0, good
    assert good["devices_on_version"] == 8
    assert bad["status"] == "rolled-back", bad
    assert bad["aborted_in_phase"] == 1 and "failed" in bad["reason"], bad
    assert "rolled back automatically" in bad["reason"]
    assert bad["devices_reached"] < 8
    assert bad["devices_on_good_version_after"] == 8
    assert summary["serving"] == {"vehicle-classifier@1.0.0": 8}
    assert summary["telemetry"]["inferences"] > 0
    assert summary["stray_threads"] == [], summary["stray_threads"]


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
def test_demo_with_mosquitto(tmp_path: Path) -> None:
    s = _run_demo(tmp_path, "--broker-kind", "mosquitto")
    assert s["broker"]["kind"] == "mosquitto"
    _check(s)


def test_demo_with_the_embedded_amqtt_broker(tmp_path: Path) -> None:
    """What a machine with nothing but the package gets (MQTT 3.1.1, no shared subs)."""
    s = _run_demo(tmp_path, "--broker-kind", "amqtt")
    assert s["broker"]["kind"] == "amqtt"
    _check(s)


def test_demo_refuses_a_bad_broker_kind_with_usage_exit(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgeops.cli.main", "demo", "--workdir", str(tmp_path),
         "--broker-kind", "rabbit"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_demo_with_an_unreachable_broker_fails_fast_with_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:                 # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "edgeops.cli.main", "demo", "--workdir", str(tmp_path),
         "--broker", f"mqtt://127.0.0.1:{port}"], capture_output=True, text=True, timeout=60,
        check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot reach the MQTT broker"), proc.stderr
    assert proc.stderr.count("\n") == 1 and "hint:" in proc.stderr
    assert not (tmp_path / "model").exists()          # nothing started, nothing trained


def test_demo_with_a_malformed_broker_url_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgeops.cli.main", "demo", "--workdir", str(tmp_path),
         "--broker", "http://nope"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "is not mqtt://" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_keep_serves_the_console_until_ctrl_c(tmp_path: Path) -> None:
    """``--keep``: console URL and operator token printed, both work, Ctrl-C ends cleanly."""
    import re
    import signal
    import time
    import urllib.request

    env = {**os.environ, "EDGEOPS_KEY_PASSPHRASE": "edgeops-demo-passphrase"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeops.cli.main", "demo", "--workdir", str(tmp_path / "w"),
         "--devices", "4", "--fast", "--keep", "--broker-kind", "amqtt"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 280
    try:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(lines)
        m = re.search(r"console: (http://\S+/console/)\s+\(operator token: (\S+)\)", text)
        assert m, text[-2000:]
        url, token = m.group(1), m.group(2)
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (http, loopback)
            assert r.status == 200
        api = url.replace("/console/", "/api/v1/devices")
        req = urllib.request.Request(  # noqa: S310 (http, loopback)
            api, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (http, loopback)
            assert len(json.loads(r.read())["items"]) == 4
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.mlflow
def test_demo_through_an_mlflow_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--mlflow`: registered model, build from @champion with --mlflow-log, rollout by moving
    the fleet alias, and both deployments' outcomes tagged back on the model version. The
    demo uses its own server whatever MLflow variables the caller has set."""
    from edgeops.registry.mlflow_server import mlflow_available
    from tests.services import need

    need("MLflow", mlflow_available(), "pip install 'edgeops[mlflow]'")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "http://127.0.0.1:9")
    s = _run_demo(tmp_path, "--mlflow")
    _check(s)
    m = s["mlflow"]
    assert m["model_uri"] == "models:/vehicle-classifier@champion"
    tags = m["version_tags"]
    assert tags["edgeops.bundle"] == "vehicle-classifier-1.0.0"
    assert tags["edgeops.targets"] == "arm64-cpu,cuda-gpu,x86-cpu"
    outcomes = sorted(v for k, v in tags.items() if k.startswith("edgeops.deployment."))
    assert len(outcomes) == 2 and outcomes[0].startswith("completed"), outcomes
    assert "aborted" in outcomes[1], outcomes
    assert m["run_metrics"]["edgeops.x86-cpu.latency_p50_ms"] > 0

"""``edgeops demo`` end to end, in a subprocess, bounded in time; asserts on its JSON summary.

Two runs for the whole suite, each a fixture several tests assert on: the full demo (Mosquitto
and an MLflow registry) and a ``--keep`` run on the embedded amqtt broker (4 devices).

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
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.embedded_broker import find_mosquitto

pytestmark = pytest.mark.slow

PASSPHRASE_ENV = {"EDGEOPS_KEY_PASSPHRASE": "edgeops-demo-passphrase"}


def _run_demo(tmp_path: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, **PASSPHRASE_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "edgeops.cli.main", "demo", "--workdir", str(tmp_path / "w"),
         "--devices", "8", "--fast", "--json", *extra],
        capture_output=True, text=True, timeout=290, env=env, cwd=tmp_path,
        check=False, start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _check(summary: dict, devices: int = 8, *, stopped: bool = True) -> None:  # type: ignore[type-arg]
    good, bad = summary["good"], summary["broken"]
    assert good["status"] == "completed" and good["healthy_pct"] == 100.0, good
    assert good["devices_on_version"] == devices
    assert bad["status"] == "rolled-back", bad
    assert bad["aborted_in_phase"] == 1 and "failed" in bad["reason"], bad
    assert "rolled back automatically" in bad["reason"]
    assert bad["devices_reached"] < devices
    assert bad["devices_on_good_version_after"] == devices
    assert summary["serving"] == {"vehicle-classifier@1.0.0": devices}
    assert summary["telemetry"]["inferences"] > 0
    if stopped:
        assert summary["stray_threads"] == [], summary["stray_threads"]


@pytest.fixture(scope="session")
def demo_summary(tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    """The one full ``edgeops demo`` run of the suite: Mosquitto and an MLflow registry (the
    demo's own server, whatever MLflow variables the caller has set)."""
    from edgeops.registry.mlflow_server import mlflow_available
    from tests.services import need

    need("MLflow", mlflow_available(), "pip install 'edgeops[mlflow]'")
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
        mp.setenv("MLFLOW_REGISTRY_URI", "http://127.0.0.1:9")
        return _run_demo(tmp_path_factory.mktemp("demo"), "--broker-kind", "mosquitto", "--mlflow")


def test_demo_with_mosquitto(demo_summary: dict) -> None:  # type: ignore[type-arg]
    assert demo_summary["broker"]["kind"] == "mosquitto"
    _check(demo_summary)


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


@dataclass
class KeptDemo:
    """A ``--keep --json`` demo on the embedded amqtt broker, its console used, then Ctrl-C."""

    summary: dict  # type: ignore[type-arg]
    console_status: int
    devices_listed: int
    exit_code: int


@pytest.fixture(scope="module")
def kept_demo(tmp_path_factory: pytest.TempPathFactory) -> KeptDemo:
    """``--keep``: the summary on stdout, then console URL and operator token; both work, and
    Ctrl-C ends cleanly. On amqtt: what a machine with nothing but the package gets (MQTT
    3.1.1, no shared subscriptions)."""
    import re
    import signal
    import time
    import urllib.request

    tmp_path = tmp_path_factory.mktemp("kept-demo")
    env = {**os.environ, **PASSPHRASE_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeops.cli.main", "demo", "--workdir", str(tmp_path / "w"),
         "--devices", "4", "--fast", "--keep", "--json", "--broker-kind", "amqtt"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stderr is not None and proc.stdout is not None
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
            console_status = r.status
        api = url.replace("/console/", "/api/v1/devices")
        req = urllib.request.Request(  # noqa: S310 (http, loopback)
            api, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (http, loopback)
            listed = len(json.loads(r.read())["items"])
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        summary = json.loads(proc.stdout.read())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    return KeptDemo(summary, console_status, listed, code)


def test_demo_keep_serves_the_console_until_ctrl_c(kept_demo: KeptDemo) -> None:
    assert kept_demo.console_status == 200
    assert kept_demo.devices_listed == 4
    assert kept_demo.exit_code == 0
    assert kept_demo.summary["kept_running"] is True


def test_demo_with_the_embedded_amqtt_broker(kept_demo: KeptDemo) -> None:
    """What a machine with nothing but the package gets (MQTT 3.1.1, no shared subs)."""
    s = kept_demo.summary
    assert s["broker"]["kind"] == "amqtt"
    _check(s, devices=4, stopped=False)     # threads are counted after a run that stopped


def test_demo_through_an_mlflow_registry(demo_summary: dict) -> None:  # type: ignore[type-arg]
    """`--mlflow`: registered model, build from @champion with --mlflow-log, rollout by moving
    the fleet alias, and both deployments' outcomes tagged back on the model version. The
    demo uses its own server whatever MLflow variables the caller has set."""
    s = demo_summary
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

"""``edgeops demo`` end to end, in a subprocess, bounded in time; asserts on its JSON summary.

One run for the whole suite (the ``demo_run`` session fixture), every option that changes what
the demo does at once: the embedded amqtt broker (what a machine with nothing but the package
gets: MQTT 3.1.1, no shared subscriptions; the only place the manager and the agents run a
rollout over 3.1.1), an MLflow registry (``--mlflow``), and ``--keep``: the summary on stdout,
the console and API used while it runs, then Ctrl-C. The other broker kind, mosquitto, is
covered in-process by ``test_demo_with_mosquitto`` (the demo's own stack, one real rollout)
and under a whole simulated fleet by tests/sim/test_sim_live.py.

Real everything: training, build, signatures, TUF, broker, manager on SQLite, real agents.
The good version must reach 100 % healthy; the broken one must be caught in the canary phase,
aborted and rolled back automatically, every device still serving the good version; nothing
may be left running (no stray threads in the demo, no process of its run after exit).
The usage errors are CLI behaviour, checked in this process (tests/clirun.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet.embedded_broker import find_mosquitto
from tests.clirun import run_edgeops

PASSPHRASE_ENV = {"EDGEOPS_KEY_PASSPHRASE": "edgeops-demo-passphrase"}
DEVICES = 4
RUN_TIMEOUT_S = 290          # the demo up to "Press Ctrl-C" (about 90 s on a busy 2-core box)
STOP_TIMEOUT_S = 60          # Ctrl-C to exit


def _check(summary: dict, devices: int = DEVICES) -> None:  # type: ignore[type-arg]
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


@dataclass
class DemoRun:
    """What the one demo run showed: its summary, its console and API while kept running, and
    how it ended after Ctrl-C."""

    summary: dict  # type: ignore[type-arg]
    console_status: int
    devices_listed: int
    exit_code: int
    stray_threads: list[str] | None      # None: the demo did not say (its "stopped; ..." line)
    left_running: list[str]              # processes of this run alive after the demo exited
    stderr: str


# `python -m edgeops.cli.main` with Ctrl-C as a terminal gives it. A suite started in the
# background (`make test &`, nohup, some CI runners) has SIGINT ignored, children inherit that,
# and Python then leaves it ignored: the demo would never see the test's Ctrl-C.
_WITH_CTRL_C = [sys.executable, "-c",
                "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler);"
                " runpy.run_module('edgeops.cli.main', run_name='__main__', alter_sys=True)"]


def _read_lines(stream: Any, lines: list[str], ready: threading.Event) -> None:
    for line in iter(stream.readline, ""):
        lines.append(line)
        if "Press Ctrl-C" in line:
            ready.set()
    ready.set()                                             # EOF: the demo ended early


def _still_running(workdir: Path, grace_s: float = 10.0) -> list[Any]:
    """Processes whose command line names ``workdir`` (the demo's MLflow server and its uvicorn
    worker, in their own session) still alive ``grace_s`` after the demo exited (a worker
    may take a moment to follow its parent)."""
    import psutil

    found = [p for p in psutil.process_iter(["cmdline"])
             if any(str(workdir) in arg for arg in p.info["cmdline"] or ())]
    return list(psutil.wait_procs(found, timeout=grace_s)[1])


def _stop(proc: subprocess.Popen[str], timeout_s: float) -> int | None:
    """SIGINT (Ctrl-C) and the exit code; None if it did not exit in time, in which case it
    was sent SIGABRT first, so its stderr ends with every thread's stack (faulthandler)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        return None


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The one ``edgeops demo`` run of the suite: ``--broker-kind amqtt --mlflow --keep
    --json``, with MLflow variables pointing nowhere (the demo must use its own server)."""
    from edgeops.registry.mlflow_server import mlflow_available
    from tests.services import need

    need("MLflow", mlflow_available(), "pip install 'edgeops[mlflow]'")
    tmp_path = tmp_path_factory.mktemp("demo")
    workdir = tmp_path / "w"
    env = {**os.environ, **PASSPHRASE_ENV, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
           "MLFLOW_REGISTRY_URI": "http://127.0.0.1:9", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        [*_WITH_CTRL_C, "demo", "--workdir", str(workdir), "--devices", str(DEVICES), "--fast",
         "--keep", "--json", "--broker-kind", "amqtt", "--mlflow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stderr is not None and proc.stdout is not None
    lines: list[str] = []
    ready = threading.Event()
    reader = threading.Thread(target=_read_lines, args=(proc.stderr, lines, ready),
                              name="demo-stderr", daemon=True)
    reader.start()
    try:
        assert ready.wait(RUN_TIMEOUT_S), "".join(lines)[-3000:]
        text = "".join(lines)
        m = re.search(r"console: (http://\S+/console/)\s+\(operator token: (\S+)\)", text)
        assert m, text[-3000:]
        url, token = m.group(1), m.group(2)
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (http, loopback)
            console_status = r.status
        api = url.replace("/console/", "/api/v1/devices")
        req = urllib.request.Request(  # noqa: S310 (http, loopback)
            api, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (http, loopback)
            listed = len(json.loads(r.read())["items"])
        code = _stop(proc, STOP_TIMEOUT_S)
        reader.join(10)
        assert code is not None, ("the demo did not exit within "
                                  f"{STOP_TIMEOUT_S} s of Ctrl-C:\n" + "".join(lines)[-12000:])
        summary = json.loads(proc.stdout.read())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
        left = _still_running(workdir)
        for p in left:                  # never leave them to the rest of the session
            p.kill()
    text = "".join(lines)
    stopped = re.search(r"^stopped; (.*)$", text, re.MULTILINE)
    stray = None if stopped is None else (
        [] if stopped.group(1) == "nothing left running"
        else stopped.group(1).removeprefix("threads still running: ").split(", "))
    return DemoRun(summary, console_status, listed, code, stray,
                   [" ".join(p.info["cmdline"] or ())[:200] for p in left], text)


def test_demo_keep_serves_the_console_until_ctrl_c(demo_run: DemoRun) -> None:
    assert demo_run.console_status == 200
    assert demo_run.devices_listed == DEVICES
    assert demo_run.exit_code == 0, demo_run.stderr[-3000:]
    assert demo_run.summary["kept_running"] is True
    # Ctrl-C stops everything: no thread left in the demo, and no process (its MLflow server
    # runs in its own session, so nothing but the demo's stop ends it).
    assert demo_run.stray_threads == [], demo_run.stderr[-3000:]
    assert demo_run.left_running == []


def test_demo_with_the_embedded_amqtt_broker(demo_run: DemoRun) -> None:
    """What a machine with nothing but the package gets (MQTT 3.1.1, no shared subs)."""
    s = demo_run.summary
    assert s["broker"]["kind"] == "amqtt"
    _check(s)


def test_demo_through_an_mlflow_registry(demo_run: DemoRun) -> None:
    """`--mlflow`: registered model, build from @champion with --mlflow-log, rollout by moving
    the fleet alias, and both deployments' outcomes tagged back on the model version. The
    demo uses its own server whatever MLflow variables the caller has set."""
    s = demo_run.summary
    _check(s)
    m = s["mlflow"]
    assert m["model_uri"] == "models:/vehicle-classifier@champion"
    assert m["tracking_uri"] != "http://127.0.0.1:9"
    tags = m["version_tags"]
    assert tags["edgeops.bundle"] == "vehicle-classifier-1.0.0"
    assert tags["edgeops.targets"] == "arm64-cpu,cuda-gpu,x86-cpu"
    outcomes = sorted(v for k, v in tags.items() if k.startswith("edgeops.deployment."))
    assert len(outcomes) == 2 and outcomes[0].startswith("completed"), outcomes
    assert "aborted" in outcomes[1], outcomes
    assert m["run_metrics"]["edgeops.x86-cpu.latency_p50_ms"] > 0


# -- the other broker kind, in this process ----------------------------------------------------

@pytest.fixture
def _fleet_server_log_level() -> Iterator[None]:
    logger = logging.getLogger("fleet.server")
    level = logger.level
    yield
    logger.setLevel(level)           # the demo's stack quiets it for its own output


def test_demo_with_mosquitto(tmp_path: Path, _fleet_server_log_level: None) -> None:
    """``--broker-kind mosquitto``: the demo's stack (what ``edgeops demo`` starts after its
    toolchain act: broker, manager with its worker, console) on mosquitto in MQTT 5 with the
    worker's shared subscription, carrying one real rollout to real agents, then stopping
    without leaving a thread. The bundle is the tests' tiny signed one: training and building
    are the one demo run's part."""
    from edgeops_sim import SimFleet, SimOptions
    from edgeops_sim.demo import DemoOptions, _Out, _Stack
    from edgeops_sim.streams import DeviceSpec
    from fleet.worker import WorkerConfig
    from tests.edgeops.bundles import make_bundle, make_keystore
    from tests.fleet.live import publish_bundle, wait_until

    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    keys = make_keystore(tmp_path / "home")              # where the demo keeps its keys
    bundle = make_bundle(tmp_path / "bundles", keys)
    stack = _Stack(DemoOptions(workdir=tmp_path, devices=4, fast=True, quiet=True,
                               broker_kind="mosquitto"), tmp_path, _Out(quiet=True))
    cams = [DeviceSpec(f"cam-{i:03d}", "traffic-camera", "camera", "x86-cpu",
                       {"district": "4"}, seed=i) for i in range(2)]
    try:
        stack.start()
        assert (stack.broker_kind, stack.mqtt_version) == ("mosquitto", 5)
        assert stack.server.worker.config.share_group == WorkerConfig().share_group != ""
        c = stack.admin
        stack.sim = SimFleet(cams, tmp_path / "sim", stack.broker_url,
                             SimOptions(mqtt_version=stack.mqtt_version, tick_s=0.5,
                                        telemetry_interval_s=1.0))
        stack.sim.enrol(c)
        stack.sim.start()
        wait_until("devices online", lambda: c.devices(online="true")["total"] == 2, 60)
        publish_bundle(c, keys, bundle)
        dep = c.deploy("tiny", "1.0.0", "all", {"phases": ["100%"], "bake_s": 0.0})
        done = wait_until("rollout", lambda: (s := c.deployment(dep["id"]))["status"]
                          != "running" and s, 90)
        assert done["status"] == "completed" and done["counts"] == {"healthy": 2}, done
        assert stack.sim.snapshot()["serving"] == {"tiny@1.0.0": 2}
    finally:
        stack.stop()
    assert stack.stray_threads() == []


# -- usage errors: CLI behaviour, in this process ----------------------------------------------

def test_demo_refuses_a_bad_broker_kind_with_usage_exit(tmp_path: Path) -> None:
    res = run_edgeops("demo", "--workdir", tmp_path, "--broker-kind", "rabbit")
    assert res.returncode == 2
    assert "'rabbit' is not one of" in res.stderr
    assert "Traceback" not in res.stderr


def test_demo_with_an_unreachable_broker_fails_fast_with_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:                 # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_edgeops("demo", "--workdir", tmp_path, "--broker", f"mqtt://127.0.0.1:{port}")
    assert res.returncode == 1
    assert res.stderr.startswith("error: cannot reach the MQTT broker"), res.stderr
    assert res.stderr.count("\n") == 1 and "hint:" in res.stderr
    assert not (tmp_path / "model").exists()          # nothing started, nothing trained


def test_demo_with_a_malformed_broker_url_is_a_usage_error(tmp_path: Path) -> None:
    res = run_edgeops("demo", "--workdir", tmp_path, "--broker", "http://nope")
    assert res.returncode == 2
    assert "is not mqtt://" in res.stderr and "Traceback" not in res.stderr

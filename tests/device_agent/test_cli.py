"""`edgeops agent ...` as a user runs it: exit codes, one-line errors. Commands run in this
process through click's CliRunner (tests/clirun.py); ``agent run`` as a long-lived process that
stops on SIGTERM, and the ``edgeops-agent`` entry point, run as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_agent.config import CONFIG_SCHEMA
from device_agent.local_api import LocalClient
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from tests.clirun import CliResult, run_edgeops
from tests.device_agent.bundles import FEATURES, Fleet, build_bundle, traversal_bundle
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]


def edgeops(*args: str) -> CliResult:
    return run_edgeops(*args)


@pytest.fixture
def config(tmp_path: Path, fleet: Fleet) -> Path:
    d: dict[str, Any] = {
        "schema": CONFIG_SCHEMA, "device_id": "cam-17", "device_class": "camera",
        "target": "x86-cpu", "data_dir": "state",
        "trust": {"root": str(root_path(KeyStore(fleet.home))), "manager_keys": []},
        "inference": {"socket": None, "http": f"127.0.0.1:{free_port()}"},
    }
    p = tmp_path / "agent.json"
    p.write_text(json.dumps(d))
    return p


def test_help_has_examples() -> None:
    for cmd in (["agent", "--help"], ["agent", "run", "--help"], ["agent", "status", "--help"],
                ["agent", "install", "--help"]):
        r = edgeops(*cmd)
        assert r.returncode == 0 and "Example" in r.stdout, cmd


def test_install_then_status(config: Path, fleet: Fleet, bundle_dir: Path) -> None:
    r = edgeops("agent", "status", "--config", str(config), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["active"] is None
    assert json.loads(r.stdout)["serving"] is None          # no agent running
    good = build_bundle(bundle_dir, fleet, version="1.2.0")
    r = edgeops("agent", "install", "--config", str(config), str(good), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["phase"] == "healthy" and r.stderr == ""
    r = edgeops("agent", "status", "--config", str(config))
    assert r.returncode == 0 and "active: classifier@1.2.0 in slot a" in r.stdout
    assert "last install: classifier@1.2.0 healthy" in r.stdout


@pytest.mark.parametrize(("case", "needle", "line_prefix"), [
    ("foreign", "not signed by a trusted targets key", ""),
    ("nan", "NaN", ""),
    ("traversal", "path traversal", "error: "),
    ("missing", "does not exist", "error: "),
])
def test_bad_bundles_fail_with_one_line_and_old_model_stays(
        tmp_path: Path, config: Path, fleet: Fleet, bundle_dir: Path, case: str,
        needle: str, line_prefix: str) -> None:
    assert edgeops("agent", "install", "--config", str(config),
                   str(build_bundle(bundle_dir, fleet))).returncode == 0
    path = {
        "foreign": lambda: build_bundle(bundle_dir, fleet, version="2.0.0",
                                        signer=fleet.foreign),
        "nan": lambda: build_bundle(bundle_dir, fleet, version="2.0.0", kind="nan"),
        "traversal": lambda: traversal_bundle(build_bundle(bundle_dir, fleet, version="2.0.0"),
                                              tmp_path / "evil.edgebundle"),
        "missing": lambda: tmp_path / "nope.edgebundle",
    }[case]()
    r = edgeops("agent", "install", "--config", str(config), str(path))
    assert r.returncode == 1
    out = (r.stderr if line_prefix else r.stdout).strip().splitlines()
    assert needle in out[-1] and out[-1].startswith(line_prefix)
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "evil.sh").exists() and not (tmp_path.parent / "evil.sh").exists()
    status = json.loads(edgeops("agent", "status", "--config", str(config), "--json").stdout)
    assert status["active"]["version"] == "1.0.0"


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "agent.json"
    p.write_text(json.dumps({"schema": CONFIG_SCHEMA, "device_id": "a/b"}))
    r = edgeops("agent", "status", "--config", str(p))
    assert r.returncode == 1 and r.stderr.startswith("error: agent config: device_id")
    assert "hint:" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = edgeops("agent", "status")
    assert r.returncode == 2


def test_run_local_only_serves_and_stops_on_sigterm(config: Path, fleet: Fleet,
                                                    bundle_dir: Path) -> None:
    assert edgeops("agent", "install", "--config", str(config),
                   str(build_bundle(bundle_dir, fleet, scale=4.0))).returncode == 0
    port = int(json.loads(config.read_text())["inference"]["http"].rsplit(":", 1)[1])
    proc = subprocess.Popen([sys.executable, "-m", "edgeops.cli.main", "agent", "run",
                             "--config", str(config), "--local-only"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})
    try:
        deadline = time.monotonic() + 60
        client = LocalClient(http=("127.0.0.1", port), timeout_s=5)
        while True:
            try:
                status, _, _ = client.request("GET", "/v1/health")
                if status == 200:
                    break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        x = np.ones((1, FEATURES), dtype=np.float32)
        np.testing.assert_allclose(client.predict({"x": x})["y"], x * 4 + 1)
        client.close()
        st = edgeops("agent", "status", "--config", str(config), "--json")
        assert st.returncode == 0 and json.loads(st.stdout)["serving"]["version"] == "1.0.0"
        st = edgeops("agent", "status", "--config", str(config))
        assert "serving: classifier@1.0.0 (onnxruntime) on the local API" in st.stdout
        # a second agent on the same state directory is refused
        r = edgeops("agent", "install", "--config", str(config),
                    str(build_bundle(bundle_dir, fleet, version="3.0.0")))
        assert r.returncode == 1 and "another agent is using" in r.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None and proc.stdout is not None
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert "serving classifier@1.0.0" in err


@pytest.mark.parametrize("entry", ["edgeops agent run", "edgeops-agent"])
def test_run_through_the_daemon_fails_in_one_line_without_a_root(tmp_path: Path,
                                                                entry: str) -> None:
    p = tmp_path / "agent.json"
    p.write_text(json.dumps({"schema": CONFIG_SCHEMA, "device_id": "cam-1", "target": "x86-cpu",
                             "trust": {"root": "missing-root.json", "manager_keys": []}}))
    # real processes: the daemon's error reaches the user through its logging set-up on the
    # process's stderr (the edgeops-agent entry point's smoke test)
    if entry == "edgeops-agent":
        cmd = [sys.executable, "-c", "import sys; from device_agent.cli import agent_main; "
               "sys.argv[0] = 'edgeops-agent'; agent_main()", "--config", str(p)]
    else:
        cmd = [sys.executable, "-m", "edgeops.cli.main", "agent", "run", "--config", str(p)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: trust root") and "does not exist" in lines[-1]
    assert "Traceback" not in r.stderr

"""End to end with the real fleet manager: the suite's report, `edgeops fleet bless`, the gate.

A manager started with ``--require-blessing`` refuses to deploy to a hardware class without a
passing report; the suite runs on the bundle, `edgeops fleet bless` uploads its report through
:func:`fleet.bless.upload_blessing`, and the same deploy then goes through.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeops.errors import BadContentError
from fleet.client import FleetClient
from tests.clirun import CliResult, run_edgeops
from tests.fleet.live import live_fleet
from tests.hardware_tests.bundles import PASSPHRASE, build_bundle, make_keystore
from tests.hardware_tests.conftest import FAST, SUITE_DIR, suite_env


def _edgeops(env: dict[str, str], *args: str) -> CliResult:
    """``edgeops ARGS`` in this process (tests/clirun.py); the suite itself runs as a device
    runs it, in a subprocess."""
    return run_edgeops(*args, env=env)


def test_suite_report_blesses_and_unlocks_deploy(tmp_path: Path) -> None:
    store = make_keystore(tmp_path / "home", full=True)
    bundle = build_bundle(tmp_path / "b", store, name="vc", version="3.0.0")
    with live_fleet(store, tmp_path / "fleet", require_blessing=True) as live:
        env = {"EDGEOPS_FLEET": live.url, "EDGEOPS_TOKEN": live.admin,
               "EDGEOPS_HOME": str(store.home), "EDGEOPS_KEY_PASSPHRASE": PASSPHRASE.decode()}
        published = _edgeops(env, "publish", str(bundle), "--json")
        assert published.returncode == 0, published.stderr
        client = FleetClient(live.url, live.admin)
        client.enrol("cam-1", "camera", "x86-cpu", {})
        with pytest.raises(BadContentError, match="not blessed for hardware class x86_64"):
            client.deploy("vc", "3.0.0", "all", {})

        report = tmp_path / "report.json"
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", str(SUITE_DIR), "-p", "no:cacheprovider", "-q",
             "--bundle", str(bundle), "--report", str(report), *FAST],
            capture_output=True, text=True, timeout=240, cwd=tmp_path, env=suite_env(), check=False)
        assert suite.returncode == 0, suite.stdout + suite.stderr

        failing = tmp_path / "failing.json"
        d = json.loads(report.read_text())
        d["checks"][1].update(outcome="failed", message="fell back")
        d.pop("passed")
        failing.write_text(json.dumps(d))
        refused = _edgeops(env, "fleet", "bless", str(bundle), "--report", str(failing))
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: report does not pass on x86_64: load failed")
        assert "Traceback" not in refused.stderr

        blessed = _edgeops(env, "fleet", "bless", str(bundle), "--report", str(report), "--json")
        assert blessed.returncode == 0, blessed.stderr
        answer = json.loads(blessed.stdout)
        assert (answer["hardware"], answer["passed"]) == ("x86_64", True)
        assert client.deploy("vc", "3.0.0", "all", {})["status"] == "running"

"""The systemd unit: restarts forever, hardened, owns a state dir; systemd itself accepts it."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "edgeops-agent.service"


def load() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    return cp


def test_unit_keeps_the_agent_running_and_confined() -> None:
    svc = load()["Service"]
    assert svc["Restart"] == "always"
    assert load()["Unit"]["StartLimitIntervalSec"] == "0"
    assert svc["ExecStart"].startswith("/usr/bin/edgeops-agent --config")
    assert svc["KillSignal"] == "SIGTERM"
    assert svc["StateDirectory"] == "edgeops-agent"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6"}.items():
        assert svc[key] == value, key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    text = UNIT.read_text().replace("/usr/bin/edgeops-agent", sys.executable)
    unit = tmp_path / "edgeops-agent.service"
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if "edgeops-agent.service" in line]
    assert r.returncode == 0 and not problems, problems

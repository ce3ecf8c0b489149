"""``edgeops sim``: usage errors exit 2 with one line; a bounded run enrols and reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgeops.cli.main import cli
from edgeops.keys import KeyStore
from fleet.client import FleetClient
from tests.fleet.live import live_fleet


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_unknown_fault_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from edgeops.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["sim", "--fleet", "http://127.0.0.1:9", "--token", "t", "--broker",
              "mqtt://127.0.0.1:9", "--faults", "drop,meteor"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown fault(s) meteor" in err and "Traceback" not in err


def test_missing_fleet_url_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEOPS_FLEET", raising=False)
    r = _run(["sim", "--token", "t", "--broker", "mqtt://127.0.0.1:9"])
    assert r.exit_code == 2 and "--fleet" in r.output


def test_help_has_an_example() -> None:
    r = _run(["sim", "--help"])
    assert r.exit_code == 0 and "Example:" in r.output


@pytest.mark.slow
@pytest.mark.broker
def test_bounded_sim_run_enrols_connects_and_reports_json(
        tmp_path: Path, keystore: KeyStore, mosquitto: Any) -> None:
    with live_fleet(keystore, tmp_path / "mgr", broker=mosquitto.url) as lf:
        r = _run(["sim", "--devices", "4", "--fleet", lf.url, "--token", lf.admin, "--broker",
                  mosquitto.url, "--workdir", str(tmp_path / "sim"), "--duration", "6",
                  "--sensor-interval", "1", "--faults", "skew", "--json"])
        assert r.exit_code == 0, r.output
        s = json.loads(r.output)
        assert s["devices"] == 4 and s["faults"] == ["skew"]
        assert s["sensor_records"] > 0                 # the two sensors reported readings
        c = FleetClient(lf.url, lf.admin)
        kinds = {d["tags"]["kind"] for d in c.devices()["items"]}
        assert kinds == {"air-quality", "bin-level", "traffic-camera", "vehicle"}
        assert (tmp_path / "sim" / "devices" / "aq-001" / "agent.json").exists()


@pytest.mark.slow
@pytest.mark.broker
def test_more_devices_than_per_process_run_as_shard_processes(
        tmp_path: Path, keystore: KeyStore, mosquitto: Any) -> None:
    with live_fleet(keystore, tmp_path / "mgr", broker=mosquitto.url) as lf:
        r = _run(["sim", "--devices", "6", "--per-process", "3", "--fleet", lf.url, "--token",
                  lf.admin, "--broker", mosquitto.url, "--workdir", str(tmp_path / "sim"),
                  "--duration", "12", "--sensor-interval", "1", "--json"])
        assert r.exit_code == 0, r.output
        s = json.loads(r.output)
        assert s["processes"] == 2
        assert s["devices"] == 6 and s["online"] == 6, s
        c = FleetClient(lf.url, lf.admin)
        devs = c.devices()["items"]       # they were online, and said goodbye on stop
        assert len(devs) == 6 and all(d["online"] is False and d["last_seen"] for d in devs)
    import psutil

    assert not [p for p in psutil.process_iter(["cmdline"])
                if "edgeops_sim.shards" in " ".join(p.info["cmdline"] or [])]

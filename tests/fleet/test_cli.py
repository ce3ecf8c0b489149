"""The `edgeops fleet ...` and `edgeops publish` commands against a real manager over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeops.keys import KeyStore
from tests.fleet.live import LiveFleet, cli_fleet, live_fleet, run_cli


@pytest.fixture
def live(keystore: KeyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[LiveFleet]:
    with cli_fleet(keystore, tmp_path, monkeypatch) as lf:
        yield lf


run = run_cli


def test_enrol_writes_a_config_the_agent_reads(live: LiveFleet, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               keystore: KeyStore) -> None:
    from device_agent.config import AgentConfig

    out_dir = tmp_path / "cam-17"
    code, out, err = run(capsys, "fleet", "enroll", "cam-17", "--class", "camera", "--target",
                         "x86-cpu", "--tag", "city=lyon", "--tag", "district=4", "--out",
                         str(out_dir), "--json")
    assert code == 0, err
    assert json.loads(out)["device"]["tags"] == {"city": "lyon", "district": "4"}
    cfg = AgentConfig.from_file(out_dir / "agent.json")
    assert cfg.device_id == "cam-17" and cfg.target == "x86-cpu"
    assert cfg.tags == {"city": "lyon", "district": "4"}
    assert [k.keyid for k in cfg.trust.manager_keys] == [keystore.public_key("manager").keyid]
    assert cfg.trust.root.read_bytes() == (keystore.home / "trust" / "root.json").read_bytes()
    assert cfg.fleet_url == live.url
    assert (out_dir / "agent.json").stat().st_mode & 0o777 == 0o600
    code, _, err = run(capsys, "fleet", "enroll", "bad/id", "--class", "camera", "--target",
                       "x86-cpu", "--out", str(tmp_path / "x"))
    assert code == 2 and err.startswith("error: device id") and "hint:" in err
    assert not (tmp_path / "x").exists()


def test_publish_deploy_status_and_actions(live: LiveFleet, bundles: dict[str, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "publish", str(bundles["1.0.0"]), "--json")
    assert code == 0, err
    assert json.loads(out)["new"] is True
    code, out, _ = run(capsys, "publish", str(bundles["1.0.0"]))
    assert code == 0 and "already published" in out
    for i in range(3):
        assert run(capsys, "fleet", "enroll", f"cam-{i}", "--class", "camera", "--target",
                   "x86-cpu", "--tag", "district=4", "--out", str(live.server.opts.data / "e"
                                                                    / str(i)))[0] == 0
    code, out, err = run(capsys, "fleet", "deploy", "tiny@1.0.0", "--select", "district=4",
                         "--phases", "1,100%", "--bake", "1m", "--json")
    assert code == 0, err
    dep = json.loads(out)
    assert dep["devices"] == 3 and dep["strategy"]["bake_s"] == 60.0
    assert dep["strategy"]["auto_rollback"] is False
    code, out, _ = run(capsys, "fleet", "status", dep["id"], "--devices")
    assert code == 0 and dep["id"] in out and "cam-0" in out
    code, out, _ = run(capsys, "fleet", "deployments", "--json")
    assert [d["id"] for d in json.loads(out)["items"]] == [dep["id"]]
    code, out, _ = run(capsys, "fleet", "devices", "--tag", "district=4", "--json")
    assert json.loads(out)["total"] == 3
    assert run(capsys, "fleet", "pause", dep["id"])[0] == 0
    code, _, err = run(capsys, "fleet", "pause", dep["id"])
    assert code == 1 and err.startswith("error: cannot pause") and "Traceback" not in err
    assert run(capsys, "fleet", "rollback", dep["id"], "--json")[0] == 0
    code, out, err = run(capsys, "fleet", "deploy", "tiny@1.0.0", "--select", "district=4",
                         "--auto-rollback", "--json")
    assert code == 0, err
    assert json.loads(out)["strategy"]["auto_rollback"] is True
    code, _, err = run(capsys, "fleet", "deploy", "tiny@1.0.0", "--select", "city=nowhere")
    assert code == 1 and "selects no device" in err and err.count("\n") == 1
    code, _, err = run(capsys, "fleet", "deploy", "tiny")
    assert code == 2 and "NAME@VERSION" in err
    code, _, err = run(capsys, "fleet", "deploy", "tiny@1.0.0", "--phases", "50%,10%")
    assert code == 2 and "grow" in err
    code, out, _ = run(capsys, "fleet", "telemetry", "--deployment", dep["id"], "--json")
    assert code == 0 and json.loads(out)["records"] == 0


def test_token_commands_and_auth_errors(live: LiveFleet,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(capsys, "fleet", "token", "create", "--role", "viewer", "--json")
    viewer = json.loads(out)
    assert code == 0 and viewer["token"].startswith("eot_")
    code, out, _ = run(capsys, "fleet", "token", "list")
    assert viewer["token_id"] in out and viewer["token"] not in out
    monkeypatch.setenv("EDGEOPS_TOKEN", viewer["token"])
    code, _, err = run(capsys, "fleet", "token", "create", "--role", "admin")
    assert code == 1 and "admin role" in err
    monkeypatch.delenv("EDGEOPS_TOKEN")
    code, _, err = run(capsys, "fleet", "devices")
    assert code == 1 and "needs an API token" in err
    code, _, err = run(capsys, "fleet", "devices", "--fleet", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach the fleet manager" in err
    code, _, err = run(capsys, "fleet", "devices", "--fleet", "ftp://x")
    assert code == 2


def test_every_command_has_help_with_an_example() -> None:
    import click

    from fleet.cli import fleet, publish

    def walk(cmd: click.Command, name: str) -> Iterator[tuple[str, click.Command]]:
        yield name, cmd
        if isinstance(cmd, click.Group):
            for sub_name, sub in cmd.commands.items():
                yield from walk(sub, f"{name} {sub_name}")

    mine = [(n, c) for n, c in walk(fleet, "fleet")
            if n.split()[-1] not in ("ca", "broker-config") and "fleet ca " not in n]
    for name, cmd in [*mine, ("publish", publish)]:
        assert "Example" in (cmd.help or ""), name
        if not isinstance(cmd, click.Group) and name.split()[-1] not in (
                "serve", "enroll", "token", "bless") and name != "publish":
            assert any(p.name == "as_json" for p in cmd.params), name


def test_edgeops_fleet_help_in_a_subprocess() -> None:
    exe = Path(sys.executable).with_name("edgeops")
    r = subprocess.run([str(exe), "fleet", "deploy", "--help"], capture_output=True,
                       text=True, timeout=60, env={**os.environ})
    assert r.returncode == 0 and "--phases" in r.stdout and "Example" in r.stdout


def test_enrol_with_a_fleet_ca_writes_mutual_tls_credentials(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from device_agent.config import AgentConfig
    from fleet.pki import FleetCA
    from tests.edgeops.bundles import make_keystore

    keys = make_keystore(tmp_path / "home")
    FleetCA(keys.home / "ca").init()
    with live_fleet(keys, tmp_path / "srv") as lf:
        monkeypatch.setenv("EDGEOPS_FLEET", lf.url)
        monkeypatch.setenv("EDGEOPS_TOKEN", lf.admin)
        out = tmp_path / "cam-9"
        code, _, err = run(capsys, "fleet", "enroll", "cam-9", "--class", "camera", "--target",
                           "x86-cpu", "--out", str(out))
        assert code == 0, err
        cfg = AgentConfig.from_file(out / "agent.json")
        assert cfg.broker.tls is not None and cfg.broker.tls.cert == out / "device.crt"
        assert (out / "device.key").stat().st_mode & 0o777 == 0o600
        assert b"BEGIN CERTIFICATE" in (out / "device.crt").read_bytes()
        assert (out / "ca.pem").read_bytes() == (keys.home / "ca" / "ca.crt").read_bytes()
        later = tmp_path / "cam-10"
        code, _, err = run(capsys, "fleet", "enroll", "cam-10", "--class", "camera",
                           "--target", "x86-cpu", "--out", str(later), "--no-certificate")
        assert code == 0, err
        assert (later / "enroll.token").stat().st_mode & 0o777 == 0o600
        assert not (later / "device.key").exists()


def test_bless_uploads_a_hardware_report(live: LiveFleet, bundles: dict[str, Path],
                                         tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    from edgeops.blessing import REQUIRED_CHECKS, CheckResult, HardwareReport
    from edgeops.bundle import read_bundle

    assert run(capsys, "publish", str(bundles["1.0.0"]))[0] == 0
    sha = hashlib.sha256(read_bundle(bundles["1.0.0"]).manifest_bytes).hexdigest()
    report = tmp_path / "report.json"
    report.write_bytes(HardwareReport(
        bundle="tiny", version="1.0.0", manifest_sha256=sha, target="x86-cpu",
        hardware="x86_64", created="2026-11-27T00:00:00+00:00",
        checks=tuple(CheckResult(n, "passed", "ok") for n in REQUIRED_CHECKS)).to_bytes())
    code, out, err = run(capsys, "fleet", "bless", str(bundles["1.0.0"]), "--report", str(report), "--json")
    assert code == 0, err
    assert json.loads(out)["passed"] is True and json.loads(out)["hardware"] == "x86_64"
    code, out, _ = run(capsys, "fleet", "bundles", "--json")
    assert [b["version"] for b in json.loads(out)["items"]] == ["1.0.0"]


def test_publish_refuses_a_foreign_bundle_locally_and_lists_devices_as_text(
        live: LiveFleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.edgeops.bundles import make_bundle, make_keystore

    evil = make_bundle(tmp_path, make_keystore(tmp_path / "mallory"), version="6.6.6")
    code, _, err = run(capsys, "publish", str(evil))
    assert code == 1 and "not signed by a trusted targets key" in err and "Traceback" not in err
    assert list((live.server.opts.data / "uploads").glob("*")) == []      # nothing uploaded
    code, _, err = run(capsys, "publish", str(tmp_path / "missing.edgebundle"))
    assert code == 1 and "does not exist" in err
    run(capsys, "fleet", "enroll", "bus-1", "--class", "vehicle", "--target", "arm64-cpu",
        "--tag", "route=C3", "--out", str(tmp_path / "bus-1"))
    code, out, _ = run(capsys, "fleet", "devices", "--offline")
    assert code == 0 and "bus-1" in out and "route=C3" in out and "1 of 1 devices" in out
    code, out, _ = run(capsys, "fleet", "devices", "--online")
    assert code == 0 and "0 of 0 devices" in out

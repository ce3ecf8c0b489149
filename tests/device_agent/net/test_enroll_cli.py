"""``edgeops agent enroll`` is reachable from the real CLI entry point and documents itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeops.cli.main import cli, main


def test_agent_enroll_help_shows_an_example() -> None:
    result = CliRunner().invoke(cli, ["agent", "enroll", "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    assert "edgeops agent enroll --fleet" in result.output
    assert "--device-id" in result.output and "--renew" in result.output


def test_agent_group_lists_enroll() -> None:
    result = CliRunner().invoke(cli, ["agent", "--help"])
    assert result.exit_code == 0, result.output
    assert "enroll" in result.output


def test_agent_enroll_without_device_id_is_a_usage_error(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["agent", "enroll", "--fleet", "http://127.0.0.1:9", "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device-id is needed") and "hint:" in err
    assert "Traceback" not in err

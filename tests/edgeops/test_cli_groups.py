"""Command groups load lazily from the package that owns each; one that cannot load is an
error naming it and the reason, never a command that silently vanishes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgeops.cli import main as cli_main


def _broken_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    name = f"edgeops_test_broken_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli_main.main(list(args))
    return int(exc.value.code or 0), capsys.readouterr().err


def test_a_group_whose_module_fails_to_import_is_an_error_that_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _broken_module(tmp_path, monkeypatch, "import edgeops_no_such_dependency\n")
    monkeypatch.setitem(cli_main._COMMANDS, "broken", (f"{mod}:group", "A broken group."))
    code, err = _run(capsys, "broken")
    assert code == 1
    assert err.count("\n") <= 2 and "Traceback" not in err
    assert "the 'broken' command cannot be loaded" in err
    assert "No module named 'edgeops_no_such_dependency'" in err


def test_a_broken_group_is_reported_by_help_not_dropped_from_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _broken_module(tmp_path, monkeypatch, "x = 1\n")    # imports, but has no `group`
    monkeypatch.setitem(cli_main._COMMANDS, "broken", (f"{mod}:group", "A broken group."))
    code, err = _run(capsys, "--help")
    assert code == 1
    assert "the 'broken' command cannot be loaded" in err and "AttributeError" in err


def test_a_missing_optional_extra_is_named_in_the_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _broken_module(tmp_path, monkeypatch,
                         "raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n")
    monkeypatch.setitem(cli_main._COMMANDS, "broken", (f"{mod}:group", "A broken group."))
    code, err = _run(capsys, "broken")
    assert code == 1 and "pip install 'edgeops[postgres]'" in err


def test_every_group_of_this_install_loads() -> None:
    group = cli_main.cli
    assert isinstance(group, cli_main.LazyGroup)
    for name in cli_main._COMMANDS:
        assert group.get_command(None, name) is not None, name   # type: ignore[arg-type]

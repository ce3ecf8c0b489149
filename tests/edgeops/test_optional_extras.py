"""An optional extra that is not installed fails with one line naming the extra; nothing falls
back to a weaker behaviour. ``sys.modules[name] = None`` makes an import fail as if absent."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgeops.errors import ConfigError, EdgeOpsError


def test_postgres_store_without_psycopg_names_the_postgres_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.store.postgres import PostgresStore

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match="psycopg") as exc:
        PostgresStore("postgresql://nobody@127.0.0.1:9/none")
    assert exc.value.hint == "install the extra: pip install 'edgeops[postgres]'"


def test_tflite_runner_without_litert_names_the_tflite_extra(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from edgeops.runtime import ModelLoadError, TfliteRunner

    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
                 "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModelLoadError) as exc:
        TfliteRunner(tmp_path / "model.tflite")
    assert isinstance(exc.value, EdgeOpsError)
    assert "pip install 'edgeops[tflite]'" in exc.value.hint

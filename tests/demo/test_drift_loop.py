"""docs/examples/drift_loop.py, the worked example of docs/DRIFT.md, run end to end: drift
injected in the simulator's readings is detected, captured, rebuilt into 1.1.0 and redeployed,
after which the cohort is ok against the new reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.broker]   # the script starts its broker out of sight

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "drift_loop.py"


@pytest.mark.timeout(900)
def test_the_worked_example_closes_the_loop(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EDGEOPS_HOME", "EDGEOPS_KEY_PASSPHRASE", "EDGEOPS_FLEET", "EDGEOPS_TOKEN"):
        monkeypatch.setenv(var, "")      # the script sets its own; monkeypatch undoes them
    spec = importlib.util.spec_from_file_location("drift_loop", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    got = mod.run(tmp_path / "loop", devices=2, log=lambda _s: None)
    assert got["before"] == "ok", got
    assert got["detected"] == "alarm", got
    assert "input:features[11]" in got["drifting_features"], got      # noise_db
    (shape,) = got["captured"].values()
    assert shape[0] >= 2 * 300 and shape[1:] == [1, 12]
    assert got["after"] == "ok", got

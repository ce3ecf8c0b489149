"""`edgeops bundle delta OLD NEW`: what a delta would hold, per target, for planning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.edgeops.bundles import make_keystore
from tests.edgeops.delta_models import mlp_bundle
from tests.edgeops.test_cli import run


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("delta-cli")
    store = make_keystore(tmp / "home")
    v1 = mlp_bundle(tmp, store, version="1.0.0")
    v11 = mlp_bundle(tmp, store, version="1.1.0")                # same weights, new version
    v2 = mlp_bundle(tmp, store, version="2.0.0", head_seed=3)    # the head retrained
    return tmp / "home", v1, v11, v2


def test_unchanged_weights_give_a_tiny_delta(bundles: tuple[Path, Path, Path, Path]) -> None:
    home, v1, v11, _ = bundles
    r = run(home, "bundle", "delta", str(v1), str(v11), "--json")
    assert r.returncode == 0, r.stderr
    (s,) = json.loads(r.stdout)
    assert s["target"] == "x86-cpu" and s["format"] == "onnx"
    assert {o["change"] for o in s["ops"]} == {"unchanged"}
    assert s["tensors"]["unchanged"]["sent"] == 0
    text = run(home, "bundle", "delta", str(v1), str(v11))
    assert text.returncode == 0 and "x86-cpu: onnx" in text.stdout and "unchanged" in text.stdout


def test_head_retrain_sends_the_head_only(bundles: tuple[Path, Path, Path, Path]) -> None:
    home, v1, _, v2 = bundles
    r = run(home, "bundle", "delta", str(v1), str(v2), "--json")
    assert r.returncode == 0, r.stderr
    (s,) = json.loads(r.stdout)
    assert {o["tensor"]: o["change"] for o in s["ops"]} == {
        "w1": "unchanged", "w2": "unchanged", "w3": "changed"}
    assert s["worthwhile"] and s["delta_bytes"] < 0.1 * s["full_bytes"]
    text = run(home, "bundle", "delta", str(v1), str(v2)).stdout
    assert "ships delta" in text


def test_unknown_target_is_one_line_usage_error(bundles: tuple[Path, Path, Path, Path]) -> None:
    home, v1, v11, _ = bundles
    r = run(home, "bundle", "delta", str(v1), str(v11), "--target", "jetson")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "jetson" in r.stderr and "Traceback" not in r.stderr

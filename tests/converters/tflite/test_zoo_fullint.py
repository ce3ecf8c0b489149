"""A pretrained hard-swish classifier (the zoo's ocr-cls, MobileNetV3-style) built full integer
for the Edge TPU through the quantisation engine: what it chose, and what a refusal says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from converters.api import BuildRequest
from converters.build import build
from edgeops.errors import AccuracyGateError
from tests.realzoo import model_path
from tests.zoo_inputs import ocr_cls

pytestmark = pytest.mark.slow


def _request(tmp_path: Path, budget: float) -> BuildRequest:
    x = ocr_cls(48)["x"]                    # every other line upside down
    half = (np.arange(len(x)) // 2) % 2 == 0  # pairs alternate: both classes in each half
    cal, val = tmp_path / "cal.npz", tmp_path / "val.npz"
    np.savez(cal, x=x[half])
    np.savez(val, x=x[~half])
    return BuildRequest(model=model_path("ocr-cls"), name="cls", version="1.0.0",
                        targets=("edgetpu",), calibration=cal, validation=val,
                        input_shapes={"x": (1, 3, 48, 192)}, max_accuracy_drop=budget)


def test_edgetpu_ocr_cls_engine_choice_or_refusal_with_the_budget_that_passes(
        tmp_path: Path) -> None:
    nodes = {n.name for n in onnx.load(str(model_path("ocr-cls"))).graph.node}
    try:
        (art,) = build(_request(tmp_path, 0.01), lambda m: None, tmp_path / "w1").artifacts
    except AccuracyGateError as exc:
        msg = str(exc)
        found = re.search(r"limited by (.+?); the budget would have to be [0-9.]+% "
                          r"\(--max-accuracy-drop ([0-9.e-]+)\)", msg)
        assert found is not None and "\n" not in msg, msg
        layers = re.findall(r"(\S+) \([A-Z_0-9]+, \d+% of the error added\)", found.group(1))
        assert layers and set(layers) <= nodes                 # the model's own layers
        budget = float(found.group(2))
        (art,) = build(_request(tmp_path, budget), lambda m: None, tmp_path / "w2").artifacts
        assert art.metrics["accuracy"]["drop"] <= budget
    q = art.details["quantisation_passes"]
    assert art.details["graph_passes"]["conv_bias_adds_folded"] > 0    # Paddle's bias Adds
    assert q["cross_layer_equalisation"]["status"] == "applied"
    assert q["cross_layer_equalisation"]["pairs"] >= 10
    table = q["mse_ranges"]["gate_drop_by_choice"]
    assert art.metrics["accuracy"]["drop"] == pytest.approx(min(table.values()), abs=1e-6)
    # what the engine measured is what a user checks: top-1 agreement with FP32
    assert art.metrics["accuracy"]["gate_metric"] == "top1_agreement"


def test_edgetpu_ocr_cls_at_effort_max_meets_the_issue_goal_with_adaround_tried(
        tmp_path: Path) -> None:
    """Issue 16's goal (top-1 agreement >= 0.97 on Edge TPU, every weight per tensor) on
    held-out inputs at ``--effort max``, AdaRound on the writer's grid among the candidates.
    Whether it is kept depends on the data: on the old two-line strips it was (1.000 vs 0.958
    without), on the detected words it is not, and max keeps default's choice (the
    benchmark's 48 held out: 1.000 at both; 0.979 at max while its candidates without
    AdaRound were not default's own)."""
    import dataclasses

    req = dataclasses.replace(_request(tmp_path, 0.03), options={"effort": "max"})
    (art,) = build(req, lambda m: None, tmp_path / "w").artifacts
    q = art.details["quantisation_passes"]
    assert art.metrics["accuracy"]["gate_metric"] == "top1_agreement"
    assert art.metrics["accuracy"]["drop"] <= 0.03
    assert q["adaround"]["status"] == "applied" and isinstance(q["adaround"]["used"], bool)
    assert any("adaround" in k for k in q["mse_ranges"]["gate_drop_by_choice"])

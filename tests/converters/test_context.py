"""SourceData: what every backend of a build reads, typed, frozen, with a per-build memo."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from converters.context import SourceData
from converters.model_check import load_source
from converters.onnx_utils import model_opset
from converters.tasks import TaskSpec
from converters.validate import model_inputs, run_onnx, synthetic_samples
from tests.converters import zoo


def _data(tmp_path: Path, opset: int = 11) -> SourceData:
    source = load_source(zoo.save(zoo.convnet(opset), tmp_path / "m.onnx"))
    inputs = model_inputs(source.model)
    val = synthetic_samples(inputs, 4, seed=1)
    return SourceData(source=source, inputs=tuple(inputs), calibration=val, validation=val,
                      reference=run_onnx(source.path, val),
                      task=TaskSpec(task="generic", inferred=True, why="test"))


def test_upgraded_once_per_build_and_source_untouched(tmp_path: Path) -> None:
    data = _data(tmp_path, opset=11)
    up = data.upgraded(13)
    assert model_opset(up) == 13 and model_opset(data.model) == 11
    assert data.upgraded(13) is up                  # the second target reuses the conversion
    assert set(data.cache.opsets) == {13}
    assert data.upgraded(11) is data.model          # already new enough: the source itself


def test_model_and_path_come_from_the_source(tmp_path: Path) -> None:
    data = _data(tmp_path)
    assert data.model is data.source.model and data.model_path == data.source.path


def test_accuracy_report_of_the_reference_itself_is_exact(tmp_path: Path) -> None:
    data = _data(tmp_path)
    report = data.accuracy_report(data.reference)
    assert report["summary"]["cosine_min"] == pytest.approx(1.0)
    assert report["task"]["task"] == "generic"


def test_frozen_and_checked_on_construction(tmp_path: Path) -> None:
    data = _data(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.gate_metric = "top1"  # type: ignore[misc]
    with pytest.raises(ValueError, match="gate metric 'best'"):
        dataclasses.replace(data, gate_metric="best")

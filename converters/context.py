"""What every backend of one build shares: the checked source model, its data, the FP32 reference.

converters/build.py checks the model, loads calibration and validation data and runs the FP32
reference once, before any backend runs; each target's backend then reads them from
``ctx.data``, a :class:`SourceData` (typed fields, checked when built, never reassigned).
What backends compute once and reuse across targets (the source upgraded to a newer opset, the
FP32 latency) lives in its :class:`SourceCache`, a typed memo, not in string keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.data import InputSpec, SampleSet
from converters.feeds import Samples
from converters.model_check import SourceModel
from converters.onnx_utils import upgraded
from converters.tasks import TaskSpec
from converters.validate import accuracy_report

__all__ = ["GATE_METRICS", "LatencyKey", "SourceCache", "SourceData"]

GATE_METRICS = ("auto", "top1", "cosine")
# (measurement threads, the profile's providers): what a latency figure depends on.
LatencyKey = tuple[int, tuple[str, ...]]


@dataclass
class SourceCache:
    """Results several targets of one build need and only the first computes.

    ``opsets``: the source model at opset N (onnx.ModelProto), for passes that need a newer
    opset than the source has (:func:`converters.onnx_utils.upgraded`). ``fp32_latency``: the
    FP32 source's p50/p95 and the provider timed on, per :data:`LatencyKey`.
    """

    opsets: dict[int, Any] = field(default_factory=dict)
    fp32_latency: dict[LatencyKey, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceData:
    """The checked source and its data, as every backend of the build sees them.

    ``calibration`` is read in order with ``iter_samples()`` (a SampleSet, spooled Python
    feeds, or for a sequence the same with carried states); ``validation`` is a SampleSet (for a
    sequence: the states FP32 carried, step by step); ``reference`` holds the FP32 source's
    outputs on it, stacked over samples. ``states`` maps a streaming model's state outputs to
    inputs ({} if none): pass it to ``run_onnx(..., states=)`` so a candidate runs on its own
    states. ``prequantised`` counts quantised ops when the source arrives quantised ({} if
    float). ``synthetic``: no data was given and seeded samples were generated.
    """

    source: SourceModel
    inputs: tuple[InputSpec, ...]              # ``--input-shape`` applied
    calibration: Samples
    validation: SampleSet
    reference: Mapping[str, np.ndarray]
    task: TaskSpec                             # what the gate measures
    labels: np.ndarray | None = None           # class index per validation sample
    classifier_outputs: tuple[str, ...] = ()   # outputs holding class scores
    gate_metric: str = "auto"                  # one of GATE_METRICS
    states: Mapping[str, str] = field(default_factory=dict)
    prequantised: Mapping[str, int] = field(default_factory=dict)
    synthetic: bool = False
    cache: SourceCache = field(default_factory=SourceCache, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.gate_metric not in GATE_METRICS:
            raise ValueError(f"gate metric {self.gate_metric!r} is not one of {GATE_METRICS}")

    @property
    def model(self) -> Any:
        """onnx.ModelProto of the checked source, at its original opset."""
        return self.source.model

    @property
    def model_path(self) -> Path:
        """The source model on disk (what to read for a model over 2 GB)."""
        return self.source.path

    def upgraded(self, min_opset: int) -> Any:
        """The source model at opset ``min_opset`` or newer, converted once per build."""
        return upgraded(self.model, min_opset, path=self.model_path, cache=self.cache.opsets)

    def accuracy_report(self, outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """A candidate's outputs on :attr:`validation` compared with the FP32 reference the
        way the gate reads them (labels, classifier outputs, the task)."""
        return accuracy_report(self.reference, outputs, self.labels,
                               list(self.classifier_outputs), self.task)

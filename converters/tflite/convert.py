"""ONNX model in, TFLite flatbuffer bytes out: the converter as a library call.

:func:`convert` is what the backend (and the benchmark) call; it holds no build-request or
file-system knowledge. Steps: make the ONNX graph static and folded (``_prep``), lower it to
channels-last TFLite ops (``_lower``), rewrite it for the precision (``_quant``), serialise
(``_writer``). Every model problem is raised before any bytes exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from converters.tflite._fuse import FUSIONS, fuse
from converters.tflite._ir import Graph
from converters.tflite._ir_fuse import IR_REWRITES, fold_layout_chains
from converters.tflite._ir_fuse import apply as apply_rewrites
from converters.tflite._lower import lower
from converters.tflite._prep import Prepared, prepare
from converters.tflite._quant import (
    FullIntSettings,
    Ranges,
    calibrate_ranges,
    to_dynamic_int8,
    to_fp16,
    to_full_int8,
)
from converters.tflite._writer import write_flatbuffer
from edgeops.errors import UsageError

__all__ = ["PRECISIONS", "ConversionResult", "Lowered", "base_details", "convert",
           "full_int8_result", "lower_prepared", "to_artifact_layout", "to_onnx_layout"]

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")


@dataclass
class ConversionResult:
    model: bytes
    graph: Graph
    io_layout: dict[str, dict[str, Any]]      # ONNX I/O name -> layout record
    input_names: list[str]                    # ONNX input names, graph order
    output_names: list[str]                   # ONNX output names, graph order
    details: dict[str, Any] = field(default_factory=dict)


def to_artifact_layout(x: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
    """An ONNX-layout array in the artifact's layout (``perm_from_onnx``)."""
    return np.ascontiguousarray(np.transpose(x, record["perm_from_onnx"]))


def to_onnx_layout(x: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
    perm = list(record["perm_from_onnx"])
    return np.ascontiguousarray(np.transpose(x, [perm.index(i) for i in range(len(perm))]))


@dataclass
class Lowered:
    """A float TFLite graph lowered from a prepared ONNX graph, before any precision rewrite."""

    graph: Graph
    io: dict[str, dict[str, Any]]
    onnx_inputs: list[str]
    onnx_outputs: list[str]
    fused: dict[str, int]
    quant_hints: dict[str, tuple[float, int]]

    def feeds(self, samples: Iterable[Mapping[str, np.ndarray]]) -> Iterator[list[np.ndarray]]:
        """ONNX-layout samples (batch of one) as the graph's float inputs, in its order."""
        for s in samples:
            yield [to_artifact_layout(np.asarray(s[name], np.float32), self.io[name])
                   for name in self.onnx_inputs]


def lower_prepared(prep: Prepared, *, keep_io_layout: bool = False,
                   rewrites: tuple[str, ...] | None = None) -> Lowered:
    """Fuse, lower and clean up a prepared ONNX graph (``prep`` is consumed)."""
    enabled = tuple(FUSIONS + IR_REWRITES) if rewrites is None else tuple(rewrites)
    nodes, fused = fuse(list(prep.graph.node), prep.consts, {o.name for o in prep.graph.output},
                        tuple(k for k in FUSIONS if k in enabled))
    del prep.graph.node[:]
    prep.graph.node.extend(nodes)
    graph, io = lower(prep, keep_io_layout=keep_io_layout)
    fused.update(apply_rewrites(graph, tuple(k for k in IR_REWRITES if k in enabled)))
    fused["layout_chains"] = fold_layout_chains(graph)
    graph.merge_reshapes()
    graph.fuse_activations()
    onnx_inputs = [vi.name for vi in prep.graph.input if vi.name in prep.input_shapes]
    onnx_outputs = [o.name for o in prep.graph.output]
    return Lowered(graph, io, onnx_inputs, onnx_outputs, fused, dict(prep.quant_hints))


def convert(model: onnx.ModelProto, *, precision: str = "fp32",
            input_shapes: Mapping[str, tuple[int, ...]] | None = None,
            keep_io_layout: bool = False, require_static: bool = False,
            calibration: Iterable[Mapping[str, np.ndarray]] | None = None,
            calibration_method: str = "minmax", per_channel: bool | str = True,
            io_int8: bool = True, target: str = "tflite",
            rewrites: tuple[str, ...] | None = None) -> ConversionResult:
    """Convert; ``calibration`` samples (ONNX layout, batch of one) are needed for ``int8``.

    ``rewrites``: the fusions to apply (names from ``FUSIONS`` and ``IR_REWRITES``); ``None``
    applies all of them. The backend passes the set measured faster on this machine."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown TFLite precision '{precision}'",
                         hint=f"use one of {', '.join(PRECISIONS)}")
    prep = prepare(model, input_shapes or {}, require_static=require_static, target=target)
    low = lower_prepared(prep, keep_io_layout=keep_io_layout, rewrites=rewrites)
    graph, io, onnx_inputs, onnx_outputs = low.graph, low.io, low.onnx_inputs, low.onnx_outputs
    details = base_details(low, precision)
    if precision == "fp16":
        to_fp16(graph)
        details["weights"] = "float16 + DEQUANTIZE"
    elif precision == "int8-dynamic":
        details["weights"] = to_dynamic_int8(graph)
    elif precision == "int8":
        if calibration is None:
            raise UsageError("full-integer int8 needs calibration samples")
        ranges = calibrate_ranges(graph, low.feeds(calibration), method=calibration_method)
        if not ranges:
            raise UsageError("no calibration samples were given")
        return full_int8_result(low, ranges, per_channel=per_channel, io_int8=io_int8,
                                method=calibration_method, details=details)
    details["ops"] = graph.op_counts()
    data = write_flatbuffer(graph, description=f"edgeops {precision}")
    return ConversionResult(data, graph, io, onnx_inputs, onnx_outputs, details)


def base_details(low: Lowered, precision: str) -> dict[str, Any]:
    return {"precision": precision, "transposes": low.graph.op_counts().get("TRANSPOSE", 0),
            "fused": {k: v for k, v in low.fused.items() if v}}


def full_int8_result(low: Lowered, ranges: Ranges, *, per_channel: bool | str, io_int8: bool,
                     method: str, details: dict[str, Any]) -> ConversionResult:
    """The full-integer rewrite of ``low.graph`` (in place) with ``ranges``, serialised."""
    graph = low.graph
    info = to_full_int8(graph, ranges, FullIntSettings(per_channel=per_channel, io_int8=io_int8,
                                                       hints=low.quant_hints))
    details = {**details, **info, "per_channel": per_channel,
               "calibration_method": ("percentile (entropy approximated)"
                                      if method == "entropy" else method),
               "qdq_hints_used": sum(1 for n in low.quant_hints if n in graph.tensors),
               "ops": graph.op_counts()}
    data = write_flatbuffer(graph, description="edgeops int8")
    return ConversionResult(data, graph, low.io, low.onnx_inputs, low.onnx_outputs, details)

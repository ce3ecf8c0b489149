"""Activation ranges for the full-integer TFLite graph that minimise quantisation error.

The engine's range pass (:mod:`converters.quant.mse_ranges`) works on ONNX tensors through ONNX
Runtime; a full-integer TFLite graph has its own tensors (fused activations, layout changes),
so its histograms come from the float TFLite graph run in LiteRT, one sample at a time (memory:
one sample's activations plus one histogram per tensor). The clipping search itself is the
engine's :func:`~converters.quant.mse_ranges.mse_clip`, unchanged: int8 activations have the
256 levels of the uint8 grid it was written for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from converters.quant.base import PassOutcome
from converters.quant.mse_ranges import MseRangesSettings, RangeHistograms
from converters.tflite._ir import Graph
from converters.tflite._quant import Ranges

__all__ = ["mse_ranges"]

NAME = "mse_ranges"


def mse_ranges(g: Graph, samples: Iterable[Sequence[np.ndarray]], minmax: Ranges,
               settings: MseRangesSettings | None = None) -> tuple[Ranges, PassOutcome]:
    """Per tensor of ``minmax``, the clipping range with the least expected quantise-dequantise
    MSE over a histogram of the calibration samples (``samples`` in the graph's input layout).

    Graph inputs keep their MinMax range: their quantisation is the artifact's I/O contract,
    and clipping an input changes what every layer sees.
    """
    from converters.tflite._runtime import LiteRT
    from converters.tflite._writer import write_flatbuffer

    s = settings or MseRangesSettings()
    names = sorted(t for t, (lo, hi) in minmax.items()
                   if t not in g.inputs and np.isfinite(lo) and np.isfinite(hi) and hi > lo)
    hists = RangeHistograms(names, minmax, s)
    rt = LiteRT(write_flatbuffer(g), preserve=True)
    for feed in samples:
        rt.run(feed)
        values = rt.tensor_values()
        for t in names:
            v = values.get(t)
            if v is not None and v.dtype == np.float32:
                hists.add(t, v)
    return hists.clipped(minmax, NAME, measured_in="LiteRT, float TFLite graph")

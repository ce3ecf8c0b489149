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
from converters.quant.mse_ranges import MseRangesSettings, mse_clip
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
    bounds = {t: (min(minmax[t][0], 0.0), max(minmax[t][1], 0.0)) for t in names}
    hists = {t: np.zeros(s.bins, np.int64) for t in names}
    rt = LiteRT(write_flatbuffer(g), preserve=True)
    for feed in samples:
        rt.run(feed)
        values = rt.tensor_values()
        for t in names:
            v = values.get(t)
            if v is None or v.dtype != np.float32:
                continue
            lo, hi = bounds[t]
            x = v.ravel()
            x = x[np.isfinite(x)]
            k = ((x - lo) * (s.bins / (hi - lo))).astype(np.int64)
            hists[t] += np.bincount(np.clip(k, 0, s.bins - 1), minlength=s.bins)
    out = dict(minmax)
    gains: list[float] = []
    clipped = 0
    for t in names:
        lo, hi = bounds[t]
        a, b, err, full = mse_clip(hists[t], lo, hi, s)
        if (a, b) != (lo, hi):
            out[t] = (a, b)
            clipped += 1
            if full > 0:
                gains.append(err / full)
    med = float(np.median(gains)) if gains else 1.0
    return out, PassOutcome(NAME, "applied",
                            f"{clipped} of {len(names)} activation ranges clipped; median "
                            f"quantisation MSE {med:.2f}x MinMax's on calibration data",
                            {"tensors": len(names), "clipped": clipped,
                             "median_mse_ratio_vs_minmax": round(med, 4), "bins": s.bins,
                             "measured_in": "LiteRT, float TFLite graph"})

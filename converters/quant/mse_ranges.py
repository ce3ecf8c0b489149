"""Activation ranges that minimise quantisation error, per tensor (MSE clipping).

MinMax puts the quantisation grid over every value calibration ever saw: one outlier in a
tensor of millions stretches the step for all the others. Here each activation tensor gets a
histogram (``bins`` bins between its calibrated min and max, built one sample at a time, so
memory is bounded by one sample's activations), and the clipping range [a, b] is searched on a
grid of bin edges to minimise the expected squared error of quantise-dequantise:

    E(a, b) = sum over bins below a of n (x - a)^2 + sum above b of n (x - b)^2
              + (values inside) * s^2 / 12,      s = (b - a) / (levels - 1)

(clipping error exactly per bin, rounding error as uniform noise). Prefix sums make every
candidate O(1), so the full 2-D grid for asymmetric uint8 is cheap. A bound that is 0 (a
ReLU's output) stays 0, and every range still contains 0, as ORT requires. The result is
written as ORT's calibration cache (TensorsData), which ``quantize_static`` reads, so the
Concat shared-range rule and the float tail apply to these ranges unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.quant.base import PassOutcome, setting

__all__ = ["MseRanges", "MseRangesSettings", "mse_clip", "quantisation_mse"]


@dataclass(frozen=True)
class MseRangesSettings:
    bins: int = setting(2048, "histogram bins per tensor between its calibrated min and max")
    grid: int = setting(128, "candidate clipping bounds tried per side (bin edges)")
    levels: int = setting(256, "quantisation levels of the activation type (256: uint8)")
    min_keep: float = setting(0.05, "a bound is never clipped below this fraction of itself")


def mse_clip(hist: np.ndarray, lo: float, hi: float, settings: MseRangesSettings
             ) -> tuple[float, float, float, float]:
    """``(a, b, mse(a, b), mse(lo, hi))`` for a histogram over [lo, hi] (lo <= 0 <= hi)."""
    h = np.asarray(hist, np.float64)
    edges = np.linspace(lo, hi, len(h) + 1)
    c = (edges[:-1] + edges[1:]) / 2
    total = h.sum()
    if total <= 0 or hi <= lo:
        return lo, hi, 0.0, 0.0
    # prefix sums over bins [0, i) and suffix sums over bins [j, n)
    p0 = np.concatenate([[0.0], np.cumsum(h)])
    p1 = np.concatenate([[0.0], np.cumsum(h * c)])
    p2 = np.concatenate([[0.0], np.cumsum(h * c * c)])
    n = len(h)
    zero = int(np.clip(np.searchsorted(edges, 0.0), 0, n))

    def idx(start: int, stop: int) -> np.ndarray:
        # candidate edge indices, never clipping past min_keep of the bound
        return np.unique(np.linspace(start, stop, settings.grid).round().astype(int))

    lo_keep = int(np.ceil(zero * (1 - settings.min_keep)))
    hi_keep = int(np.floor(zero + (n - zero) * settings.min_keep))
    i = idx(0, max(0, min(lo_keep, zero))) if lo < 0 else np.array([0])
    j = idx(min(n, max(hi_keep, zero)), n) if hi > 0 else np.array([n])
    a = edges[i][:, None]
    b = edges[j][None, :]
    below = (p2[i] - 2 * a[:, 0] * p1[i] + a[:, 0] ** 2 * p0[i])[:, None]
    s2, s1, s0 = p2[n] - p2[j], p1[n] - p1[j], p0[n] - p0[j]
    above = (s2 - 2 * b[0] * s1 + b[0] ** 2 * s0)[None, :]
    inside = total - p0[i][:, None] - s0[None, :]
    step = (b - a) / (settings.levels - 1)
    err = (below + above + inside * step**2 / 12) / total
    k = int(np.argmin(err))
    bi, bj = divmod(k, err.shape[1])
    full = float(err[0, -1]) if (i[0] == 0 and j[-1] == n) else float("nan")
    return float(a[bi, 0]), float(b[0, bj]), float(err[bi, bj]), full


def quantisation_mse(x: np.ndarray, lo: float, hi: float, levels: int = 256) -> float:
    """Measured MSE of asymmetric quantise-dequantise of ``x`` over [lo, hi] (ORT's rounding)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = (hi - lo) / (levels - 1)
    zp = np.round(-lo / s)
    q = np.clip(np.round(x / s) + zp, 0, levels - 1)
    return float(np.mean(((q - zp) * s - x) ** 2))


class MseRanges:
    """The range pass: histograms on calibration data, MSE-optimal clipping per tensor."""

    name = "mse_ranges"

    def __init__(self, settings: MseRangesSettings | None = None) -> None:
        self.settings = settings or MseRangesSettings()

    def applies(self, model: Any) -> str | None:
        return None

    def run(self, model: Any, ranges: dict[str, tuple[float, float]], samples: Any,
            ) -> tuple[dict[str, tuple[float, float]], PassOutcome]:
        """New ranges for the tensors of ``ranges`` (MinMax from calibration)."""
        from converters.quant._stats import stream_tensors

        s = self.settings
        produced = {o for n in model.graph.node for o in n.output}
        names = sorted(t for t, (lo, hi) in ranges.items()
                       if t in produced and np.isfinite(lo) and np.isfinite(hi) and hi > lo)
        hists = RangeHistograms(names, ranges, s)

        def add(arrays: dict[str, np.ndarray]) -> None:
            for t, v in arrays.items():
                hists.add(t, v)

        stream_tensors(model, names, samples.iter_samples(), add)
        return hists.clipped(ranges, self.name)


class RangeHistograms:
    """One histogram per tensor over its MinMax range (0 included), and the MSE clip of each.

    Shared by the ONNX range pass (tensors from ONNX Runtime) and the full-integer TFLite path
    (tensors from LiteRT): only where the values come from differs.
    """

    def __init__(self, names: list[str], ranges: dict[str, tuple[float, float]],
                 settings: MseRangesSettings) -> None:
        self.names, self.settings = names, settings
        self.bounds = {t: (min(ranges[t][0], 0.0), max(ranges[t][1], 0.0)) for t in names}
        self.hists = {t: np.zeros(settings.bins, np.int64) for t in names}

    def add(self, t: str, v: np.ndarray) -> None:
        lo, hi = self.bounds[t]
        bins = self.settings.bins
        x = np.asarray(v, np.float32).ravel()
        x = x[np.isfinite(x)]
        k = ((x - lo) * (bins / (hi - lo))).astype(np.int64)
        self.hists[t] += np.bincount(np.clip(k, 0, bins - 1), minlength=bins)

    def clipped(self, ranges: dict[str, tuple[float, float]], name: str,
                **data: Any) -> tuple[dict[str, tuple[float, float]], PassOutcome]:
        """``ranges`` with each histogrammed tensor's MSE-optimal clip, and the pass report."""
        s = self.settings
        out = dict(ranges)
        gains: list[float] = []
        clipped = 0
        for t in self.names:
            lo, hi = self.bounds[t]
            a, b, e, full = mse_clip(self.hists[t], lo, hi, s)
            if (a, b) != (lo, hi):
                out[t] = (a, b)
                clipped += 1
                if full > 0:
                    gains.append(e / full)
        med = float(np.median(gains)) if gains else 1.0
        return out, PassOutcome(name, "applied",
                                f"{clipped} of {len(self.names)} activation ranges clipped; "
                                f"median quantisation MSE {med:.2f}x MinMax's on calibration "
                                "data",
                                {"tensors": len(self.names), "clipped": clipped,
                                 "median_mse_ratio_vs_minmax": round(med, 4),
                                 "bins": s.bins, **data})


def write_cache(ranges: dict[str, tuple[float, float]], method: Any, path: Path) -> Path:
    """Save ranges as ORT's calibration cache (what ``quantize_static`` reads)."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    data = {t: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
            for t, (lo, hi) in sorted(ranges.items())}
    save_tensors_data(TensorsData(method, data), path)
    return path

"""Cosine and SNR per channel, the worst channel counting: the metric for outputs with no task.

A tensor that concatenates quantities of different scales (pixel coordinates beside
probabilities) hides the small ones from a cosine over the whole tensor; per channel, each
quantity is compared on its own scale. Arrays are stacked over samples (axis 0); ``axis`` is the
channel axis of one sample (0 = the model's axis 1).
"""

from __future__ import annotations

import math

import numpy as np

from converters.tasks.score import TaskScore

__all__ = ["channel_metrics", "channel_score"]

_ZERO = 1e-30       # a channel whose FP32 energy is below this is all zero


def _by_channel(a: np.ndarray, axis: int) -> np.ndarray:
    """``(channels, values)``: one row per channel of all samples and positions."""
    x = np.asarray(a, np.float64)
    if x.ndim <= 1:
        return x.reshape(1, -1)
    x = np.moveaxis(x, axis + 1, 0)
    return x.reshape(x.shape[0], -1)


def channel_metrics(ref: np.ndarray, got: np.ndarray, axis: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and SNR (dB) of each channel; non-finite candidate values count as cosine -1."""
    r, g = _by_channel(ref, axis), _by_channel(got, axis)
    if r.shape != g.shape:
        raise ValueError(f"shapes differ: {np.shape(ref)} vs {np.shape(got)}")
    bad = ~np.isfinite(g).all(axis=1)
    g = np.where(np.isfinite(g), g, 0.0)
    rn, gn = np.linalg.norm(r, axis=1), np.linalg.norm(g, axis=1)
    scale = max(float(np.abs(r).max()) if r.size else 0.0, 1e-30)
    noise = ((r - g) ** 2).sum(axis=1)
    signal = (r**2).sum(axis=1)
    zero_ref = signal <= _ZERO
    same = np.abs(r - g).max(axis=1, initial=0.0) <= 1e-6 * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(rn * gn > 0, (r * g).sum(axis=1) / np.where(rn * gn > 0, rn * gn, 1.0),
                       np.where(same, 1.0, 0.0))
        snr = np.where(noise > 0, 10 * np.log10(np.maximum(signal, 1e-30) / noise), np.inf)
    cos = np.where(zero_ref, np.where(same, 1.0, 0.0), cos)
    cos = np.where(bad, -1.0, cos)
    snr = np.where(bad, -np.inf, snr)
    return cos, snr


def channel_score(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                  axes: dict[str, int] | None = None) -> TaskScore:
    """Worst channel cosine over all float outputs (the gate's value) and the worst SNR."""
    axes = axes or {}
    worst: tuple[float, str, int] = (1.0, "", -1)
    worst_snr: tuple[float, str, int] = (math.inf, "", -1)
    per_output: dict[str, dict[str, float | int]] = {}
    for name, ref in reference.items():
        if not np.issubdtype(np.asarray(ref).dtype, np.floating):
            continue
        cos, snr = channel_metrics(ref, candidate[name], axes.get(name, 0))
        c, s = int(np.argmin(cos)), int(np.argmin(snr))
        per_output[name] = {"channels": len(cos), "cosine_min": float(cos[c]),
                            "cosine_min_channel": c, "snr_db_min": float(snr[s]),
                            "snr_db_min_channel": s, "axis": axes.get(name, 0) + 1}
        if cos[c] < worst[0] or not worst[1]:
            worst = (float(cos[c]), name, c)
        if snr[s] < worst_snr[0] or not worst_snr[1]:
            worst_snr = (float(snr[s]), name, s)
    return TaskScore("channel_cosine_min", worst[0], 1.0, {
        "worst_channel": {"output": worst[1], "channel": worst[2], "cosine": worst[0]},
        "worst_snr": {"output": worst_snr[1], "channel": worst_snr[2],
                      "snr_db": worst_snr[0] if math.isfinite(worst_snr[0]) else None},
        "outputs": per_output})

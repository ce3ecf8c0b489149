"""Model tensors to drift features: one scalar per sample per feature, the same code everywhere.

Why it exists: the build (reference counts) and the device (live counts) must turn a batch of
inputs or outputs into features identically, or the two histograms do not measure the same
thing. So the rule is chosen once at build time (:func:`choose_rule`), signed in the manifest,
and both sides call :func:`extract` with it. Every feature yields one value per *sample*, never
per pixel or element of one sample: the tests in edgeops/drift/stats.py assume independent
observations, and pixels of one image are not.

Pure numpy; cheap enough for the agent's sampled hot path (a few reductions per tensor).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgeops.drift.reference import (
    DEFAULT_BINS,
    DEFAULT_SAMPLE_EVERY,
    DEFAULT_WINDOW_INFERENCES,
    DEFAULT_WINDOW_S,
    MAX_BINS,
    MAX_FEATURES,
    DriftReference,
    FeatureBins,
    TensorRule,
    quantile_edges,
)

__all__ = ["MAX_TABULAR_COLUMNS", "build_reference", "choose_rule", "extract"]

MAX_TABULAR_COLUMNS = 64          # a wider table is watched per channel (pooled), not per column


def choose_rule(tensor: str, side: str, sample: np.ndarray) -> TensorRule | None:
    """The rule for a tensor given a batch of reference samples (``[batch, ...]``), or None
    when nothing numeric can be watched."""
    a = np.asarray(sample)
    if a.dtype.kind not in "fiub" or a.ndim < 1 or a.shape[0] == 0:
        return None
    if side == "output":
        if a.ndim == 2 and a.shape[1] > 1:
            return TensorRule(tensor, side, "classes")
        return TensorRule(tensor, side, "regression")
    if a.ndim == 4 and a.shape[1] in (1, 3):
        return TensorRule(tensor, side, "image_nchw", _colour_split(a, channel_axis=1))
    if a.ndim == 4 and a.shape[3] in (1, 3):
        return TensorRule(tensor, side, "image_nhwc", _colour_split(a, channel_axis=3))
    if a.ndim <= 2 and (a.ndim == 1 or a.shape[1] <= MAX_TABULAR_COLUMNS):
        return TensorRule(tensor, side, "tabular")
    return TensorRule(tensor, side, "pooled")


def _colour_split(a: np.ndarray, channel_axis: int) -> tuple[float, ...]:
    if a.shape[channel_axis] != 3:
        return ()
    x = np.moveaxis(a.astype(np.float64), channel_axis, -1).reshape(-1, 3)
    return tuple(float(f"{m:.6g}") for m in np.median(x, axis=0).tolist())


def extract(rule: TensorRule, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Feature name -> one float value per sample of ``batch`` (leading axis is the batch)."""
    a = np.asarray(batch)
    if a.dtype.kind not in "fiub" or a.ndim < 1 or a.shape[0] == 0:
        return {}
    x = a.astype(np.float64, copy=False)
    p = f"{rule.side}:{rule.tensor}"
    if rule.rule == "tabular":
        if x.ndim == 1:
            return {p: x}
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] == 1:
            return {p: x[:, 0]}
        return {f"{p}[{j}]": x[:, j] for j in range(min(x.shape[1], MAX_TABULAR_COLUMNS))}
    if rule.rule == "pooled":
        if x.ndim == 1:
            return {p: x}
        per = x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2)
        return {f"{p}[{c}]": per[:, c] for c in range(min(per.shape[1], MAX_TABULAR_COLUMNS))}
    if rule.rule in ("image_nchw", "image_nhwc"):
        return _image(p, x, rule)
    if rule.rule == "classes":
        scores = x.reshape(x.shape[0], -1)
        probs = _as_probabilities(scores)
        return {f"{p}/class": np.argmax(scores, axis=1).astype(np.float64),
                f"{p}/confidence": probs.max(axis=1)}
    # regression
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] == 1:
        return {p: flat[:, 0]}
    return {f"{p}[{j}]": flat[:, j] for j in range(min(flat.shape[1], MAX_TABULAR_COLUMNS))}


def _image(p: str, x: np.ndarray, rule: TensorRule) -> dict[str, np.ndarray]:
    if x.ndim != 4:
        return {}
    nchw = x if rule.rule == "image_nchw" else np.moveaxis(x, 3, 1)
    pix = nchw.reshape(nchw.shape[0], nchw.shape[1], -1)
    mean, std = pix.mean(axis=2), pix.std(axis=2)
    out: dict[str, np.ndarray] = {}
    for c in range(pix.shape[1]):
        out[f"{p}/brightness[{c}]"] = mean[:, c]
        out[f"{p}/contrast[{c}]"] = std[:, c]
    if rule.colour_split and pix.shape[1] == 3:
        split = np.asarray(rule.colour_split, dtype=np.float64)[None, :, None]
        cell = ((pix > split) * np.array([4, 2, 1])[None, :, None]).sum(axis=1)   # [N, HW]
        hist = np.stack([(cell == k).sum(axis=1) for k in range(8)], axis=1)
        out[f"{p}/colour"] = np.argmax(hist, axis=1).astype(np.float64)
    return out


def _as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Scores as given when they already look like probabilities, else a softmax."""
    if scores.size and scores.min() >= 0.0 and float(
            np.abs(scores.sum(axis=1) - 1.0).max()) <= 1e-3:
        return scores
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def _categorical(name: str) -> int | None:
    """Number of classes for categorical feature names; None for quantile features."""
    if name.endswith("/colour"):
        return 8
    return None


def build_reference(inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], *,
                    source: str = "validation", bins: int = DEFAULT_BINS,
                    window_s: float = DEFAULT_WINDOW_S,
                    window_inferences: int = DEFAULT_WINDOW_INFERENCES,
                    sample_every: int = DEFAULT_SAMPLE_EVERY) -> DriftReference | None:
    """Rules, quantile edges and reference counts from reference inputs and the model's outputs
    on them (same sample order). None when nothing can be watched."""
    rules: list[TensorRule] = []
    features: list[FeatureBins] = []
    samples = 0
    for side, tensors in (("input", inputs), ("output", outputs)):
        for tensor, arr in sorted(tensors.items()):
            rule = choose_rule(tensor, side, arr)
            if rule is None:
                continue
            rules.append(rule)
            samples = max(samples, int(np.asarray(arr).shape[0]))
            for fname, values in extract(rule, arr).items():
                if len(features) >= MAX_FEATURES:
                    break
                fb = _bins_for(fname, side, values, arr, rule, bins)
                if fb is not None:
                    features.append(fb)
    if not features:
        return None
    return DriftReference(rules=tuple(rules), features=tuple(features), samples=samples,
                          source=source, window_s=window_s, window_inferences=window_inferences,
                          sample_every=sample_every)


def _bins_for(fname: str, side: str, values: np.ndarray, arr: np.ndarray, rule: TensorRule,
              bins: int) -> FeatureBins | None:
    classes = _categorical(fname)
    if classes is None and rule.rule == "classes" and fname.endswith("/class"):
        classes = int(np.asarray(arr).reshape(np.asarray(arr).shape[0], -1).shape[1])
        if classes > MAX_BINS:
            return None         # too many classes to count per window: confidence still watched
    if classes is not None:
        empty = FeatureBins(fname, side, "categorical", (0,) * classes)
        return FeatureBins(fname, side, "categorical",
                           tuple(int(c) for c in empty.bin_counts(values).tolist()))
    edges = quantile_edges(values, bins)
    empty = FeatureBins(fname, side, "quantile", (0,) * (len(edges) + 1), edges)
    return FeatureBins(fname, side, "quantile", tuple(int(c) for c in empty.bin_counts(values)),
                       edges)


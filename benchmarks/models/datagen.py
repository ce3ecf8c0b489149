"""Deterministic, realistic-looking data for the benchmark models (numpy only, no torch).

Images are coloured geometric shapes on textured noise (ten classes: the shape decides the
class; colours, sizes and positions vary; the shape is always brighter than its background);
segmentation masks mark the shape's pixels by kind; time series are sums of drifting
sinusoids with noise. The same generator trains the models in
make_models.py and produces the calibration/validation sets, with different seeds, so
calibration data is in-distribution without being the training data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IMAGE_CLASSES", "images", "segmentation", "series"]

IMAGE_CLASSES = ("disc", "square", "ring", "h-stripes", "v-stripes", "cross", "diagonal",
                 "triangle", "dots", "checker")


def _shape_mask(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
    r = rng.uniform(size * 0.15, size * 0.3)
    dy, dx = yy - cy, xx - cx
    period = rng.uniform(4, 8)
    if kind == 0:
        m = dy**2 + dx**2 < r**2
    elif kind == 1:
        m = (np.abs(dy) < r) & (np.abs(dx) < r)
    elif kind == 2:
        d = np.sqrt(dy**2 + dx**2)
        m = (d < r) & (d > r * 0.6)
    elif kind == 3:
        m = ((yy // period) % 2 == 0) & (np.abs(dx) < r * 1.5) & (np.abs(dy) < r * 1.5)
    elif kind == 4:
        m = ((xx // period) % 2 == 0) & (np.abs(dx) < r * 1.5) & (np.abs(dy) < r * 1.5)
    elif kind == 5:
        m = ((np.abs(dy) < r * 0.25) | (np.abs(dx) < r * 0.25)) & (np.abs(dy) < r) & (np.abs(dx) < r)
    elif kind == 6:
        m = (np.abs(dy - dx) < r * 0.3) & (np.abs(dx) < r)
    elif kind == 7:
        m = (dy > -r) & (dy < r) & (np.abs(dx) < (dy + r) * 0.5)
    elif kind == 8:
        m = (((yy // period) % 2 == 0) & ((xx // period) % 2 == 0)) & (dy**2 + dx**2 < (1.5 * r)**2)
    else:
        m = (((yy // period) + (xx // period)) % 2 == 0) & (np.abs(dy) < r) & (np.abs(dx) < r)
    return m


def images(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x [n,3,size,size] float32 normalised, labels [n] int64)``."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 3, size, size), np.float32)
    labels = rng.integers(0, len(IMAGE_CLASSES), n)
    for i in range(n):
        # The shape must stay visible: the foreground is at least 0.3 brighter than the
        # background in every channel (independent colours made some shapes vanish into the
        # background, label noise no model can learn).
        base = rng.uniform(0.05, 0.45, 3)
        bg = base[:, None, None] + rng.normal(0, 0.08, (3, size, size))
        fg = (base + rng.uniform(0.3, 0.55, 3))[:, None, None]
        m = _shape_mask(int(labels[i]), size, rng)
        img = np.where(m[None], fg, bg) + rng.normal(0, 0.05, (3, size, size))
        x[i] = ((img - 0.45) / 0.25).astype(np.float32)
    return x, labels.astype(np.int64)


def segmentation(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x [n,3,size,size], mask [n,size,size] int64 in {0 background, 1 round, 2 angular})``."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 3, size, size), np.float32)
    y = np.zeros((n, size, size), np.int64)
    for i in range(n):
        img = rng.uniform(0.1, 0.5, 3)[:, None, None] + rng.normal(0, 0.08, (3, size, size))
        for _ in range(rng.integers(1, 4)):
            kind = int(rng.choice([0, 2, 1, 7, 5]))
            m = _shape_mask(kind, size, rng)
            img = np.where(m[None], rng.uniform(0.4, 1.0, 3)[:, None, None], img)
            y[i][m] = 1 if kind in (0, 2) else 2
        x[i] = ((img + rng.normal(0, 0.04, img.shape) - 0.45) / 0.25).astype(np.float32)
    return x, y


def series(n: int, steps: int = 48, horizon: int = 8, features: int = 4, seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray]:
    """``(x [n,steps,features], y [n,horizon])``: forecast feature 0's next ``horizon`` values."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps + horizon, dtype=np.float32)
    x = np.empty((n, steps, features), np.float32)
    y = np.empty((n, horizon), np.float32)
    for i in range(n):
        base = np.zeros((steps + horizon, features), np.float32)
        for f in range(features):
            for _ in range(2):
                base[:, f] += rng.uniform(0.3, 1.0) * np.sin(
                    2 * np.pi * t / rng.uniform(8, 30) + rng.uniform(0, 6.3))
            base[:, f] += rng.uniform(-0.02, 0.02) * t
        base[:, 0] += 0.5 * base[:, 1]                       # feature 0 depends on feature 1
        base += rng.normal(0, 0.05, base.shape).astype(np.float32)
        x[i], y[i] = base[:steps], base[steps:, 0]
    return x, y

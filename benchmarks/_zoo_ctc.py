"""Where a CTC recogniser's candidate reads a time step differently from FP32, and how sure
FP32 was there: the argmax-agreement figure split by cause.

Why: 8 samples of a 40-step recogniser are 320 steps, one flip 0.3 % of agreement; whether the
flips sit on the zero padding right of the text (no character to read, FP32 choosing between
near-equal blanks) or on the text itself, and whether FP32 was sure there (top-1 minus top-2
probability), says whether a lower agreement is the candidate's fault or a coin FP32 tossed.
Pure numpy, used by benchmarks/converter_zoo.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ctc_flips"]


def ctc_flips(reference: np.ndarray, candidate: np.ndarray, images: np.ndarray
              ) -> dict[str, Any]:
    """The steps whose argmax differs between ``reference`` and ``candidate`` scores
    (``(N, T, C)`` probabilities), each on padding or on text, with FP32's margin there.

    A step is padding when every input column it maps to is zero in ``images``
    (``(N, channels, H, W)``, ``W`` a multiple of ``T``): right-padded text lines put no
    character there."""
    r = np.asarray(reference, np.float64)
    g = np.asarray(candidate, np.float64)
    n, t = r.shape[:2]
    width = images.shape[-1]
    if r.shape != g.shape or images.shape[0] != n or width % t:
        raise ValueError(f"scores {r.shape} / {g.shape} do not match images {images.shape}: "
                         "N and T must agree, the width a multiple of T")
    cols = np.abs(np.asarray(images)).reshape(n, -1, width).max(axis=1)     # (N, W)
    pad = (cols.reshape(n, t, width // t) == 0).all(axis=2)                 # (N, T)
    top2 = np.sort(r, axis=-1)[..., -2:]
    margin = top2[..., 1] - top2[..., 0]
    ri, gi = r.argmax(-1), g.argmax(-1)
    flips = [{"sample": int(i), "step": int(s), "padding": bool(pad[i, s]),
              "fp32_margin": round(float(margin[i, s]), 4), "fp32_class": int(ri[i, s]),
              "class": int(gi[i, s])} for i, s in zip(*np.nonzero(ri != gi), strict=True)]
    margins = sorted(f["fp32_margin"] for f in flips)
    return {"steps": int(n * t), "padding_steps": int(pad.sum()), "flips": len(flips),
            "on_padding": sum(f["padding"] for f in flips),
            "on_text": sum(not f["padding"] for f in flips),
            "fp32_margin_median": float(np.median(margins)) if margins else None,
            "fp32_margin_max": margins[-1] if margins else None, "each": flips}

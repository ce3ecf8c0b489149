"""CTC recognisers judged by the text they read: greedy decode, character error rate vs FP32.

One sample: ``(T, C)`` scores per time step (or ``(C, T)`` with ``time_axis=1``). Greedy
decoding takes the argmax per step, merges repeats and drops the blank class.

Evidence: the characters FP32 reads. When it reads none, CER has no denominator: any candidate
that also reads nothing scores 1.0, one that reads a character 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from converters.tasks.score import Evidence, TaskScore

__all__ = ["ctc_score", "edit_distance", "greedy_decode"]


def greedy_decode(scores: np.ndarray, blank: int = 0) -> list[int]:
    """Class indices read from ``(T, C)`` scores: argmax, repeats merged, blanks dropped."""
    best = np.asarray(scores).argmax(axis=-1).reshape(-1)
    out: list[int] = []
    prev = -1
    for c in best.tolist():
        if c != prev and c != blank:
            out.append(int(c))
        prev = c
    return out


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def ctc_score(ref: np.ndarray, got: np.ndarray, blank: int = 0, time_axis: int = 0
              ) -> TaskScore:
    """``1 - CER`` of the candidate's greedy text vs FP32's (gated), and per-step agreement."""
    r = np.asarray(ref, np.float64)
    g = np.asarray(got, np.float64)
    g = np.where(np.isfinite(g), g, -np.inf)
    if r.ndim == 2:                               # one sample
        r, g = r[None], g[None]
    if time_axis == 1:
        r, g = np.swapaxes(r, 1, 2), np.swapaxes(g, 1, 2)
    steps = float((r.argmax(axis=-1) == g.argmax(axis=-1)).mean()) if r.size else 1.0
    edits = chars = 0
    for rs, gs in zip(r, g, strict=True):
        rt, gt = greedy_decode(rs, blank), greedy_decode(gs, blank)
        edits += edit_distance(rt, gt)
        chars += len(rt)
    cer = edits / chars if chars else float(edits > 0)
    return TaskScore("one_minus_cer", max(0.0, 1.0 - cer), 1.0,
                     {"cer": cer, "argmax_agreement": steps, "characters_reference": chars,
                      "blank": blank},
                     Evidence(chars, "the FP32 model reads no character in {samples} "
                                     f"(greedy decode, blank class {blank})"))

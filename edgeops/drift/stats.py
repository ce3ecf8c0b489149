"""Two-sample tests on binned counts, multiple-testing corrections and persistence.

Why it exists: a device sends only bin counts, so every test here compares two histograms over
the same bins, the reference's (from the bundle) and the live one (merged over devices). The
chi-square and G tests are tests of *homogeneity* (2 x k contingency table), which accounts for
the reference being a finite sample too. PSI, Jensen-Shannon distance and the KS statistic on
the binned CDF are effect sizes reported beside them; the verdict uses the p-value only.

Error rates: with ``alpha`` per window (family-wise across features, Bonferroni; or false
discovery rate, Benjamini-Hochberg, which also bounds the family-wise rate when nothing drifts)
and an alarm only after ``k`` consecutive drifting windows, the alarm rate per window on a
stable stream is at most about ``alpha ** k`` for independent windows
(:func:`false_alarm_rate`); tests/test_drift_stats.py measures it by simulation.

Pure numpy and ``math``; no scipy needed at run time (the tests check against scipy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FeatureTest",
    "benjamini_hochberg",
    "bonferroni",
    "chi2_sf",
    "compare",
    "false_alarm_rate",
    "js_distance",
    "ks_binned",
    "merge_sparse_bins",
    "persistent",
    "psi",
]

MIN_EXPECTED = 5.0         # per cell, the usual condition for the chi-square approximation
_EPS = 1e-4                # floor for proportions in PSI (empty bins)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square(df): the regularised upper incomplete gamma Q(df/2, x/2)."""
    if df <= 0:
        return 1.0
    if x <= 0:
        return 1.0
    a, z = df / 2.0, x / 2.0
    if z < a + 1.0:                                   # series for P, then Q = 1 - P
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        p = total * math.exp(-z + a * math.log(z) - math.lgamma(a))
        return max(0.0, min(1.0, 1.0 - p))
    # continued fraction for Q (Lentz)
    tiny = 1e-300
    b = z + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return max(0.0, min(1.0, math.exp(-z + a * math.log(z) - math.lgamma(a)) * h))


def merge_sparse_bins(ref: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge neighbouring bins until every cell of the 2 x k table expects >= MIN_EXPECTED.

    Bins empty on both sides are dropped first. Merging neighbours keeps the bins' order
    (needed for quantile features) and only costs power, never validity.
    """
    r = np.asarray(ref, dtype=np.float64)
    v = np.asarray(live, dtype=np.float64)
    keep = (r + v) > 0
    r, v = r[keep], v[keep]
    n_r, n_v = r.sum(), v.sum()
    if n_r <= 0 or n_v <= 0:
        return r, v
    share = min(n_r, n_v) / (n_r + n_v)         # expected count of a cell = pooled * share
    out_r: list[float] = []
    out_v: list[float] = []
    acc_r = acc_v = 0.0
    for a, b in zip(r.tolist(), v.tolist(), strict=True):
        acc_r += a
        acc_v += b
        if (acc_r + acc_v) * share >= MIN_EXPECTED:
            out_r.append(acc_r)
            out_v.append(acc_v)
            acc_r = acc_v = 0.0
    if acc_r + acc_v > 0:
        if out_r:
            out_r[-1] += acc_r
            out_v[-1] += acc_v
        else:
            out_r.append(acc_r)
            out_v.append(acc_v)
    return np.asarray(out_r), np.asarray(out_v)


def _expected(r: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_r, n_v = r.sum(), v.sum()
    pooled = (r + v) / (n_r + n_v)
    return pooled * n_r, pooled * n_v


def chi_square(ref: np.ndarray, live: np.ndarray) -> tuple[float, int, float]:
    """Pearson's chi-square test of homogeneity: (statistic, degrees of freedom, p-value)."""
    r, v = merge_sparse_bins(ref, live)
    if len(r) < 2 or r.sum() == 0 or v.sum() == 0:
        return 0.0, 0, 1.0
    e_r, e_v = _expected(r, v)
    stat = float((((r - e_r) ** 2) / e_r).sum() + (((v - e_v) ** 2) / e_v).sum())
    df = len(r) - 1
    return stat, df, chi2_sf(stat, df)


def g_test(ref: np.ndarray, live: np.ndarray) -> tuple[float, int, float]:
    """The likelihood-ratio (G) test of homogeneity: (statistic, degrees of freedom, p-value)."""
    r, v = merge_sparse_bins(ref, live)
    if len(r) < 2 or r.sum() == 0 or v.sum() == 0:
        return 0.0, 0, 1.0
    e_r, e_v = _expected(r, v)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = 2.0 * float(np.nansum(np.where(r > 0, r * np.log(r / e_r), 0.0)) +
                        np.nansum(np.where(v > 0, v * np.log(v / e_v), 0.0)))
    df = len(r) - 1
    return g, df, chi2_sf(g, df)


def psi(ref: np.ndarray, live: np.ndarray) -> float:
    """Population stability index, proportions floored at 1e-4 (empty bins)."""
    p = _proportions(ref)
    q = _proportions(live)
    return float(((q - p) * np.log(q / p)).sum())


def _proportions(c: np.ndarray) -> np.ndarray:
    a = np.asarray(c, dtype=np.float64)
    total = a.sum()
    p = a / total if total > 0 else np.full_like(a, 1.0 / max(1, a.size))
    p = np.maximum(p, _EPS)
    out: np.ndarray = p / p.sum()
    return out


def js_distance(ref: np.ndarray, live: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]): the square root of the divergence."""
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(live, dtype=np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        return 0.0
    p, q = a / a.sum(), b / b.sum()
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    return float(math.sqrt(max(0.0, (kl_p + kl_q) / 2.0)))


def ks_binned(ref: np.ndarray, live: np.ndarray) -> float:
    """Largest gap between the two empirical CDFs at the bin edges (ordered bins only)."""
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(live, dtype=np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        return 0.0
    return float(np.abs(np.cumsum(a) / a.sum() - np.cumsum(b) / b.sum()).max())


def bonferroni(pvalues: Sequence[float]) -> list[float]:
    """Adjusted p-values: p * m, capped at 1 (family-wise error rate)."""
    m = len(pvalues)
    return [min(1.0, p * m) for p in pvalues]


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Adjusted p-values (q-values) controlling the false discovery rate."""
    m = len(pvalues)
    if m == 0:
        return []
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, pvalues[i] * m / rank)
        out[i] = min(1.0, running)
    return out


@dataclass(frozen=True)
class FeatureTest:
    """One feature's comparison of live counts against the reference."""

    feature: str
    side: str
    n_live: int
    n_reference: int
    test: str                  # "chi2" or "g"
    statistic: float
    df: int
    p_value: float
    psi: float
    js: float
    ks: float | None           # None for categorical features (no order)

    def to_dict(self) -> dict[str, object]:
        return {"feature": self.feature, "side": self.side, "n_live": self.n_live,
                "n_reference": self.n_reference, "test": self.test,
                "statistic": round(self.statistic, 6), "df": self.df,
                "p_value": self.p_value, "psi": round(self.psi, 6), "js": round(self.js, 6),
                "ks": None if self.ks is None else round(self.ks, 6)}


def compare(feature: str, side: str, ref: Sequence[int], live: Sequence[int], *,
            ordered: bool = True, test: str = "chi2") -> FeatureTest:
    """Every statistic for one feature. ``test`` picks the p-value: "chi2" or "g"."""
    r = np.asarray(ref, dtype=np.float64)
    v = np.asarray(live, dtype=np.float64)
    if r.shape != v.shape:
        raise ValueError(f"{feature}: {v.size} live bins against {r.size} reference bins")
    if test not in ("chi2", "g"):
        raise ValueError(f"unknown test {test!r} (chi2 or g)")
    stat, df, p = (chi_square if test == "chi2" else g_test)(r, v)
    return FeatureTest(feature=feature, side=side, n_live=round(float(v.sum())),
                       n_reference=int(r.sum()),
                       test=test, statistic=stat, df=df, p_value=p, psi=psi(r, v),
                       js=js_distance(r, v), ks=ks_binned(r, v) if ordered else None)


def persistent(flags: Sequence[bool], k: int) -> bool:
    """True when the last ``k`` windows (oldest first) all drifted."""
    return k >= 1 and len(flags) >= k and all(flags[-k:])


def false_alarm_rate(alpha: float, k: int) -> float:
    """Upper bound on alarms per window on a stable stream: a run of ``k`` drifting windows
    starts with probability at most ``alpha ** k`` (for k > 1: independent windows; for k = 1
    the test's own level, whatever the windows' dependence)."""
    return float(alpha ** max(1, k))

"""The verdicts of the on-device checks, as pure functions over numbers and arrays.

The pytest modules only measure (load, run, time, sample memory); whether a figure is good
enough is decided here, so the rules can be tested without a model, a runtime or a device, and
every verdict carries the figures and the words the report shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from edgeops.compare import compare_outputs

__all__ = [
    "DEFAULT_TOLERANCE",
    "LATENCY_KEYS",
    "MEMORY_KEYS",
    "Tolerance",
    "Verdict",
    "golden_verdict",
    "latency_verdict",
    "memory_verdict",
    "percentiles_ms",
    "resolve_figure",
    "stability_verdict",
]

# Names the build pipeline may use for the figures (flattened with "."); the first found wins.
LATENCY_KEYS: Mapping[str, tuple[str, ...]] = {
    "p50_ms": ("latency_ms_p50", "latency_p50_ms", "p50_ms", "latency.p50_ms", "latency_ms.p50"),
    "p95_ms": ("latency_ms_p95", "latency_p95_ms", "p95_ms", "latency.p95_ms", "latency_ms.p95"),
    "budget_ms": ("latency_budget_ms", "budget_ms", "latency.budget_ms", "latency_ms.budget"),
}
MEMORY_KEYS: tuple[str, ...] = ("peak_memory_mib", "peak_rss_mib", "memory_mib",
                                "peak_memory_mb", "peak_rss_mb", "memory_mb", "memory.peak_mib")
THREAD_KEYS: tuple[str, ...] = ("threads", "latency_threads", "latency.threads")


@dataclass(frozen=True)
class Verdict:
    """A check's outcome: ``ok``, or ``applicable=False`` when the manifest gives nothing to
    compare with (reported as such, never as a pass)."""

    ok: bool
    message: str
    figures: dict[str, Any] = field(default_factory=dict)
    applicable: bool = True


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def resolve_figure(metrics: Mapping[str, Any], aliases: Iterable[str]) -> float | None:
    """The first numeric value among ``aliases`` in (possibly nested) ``metrics``."""
    flat = _flatten(metrics)
    for key in aliases:
        v = flat.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v):
            return float(v)
    return None


# -- golden outputs ------------------------------------------------------------------------

@dataclass(frozen=True)
class Tolerance:
    """How close on-device outputs must be to the golden outputs the build machine recorded."""

    atol: float
    rtol: float
    min_cosine: float | None = None
    min_top1_agreement: float | None = None
    stated: bool = True                    # False: the manifest gave none, defaults used
    ignored: tuple[str, ...] = ()          # keys in the manifest this suite does not understand

    _KNOWN: ClassVar[dict[str, str]] = {"atol": "atol", "rtol": "rtol", "max_abs_error": "atol",
                                         "cosine": "min_cosine", "min_cosine": "min_cosine",
                                         "top1_agreement": "min_top1_agreement",
                                         "min_top1_agreement": "min_top1_agreement"}

    @classmethod
    def from_manifest(cls, tolerance: Mapping[str, float]) -> Tolerance:
        """Read the artifact's ``tolerance``; empty means :data:`DEFAULT_TOLERANCE`, stated."""
        known = {cls._KNOWN[k]: float(v) for k, v in tolerance.items() if k in cls._KNOWN}
        ignored = tuple(sorted(k for k in tolerance if k not in cls._KNOWN))
        if not known:
            return Tolerance(DEFAULT_TOLERANCE.atol, DEFAULT_TOLERANCE.rtol, stated=False,
                             ignored=ignored)
        return Tolerance(atol=known.get("atol", 0.0), rtol=known.get("rtol", 0.0),
                         min_cosine=known.get("min_cosine"),
                         min_top1_agreement=known.get("min_top1_agreement"), ignored=ignored)

    def describe(self) -> str:
        parts = [f"atol={self.atol:g}", f"rtol={self.rtol:g}"]
        if self.min_cosine is not None:
            parts.append(f"cosine>={self.min_cosine:g}")
        if self.min_top1_agreement is not None:
            parts.append(f"top1>={self.min_top1_agreement:g}")
        src = "manifest" if self.stated else "default: manifest has no tolerance"
        return f"{', '.join(parts)} ({src})"


DEFAULT_TOLERANCE = Tolerance(atol=1e-5, rtol=1e-4, stated=False)


def golden_verdict(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray],
                   tol: Tolerance) -> Verdict:
    """Every golden output must be reproduced within ``tol`` (shape and dtype kind too)."""
    problems: list[str] = []
    figures: dict[str, Any] = {"tolerance": tol.describe()}
    if tol.ignored:
        figures["tolerance_ignored_keys"] = list(tol.ignored)
    if not expected:
        return Verdict(False, "golden file holds no outputs", figures)
    for name, ref in sorted(expected.items()):
        if name not in got:
            problems.append(f"output '{name}' was not produced")
            continue
        out = np.asarray(got[name])
        if out.shape != ref.shape:
            problems.append(f"output '{name}' has shape {list(out.shape)}, golden "
                            f"{list(ref.shape)}")
            continue
        if ref.size == 0:
            continue
        m = compare_outputs({name: ref}, {name: out})[0]
        ref64, out64 = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        close = bool(np.all(np.isfinite(out64)) and np.allclose(out64, ref64, atol=tol.atol,
                                                                rtol=tol.rtol))
        excess = float(np.max(np.abs(out64 - ref64) - (tol.atol + tol.rtol * np.abs(ref64))))
        figures[name] = {"max_abs_error": m.max_abs_error, "cosine": m.cosine,
                         "snr_db": m.snr_db, "top1_agreement": m.top1_agreement}
        if not close:
            problems.append(f"output '{name}' differs from golden: max |error| "
                            f"{m.max_abs_error:.3g} ({excess:.3g} over atol+rtol·|golden|)")
        if tol.min_cosine is not None and m.cosine < tol.min_cosine:
            problems.append(f"output '{name}' cosine {m.cosine:.6f} < {tol.min_cosine:g}")
        if (tol.min_top1_agreement is not None and m.top1_agreement is not None
                and m.top1_agreement < tol.min_top1_agreement):
            problems.append(f"output '{name}' top-1 agreement {m.top1_agreement:.3f} < "
                            f"{tol.min_top1_agreement:g}")
    if problems:
        return Verdict(False, "; ".join(problems) + f" [tolerance {tol.describe()}]", figures)
    return Verdict(True, f"{len(expected)} output(s) within {tol.describe()}", figures)


# -- latency and memory --------------------------------------------------------------------

def percentiles_ms(samples_s: Sequence[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds of durations given in seconds."""
    if not samples_s:
        raise ValueError("no latency samples")
    arr = np.asarray(samples_s, np.float64) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def latency_verdict(p50_ms: float, p95_ms: float, metrics: Mapping[str, Any],
                    margin_ratio: float, slack_ms: float = 0.0) -> Verdict:
    """Measured p50/p95 against the manifest's p50/p95, and p95 against its budget, each
    allowed ``figure × margin_ratio + slack_ms`` (the device is not the build machine that
    wrote the figures, and sub-millisecond figures are within scheduler jitter)."""
    ref = {k: resolve_figure(metrics, keys) for k, keys in LATENCY_KEYS.items()}
    figures: dict[str, Any] = {"p50_ms": round(p50_ms, 4), "p95_ms": round(p95_ms, 4),
                               "margin_ratio": margin_ratio, "slack_ms": slack_ms,
                               **{f"manifest_{k}": v for k, v in ref.items() if v is not None}}
    margin = f"× {margin_ratio:g}" + (f" + {slack_ms:g} ms" if slack_ms else "")
    if all(v is None for v in ref.values()):
        return Verdict(True, f"no budget in manifest (measured p50 {p50_ms:.3f} ms, "
                             f"p95 {p95_ms:.3f} ms)", figures, applicable=False)
    problems: list[str] = []
    for key, measured in (("p50_ms", p50_ms), ("p95_ms", p95_ms)):
        limit = ref[key]
        if limit is not None and measured > limit * margin_ratio + slack_ms:
            problems.append(f"{key[:3]} {measured:.3f} ms > manifest {limit:.3f} ms {margin}")
    budget = ref["budget_ms"]
    if budget is not None and p95_ms > budget * margin_ratio + slack_ms:
        problems.append(f"p95 {p95_ms:.3f} ms > budget {budget:.3f} ms {margin}")
    if problems:
        return Verdict(False, "latency over the manifest's figures: " + "; ".join(problems),
                       figures)
    return Verdict(True, f"p50 {p50_ms:.3f} ms, p95 {p95_ms:.3f} ms within the manifest's "
                         f"figures {margin}", figures)


def memory_verdict(growth_mib: float, metrics: Mapping[str, Any], margin_ratio: float) -> Verdict:
    """RSS growth from loading and running the model against the manifest's memory figure."""
    ref: float | None = None
    for key in MEMORY_KEYS:
        value = resolve_figure(metrics, (key,))
        if value is not None:
            ref = value * 1e6 / 2**20 if key.endswith("_mb") else value   # MB → MiB
            break
    figures: dict[str, Any] = {"rss_growth_mib": round(growth_mib, 3),
                               "margin_ratio": margin_ratio}
    if ref is None:
        return Verdict(True, f"no memory figure in manifest (measured RSS growth "
                             f"{growth_mib:.1f} MiB)", figures, applicable=False)
    figures["manifest_mib"] = round(ref, 3)
    if growth_mib > ref * margin_ratio:
        return Verdict(False, f"peak memory {growth_mib:.1f} MiB > manifest {ref:.1f} MiB × "
                              f"{margin_ratio:g}", figures)
    return Verdict(True, f"peak memory {growth_mib:.1f} MiB within manifest {ref:.1f} MiB × "
                         f"{margin_ratio:g}", figures)


def stability_verdict(max_drift_abs: float, rss_growth_mib: float, runs: int,
                      max_drift_allowed: float, max_growth_mib: float) -> Verdict:
    """Repeated runs of one input: outputs must not drift, memory must not keep growing."""
    figures: dict[str, Any] = {"runs": runs, "max_output_drift_abs": max_drift_abs,
                               "rss_growth_mib": round(rss_growth_mib, 3),
                               "max_rss_growth_mib": max_growth_mib}
    problems = []
    if not np.isfinite(max_drift_abs) or max_drift_abs > max_drift_allowed:
        problems.append(f"outputs drifted by {max_drift_abs:.3g} over {runs} runs "
                        f"(allowed {max_drift_allowed:g})")
    if rss_growth_mib > max_growth_mib:
        problems.append(f"RSS grew {rss_growth_mib:.1f} MiB over {runs} runs "
                        f"(allowed {max_growth_mib:g} MiB)")
    if problems:
        return Verdict(False, "; ".join(problems), figures)
    return Verdict(True, f"{runs} runs: no output drift, RSS growth {rss_growth_mib:.1f} MiB",
                   figures)

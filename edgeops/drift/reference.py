"""The drift reference a bundle carries: which features to watch, their bins and reference counts.

Why it exists: the fleet cannot ship raw inputs home, so the build fixes the bins once (from the
validation or a ``--reference`` data set), signs them in the manifest, and every device counts
its live traffic into exactly those bins. Comparing two histograms over the same bins is then a
proper two-sample test (edgeops/drift/stats.py), whatever the feature's distribution.

A *tensor rule* says how one model input or output becomes features (the same pure code runs at
build time and on the device, :mod:`edgeops.drift.features`); a *feature* is one binned scalar
per sample: quantile bins (``edges``, ``len(edges) + 1`` bins, ``value <= edges[0]`` is bin 0)
or categorical (``bins`` classes, the value is the class index).

I/O-free: built from arrays, validated on construction, round-trips ``to_dict``/``from_dict``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeops.errors import InvalidBundleError

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_SAMPLE_EVERY",
    "DEFAULT_WINDOW_INFERENCES",
    "DEFAULT_WINDOW_S",
    "MAX_BINS",
    "MAX_FEATURES",
    "RULES",
    "DriftReference",
    "FeatureBins",
    "TensorRule",
    "quantile_edges",
]

DEFAULT_BINS = 20
MAX_BINS = 64                     # per feature: bounds what a device may send
MAX_FEATURES = 256                # per bundle: bounds the telemetry record
DEFAULT_WINDOW_S = 900.0          # 15 minutes
DEFAULT_WINDOW_INFERENCES = 10_000   # ... or this many inferences, whichever comes first
DEFAULT_SAMPLE_EVERY = 4          # count one inference request in N (hot path stays cheap)

# tabular: [batch, F] -> one feature per column; pooled: any other rank, all elements of the
# sample per channel (axis 1) -> mean per channel; image_nchw/image_nhwc: per channel brightness
# (mean) and contrast (std) per image, plus the dominant cell of a 2x2x2 colour cube (3 channels);
# classes: argmax class and max probability (confidence); regression: value per output element.
RULES = ("tabular", "pooled", "image_nchw", "image_nhwc", "classes", "regression")
SIDES = ("input", "output")
_FEATURE = re.compile(r"^[A-Za-z0-9_.:/\[\]-]{1,128}$")


def quantile_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> tuple[float, ...]:
    """Interior quantile edges (at most ``bins - 1``), duplicates merged, 6 significant digits.

    Rounding keeps builds byte-identical; merged duplicates keep discrete features (counts,
    flags) from producing empty bins.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0 or bins < 2:
        return ()
    qs = np.quantile(v, np.arange(1, bins) / bins, method="inverted_cdf")   # observed values
    out: list[float] = []
    for q in qs.tolist():
        r = float(f"{q:.6g}")
        if not out or r > out[-1]:
            out.append(r)
    return tuple(out)


@dataclass(frozen=True)
class TensorRule:
    """How one model tensor is turned into features (see ``RULES``)."""

    tensor: str
    side: str
    rule: str
    colour_split: tuple[float, ...] = ()    # per-channel pixel medians (3-channel images)

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise InvalidBundleError(f"drift rule for {self.tensor!r}: side {self.side!r} "
                                     f"is not one of {', '.join(SIDES)}")
        if self.rule not in RULES:
            raise InvalidBundleError(f"drift rule for {self.tensor!r}: {self.rule!r} is not "
                                     f"one of {', '.join(RULES)}")
        if self.colour_split and (len(self.colour_split) != 3 or
                                  not all(math.isfinite(c) for c in self.colour_split)):
            raise InvalidBundleError(f"drift rule for {self.tensor!r}: colour_split needs 3 "
                                     "finite numbers")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tensor": self.tensor, "side": self.side, "rule": self.rule}
        if self.colour_split:
            d["colour_split"] = list(self.colour_split)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorRule:
        return cls(tensor=str(d["tensor"]), side=str(d["side"]), rule=str(d["rule"]),
                   colour_split=tuple(float(c) for c in d.get("colour_split", ())))


@dataclass(frozen=True)
class FeatureBins:
    """One watched feature: its bins and how many reference samples fell in each."""

    name: str                   # "input:x[3]", "output:probs/confidence", ...
    side: str                   # "input" (data drift) or "output" (prediction drift)
    kind: str                   # "quantile" or "categorical"
    counts: tuple[int, ...]
    edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not _FEATURE.match(self.name):
            raise InvalidBundleError(f"drift feature name {self.name!r} is invalid")
        if self.side not in SIDES:
            raise InvalidBundleError(f"drift feature {self.name}: side {self.side!r} is invalid")
        if self.kind not in ("quantile", "categorical"):
            raise InvalidBundleError(f"drift feature {self.name}: kind {self.kind!r} is invalid")
        if not 1 <= len(self.counts) <= MAX_BINS:
            raise InvalidBundleError(f"drift feature {self.name}: {len(self.counts)} bins "
                                     f"(1..{MAX_BINS} allowed)")
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in self.counts):
            raise InvalidBundleError(f"drift feature {self.name}: counts must be integers >= 0")
        if self.kind == "quantile":
            if len(self.edges) != len(self.counts) - 1:
                raise InvalidBundleError(f"drift feature {self.name}: {len(self.edges)} edges "
                                         f"for {len(self.counts)} bins (need bins - 1)")
            if not all(math.isfinite(e) for e in self.edges) or any(
                    b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise InvalidBundleError(f"drift feature {self.name}: edges must be finite "
                                         "and strictly increasing")
        elif self.edges:
            raise InvalidBundleError(f"drift feature {self.name}: categorical has no edges")

    @property
    def bins(self) -> int:
        return len(self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Counts of ``values`` in this feature's bins (non-finite values are skipped)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if self.kind == "quantile":
            idx = np.searchsorted(np.asarray(self.edges, dtype=np.float64), v, side="left")
        else:
            idx = v.astype(np.int64)
            idx = idx[(idx >= 0) & (idx < self.bins)]
        return np.bincount(idx, minlength=self.bins)[: self.bins]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "side": self.side, "kind": self.kind,
                             "counts": list(self.counts)}
        if self.kind == "quantile":
            d["edges"] = list(self.edges)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureBins:
        counts = d.get("counts")
        if not isinstance(counts, list):
            raise InvalidBundleError(f"drift feature {d.get('name')!r}: counts is not a list")
        return cls(name=str(d.get("name")), side=str(d.get("side")), kind=str(d.get("kind")),
                   counts=tuple(counts), edges=tuple(float(e) for e in d.get("edges", ())))


@dataclass(frozen=True)
class DriftReference:
    """The signed drift baseline: tensor rules, watched features and the device's window."""

    rules: tuple[TensorRule, ...]
    features: tuple[FeatureBins, ...]
    samples: int                                  # reference samples the counts came from
    source: str = "validation"                    # "validation", "calibration", "reference"
    window_s: float = DEFAULT_WINDOW_S
    window_inferences: int = DEFAULT_WINDOW_INFERENCES
    sample_every: int = DEFAULT_SAMPLE_EVERY
    _index: dict[str, FeatureBins] = field(default_factory=dict, init=False, repr=False,
                                           compare=False)

    def __post_init__(self) -> None:
        if len(self.features) > MAX_FEATURES:
            raise InvalidBundleError(f"drift reference watches {len(self.features)} features "
                                     f"(at most {MAX_FEATURES})")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise InvalidBundleError("drift reference lists one feature twice")
        if not (self.window_s > 0 and self.window_inferences >= 1 and self.sample_every >= 1):
            raise InvalidBundleError("drift reference window must be positive")
        self._index.update({f.name: f for f in self.features})

    def feature(self, name: str) -> FeatureBins | None:
        return self._index.get(name)

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "source": self.source, "window_s": self.window_s,
                "window_inferences": self.window_inferences, "sample_every": self.sample_every,
                "rules": [r.to_dict() for r in self.rules],
                "features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftReference:
        try:
            return cls(rules=tuple(TensorRule.from_dict(r) for r in d["rules"]),
                       features=tuple(FeatureBins.from_dict(f) for f in d["features"]),
                       samples=int(d["samples"]), source=str(d.get("source", "validation")),
                       window_s=float(d.get("window_s", DEFAULT_WINDOW_S)),
                       window_inferences=int(d.get("window_inferences",
                                                   DEFAULT_WINDOW_INFERENCES)),
                       sample_every=int(d.get("sample_every", DEFAULT_SAMPLE_EVERY)))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidBundleError(f"manifest drift reference is malformed: {exc!r}") from None


"""Mixed precision by measurement: which layers leave INT8, chosen as a knapsack (pure).

The accuracy-aware step used to float the top 1, 2, 4, 8... nodes of an activation-error
ranking, re-quantising the whole model each time, and refused naming tensors. This module holds
the decision instead, from two measured tables (converters/onnx_mixed measures them):

* per layer, the **task-metric drop recovered** when that layer alone leaves INT8 (its Q/DQ
  bypassed in the fully quantised graph, converters/qdq_bypass), for the top few layers of the
  activation-error ranking;
* per layer, the **time saved** by keeping it INT8 on the build machine (its float kernel time
  minus its INT8 kernel time, converters/layer_speed).

Keeping layer ``i`` INT8 is worth ``saving_ms[i]`` and costs ``recovered[i]`` of the accuracy
budget; the budget left is what remains after the drop that lifting every candidate would
still leave (the additive estimate: lifting a set leaves the base drop minus what its layers
recover). :func:`select` solves that 0/1 knapsack exactly (branch
and bound on the value/weight order; the candidate count is bounded by a setting), so the set
that leaves INT8 is the cheapest in time that the estimate says meets the budget, not the
first prefix of a ranking that does. When no set meets it, :func:`refusal` is the one line
that names the layers that limit the build and the budget it would need.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["LayerCost", "MixedPrecisionSettings", "PrefixTry", "Selection", "may_replace",
           "metric_step", "prefix_search", "refusal", "select", "too_many_lifted"]

_EPS = 1e-12


@dataclass(frozen=True)
class MixedPrecisionSettings:
    """Bounds of the measurement (counts, not seconds: builds must be reproducible)."""

    max_measured_layers: int = 16
    """Layers, from the top of the activation-error ranking, whose task-metric drop is
    measured one by one (one validation run each)."""
    sensitivity_samples: int = 8
    """Validation samples the activation-error ranking runs (it only orders candidates)."""
    profile_runs: int = 20
    """Profiled inferences per model (FP32 and INT8) for the per-layer speed model."""
    max_high_fraction: float = 0.5
    """Beyond this share of the quantised layers out of INT8, INT8 is not worth shipping."""
    prefix_bisections: int = 3
    """Last resort: once a prefix of the ranking's tensors meets the budget, how many more
    quantisations may bisect towards a shorter one (fewer layers in float, a faster model)."""
    prefix_hopeless_ratio: float = 5.0
    """Last resort, early stop: after ``prefix_min_tries`` doubling tries, stop doubling when
    the best verified drop is still over this many times the budget and even gaining what the
    last doubling gained at every doubling left would not reach the budget."""
    prefix_min_tries: int = 3
    """Doubling tries made before the early stop may apply."""
    max_prefixes: int | None = None
    """Last resort, a try budget: at most this many doubling prefixes quantised and verified
    before refusing (the refusal says the budget it would need was not searched for); None:
    doubling goes on to half the layers. Bounds the time a build that will be refused takes."""

    def __post_init__(self) -> None:
        if self.max_measured_layers < 1:
            raise ValueError("mixed precision measures at least 1 layer")
        if self.max_prefixes is not None and self.max_prefixes < 1:
            raise ValueError("mixed precision's try budget is at least 1 prefix")


@dataclass(frozen=True)
class LayerCost:
    """One candidate layer's measured row: what lifting it recovers and what INT8 saves."""

    node: str
    recovered: float      # relative metric drop recovered when this layer alone leaves INT8
    saving_ms: float      # time saved by keeping it INT8 (float - INT8 kernel time), per run

    def __post_init__(self) -> None:
        if not self.node:
            raise ValueError("a layer cost needs the node's name")


@dataclass(frozen=True)
class Selection:
    """What :func:`select` decided, with the additive estimate it decided from."""

    high: tuple[str, ...]         # leave INT8 (float, or uint16 where the target runs it)
    kept: tuple[str, ...]         # stay INT8
    estimated_drop: float         # base drop minus what the lifted layers recover
    best_drop: float              # the estimate with every useful candidate lifted
    saved_ms: float               # time the kept layers save over float
    lost_ms: float                # time the lifted layers cost over INT8
    feasible: bool


def select(layers: Sequence[LayerCost], base_drop: float, budget: float) -> Selection:
    """The layers to lift out of INT8 so the estimated drop meets ``budget``, losing least time.

    A layer whose lifting recovers nothing (or makes it worse) stays INT8 for free; one that is
    no faster in INT8 is lifted for free when it helps. The rest is an exact 0/1 knapsack: keep
    INT8 the set of largest total saving whose recoveries fit in the budget left once every
    useful layer is lifted. Infeasible (even lifting them all leaves the drop over budget):
    every useful layer is lifted and ``feasible`` is False. Ties go to the earlier layer in
    ``layers`` order, so the same table gives the same answer.
    """
    names = [c.node for c in layers]
    if len(set(names)) != len(names):
        raise ValueError("each layer may appear once in the table")
    useful = [c for c in layers if c.recovered > 0]
    # Lifting set H leaves base - sum(H) (additive); it must be <= budget, so what the kept
    # layers may recover together is at most sum(useful) - (base - budget). Measured
    # recoveries can add up to more than the drop (they overlap): no clamping before this.
    total = sum(c.recovered for c in useful)
    items = [c for c in useful if c.saving_ms > 0]
    capacity = budget - (base_drop - total)
    if capacity < -_EPS:
        keep: set[str] = set()
        feasible = False
    else:
        keep = _knapsack(items, capacity)
        feasible = True
    high = tuple(c.node for c in layers if c.recovered > 0 and c.node not in keep)
    kept = tuple(c.node for c in layers if c.node not in high)
    est = max(0.0, base_drop - sum(c.recovered for c in useful if c.node in high))
    best_drop = max(0.0, base_drop - total)
    return Selection(high=high, kept=kept, estimated_drop=est, best_drop=best_drop,
                     saved_ms=sum(c.saving_ms for c in layers if c.node in kept),
                     lost_ms=sum(c.saving_ms for c in layers if c.node in high),
                     feasible=feasible)


def _knapsack(items: Sequence[LayerCost], capacity: float) -> set[str]:
    """Exact 0/1 knapsack (value ``saving_ms``, weight ``recovered``), branch and bound."""
    order = sorted(range(len(items)),
                   key=lambda i: (-items[i].saving_ms / items[i].recovered, i))
    best_value = -1.0
    best: tuple[int, ...] = ()

    def bound(k: int, value: float, room: float) -> float:
        for i in order[k:]:
            c = items[i]
            if c.recovered <= room:
                room -= c.recovered
                value += c.saving_ms
            else:
                return value + c.saving_ms * room / c.recovered
        return value

    def dfs(k: int, value: float, room: float, chosen: tuple[int, ...]) -> None:
        nonlocal best_value, best
        if value > best_value + _EPS:
            best_value, best = value, chosen
        if k == len(order) or bound(k, value, room) <= best_value + _EPS:
            return
        c = items[order[k]]
        if c.recovered <= room + _EPS:
            dfs(k + 1, value + c.saving_ms, room - c.recovered, (*chosen, order[k]))
        dfs(k + 1, value, room, chosen)

    dfs(0, 0.0, capacity, ())
    return {items[i].node for i in best}


@dataclass(frozen=True)
class PrefixTry:
    """One verified prefix: the first ``groups`` tensors, ``lifted`` layers, the drop."""

    groups: int
    lifted: int
    drop: float


def prefix_search(sizes: Sequence[int], budget: float, limit: int,
                  drop_of: Callable[[int], float], *, already: int = 0,
                  bisections: int = 3, replaces: Callable[[int, int], bool] | None = None,
                  hopeless_ratio: float = 0.0, min_tries: int = 3,
                  max_tries: int | None = None) -> tuple[int | None, list[PrefixTry], str]:
    """The shortest prefix of ranked tensor groups found to meet ``budget``, every try, and
    why the doubling stopped early ("" when it did not).

    ``sizes[g - 1]`` is how many layers lifting the first ``g`` groups takes (non-decreasing);
    ``drop_of(g)`` verifies that prefix (one real quantisation). Doubling from one group,
    prefixes that lift no more than ``already`` layers skipped (verified before) and none over
    ``limit`` tried (the last step is cut to the longest one within it); then at most
    ``bisections`` tries between the last failing and the first passing prefix. Cost: at most
    ``log2(len(sizes)) + 2 + bisections`` quantisations. Drops need not fall monotonically as
    the prefix grows, so the result is a prefix *verified* to pass, not the shortest one.

    ``replaces(mid, hi)``: whether a shorter passing prefix ``mid`` may replace the passing
    ``hi`` (default: always); one that may not (e.g. it passes only in a slower form) counts as
    failing for the bisection, which goes on between it and ``hi``.

    Early stop (``hopeless_ratio`` > 0): after ``min_tries`` doubling tries, when the best drop
    is still over ``hopeless_ratio`` times the budget and the remaining doublings, each gaining
    what the last one did, would not reach the budget, the doubling stops: no prefix passes.
    ``max_tries``: the doubling stops after that many failing tries, saying so.
    """
    import math

    tries: list[PrefixTry] = []

    def attempt(g: int) -> bool:
        drop = drop_of(g)
        tries.append(PrefixTry(g, sizes[g - 1], drop))
        return drop <= budget

    allowed = sum(1 for s in sizes if s <= limit)      # sizes grow: a prefix of the groups
    lo, hi, g = 0, None, 1
    stopped = ""
    while g <= allowed:
        if sizes[g - 1] > already:
            if attempt(g):
                hi = g
                break
            lo = g
            stopped = _hopeless(tries, budget, hopeless_ratio, min_tries,
                                math.ceil(math.log2(allowed / g)) if g < allowed else 0)
            if stopped:
                break
            if max_tries is not None and len(tries) >= max_tries and g < allowed:
                stopped = (f"stopped doubling after {len(tries)} prefix(es) (up to "
                           f"{tries[-1].lifted} layers): the try budget "
                           f"(--mixed-precision-prefixes {max_tries})")
                break
        if g == allowed:
            break
        g = min(2 * g, allowed)
    if hi is None:
        return None, tries, stopped
    for _ in range(bisections):
        mid = (lo + hi) // 2
        if mid <= lo or sizes[mid - 1] <= already or sizes[mid - 1] == sizes[hi - 1]:
            break
        if attempt(mid) and (replaces is None or replaces(mid, hi)):
            hi = mid
        else:
            lo = mid
    return hi, tries, ""


def may_replace(shorter: str | None, longer: str | None) -> bool:
    """Whether a shorter passing set, lifted as ``shorter``, may replace a longer passing one
    lifted as ``longer`` ("exclusion" or "bypass"; None where the lift has one form).

    Not when only the bypass passes the shorter and the longer passes excluded: the bypass
    costs the lifted layers' producers their fused INT8 kernels (ocr-det-640, x86-cpu, 10 %
    budget: 61 layers excluded 1.66x FP32, the 54 passing only bypassed 1.30x).
    """
    return not (shorter == "bypass" and longer == "exclusion")


def _hopeless(tries: Sequence[PrefixTry], budget: float, ratio: float, min_tries: int,
              left: int) -> str:
    """Why doubling further is hopeless ("" when it is not), from the tries so far."""
    if ratio <= 0 or len(tries) < max(2, min_tries) or left <= 0:
        return ""
    best = min(t.drop for t in tries)
    before = min(t.drop for t in tries[:-1])
    gain = max(0.0, before - best)
    if best <= ratio * budget or best - left * gain <= budget:
        return ""
    return (f"stopped doubling after {len(tries)} prefixes (up to {tries[-1].lifted} layers): "
            f"the best drop {best:.2%} is over {ratio:g}x the budget and the last doubling "
            f"gained {gain:.2%}, too little for the {left} doubling(s) left to reach it")


def metric_step(drops: Sequence[float], rel_tol: float = 1e-6) -> float:
    """The step a discrete metric moved in: the smallest gap between distinct measured drops
    (FP32's own, 0, included) when every drop is a whole multiple of it; 0.0 when they are not
    (a continuous metric) or when fewer than two distinct drops above 0 were measured.

    One character of 55 read by FP32 is 1.82 % of ``1 - CER``; one sample of 8, 12.5 % of
    top-1: a budget under that step passes only a build that loses nothing at all.
    """
    levels = sorted({round(max(0.0, d), 12) for d in (0.0, *drops)})
    if len(levels) < 3:         # 0 and one drop: any number is a multiple of itself
        return 0.0
    gaps = [b - a for a, b in itertools.pairwise(levels)]
    q = min(gaps)
    if all(abs(d / q - round(d / q)) <= rel_tol * max(1.0, d / q) for d in levels):
        return q
    return 0.0


def refusal(target: str, metric: str, drop: float, budget: float, limiting: Sequence[LayerCost],
            needed: float, measured: int, note: str = "", *, lifted: int = 0,
            stopped: str = "", widest: int = 0, step: float = 0.0) -> str:
    """One line: what dropped, which layers limit it, and the budget the build would need.

    ``needed`` is the smallest drop reached with ``lifted`` layers out of INT8 (measured);
    ``stopped`` says why the search stopped early, when it did: then ``needed`` bounds
    nothing (a longer prefix might pass a smaller budget) and the line says so. ``widest``:
    the most layers any verified try lifted (said when more than ``lifted``: lifting more
    did not lower the drop). ``step``: the step the metric moved in (:func:`metric_step`),
    said when it is over the budget: the budget then asks for no loss at all.
    """
    top = sorted((c for c in limiting if c.recovered > 0),
                 key=lambda c: (-c.recovered, c.node))[:6]
    names = ", ".join(f"{c.node} (recovers {c.recovered:.2%})" for c in top) or "none found"
    wider = (f" (no lower with up to {widest} layers out of INT8, the most tried)"
             if widest > lifted else "")
    coarse = (f"; every drop measured is a multiple of {step:.2%} (the metric's step on this "
              f"validation data), over the {budget:.2%} budget: only a build that loses "
              f"nothing passes it" if step > budget else "")
    return (f"target {target}: {metric} dropped {drop:.2%} vs FP32{note} (budget "
            f"{budget:.2%}); limited by {names}; with {lifted} layer(s) out of INT8 ({measured} "
            f"measured one by one) it still drops {needed:.2%}{wider}{coarse}" + (
                f"; {stopped}, so the budget it would need was not searched for: raise "
                f"--max-accuracy-drop well above {budget:.2%} or use --precision fp32"
                if stopped else
                f": a budget of at least {_ceil_pct(needed)} would be needed"))


def too_many_lifted(target: str, metric: str, drop: float, budget: float, lifted: Sequence[str],
                    quantised: int, fraction: float) -> str:
    """One line: the budget is met only with too many layers out of INT8 to be worth it."""
    names = ", ".join(sorted(lifted)[:6]) + (", ..." if len(lifted) > 6 else "")
    return (f"target {target}: {metric} meets the {budget:.2%} budget ({drop:.2%}) only with "
            f"{len(lifted)} of {quantised} quantised layers out of INT8 ({names}), more than "
            f"{fraction:.0%}: INT8 is not worth shipping; use --precision fp32 or raise "
            f"--max-accuracy-drop")


def _ceil_pct(x: float) -> str:
    """``x`` as a percentage rounded up to 0.01 %, so the named budget really passes."""
    import math

    return f"{math.ceil(x * 10000 - 1e-9) / 100:.2f}%"

"""Performance-aware quantisation: keep in float what INT8 makes slower, measured here.

Quantising every node is not always faster: Q/DQ pairs around cheap element-wise ops, small or
depthwise convolutions and layout ops can cost more than the INT8 kernels save, and which ones
do depends on the CPU (and on the model: a tiny model may be faster entirely in float). The
decision (:func:`decide`, pure: timing is injected) has two steps:

1. **Per group.** Node groups (one op type of cheap ops; small convs; depthwise convs; then the
   remaining convs and each other op type) are tried in float one at a time, greedy and
   cumulative; a group stays float when that made the model faster by more than ``MIN_GAIN``.
2. **Against FP32.** The result is timed against the FP32 source. INT8 ships only when it is
   measurably faster: by more than the noise margin ``MIN_GAIN`` (within it, INT8 gains
   nothing that can be told from noise and costs accuracy; measured on a 0.3 ms GRU encoder,
   step 2 once accepted a 1.03x that the benchmark's 900-run rounds put at 0.98x). Otherwise
   the groups still quantised go float one at a time, the one whose float version gained most
   in step 1 first, re-timed against FP32 after each, until it is; every group in float is the
   FP32 graph. Step 1 alone cannot see this: a model whose every group costs a little (each
   gain inside the noise margin) can still be slower than FP32 in sum, and a model with one
   group has nothing to compare it with. When every group ends float, the float graph (with
   the exact CPU rewrites) is timed against the source once: unless it is faster by more than
   the margin, the source model itself ships (``ships``: ``fp32 source``).

Every comparison is paired (:class:`OrtTimer`): both models loaded, timed in interleaved rounds
(order alternating), the per-round median ratio taken and its median used, so load from other
processes hits both alike. A result within ``MIN_GAIN`` of a threshold is measured once more and
the rounds pooled. Cost, for ``G`` groups: at most ``2 G`` comparisons (``G`` in step 1, one
against FP32, at most ``G - 1`` fallback steps, the last of which, all float, is timed once
as the float graph against the source), each confirmed at most
once, and at most ``2 G`` candidates quantised; a comparison is ``ROUNDS`` rounds of about
``ROUND_BUDGET_S`` per model (``MIN_RUNS`` to ``MAX_RUNS`` inferences), so about 0.4 s for a
model under 0.4 ms and ``2 * ROUNDS * MIN_RUNS`` inferences for a large one. The wall time
taken is recorded with the decision.

Timing varies run to run, and builds must be reproducible, so decisions are cached per machine
under ``$EDGEOPS_HOME/cache/perf`` keyed by model digest, target, precision, ORT version, CPU
model, threads and the structure of the quantised graph that was timed (its nodes and their
connections, not the weights: another bit split, which adds 7-bit clamps, or another effort's
graph passes time differently and are measured anew): the first build measures, later
identical builds reuse the decision.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from converters.api import BackendContext
from edgeops.config import edgeops_home
from edgeops.fsutil import atomic_write

__all__ = ["CHEAP_OPS", "MIN_GAIN", "Decision", "OrtTimer", "Timer", "Timing",
           "all_float_verdict", "decide", "node_groups", "runs_per_round", "slower_groups"]

MIN_GAIN = 0.05               # a group stays float only if that is >5% faster (noise margin)
SHIP_AT = 1 + MIN_GAIN        # INT8 ships only when measured faster than FP32 by more than that
ROUNDS = 9                    # interleaved rounds per comparison
ROUND_BUDGET_S = 0.02         # time per model per round (runs = budget / latency, clamped)
MIN_RUNS, MAX_RUNS = 2, 50    # inferences per model per round
WARMUP = 3
SMALL_CONV_WEIGHTS = 4096     # weight elements below which a conv counts as small
CACHE_VERSION = 6             # bump when the decision's meaning changes: old caches are ignored
# 4: "float" groups measured float (converters/ort_float), not ORT's per-tensor INT8 on load
# 5: INT8 ships only >5% faster than FP32; keyed by the timed graph's structure
# 6: the all-float graph is timed against the source ("ships")
CHEAP_OPS = ("Add", "Mul", "Sub", "Div", "Concat", "Resize", "MaxPool", "AveragePool",
             "GlobalAveragePool", "Sigmoid", "Softmax", "Transpose", "Reshape", "Flatten",
             "Squeeze", "Unsqueeze", "Split", "Slice", "Pad", "LeakyRelu", "Clip", "Relu",
             "Gather", "ReduceMean", "HardSigmoid", "HardSwish", "Tanh", "Where", "Expand")


def runs_per_round(latency_s: float, budget_s: float, min_runs: int, max_runs: int) -> int:
    """Pure: inferences per model per round so that a round fills about ``budget_s`` at this
    latency (a sub-millisecond model needs hundreds for a stable median), clamped."""
    return max(min_runs, min(max_runs, int(budget_s / max(latency_s, 1e-6))))


def node_groups(model: Any, quantised: set[str]) -> dict[str, list[str]]:
    """Pure: candidate groups of quantised nodes, by kind, in a stable order."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.name not in quantised:
            continue
        if n.op_type in CHEAP_OPS:
            groups.setdefault(f"op:{n.op_type}", []).append(n.name)
        elif n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1 and n.input[1] in inits:
            w = numpy_helper.to_array(inits[n.input[1]])
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            if group > 1 and group == w.shape[0]:
                groups.setdefault("depthwise-conv", []).append(n.name)
            elif w.size < SMALL_CONV_WEIGHTS:
                groups.setdefault("small-conv", []).append(n.name)
            else:
                groups.setdefault("conv", []).append(n.name)
        else:
            groups.setdefault(f"op:{n.op_type}", []).append(n.name)
    # Cheap and small groups first; the heavy ones last, tried against what is left.
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] in _HEAVY, kv[0])))


_HEAVY = ("conv", "op:MatMul", "op:Gemm", "op:ConvTranspose", "op:GRU", "op:LSTM")


@dataclass(frozen=True)
class Timing:
    """One paired comparison of a candidate with a reference, timed in interleaved rounds.

    ``ratios`` holds, per round, the reference's median over the candidate's median: above 1
    the candidate is faster. ``speedup`` is their median.
    """

    candidate_ms: float
    reference_ms: float
    ratios: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.ratios or not all(math.isfinite(r) and r > 0 for r in self.ratios):
            raise ValueError(f"a timing needs positive finite per-round ratios, got {self.ratios}")

    @property
    def speedup(self) -> float:
        return float(statistics.median(self.ratios))

    def pooled(self, other: Timing) -> Timing:
        """Both measurements as one (medians of the two, all rounds)."""
        return Timing((self.candidate_ms + other.candidate_ms) / 2,
                      (self.reference_ms + other.reference_ms) / 2, self.ratios + other.ratios)

    def describe(self, candidate: str, reference: str) -> str:
        return (f"{candidate} {self.candidate_ms:.3f} ms vs {reference} "
                f"{self.reference_ms:.3f} ms, medians of {len(self.ratios)} interleaved rounds")


class Timer(Protocol):
    """Times a candidate (these nodes float, the rest quantised) against a reference.

    ``reference`` is another float set, or ``None`` for the FP32 source model.
    """

    def compare(self, floated: frozenset[str], reference: frozenset[str] | None) -> Timing: ...


@dataclass
class Decision:
    """What the pass decided and the measurements it decided from."""

    float_nodes: dict[str, str]
    vs_fp32: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)
    comparisons: int = 0


def _measure(timer: Timer, floated: frozenset[str], reference: frozenset[str] | None,
             threshold: float) -> tuple[Timing, int]:
    """A comparison, confirmed (rounds pooled) when it lands within MIN_GAIN of threshold."""
    t = timer.compare(floated, reference)
    if abs(t.speedup - threshold) < MIN_GAIN:
        return t.pooled(timer.compare(floated, reference)), 2
    return t, 1


def decide(groups: dict[str, list[str]], timer: Timer) -> Decision:
    """Pure: nodes to keep float (node -> reason), from the timings ``timer`` measures."""
    kept: dict[str, str] = {}
    trials: list[dict[str, Any]] = []
    gains: dict[str, float] = {}
    n = 0
    # 1. Per group, greedy: float a group when that alone is faster by more than MIN_GAIN.
    for gname, nodes in groups.items():
        nodes = [x for x in nodes if x not in kept]
        if not nodes:
            continue
        cur = frozenset(kept)
        t, k = _measure(timer, cur | set(nodes), cur, 1 + MIN_GAIN)
        n += k
        gains[gname] = t.speedup
        trials.append({"step": "group", "group": gname, "nodes": len(nodes),
                       "float_ms": t.candidate_ms, "quantised_ms": t.reference_ms,
                       "speedup": t.speedup, "rounds": len(t.ratios)})
        if t.speedup > 1 + MIN_GAIN:
            for x in nodes:
                kept[x] = (f"performance: {gname} measured {t.speedup:.2f}x faster in float "
                           f"on this machine ({t.describe('float', 'quantised')})")
    # 2. Against FP32: INT8 ships only when faster beyond the noise; else float more, best
    # gain first.
    def floated_all() -> bool:
        return all(x in kept for g in groups.values() for x in g)

    if floated_all():                   # the FP32 graph: nothing left to compare
        every, k = _float_graph(timer, kept, trials)
        return Decision(kept, {"outcome": "all float: every group measured faster in float",
                               "first_speedup": None, "final_speedup": None, **every},
                        trials, n + k)
    first, k = _measure(timer, frozenset(kept), None, SHIP_AT)
    n += k
    trials.append({"step": "vs-fp32", "floated": len(kept), "int8_ms": first.candidate_ms,
                   "fp32_ms": first.reference_ms, "speedup": first.speedup,
                   "rounds": len(first.ratios)})
    left = [g for g in groups if any(x not in kept for x in groups[g])]
    left.sort(key=lambda g: -gains.get(g, 0.0))           # stable: ties keep group order
    step = 0
    final: float | None = first.speedup
    while final is not None and final <= SHIP_AT and left:
        step += 1
        gname = left.pop(0)
        for x in groups[gname]:
            kept.setdefault(x, f"performance: the INT8 model measured {first.speedup:.2f}x FP32 "
                               f"({first.describe('int8', 'fp32')}), not faster by more than "
                               f"the {MIN_GAIN:.0%} noise margin, so quantised groups go "
                               f"float, most gain first; {gname} is step {step} "
                               f"({gains.get(gname, 0.0):.2f}x faster in float alone)")
        if not left:                    # every node float: the FP32 graph, nothing to time
            final = None
            trials.append({"step": "fallback", "group": gname, "floated": len(kept)})
            break
        t, k = _measure(timer, frozenset(kept), None, SHIP_AT)
        n += k
        final = t.speedup
        trials.append({"step": "fallback", "group": gname, "floated": len(kept),
                       "int8_ms": t.candidate_ms, "fp32_ms": t.reference_ms,
                       "speedup": t.speedup, "rounds": len(t.ratios)})
    outcome = ("all float: int8 not faster than fp32 beyond the noise margin" if floated_all()
               else "int8 at least as fast as fp32" if step == 0
               else f"partly float: at least as fast as fp32 after {step} fallback step(s)")
    graph: dict[str, Any] = {}
    if floated_all():
        graph, k = _float_graph(timer, kept, trials)
        n += k
    return Decision(kept, {"outcome": outcome, "first_speedup": round(first.speedup, 3),
                           "final_speedup": None if final is None else round(final, 3),
                           "int8_ms": round(first.candidate_ms, 4),
                           "fp32_ms": round(first.reference_ms, 4), **graph}, trials, n)


def _float_graph(timer: Timer, kept: dict[str, str], trials: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], int]:
    """Every node float: is the rewritten float graph (folds, fused hard-swish, ...) faster
    than the source? If not by more than the noise margin, the source itself ships: the user's
    own model, exact, and "never slower than FP32" by construction."""
    t, k = _measure(timer, frozenset(kept), None, SHIP_AT)
    trials.append({"step": "float-graph", "float_ms": t.candidate_ms, "fp32_ms": t.reference_ms,
                   "speedup": t.speedup, "rounds": len(t.ratios)})
    return {"float_graph_speedup": round(t.speedup, 3),
            "ships": "float graph" if t.speedup > SHIP_AT else "fp32 source"}, k


def all_float_verdict(summary: dict[str, Any]) -> str | None:
    """Pure: the plain-words line for a build this pass left entirely in float (None when
    anything stays quantised). "N node(s) float" does not tell a user that the artifact is the
    FP32 graph (with the exact graph rewrites) because INT8 did not pay off on this CPU."""
    outcome = str(summary.get("outcome", ""))
    if not outcome.startswith("all float"):
        return None
    first = summary.get("first_speedup")
    why = ("every quantised node group measured faster in float" if first is None
           else f"INT8 measured {first:.2f}x FP32's speed, and not more than {MIN_GAIN:.0%} "
                "faster with any part of it quantised")
    graph = summary.get("float_graph_speedup")
    what = ("the FP32 graph; every node is float" if graph is None
            else "the FP32 source model as it is (the rewritten float graph measured "
                 f"{graph:.2f}x it)" if summary.get("ships") == "fp32 source"
            else f"the FP32 graph with its exact CPU rewrites ({graph:.2f}x the source's "
                 "speed); every node is float")
    return f"INT8 is not faster than FP32 on this CPU for this model ({why}): shipped {what}"


class OrtTimer:
    """Paired interleaved timing of quantised candidates in ONNX Runtime on this machine.

    ``make(floated)`` writes the candidate with those nodes float and returns its path; its
    bytes are read at once (the next call may overwrite the file). The FP32 reference is
    ``fp32``. A few sessions are kept, so the current best is not re-quantised every time.
    """

    def __init__(self, make: Callable[[set[str]], Path], fp32: Path, feed: dict[str, Any],
                 threads: int) -> None:
        self._make, self._fp32, self._feed, self._threads = make, fp32, feed, threads
        self._sessions: dict[frozenset[str] | None, Any] = {}

    def _session(self, floated: frozenset[str] | None) -> Any:
        from converters.ort_session import open_session

        if floated not in self._sessions:
            if len(self._sessions) >= 4:
                self._sessions.pop(next(k for k in self._sessions if k is not None))
            src: Path | bytes = self._fp32 if floated is None \
                else self._make(set(floated)).read_bytes()
            self._sessions[floated] = open_session(src, ("CPUExecutionProvider",), self._threads,
                                                   timing=True)
        return self._sessions[floated]

    def compare(self, floated: frozenset[str], reference: frozenset[str] | None) -> Timing:
        a, b = self._session(floated), self._session(reference)
        probe = []
        for s in (a, b):
            for _ in range(WARMUP):
                t0 = time.perf_counter()
                s.run(None, self._feed)
                probe.append(time.perf_counter() - t0)
        runs = runs_per_round(min(probe), ROUND_BUDGET_S, MIN_RUNS, MAX_RUNS)
        ta: list[float] = []
        tb: list[float] = []
        ratios = []
        for r in range(ROUNDS):
            per: dict[int, list[float]] = {0: [], 1: []}
            for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                s = a if which == 0 else b
                for _ in range(runs):
                    t0 = time.perf_counter()
                    s.run(None, self._feed)
                    per[which].append((time.perf_counter() - t0) * 1000.0)
            ratios.append(statistics.median(per[1]) / statistics.median(per[0]))
            ta += per[0]
            tb += per[1]
        return Timing(statistics.median(ta), statistics.median(tb), tuple(ratios))


def _structure(model: Any) -> str:
    """Digest of a graph's structure: each node's op, attributes and connections, and which
    tensors are constants; no weight values (bias correction or AdaRound do not change
    speed, a 7-bit clamp or another pass's extra node does)."""
    h = hashlib.sha256()
    for n in model.graph.node:
        h.update(f"{n.op_type}|{','.join(n.input)}|{','.join(n.output)}|".encode())
        for a in n.attribute:
            h.update(a.SerializeToString())
    for i in model.graph.initializer:
        h.update(f"{i.name}:{i.data_type}:{list(i.dims)};".encode())
    return h.hexdigest()


def _cache_path(ctx: BackendContext, facts: dict[str, Any], groups: dict[str, list[str]],
                graph: str) -> Path:
    import onnxruntime

    from converters._machine import cpu_name

    key = json.dumps({"v": CACHE_VERSION, "source": ctx.data.source.sha256,
                      "target": ctx.profile.name, "precision": ctx.precision,
                      "ort": onnxruntime.__version__, "cpu": cpu_name(),
                      "facts": facts, "threads": ctx.request.threads, "groups": groups,
                      "graph": graph},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return edgeops_home() / "cache" / "perf" / f"{digest}.json"


def slower_groups(ctx: BackendContext, prepared: Path, make: Callable[[set[str]], Path],
                  quantised: set[str], facts: dict[str, Any], candidate: Path | None = None
                  ) -> tuple[dict[str, str], dict[str, Any]]:
    """Nodes to keep in float because quantising them was measured slower (node -> reason),
    and a summary for the manifest (INT8 vs FP32 as measured, comparisons, seconds).
    ``candidate``: the quantised model as it stands (its structure keys the cache)."""
    import onnx

    groups = node_groups(onnx.load(str(prepared)), quantised)
    if not groups:
        return {}, {"outcome": "nothing quantised"}
    graph = _structure(onnx.load(str(candidate), load_external_data=False)) \
        if candidate is not None else ""
    cache = _cache_path(ctx, facts, groups, graph)
    if ctx.request.options.get("perf_cache", True) and cache.is_file():
        try:
            doc = json.loads(cache.read_text())
            return dict(doc["float_nodes"]), dict(doc["summary"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    t0 = time.perf_counter()
    timer = OrtTimer(make, ctx.data.model_path, ctx.data.validation.sample(0),
                     ctx.request.threads)
    d = decide(groups, timer)
    summary = {**d.vs_fp32, "groups": len(groups), "comparisons": d.comparisons,
               "measured_s": round(time.perf_counter() - t0, 3)}
    atomic_write(cache, json.dumps({"float_nodes": d.float_nodes, "summary": summary,
                                    "trials": d.trials}, indent=2, sort_keys=True).encode())
    return d.float_nodes, summary

"""Which fused TFLite builtins LiteRT runs faster than their decomposition, measured here.

A fused builtin (HARD_SWISH, RELU_0_TO_1, RSQRT, SQUARED_DIFFERENCE, a fused activation, a
MUL/ADD folded into a convolution) is emitted only when LiteRT on the build machine ran it
faster than the ops it replaces, as the ONNX pass decides INT8 by measurement
(``converters.onnx_perf``). Each rewrite is timed on a small graph of both forms (one
``1x64x64x32`` tensor), the two models loaded side by side and run in interleaved rounds, order
alternating; the per-round median ratio's median decides, a result within ``MIN_GAIN`` of 1 is
measured once more and the rounds pooled. Rewrites without a decomposition to compare with
(GELU: TFLite has no ERF) are always on.

:func:`decide` is pure (timing injected). :func:`measured_rewrites` caches the decision per
machine under ``$EDGEOPS_HOME/cache/perf`` keyed by LiteRT version, CPU model and threads, so
later builds on the machine are reproducible and cost nothing.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from converters.onnx_perf import Timing
from converters.tflite._fuse import FUSIONS
from converters.tflite._ir import Graph
from converters.tflite._ir_fuse import IR_REWRITES

__all__ = ["ALWAYS", "MEASURED", "MIN_GAIN", "NPU_REWRITES", "decide", "measured_rewrites",
           "micro_graphs"]

CACHE_VERSION = 1
MIN_GAIN = 0.02              # within 2% of a tie: measure again and pool the rounds
ROUNDS = 7
RUNS_PER_ROUND = 20
ALWAYS = ("gelu",)           # no decomposition exists in TFLite (ERF is not a builtin)
MEASURED = tuple(k for k in FUSIONS + IR_REWRITES if k not in ALWAYS)
_SHAPE = (1, 64, 64, 32)
# for Edge TPU / Ethos-U: rewrites whose result is on both op lists (or removes ops); GELU has
# no alternative (Erf is no TFLite op) and falls back to the CPU there
NPU_REWRITES = ("affine", "fused_relu_n1_to_1", "gelu", "hard_swish")


class PairTimer(Protocol):
    """Times the fused form of one rewrite (candidate) against its decomposition."""

    def compare(self, rewrite: str) -> Timing: ...


def decide(timer: PairTimer, rewrites: tuple[str, ...] = MEASURED) -> dict[str, Any]:
    """Per rewrite: on or off, and the measurement that decided it."""
    on: list[str] = list(ALWAYS)
    trials: dict[str, str] = {}
    for name in rewrites:
        t = timer.compare(name)
        if abs(t.speedup - 1.0) < MIN_GAIN:
            t = t.pooled(timer.compare(name))
        if t.speedup >= 1.0:
            on.append(name)
        trials[name] = f"speedup {t.speedup:.3f}: " + t.describe("fused", "decomposed")
    return {"enabled": sorted(on), "trials": trials}


# -- the micro graphs ---------------------------------------------------------------------------
def _io(g: Graph) -> str:
    x = g.add_tensor("x", _SHAPE)
    g.inputs.append(x)
    return x


def _full(g: Graph, v: float) -> str:
    return g.add_const("c", np.full((1, 1, 1, 1), v, np.float32))


def _chain(g: Graph, x: str, steps: list[tuple[str, list[str], dict[str, Any]]]) -> None:
    """Ops applied in turn to the running tensor (``"$"`` in an input list)."""
    cur = x
    for i, (kind, ins, opts) in enumerate(steps):
        out = g.add_tensor(f"t{i}", _SHAPE)
        g.add_op(kind, [cur if n == "$" else n for n in ins], [out], **opts)
        cur = out
    g.outputs.append(cur)


def _conv(g: Graph, k: np.ndarray | None = None) -> list[str]:
    """1x1 convolution weights and bias; ``k``: a MUL then ADD by ``k`` folded in."""
    c = _SHAPE[-1]
    w = np.random.default_rng(0).standard_normal((c, 1, 1, c)) * 0.2
    b = np.zeros(c)
    if k is not None:
        w, b = w * k.reshape(-1, 1, 1, 1), b * k + k
    return [g.add_const("w", w.astype(np.float32)), g.add_const("b", b.astype(np.float32))]


def micro_graphs(rewrite: str) -> tuple[Graph, Graph]:
    """(decomposed, fused) forms of one rewrite on one tensor."""
    conv_opts = {"padding": 1, "strideH": 1, "strideW": 1, "dilationHFactor": 1,
                 "dilationWFactor": 1}
    forms = []
    for fused in (False, True):
        g = Graph()
        x = _io(g)
        if rewrite == "hard_swish":
            steps = [("HARD_SWISH", ["$"], {})] if fused else [
                ("ADD", ["$", _full(g, 3.0)], {"fusedActivationFunction": 3}),
                ("MUL", [x, "$"], {"fusedActivationFunction": 0}),
                ("MUL", ["$", _full(g, 1 / 6)], {"fusedActivationFunction": 0})]
        elif rewrite == "affine":
            k = np.linspace(0.5, 1.5, _SHAPE[-1])
            w, b = _conv(g, k if fused else None)
            steps = [("CONV_2D", ["$", w, b], {**conv_opts, "fusedActivationFunction": 0})]
            if not fused:
                kc = g.add_const("k", k.astype(np.float32))
                steps += [("MUL", ["$", kc], {"fusedActivationFunction": 0}),
                          ("ADD", ["$", kc], {"fusedActivationFunction": 0})]
        elif rewrite == "relu_0_to_1":
            steps = [("RELU_0_TO_1", ["$"], {})] if fused else [
                ("MAXIMUM", ["$", _full(g, 0.0)], {}), ("MINIMUM", ["$", _full(g, 1.0)], {})]
        elif rewrite == "rsqrt":
            steps = [("RSQRT", ["$"], {}), ("MUL", [x, "$"], {"fusedActivationFunction": 0})] \
                if fused else [("SQRT", ["$"], {}),
                               ("DIV", [x, "$"], {"fusedActivationFunction": 0})]
        elif rewrite == "squared_difference":
            m = g.add_const("m", np.full((1, 1, 1, _SHAPE[-1]), 0.5, np.float32))
            steps = [("SQUARED_DIFFERENCE", ["$", m], {})] if fused else [
                ("SUB", ["$", m], {"fusedActivationFunction": 0}), ("SQUARE", ["$"], {})]
        elif rewrite == "fused_relu_n1_to_1":
            w, b = _conv(g)
            steps = [("CONV_2D", ["$", w, b],
                      {**conv_opts, "fusedActivationFunction": 2 if fused else 0})]
            if not fused:
                steps.append(("RELU_N1_TO_1", ["$"], {}))
        else:
            raise ValueError(f"no micro graph for rewrite {rewrite!r}")
        _chain(g, x, steps)
        forms.append(g)
    return forms[0], forms[1]


class LiteRTPairTimer:
    """Both forms loaded in LiteRT, timed in interleaved rounds (order alternating)."""

    def __init__(self, threads: int = 1, rounds: int = ROUNDS,
                 runs: int = RUNS_PER_ROUND) -> None:
        self.threads, self.rounds, self.runs = threads, rounds, runs

    def compare(self, rewrite: str) -> Timing:
        from converters.tflite._runtime import LiteRT
        from converters.tflite._writer import write_flatbuffer

        ref_g, cand_g = micro_graphs(rewrite)
        x = np.abs(np.random.default_rng(1).standard_normal(_SHAPE)).astype(np.float32) + 0.1
        rts = [LiteRT(write_flatbuffer(g), threads=self.threads) for g in (cand_g, ref_g)]
        for rt in rts:
            rt.run([x])
        ratios, ta, tb = [], [], []
        for r in range(self.rounds):
            per: list[list[float]] = [[], []]
            for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                for _ in range(self.runs):
                    t0 = time.perf_counter()
                    rts[which].run([x])
                    per[which].append((time.perf_counter() - t0) * 1000.0)
            ratios.append(statistics.median(per[1]) / statistics.median(per[0]))
            ta += per[0]
            tb += per[1]
        return Timing(statistics.median(ta), statistics.median(tb), tuple(ratios))


def _cache_path(threads: int) -> Path:
    from converters._machine import cpu_name
    from converters.tflite._runtime import litert_version
    from edgeops.config import edgeops_home

    key = json.dumps({"v": CACHE_VERSION, "litert": litert_version(), "threads": threads,
                      "cpu": cpu_name(), "measured": MEASURED},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return edgeops_home() / "cache" / "perf" / f"tflite-fusions-{digest}.json"


def measured_rewrites(threads: int = 1, *, use_cache: bool = True,
                      timer_factory: Callable[[int], PairTimer] = LiteRTPairTimer
                      ) -> dict[str, Any]:
    """The rewrites LiteRT runs faster here (``enabled``), measured once per machine."""
    from edgeops.fsutil import atomic_write

    cache = _cache_path(threads)
    if use_cache and cache.is_file():
        try:
            doc = json.loads(cache.read_text())
            return {"enabled": list(doc["enabled"]), "trials": dict(doc["trials"]),
                    "cached": True}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    t0 = time.perf_counter()
    d = decide(timer_factory(threads))
    d["measured_s"] = round(time.perf_counter() - t0, 3)
    atomic_write(cache, json.dumps(d, indent=2, sort_keys=True).encode())
    return {**d, "cached": False}

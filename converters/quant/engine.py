"""The INT8 engine: which passes run for an effort level, in what order, and what they did.

Order matters and is fixed: graph passes that keep FP32 outputs exactly go first
(equalisation, then SmoothQuant migration), bias correction last among graph passes (it
measures the weights the earlier passes left), then calibration (converters/onnx_calibrate),
then range setting on the calibrated model. Each pass first says whether it applies; one that
cannot is recorded as ``skipped`` with its reason, one that fails is recorded as ``failed``
and the build continues with what the previous step produced (for ranges: MinMax).

Effort levels (``--effort``, recorded in the manifest):

* ``fast``: MinMax ranges only (the quantiser of the previous issue);
* ``default``: the passes in :data:`DEFAULT_PASSES`;
* ``max``: ``default`` plus AdaRound (:mod:`converters.quant.adaround`: weight rounding
  optimised on calibration data, in numpy; no torch), between SmoothQuant and bias correction
  (bias correction then measures the rounded weights).

AdaRound runs before calibration, on the plan's weight grid; on x86 without VNNI that is the
7-bit grid, and the exact bit split (converters/x86_split.py), chosen later on the task metric,
gives some layers 8-bit weights. Integers chosen on the 7-bit grid are no rounding at all on
the 8-bit one (its step is about half), so such a layer is rounded again on the grid it gets
(:meth:`EngineState.round_eight_bit`, asked for by the quantiser once the split is chosen), and
that rounding is kept only when the build scores at least as well with it on the task metric
(:attr:`EngineState.eight_bit_enabled`): lower layer error is not the metric, and measured on
DBNet-small scoring every candidate split with it lowered mask IoU 0.9738 -> 0.9690.

``options["quant_passes"]`` (a comma-separated string or a sequence of pass names) overrides
the effort's list, for experiments and benchmarks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.quant.adaround import AdaRound, AdaRoundSettings, Rounded, blas_threads
from converters.quant.base import PassOutcome, run_guarded
from converters.quant.bias_correction import BiasCorrection, BiasCorrectionSettings
from converters.quant.equalise import CrossLayerEqualisation
from converters.quant.mse_ranges import MseRanges, write_cache
from converters.quant.smoothquant import SmoothQuant

__all__ = ["ALL_PASSES", "DEFAULT_PASSES", "EFFORTS", "MAX_PASSES", "EngineState", "graph_passes",
           "passes_for", "range_passes"]

log = logging.getLogger(__name__)

ALL_PASSES = ("cross_layer_equalisation", "smoothquant", "adaround", "bias_correction",
              "mse_ranges")
DEFAULT_PASSES = ("cross_layer_equalisation", "smoothquant", "bias_correction", "mse_ranges")
MAX_PASSES = ("cross_layer_equalisation", "smoothquant", "adaround", "bias_correction",
              "mse_ranges")
EFFORTS: dict[str, tuple[str, ...]] = {"fast": (), "default": DEFAULT_PASSES,
                                       "max": MAX_PASSES}


def passes_for(effort: str, override: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The pass names to run, in pipeline order; unknown names are a ValueError."""
    if override is not None:
        names = [p.strip() for p in (override.split(",") if isinstance(override, str)
                                     else override) if p.strip()]
        bad = sorted(set(names) - set(ALL_PASSES))
        if bad:
            raise ValueError(f"unknown quantisation pass(es) {', '.join(bad)}; "
                             f"known: {', '.join(ALL_PASSES)}")
        return tuple(p for p in ALL_PASSES if p in names)
    if effort not in EFFORTS:
        raise ValueError(f"unknown effort '{effort}'; use one of {', '.join(EFFORTS)}")
    return EFFORTS[effort]


@dataclass
class EngineState:
    """What the engine did to one build, and what later steps need from it."""

    effort: str
    passes: tuple[str, ...]
    model: Path
    outcomes: list[PassOutcome] = field(default_factory=list)
    float_nodes: dict[str, str] = field(default_factory=dict)
    bias: BiasCorrection | None = None
    adaround: AdaRound | None = None
    # ranges to choose between on the task metric, cheapest first: {"minmax": cache, ...}
    range_candidates: dict[str, Path] = field(default_factory=dict)
    bias_enabled: bool = True
    adaround_enabled: bool = True
    # AdaRound on the 8-bit grid, for rounded layers the bit split gives 8-bit weights:
    # node -> its FP32 weight and the integers chosen on that grid
    eight_bit: dict[str, Rounded] = field(default_factory=dict)
    eight_bit_report: dict[str, dict[str, Any]] = field(default_factory=dict)
    eight_bit_enabled: bool = True
    eight_bit_choice: dict[str, Any] = field(default_factory=dict)

    def choose(self, gate_drop: Callable[[Path | None], float]) -> Path | None:
        """Ranges (and bias correction, AdaRound on or off) whose quantised model drops the
        metric least.

        Per-tensor error is not the user's metric, and measured on the zoo neither MSE ranges
        nor bias correction helps every model (both raised DBNet-small's mask IoU together,
        bias correction alone cost the CTC recogniser characters); AdaRound lowers each
        layer's output error, which is not the task metric either. All are cheap to toggle
        after calibration (a layer's bias or weights are restored, ranges are a file), so each
        combination is quantised and validated once and the simplest wins ties: every
        candidate without AdaRound comes before any with it, so where those are the default
        effort's own candidates (the full-integer TFLite path, converters/tflite/fullint.py)
        ``max`` keeps default's choice unless AdaRound scores strictly better. ``gate_drop``
        quantises with the given ranges (``None``: those it has) under the current
        :attr:`bias_enabled` and :attr:`adaround_enabled`; returns the chosen ranges (``None``
        when there was no choice).
        """
        biases = [False, True] if self.bias is not None else [self.bias_enabled]
        roundings = ([False, True] if self.adaround is not None and self.adaround.done
                     else [self.adaround_enabled])
        drops: dict[tuple[str, bool, bool], float] = {}
        for ada in roundings:
            for ranges in list(self.range_candidates) or ["minmax"]:
                for bias in biases:
                    self.bias_enabled, self.adaround_enabled = bias, ada
                    drops[(ranges, bias, ada)] = gate_drop(self.range_candidates.get(ranges))
        order = list(drops)
        best = min(order, key=lambda k: (drops[k], order.index(k)))
        self.bias_enabled, self.adaround_enabled = best[1], best[2]
        def label(r: str, b: bool, a: bool) -> str:
            return (r + (" + adaround" if a and len(roundings) > 1 else "")
                    + (" + bias correction" if b and self.bias is not None else ""))

        table = {label(*k): float(f"{d:.6g}") for k, d in drops.items()}
        verdicts = {"mse_ranges": best[0] == "mse_ranges", "bias_correction": best[1],
                    "adaround": best[2]}
        for i, o in enumerate(self.outcomes):
            if o.name in verdicts and o.status == "applied":
                kept = verdicts[o.name]
                self.outcomes[i] = PassOutcome(
                    o.name, o.status, f"{o.detail}; " + (
                        "kept: it scored best on the task metric" if kept else
                        "not used: the build scored better on the task metric without it"),
                    {**o.data, "used": kept, "gate_drop_by_choice": table})
        return self.range_candidates.get(best[0])

    def fp32_model(self, workdir: Path) -> Path:
        """The prepared model with AdaRound's layers back at their FP32 weights: the reference
        for ranking sensitive tensors (against the rounded weights, a layer's rounding error
        would be invisible to the ranking). Corrected biases stay: they are meant to cancel
        the mean shift, and the ranking should see what they cannot cancel."""
        if self.adaround is None or not self.adaround.done:
            return self.model
        import onnx

        from converters.onnx_utils import save_model

        m = onnx.load(str(self.model))
        self.adaround.restore(m, {d.layer.node for d in self.adaround.done})
        return save_model(m, workdir / "prepared-fp32.onnx")

    def round_eight_bit(self, nodes: Iterable[str], samples: Any) -> None:
        """AdaRound again, on the 8-bit grid, for the layers of ``nodes`` it rounded on the
        7-bit one (each once: the result is kept for :meth:`source_for`).

        ``H`` is accumulated again from the model as AdaRound saw it (its weights and the
        corrected biases put back), the iterations are those the layer got the first time
        (same size, same budget), and the layer keeps round-to-nearest where AdaRound's hard
        rounding does not beat it on its calibration loss, as in the first pass.
        """
        ada = self.adaround
        if ada is None or not ada.done or not ada.settings.reduce_range:
            return
        with blas_threads(ada.settings.blas_threads):
            self._round_eight_bit(ada, set(nodes), samples)

    def _round_eight_bit(self, ada: AdaRound, wanted: set[str], samples: Any) -> None:
        todo = [d for d in ada.done
                if d.layer.node in wanted and d.layer.node not in self.eight_bit_report]
        if not todo:
            return
        import numpy as np
        import onnx

        from converters.quant._gram import accumulate
        from converters.quant._stats import head_samples
        from converters.quant.adaround import (
            _rtn,
            grid,
            low_rank,
            optimise_rounding,
            reconstruction_error,
        )

        s = ada.settings
        m = onnx.load(str(self.model))
        ada.restore(m, {d.layer.node for d in ada.done})
        if self.bias is not None:
            self.bias.restore_into(m, {t.node for t in self.bias.targets})
        hs, _ = accumulate(m, [d.layer for d in todo], head_samples(samples, s.samples),
                           s.max_positions, s.seed, int(s.max_patch_mb * 2**20))
        first: dict[str, Any] = next((o.data.get("layers", {}) for o in self.outcomes
                                      if o.name == "adaround"), {})
        for d in todo:
            node, h = d.layer.node, hs[d.layer.node]
            w = d.layer.matrix(d.original.astype(np.float32))
            gr = grid(w, reduce_range=False)
            sc = gr.scale.astype(np.float64)[:, None]
            e_w = max(reconstruction_error(w.astype(np.float64), h), 1e-30)
            e_rtn = reconstruction_error(_rtn(w, gr) * sc - w, h)
            iters = int(first.get(node, {}).get("iterations", s.iterations))
            q = optimise_rounding(w, h, gr, iters, s, low_rank(h, s.h_energy))
            e_ada = reconstruction_error(q * sc - w, h)
            kept = e_ada < e_rtn
            if kept:
                self.eight_bit[node] = Rounded(d.layer, d.original, q.astype(np.int8))
            self.eight_bit_report[node] = {
                "iterations": iters, "rel_error_nearest": float(f"{e_rtn / e_w:.4g}"),
                "rel_error_adaround": float(f"{e_ada / e_w:.4g}"),
                "kept": "adaround" if kept else "nearest (AdaRound did not beat it)"}

    def source_for(self, exclude: set[str], workdir: Path,
                   eight_bit: frozenset[str] = frozenset()) -> Path:
        """The model to quantise when ``exclude`` stays float: their biases uncorrected, their
        weights as they were before AdaRound put them on the quantiser's grid (every
        re-rounded layer's when AdaRound is not used, with its bias corrected for
        round-to-nearest when bias correction is).

        ``eight_bit``: layers the bit split gives 8-bit weights. They keep their own bias (bias
        correction measured 7-bit weights) and get AdaRound's 8-bit rounding where
        :meth:`round_eight_bit` made one, else their original weights."""
        bias_back = set(exclude) | set(eight_bit)
        if self.bias is not None and not self.bias_enabled:
            bias_back |= {t.node for t in self.bias.targets}
        rounded = {d.layer.node for d in self.adaround.done} if self.adaround else set()
        weights_back = rounded & ((exclude | eight_bit) if self.adaround_enabled else rounded)
        regrid = {n: self.eight_bit[n] for n in (weights_back & eight_bit) - exclude
                  if n in self.eight_bit} if self.adaround_enabled and self.eight_bit_enabled \
            else {}
        nearest = (weights_back - bias_back) if self.bias_enabled else set()
        if not ((self.bias and any(t.node in bias_back for t in self.bias.targets))
                or weights_back):
            return self.model
        import onnx

        from converters.onnx_utils import save_model

        m = onnx.load(str(self.model))
        if self.bias is not None:
            self.bias.restore_into(m, bias_back)
            self.bias.nearest_into(m, nearest)
        if self.adaround is not None:
            self.adaround.restore(m, weights_back)
            if regrid:
                from converters.quant._graph import Graph
                from converters.quant.adaround import grid, on_grid

                g = Graph(m)
                for r in regrid.values():
                    w = r.layer.matrix(r.original.astype("float32"))
                    g.set_const(r.layer.weight, r.layer.unmatrix(
                        on_grid(w, r.q.astype("float64"), grid(w, reduce_range=False))))
        return save_model(m, workdir / "prepared-restored.onnx")

    def report(self) -> dict[str, Any]:
        return {"effort": self.effort, "passes": list(self.passes),
                **{o.name: o.to_dict() for o in self.outcomes},
                **({"adaround_8bit_grid": {
                    "detail": "layers the bit split gave 8-bit weights, rounded again on that "
                              "grid (the first pass rounded on the 7-bit one)"
                              + ("" if not self.eight_bit_choice else
                                 "; kept: it scored at least as well on the task metric"
                                 if self.eight_bit_enabled else
                                 "; not used: the build scored better on the task metric "
                                 "without it"),
                    "used": self.eight_bit_enabled, **self.eight_bit_choice,
                    "layers": dict(sorted(self.eight_bit_report.items()))}}
                   if self.eight_bit_report else {})}


def graph_passes(prepared: Path, samples: Any, *, effort: str, reduce_range: bool,
                 workdir: Path, override: str | Sequence[str] | None = None) -> EngineState:
    """Run the effort's graph passes on ``prepared``; the result is saved beside it."""
    import onnx

    from converters.onnx_utils import save_model

    names = passes_for(effort, override)
    state = EngineState(effort, names, prepared)
    graph = [n for n in names if n != "mse_ranges"]
    if not graph:
        return state
    model = onnx.load(str(prepared))
    from converters.quant._graph import privatise_params

    changed = privatise_params(model) > 0
    for name in graph:
        pass_: Any = (CrossLayerEqualisation() if name == "cross_layer_equalisation"
                      else SmoothQuant() if name == "smoothquant"
                      else AdaRound(AdaRoundSettings(reduce_range=reduce_range))
                      if name == "adaround"
                      else BiasCorrection(BiasCorrectionSettings(reduce_range=reduce_range),
                                          state.adaround.originals if state.adaround else None))
        why = _applies(pass_, model)
        if why is not None:
            state.outcomes.append(PassOutcome(name, "skipped", why))
            continue
        before = model

        def go(p: Any = pass_, m: Any = model) -> tuple[Any, PassOutcome]:
            if p.name == "cross_layer_equalisation":
                out: tuple[Any, PassOutcome] = p.run(m)
                return out
            res: tuple[Any, PassOutcome] = p.run(m, samples)
            return res

        model, outcome = run_guarded(name, go, before)
        state.outcomes.append(outcome)
        if outcome.status == "applied":
            changed = True
            if isinstance(pass_, SmoothQuant):
                state.float_nodes.update(pass_.float_nodes)
            if isinstance(pass_, BiasCorrection):
                state.bias = pass_
            if isinstance(pass_, AdaRound):
                state.adaround = pass_
    if changed:
        state.model = save_model(model, workdir / "prepared-passes.onnx")
    return state


def range_passes(state: EngineState, cache: Path, method: Any, samples: Any,
                 workdir: Path, method_name: str = "minmax") -> Path:
    """Ranges after the range passes, as an ORT calibration cache (``cache`` if none ran)."""
    if "mse_ranges" not in state.passes:
        return cache
    if method_name != "minmax":
        state.outcomes.append(PassOutcome("mse_ranges", "skipped",
                                          f"--calibration-method {method_name} was asked for"))
        return cache
    import onnx

    from converters.onnx_calibrate import calibrated_ranges

    model = onnx.load(str(state.model), load_external_data=False)
    pass_ = MseRanges()
    ranges = calibrated_ranges(cache)

    def go() -> tuple[Path, PassOutcome]:
        new, outcome = pass_.run(model, ranges, samples)
        return write_cache(new, method, workdir / "calibration-mse.json"), outcome

    path, outcome = run_guarded(pass_.name, go, cache)
    if outcome.status == "failed":
        outcome = PassOutcome(outcome.name, "failed", outcome.detail + " (MinMax ranges used)")
    else:
        state.range_candidates = {"minmax": cache, "mse_ranges": path}
    state.outcomes.append(outcome)
    return path


def _applies(pass_: Any, model: Any) -> str | None:
    """The pass's own verdict; a check that raises counts as "cannot apply", with the reason."""
    try:
        why: str | None = pass_.applies(model)
    except Exception as exc:  # the check is advisory: report it, never fail the build
        return f"applicability check failed ({type(exc).__name__}: {exc})"
    return why

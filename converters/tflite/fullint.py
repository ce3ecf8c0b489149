"""Full-integer INT8 fed by the quantisation engine: candidates, chosen on the task metric.

Edge TPU, Ethos-U and ``tflite-cpu`` int8 cannot keep a layer float, so the engine's passes
(converters/quant) feed this path as they feed the ONNX CPU one:

1. the prepared ONNX graph (BatchNormalization folded) goes through the engine's graph passes,
   cross-layer equalisation, AdaRound (effort ``max``) and bias correction, with the TFLite
   writer's weight rounding (:mod:`converters.tflite._passes`);
2. it is lowered with every pass that applied and without bias correction; at ``max`` the
   passes run twice, without AdaRound (the default effort's very graphs) and with it;
3. activation ranges are calibrated in LiteRT on the float graph (MinMax, or percentile), and
   the MSE range pass (:mod:`converters.tflite._ranges`) searches clipping ranges on the same
   samples (the candidates with and without AdaRound each on their own graph);
4. every combination of ranges and bias correction is quantised, run in LiteRT on the
   validation samples and scored on the build's task metric by the caller; the engine's own
   :meth:`converters.quant.EngineState.choose` keeps the one with the smallest gate drop (the
   simplest on ties) and records every drop in ``details["quantisation_passes"]``.

Pure orchestration: no files outside a temporary folder, no knowledge of build requests.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import onnx

from converters.quant import DEFAULT_PASSES, EngineState, PassOutcome
from converters.quant.adaround import AdaRound
from converters.quant.base import run_guarded
from converters.tflite._passes import GraphPassResult, run_graph_passes
from converters.tflite._prep import Prepared, prepare
from converters.tflite._quant import Ranges, calibrate_ranges
from converters.tflite._ranges import mse_ranges
from converters.tflite._writer import write_flatbuffer
from converters.tflite.convert import (
    ConversionResult,
    Lowered,
    base_details,
    full_int8_result,
    lower_prepared,
)
from edgeops.errors import UsageError

__all__ = ["Candidates", "Chosen", "FullIntPlan", "SampleSource", "build_best", "choose",
           "describe"]


ADAROUND = "adaround"


class SampleSource(Protocol):
    """Calibration samples that can be read more than once (``converters.feeds.Samples``)."""

    def __len__(self) -> int: ...

    def iter_samples(self) -> Any: ...


@dataclass(frozen=True)
class FullIntPlan:
    """How the full-integer graph is quantised (from the target profile and the request)."""

    per_channel: bool | str = True        # True | False (Edge TPU) | "conv-only" (Ethos-U)
    io_int8: bool = True
    method: str = "minmax"                # calibration method: minmax | percentile | entropy
    passes: tuple[str, ...] = DEFAULT_PASSES
    effort: str = "default"


class Candidates:
    """The lowered graph variants and range sets one full-integer build chooses among.

    At ``--effort max`` the candidates without AdaRound are the default effort's own, built
    by the same code from the same graph (the engine's passes without AdaRound), not the
    AdaRound graph with its weights put back: bias correction measured there sees AdaRound's
    rounding upstream of each layer, and ranges calibrated there see those biases, so such
    candidates scored differently from default's (ocr-cls, Edge TPU: top-1 agreement 0.979 at
    max vs 1.000 at default). ``max`` is then default's candidates plus AdaRound's, chosen on
    the task metric, and never scores below ``default`` on the validation samples.
    """

    def __init__(self, model: onnx.ModelProto, calibration: SampleSource, plan: FullIntPlan, *,
                 input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                 keep_io_layout: bool = False, require_static: bool = False,
                 target: str = "tflite", rewrites: tuple[str, ...] | None = None) -> None:
        self.plan = plan
        prep = prepare(model, input_shapes or {}, require_static=require_static, target=target)
        rounding = ADAROUND in plan.passes

        def lower(p: Prepared) -> Lowered:
            return lower_prepared(p, keep_io_layout=keep_io_layout, rewrites=rewrites)

        # (bias correction, AdaRound) -> the lowered graph; a pass that did not apply has
        # only its "on" key
        self.lowered: dict[tuple[bool, bool], Lowered] = {}
        base = copy.deepcopy(prep) if rounding else prep
        done = run_graph_passes(base, model.opset_import,
                                tuple(p for p in plan.passes if p != ADAROUND), calibration,
                                plan.per_channel)
        self.outcomes: list[PassOutcome] = list(done.outcomes)
        self.bias_adds_folded = done.bias_adds_folded
        self.bias = done.bias
        self.adaround: AdaRound | None = None
        for key, low in self._variants(base, done, False, lower):
            self.lowered[key] = low
        # ranges by AdaRound off/on, each calibrated on its own bias-corrected graph
        self.ranges_by_rounding: dict[bool, dict[str, Ranges]] = {
            False: self._calibrate(self.lowered[(True, False)], calibration, record=True)}
        if rounding:
            ada = run_graph_passes(prep, model.opset_import, plan.passes, calibration,
                                   plan.per_channel)
            # the report is the AdaRound run's (equalisation, AdaRound, bias correction as
            # measured after it); the ranges pass's outcome is the default candidates'
            ranges_outcome = [o for o in self.outcomes if o.name == "mse_ranges"]
            self.outcomes = [*ada.outcomes, *ranges_outcome]
            if ada.adaround is not None and ada.adaround.done:
                self.adaround = ada.adaround
                for key, low in self._variants(prep, ada, True, lower):
                    self.lowered[key] = low
                self.ranges_by_rounding[True] = self._calibrate(
                    self.lowered[(True, True)], calibration, record=False)
        self.ranges: dict[str, Ranges] = self.ranges_by_rounding[False]

    @staticmethod
    def _variants(prep: Prepared, done: GraphPassResult, rounding: bool,
                  lower: Callable[[Prepared], Lowered]) -> list[tuple[tuple[bool, bool], Lowered]]:
        """The graph after the passes, and without bias correction where it applied."""
        plain = None
        if done.original_biases:      # copied before lowering, which may touch ``prep``
            plain = copy.deepcopy(prep)
            plain.consts.update(done.original_biases)
        out = [((True, rounding), lower(prep))]
        if plain is not None:
            out.append(((False, rounding), lower(plain)))
        return out

    def _calibrate(self, low: Lowered, calibration: SampleSource, record: bool
                   ) -> dict[str, Ranges]:
        minmax = calibrate_ranges(low.graph, low.feeds(calibration.iter_samples()),
                                  method=self.plan.method)
        if not minmax:
            raise UsageError("no calibration samples were given")
        out = {"minmax": minmax}
        if "mse_ranges" not in self.plan.passes:
            return out
        if self.plan.method != "minmax":
            if record:
                self.outcomes.append(PassOutcome(
                    "mse_ranges", "skipped",
                    f"--calibration-method {self.plan.method} was asked for"))
            return out

        def go() -> tuple[Ranges | None, PassOutcome]:
            return mse_ranges(low.graph, low.feeds(calibration.iter_samples()), minmax)

        ranges, outcome = run_guarded("mse_ranges", go, None)
        if ranges is not None:
            out["mse_ranges"] = ranges
        else:
            outcome = PassOutcome(outcome.name, "failed", outcome.detail + " (MinMax ranges used)")
        if record:
            self.outcomes.append(outcome)
        return out

    def _variant(self, bias: bool, ada: bool) -> tuple[Lowered, bool]:
        """The lowered graph for the switches, and whether it is AdaRound's (a pass that did
        not apply has one variant: AdaRound's absent, bias correction's keyed as on)."""
        ada = ada and self.adaround is not None
        if (bias, ada) not in self.lowered:
            bias = True
        return self.lowered[(bias, ada)], ada

    def build(self, ranges: str, bias: bool, ada: bool = True) -> ConversionResult:
        """The full-integer artifact with the named ranges, and bias correction and AdaRound's
        rounding on or off (a pass that did not apply has nothing to turn off)."""
        variant, ada = self._variant(bias, ada)
        low = copy.deepcopy(variant)
        details = base_details(low, "int8")
        if self.bias_adds_folded:
            details["graph_passes"] = {"conv_bias_adds_folded": self.bias_adds_folded}
        table = self.ranges_by_rounding[ada]
        return full_int8_result(low, table.get(ranges, table["minmax"]),
                                per_channel=self.plan.per_channel,
                                io_int8=self.plan.io_int8, method=self.plan.method,
                                details=details)

    def float_model(self, bias: bool, ada: bool = True) -> bytes:
        """The float TFLite graph a candidate was quantised from (for per-layer error)."""
        return write_flatbuffer(self._variant(bias, ada)[0].graph)


@dataclass
class Chosen:
    result: ConversionResult
    bias: bool
    ranges: str
    evidence: Any                          # what ``evaluate`` returned for it
    drop: float                            # its gate drop
    report: dict[str, Any]                 # details["quantisation_passes"]
    adaround: bool = True                  # AdaRound's rounding used (where it applied)


def choose(cands: Candidates, evaluate: Callable[[ConversionResult], tuple[float, Any]]
           ) -> Chosen:
    """Build every candidate, score it with ``evaluate`` (its gate drop and any evidence the
    caller wants back, e.g. the outputs it ran) and keep the best, as the ONNX path does."""
    state = EngineState(cands.plan.effort, cands.plan.passes, Path("prepared.onnx"))
    state.outcomes = list(cands.outcomes)
    state.bias = cands.bias
    state.bias_enabled = cands.bias is not None   # no correction to toggle: say so in the table
    state.adaround = cands.adaround
    # only the best so far is kept (the evidence can be every validation output): the engine
    # keeps the smallest drop, the earliest on ties, so a strictly smaller drop replaces it
    best: list[tuple[float, tuple[str, bool, bool], ConversionResult, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgeops-ranges-") as tmp:
        # the engine chooses between range *files* (ORT calibration caches on the ONNX path)
        paths = {}
        for name, ranges in cands.ranges.items():
            p = Path(tmp) / f"{name}.json"
            p.write_text(json.dumps({k: [float(a), float(b)] for k, (a, b) in ranges.items()}))
            paths[name] = p
        by_path = {p: n for n, p in paths.items()}
        if len(paths) > 1:
            state.range_candidates = dict(paths)

        def gate_drop(path: Path | None) -> float:
            name = by_path.get(path, "minmax") if path is not None else "minmax"
            res = cands.build(name, state.bias_enabled, state.adaround_enabled)
            drop, evidence = evaluate(res)
            if not best or drop < best[0][0]:
                best[:] = [(drop, (name, state.bias_enabled, state.adaround_enabled), res,
                            evidence)]
            return drop

        picked = state.choose(gate_drop)
    name = by_path.get(picked, "minmax") if picked is not None else "minmax"
    drop, key, res, evidence = best[0]
    if key != (name, state.bias_enabled, state.adaround_enabled):
        # the engine's rule changed: follow its choice
        res = cands.build(name, state.bias_enabled, state.adaround_enabled)
        drop, evidence = evaluate(res)
    report = state.report()
    res.details["quantisation_passes"] = report
    return Chosen(res, state.bias_enabled, name, evidence, drop, report,
                  state.adaround_enabled)


CLE = "cross_layer_equalisation"


def build_best(model: onnx.ModelProto, calibration: SampleSource, plan: FullIntPlan,
               evaluate: Callable[[ConversionResult], tuple[float, Any]], **lowering: Any
               ) -> tuple[Chosen, Candidates]:
    """:func:`choose` over the candidates with equalisation and, when it applied, without.

    Equalisation is exact in FP32 but not neutral in int8: it moves activation ranges too.
    Measured on the zoo's direction classifier it raised Edge TPU top-1 agreement (per-tensor
    weights) and lowered Ethos-U's (per-channel convolution weights), so it is chosen on the
    task metric like the rest; on ties the choice without AdaRound wins (as within
    :func:`choose`: ``max`` keeps default's choice unless AdaRound is strictly better), then
    the one without equalisation (the simpler graph)."""
    with_cle = Candidates(model, calibration, plan, **lowering)
    best = choose(with_cle, evaluate)
    outcome = next((o for o in with_cle.outcomes if o.name == CLE), None)
    if outcome is None or outcome.status != "applied":
        return best, with_cle
    plain = Candidates(model, calibration,
                       dataclasses.replace(plan, passes=tuple(p for p in plan.passes if p != CLE)),
                       **lowering)
    other = choose(plain, evaluate)
    drops = {"with equalisation": _best_drop(best), "without": _best_drop(other)}
    keep = ((drops["with equalisation"], _rounded(best, with_cle))
            < (drops["without"], _rounded(other, plain)))
    chosen, cands = (best, with_cle) if keep else (other, plain)
    report = dict(chosen.report)
    report["passes"] = list(plan.passes)
    report[CLE] = {**outcome.to_dict(), "detail": outcome.detail + (
        "; kept: it scored best on the task metric" if keep else
        "; not used: the build scored better on the task metric without it"),
        "used": keep, "gate_drop_by_choice": drops}
    report = {k: report[k] for k in ["effort", "passes", *plan.passes] if k in report}
    chosen.result.details["quantisation_passes"] = report
    chosen.report = report
    return chosen, cands


def _rounded(c: Chosen, cands: Candidates) -> bool:
    """Whether the chosen candidate carries AdaRound's rounding."""
    return c.adaround and cands.adaround is not None


def _best_drop(c: Chosen) -> float:
    table = next((o["gate_drop_by_choice"] for o in c.report.values()
                  if isinstance(o, dict) and "gate_drop_by_choice" in o), None)
    return min(table.values()) if table else c.drop


def describe(chosen: Chosen) -> str:
    used = [k for k, o in chosen.report.items()
            if isinstance(o, dict) and o.get("status") == "applied" and o.get("used", True)]
    return ", ".join(used) or "MinMax ranges, no pass"


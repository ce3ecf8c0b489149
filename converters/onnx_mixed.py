"""The accuracy-aware step of static quantisation: mixed precision by measurement.

Runs when the fully quantised model misses the budget. Cost is bounded by counts, not by a
doubling loop of ``quantize_static`` calls:

1. the activation-error ranking (converters/onnx_sensitivity) orders the quantised layers;
   the top ``max_measured_layers`` are measured **on the task metric**, one validation run
   each, with only that layer's Q/DQ bypassed in the quantised graph (converters/qdq_bypass);
2. a per-layer speed model: float vs INT8 kernel time profiled on this machine
   (converters/layer_speed, cached per machine); where this machine cannot time the target's
   kernels (QNN HTP, an ARM target built on x86), each layer's output size stands in (what a
   wider or float activation costs in memory traffic), and the manifest says so;
3. an exact knapsack (converters/mixed_precision) picks the layers to lift: float, or uint16
   activations where the target runs 16-bit activations well (QNN);
4. one real ``quantize_static`` and gate verify it; if the additive estimate was wrong, one
   correction (the layers not yet lifted re-measured on the verified model, the knapsack run
   again on what is left). A verified set is lifted by *exclusion* (left float by
   ``quantize_static``: it reads its quantised input dequantised, so its producers stay fused
   INT8); only when that misses the budget is the *bypass* (it reads its producers' float
   outputs, as measured in step 1, which costs them their fused kernels) measured too, and
   the lower drop kept;
5. last resort, when per-layer recoveries do not add up: prefixes of the ranking's tensors
   (producer and consumers together), doubling then bisecting, each verified by one real
   quantisation (converters/mixed_precision ``prefix_search``); a shorter prefix that passes
   only bypassed does not replace one that passes excluded (the bypass costs its producers
   their fused kernels), and a doubling still many times over budget that gains too little
   stops early; then refuse with one line naming the layers that limit the build and the
   budget it would need (or, after an early stop, what was tried).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.api import BackendContext
from converters.mixed_precision import (
    LayerCost,
    MixedPrecisionSettings,
    Selection,
    may_replace,
    metric_step,
    prefix_search,
    refusal,
    select,
    too_many_lifted,
)
from edgeops.errors import AccuracyGateError

__all__ = ["MixedOutcome", "recover"]

# make(float layers, uint16 layers) -> the quantised model's path
Make = Callable[[set[str], set[str]], Path]


@dataclass
class MixedOutcome:
    """Layers lifted out of INT8 (node -> reason) and the record for the manifest."""

    float_nodes: dict[str, str] = field(default_factory=dict)
    uint16_nodes: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def recover(ctx: BackendContext, *, qdq: Path, float_model: Any, reference: Any,
            candidates: set[str],
            already_float: set[str], make: Make, wide: bool, timed_here: bool,
            settings: MixedPrecisionSettings | None = None) -> MixedOutcome:
    """Lift the fewest-cost layers out of INT8 until the gate passes, or refuse (one line).

    ``float_model`` gives a lifted layer its float weights and bias (the model quantised with
    every candidate excluded); ``reference`` is what the activation-error ranking compares with.
    """
    settings = settings or MixedPrecisionSettings()
    from converters.onnx_sensitivity import rank_sensitive_nodes
    from converters.validate import gate_drop, run_onnx, task_note

    budget = ctx.request.max_accuracy_drop
    val = ctx.data.validation
    name = ctx.profile.name

    def measure(model: Path) -> tuple[str, float, str]:
        report = ctx.data.accuracy_report(run_onnx(model, val, states=ctx.data.states))
        metric, drop = gate_drop(report, ctx.data.gate_metric, name)
        return metric, float(drop), task_note(report, metric)

    metric, base, note = measure(qdq)
    pool = sorted(candidates - already_float)
    ctx.progress(f"{name}: {metric} dropped {base:.2%}; measuring the task-metric effect of "
                 f"up to {settings.max_measured_layers} layers (activation-error ranking)")
    ranked = rank_sensitive_nodes(reference, qdq, val.spread(settings.sensitivity_samples),
                                  pool)
    layers: list[str] = []
    for _, nodes, _ in ranked:
        for n in nodes:
            if n not in layers and len(layers) < settings.max_measured_layers:
                layers.append(n)
    recovered = _recoveries(ctx, qdq, float_model, layers, base, measure)
    speed, speed_model = _speed(ctx, float_model, qdq, layers, wide, timed_here, settings)
    costs = [LayerCost(n, recovered[n], speed[n]) for n in layers]
    sel = select(costs, base, budget)
    record: dict[str, Any] = {
        "metric": metric, "budget": budget, "base_drop": round(base, 6),
        "candidates": len(pool), "measured_layers": len(layers),
        "lift_to": "uint16 activations" if wide else "float", "speed_model": speed_model,
        "table": [{"node": c.node, "recovered": round(c.recovered, 6),
                   "int8_saves_ms": round(c.saving_ms, 6)} for c in costs]}
    high = set(sel.high)

    lifted_by: dict[frozenset[str], str] = {}
    lift_tries: list[list[Any]] = []

    def verify(lift: set[str]) -> tuple[Path, float]:
        """ONE real quantisation with ``lift`` out of INT8, and the gate's drop."""
        if wide:
            path = make(already_float, lift)
            return path, measure(path)[1]
        # Exclusion first: excluded from quantize_static, a layer reads the dequantised
        # output of its quantised producer, which stays fused INT8. The bypass (the layer
        # reads its producer's float output, as it was measured alone) costs the producer its
        # fusion: ocr-det-640, vnni, 48 layers lifted: 1.52x FP32 bypassed, 1.66x excluded.
        # Over budget, the bypass is measured too and the lower drop kept (the gate decides).
        import onnx

        from converters.onnx_utils import save_model
        from converters.qdq_bypass import bypass_layers

        path = make(already_float | lift, set())
        excluded = measure(path)[1]
        lifted_by[frozenset(lift)] = "exclusion"
        if excluded <= budget:
            lift_tries.append([len(lift), round(excluded, 6), None])
            return path, excluded
        alt = save_model(bypass_layers(onnx.load(str(path)), float_model, lift),
                         ctx.workdir / "lift-bypass.onnx")
        bypassed = measure(alt)[1]
        lift_tries.append([len(lift), round(excluded, 6), round(bypassed, 6)])
        if bypassed >= excluded:
            return path, excluded
        lifted_by[frozenset(lift)] = "bypass"
        save_model(onnx.load(str(alt)), path)
        return path, bypassed

    checked, verified = verify(high)
    record["first"] = _summary(sel, verified)
    tried = [(len(high), verified)]
    if verified > budget and sel.feasible:
        # The additive estimate was wrong: re-measure what is left on the verified model.
        ctx.progress(f"{name}: the estimate was {sel.estimated_drop:.2%}, measured "
                     f"{verified:.2%}; one correction step")
        rest = [n for n in layers if n not in high]
        rec2 = _recoveries(ctx, checked, float_model, rest, verified, measure)
        sel2 = select([LayerCost(n, rec2[n], speed[n]) for n in rest], verified, budget)
        if sel2.high:
            recovered.update({n: rec2[n] for n in sel2.high})
            high |= set(sel2.high)
            checked, verified = verify(high)
            record["correction"] = {**_summary(sel2, verified), "added": list(sel2.high)}
            tried.append((len(high), verified))
    limit = max(1, int(len(pool) * settings.max_high_fraction))
    cumulative: set[str] = set()
    if verified > budget:
        # Last resort: lift whole prefixes of the activation-error ranking's tensors (each
        # tensor's producer and consumers together, so its Q/DQ pair goes), doubling, then
        # bisecting towards the shortest that passes, each verified by one real quantisation.
        # Per-layer recoveries overlap and do not add up (ocr-det-640: no single layer moves
        # mask IoU by 0.1 %, the first 32 tensors' 63 layers together recover 4.6 points).
        groups = [set(nodes) for _, nodes, _ in ranked]
        sizes: list[int] = []
        acc = set(high)
        for grp in groups:
            acc |= grp
            sizes.append(len(acc))

        def prefix(g: int) -> set[str]:
            return high.union(*groups[:g])

        def drop_of(g: int) -> float:
            lift = prefix(g)
            ctx.progress(f"{name}: {metric} still over budget; lifting the first {g} tensor(s) "
                         f"of the activation-error ranking together ({len(lift)} layers)")
            drop = verify(lift)[1]
            ctx.progress(f"{name}: {len(lift)} layers out of INT8: {metric} drop {drop:.2%}")
            return drop

        unfused: list[list[int]] = []

        def replaces(mid: int, hi: int) -> bool:
            # without timing both, fewer layers lifted is taken as faster unless the shorter
            # set passes only bypassed and the longer one excluded (fusion lost)
            if wide or may_replace(lifted_by.get(frozenset(prefix(mid))),
                                   lifted_by.get(frozenset(prefix(hi)))):
                return True
            unfused.append([mid, len(prefix(mid))])
            return False

        chosen, prefix_tries, stopped = prefix_search(
            sizes, budget, limit, drop_of, already=len(high),
            bisections=settings.prefix_bisections, replaces=replaces,
            hopeless_ratio=settings.prefix_hopeless_ratio, min_tries=settings.prefix_min_tries,
            max_tries=settings.max_prefixes)
        tried += [(t.lifted, t.drop) for t in prefix_tries]
        if stopped:
            record["stopped"] = stopped
        if chosen is not None:
            cumulative = prefix(chosen) - high
            high |= cumulative
            # every try writes the same file: quantise the chosen one again unless it was last
            if prefix_tries[-1].groups == chosen:
                verified = prefix_tries[-1].drop
            else:
                checked, verified = verify(high)
            record["cumulative"] = {
                "tensors": chosen, "lifted": sorted(cumulative), "verified_drop":
                round(verified, 6), "tries": [[t.groups, t.lifted, round(t.drop, 6)]
                                              for t in prefix_tries],
                # [tensors, layers]: passed only bypassed, so the longer excluded set stayed
                "not_shorter_unfused": unfused}
    # A layer no faster in INT8 on this machine is lifted for free (select): it costs no speed,
    # so it does not count towards "INT8 is not worth shipping" (an AVX2 build machine timed
    # every layer of a 3-conv model slower in INT8, and the one layer the budget needed, plus
    # a free one, refused the build as "2 of 3 out of INT8").
    paid = {n for n in high if not (n in speed and speed[n] <= 0)}
    if verified <= budget and not wide and len(paid) > limit:
        raise AccuracyGateError(too_many_lifted(name, metric, verified, budget, sorted(high),
                                                len(pool), settings.max_high_fraction))
    if verified > budget:
        lifted, needed = min(tried, key=lambda t: (t[1], t[0]))    # the best verified try
        step = metric_step([base, *(t[1] for t in tried),
                            *(base - c.recovered for c in costs)])
        raise AccuracyGateError(refusal(name, metric, base, budget, costs, needed, len(layers),
                                        note, lifted=lifted,
                                        stopped=record.get("stopped", ""),
                                        widest=max(t[0] for t in tried), step=step))
    record["verified_drop"] = round(verified, 6)
    how = "" if wide else lifted_by.get(frozenset(high), "exclusion")
    if not wide:
        # tries as [layers lifted, drop excluded, drop bypassed (measured when over budget)]
        record["lift"], record["lift_tries"] = how, lift_tries
    how_note = {"": "", "exclusion": "; excluded from quantize_static (reads its quantised "
                "input, dequantised)", "bypass": "; bypassed (reads its producer's float "
                "output: excluded, it missed the budget)"}[how]
    # prefix layers beyond the measured candidates have no timing: counted, not guessed
    record["speed_estimate"] = {"int8_saves_ms": round(sel.saved_ms, 4),
                                "lifted_cost_ms": round(sum(speed.get(n, 0.0) for n in high), 4),
                                "lifted_untimed": sum(n not in speed for n in high)}
    unit = "(proxy: output elements)" if not timed_here or wide else "ms"
    reasons = {n: (f"accuracy: lifting it alone recovered {recovered[n]:.2%} of {metric} "
                   f"(measured); keeping it 8-bit saves {speed[n]:.3f} {unit} (knapsack under "
                   f"the {budget:.2%} budget){how_note}")
               if n in recovered and n not in cumulative else
               (f"accuracy: lifted with the first {record['cumulative']['tensors']} tensors of "
                f"the activation-error ranking ({len(cumulative)} layers; the per-layer "
                f"estimate could not meet the {budget:.2%} budget; the prefix, verified, did)"
                f"{how_note}")
               for n in sorted(high)}
    record["float" if not wide else "uint16"] = sorted(high)
    ctx.progress(f"{name}: {len(high)} layer(s) to {record['lift_to']}; {metric} drop "
                 f"{verified:.2%} (estimated {sel.estimated_drop:.2%})")
    return MixedOutcome(float_nodes={} if wide else reasons,
                        uint16_nodes=reasons if wide else {}, details=record)


def _summary(sel: Selection, verified: float) -> dict[str, Any]:
    return {"lifted": list(sel.high), "estimated_drop": round(sel.estimated_drop, 6),
            "verified_drop": round(verified, 6), "feasible_by_estimate": sel.feasible}


def _recoveries(ctx: BackendContext, qdq: Path, float_model: Any, layers: list[str],
                base: float, measure: Callable[[Path], tuple[str, float, str]]
                ) -> dict[str, float]:
    """Per layer: the drop recovered when it alone is bypassed in the quantised graph."""
    import onnx

    from converters.onnx_utils import save_model
    from converters.qdq_bypass import bypass_layers

    q = onnx.load(str(qdq))
    out: dict[str, float] = {}
    for n in layers:
        path = save_model(bypass_layers(q, float_model, {n}), ctx.workdir / "bypass.onnx")
        out[n] = base - measure(path)[1]
    return out


def _speed(ctx: BackendContext, float_model: Any, qdq: Path, layers: list[str], wide: bool,
           timed_here: bool, settings: MixedPrecisionSettings) -> tuple[dict[str, float], str]:
    """Per layer, what keeping it INT8 saves, and how that was obtained."""
    if wide or not timed_here:
        sizes = output_elements(float_model, layers)
        why = ("QNN HTP cannot be timed here" if wide
               else "this machine cannot run the target's kernels")
        return sizes, (f"proxy ({why}): each layer's output elements, the activation traffic "
                       "that lifting it widens")
    from converters.layer_speed import layer_times
    from converters.onnx_utils import save_model

    src = save_model(float_model, ctx.workdir / "mixed-float.onnx")
    times = layer_times(src, qdq, layers, ctx.data.validation.sample(0),
                        runs=settings.profile_runs, threads=ctx.request.threads,
                        cache_key={"source": ctx.data.source.sha256,
                                   "target": ctx.profile.name})
    return ({n: times.saving_ms(n) for n in layers},
            f"ONNX Runtime profiler on this machine: float vs INT8 kernel ms per layer, "
            f"median of {settings.profile_runs} runs, {ctx.request.threads} thread(s)"
            + (f"; estimated from the others' ratio: {', '.join(times.estimated)}"
               if times.estimated else ""))


def output_elements(model: Any, layers: list[str]) -> dict[str, float]:
    """Per layer, the element count of its outputs from the graph's shapes (1 when unknown)."""
    import math

    shapes: dict[str, list[int]] = {}
    for vi in (*model.graph.value_info, *model.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[vi.name] = dims
    nodes = {n.name: n for n in model.graph.node}
    out: dict[str, float] = {}
    for n in layers:
        node = nodes.get(n)
        total = sum(math.prod(shapes[o]) for o in (node.output if node else ()) if o in shapes)
        out[n] = float(total or 1)
    return out

"""Static (QDQ) and dynamic INT8 / INT16 quantisation, performance- and accuracy-aware.

The pipeline for static precisions:

1. plan (pure, :func:`converters.onnx_plan.plan_for`): activation/weight types, per-channel,
   ``reduce_range`` from the TARGET profile's ISA (x86 with or without declared VNNI, ARM64,
   QNN's uint8/uint16), never from the build machine's CPU;
2. prepare: upgrade to opset 13+ (DequantizeLinear ``axis``), shape inference and basic graph
   optimisation, name every node; on CPU plans, rewrite upsampling ConvTranspose into the 1x1
   Conv + pixel shuffle it is, which ORT's CPU EP runs in INT8 (converters/onnx_int8_graph);
3. calibrate once, streaming (converters/onnx_calibrate); on CPU plans, the tensors of each
   Concat share one range (their union) so QLinearConcat copies instead of requantising;
3b. the post-processing tail (ops after the last Conv/MatMul/Gemm on the way to an output that
   only rearrange, decode or normalise) stays float and no graph output is quantised
   (converters/onnx_tail), unless ``quantise_tail`` is set;
4. performance-aware: node groups whose quantisation makes the model slower *on this machine*
   stay float, and more go float until the INT8 model is faster than FP32 by more than the
   noise margin (all float if need be: the FP32 graph, said in plain words in the progress and
   the manifest) (converters/onnx_perf, measured, cached per machine so rebuilds are identical);
5. accuracy-aware, when the gate fails: mixed precision by measurement (converters/onnx_mixed):
   the task-metric effect of the top layers of the activation-error ranking, measured by
   bypassing each one's Q/DQ; a per-layer speed model; an exact knapsack picks the layers to
   lift (float, or uint16 activations on QNN), verified by one real quantisation, corrected
   once, else refused naming the layers that limit it and the budget it would need.

Every candidate is written, loaded and run by :func:`converters.onnx_accept.accept`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from converters.api import BackendContext, BuiltArtifact
from converters.onnx_calibrate import calibrated_ranges
from converters.onnx_plan import QuantPlan, build_machine_caveat, cpu_facts, plan_for
from converters.onnx_qdq_fallback import QdqConfig, QuantiserFallback, runs_as_written
from converters.onnx_utils import (
    fix_batch,
    has_external_data,
    inline_if_fits,
    model_opset,
    save_model,
)
from converters.x86_split import BitSplit
from edgeops.errors import ConfigError, ConversionError

log = logging.getLogger(__name__)

__all__ = ["QuantPlan", "cpu_facts", "plan_for", "quantise"]

MIN_QDQ_OPSET = 13
QNN_INT16_OPSET = 21          # uint16 QuantizeLinear in the default domain
_COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _qtype(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8,
            "uint16": QuantType.QUInt16}[name]


def prepare(ctx: BackendContext, min_opset: int) -> Path:
    """Opset-upgraded, shape-inferred, basic-optimised source with every node named."""
    import onnx

    model = ctx.data.upgraded(min_opset)
    if ctx.profile.static_shapes:
        from converters.validate import concrete_shape

        model = fix_batch(model, {s.name: concrete_shape(s) for s in ctx.data.inputs})
    named = onnx.ModelProto()
    named.CopyFrom(model)
    seen: set[str] = set()
    for i, n in enumerate(named.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)
    raw = save_model(named, ctx.workdir / "source.onnx")
    out = ctx.workdir / "prepared.onnx"
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Over 2 GB (saved with external data): the result keeps its weights in prepared.onnx.data,
    # and symbolic shape inference (in-memory protobuf) is skipped, as it cannot work there.
    large = has_external_data(raw)
    ext = {"save_as_external_data": True, "all_tensors_to_one_file": True,
           "external_data_location": f"{out.name}.data"} if large else {}
    for kw in ({}, {"skip_symbolic_shape": True}, {"skip_symbolic_shape": True,
                                                    "skip_optimization": True})[int(large):]:
        try:
            # ORT's symbolic shape inference drops sym_shape_infer_temp.onnx and uuid .data files
            # into the working directory when it falls back; keep them in the build's scratch dir.
            with contextlib.redirect_stdout(None), contextlib.chdir(ctx.workdir):
                quant_pre_process(str(raw.resolve()), str(out.resolve()), **kw, **ext)
            onnx.checker.check_model(str(out))          # by path: works over 2 GB too
            m = onnx.load(str(out))
            break
        except Exception as exc:  # pre-processing is an optimisation; fall back step by step
            log.debug("quant_pre_process %s failed: %s", kw, exc)
            continue
    else:
        return raw
    # ORT's optimiser may drop names: name again so exclusions can refer to them.
    seen.clear()
    changed = False
    for i, n in enumerate(m.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
            changed = True
        seen.add(n.name)
    if changed:
        save_model(m, out)
    return out


def _quantise_static(src: Path, cache: Path, method: Any, plan: QuantPlan, exclude: set[str],
                     out: Path, overrides: dict[str, Any] | None = None,
                     config: QdqConfig | None = None) -> Path:
    """``quantize_static`` with the plan, our ranges and ``config`` (a fallback's changes)."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    if config is not None and config.per_channel is not None:
        plan = replace(plan, per_channel=config.per_channel)
    extra: dict[str, Any] = {"ActivationSymmetric": plan.activation_symmetric,
                             "WeightSymmetric": plan.weight_type == "int8"}
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    op_types = None
    if plan.qnn:
        # ORT's QNN helper computes the overrides QNN needs (fixed Sigmoid/Tanh scales,
        # shared scales across Concat, int32 bias, ...); calibration still comes from our cache.
        from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

        cfg = get_qnn_qdq_config(str(src), _NullReader(), calibrate_method=method,
                                 activation_type=_qtype(plan.activation_type),
                                 weight_type=_qtype(plan.weight_type),
                                 per_channel=plan.per_channel,
                                 init_overrides=overrides or None,
                                 nodes_to_exclude=sorted(exclude))
        extra = dict(cfg.extra_options)
        op_types = cfg.op_types_to_quantize
    if config is not None:
        extra.update(config.extra_options)
    with _quiet():
        quantize_static(str(src), str(out), calibration_data_reader=None,
                        quant_format=QuantFormat.QDQ, per_channel=plan.per_channel,
                        reduce_range=plan.reduce_range,
                        activation_type=_qtype(plan.activation_type),
                        weight_type=_qtype(plan.weight_type), op_types_to_quantize=op_types,
                        nodes_to_exclude=sorted(exclude), calibrate_method=method,
                        extra_options=extra, calibration_cache_path=str(cache),
                        use_external_data_format=has_external_data(src))
    return inline_if_fits(out)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantiser logs advice on the root logger; our report says what matters."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


class _NullReader:
    def get_next(self) -> None:
        return None


def rewrite_for_cpu(prepared: Path, workdir: Path) -> tuple[Path, dict[str, list[str]]]:
    """The prepared model with its exact CPU rewrites, and what each rewrote (node names).

    Upsampling ConvTranspose as 1x1 Conv + shuffle (converters/onnx_int8_graph); decomposed
    hard-swish as one op and constant affine ops folded into Convs (converters/onnx_fold).
    """
    import onnx

    from converters.onnx_fold import fold_elementwise
    from converters.onnx_int8_graph import convtranspose_as_conv

    # Folding first: a BatchNormalization after a ConvTranspose goes into its weights before
    # the ConvTranspose becomes a Conv and a shuffle (which the BatchNormalization would follow).
    model, folded = fold_elementwise(onnx.load(str(prepared)))
    model, rewritten = convtranspose_as_conv(model)
    passes = {"convtranspose_as_conv": rewritten, **folded}
    if not any(passes.values()):
        return prepared, passes
    model = onnx.shape_inference.infer_shapes(model)
    return save_model(model, workdir / "prepared-cpu.onnx"), passes


def vector_biases(prepared: Path, workdir: Path) -> tuple[Path, dict[str, str]]:
    """The prepared model with every constant Gemm bias as a vector (converters/onnx_bias)."""
    if has_external_data(prepared):
        return prepared, {}
    import onnx

    from converters.onnx_bias import vector_gemm_biases

    model, done = vector_gemm_biases(onnx.load(str(prepared)))
    if not done:
        return prepared, {}
    return save_model(model, workdir / "prepared-bias-vectors.onnx"), done


def model_opset_path(path: Path) -> int:
    import onnx

    return model_opset(onnx.load(str(path), load_external_data=False))


def _quantised_nodes(path: Path) -> set[str]:
    """Names of original nodes that consume dequantised inputs in a QDQ model."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    producers = {o: n for n in m.graph.node for o in n.output}
    out = set()
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
               for i in n.input):
            out.add(n.name)
    return out


def quantise(ctx: BackendContext) -> BuiltArtifact:
    from converters.onnx_accept import accept

    if ctx.precision == "int8-dynamic":
        return _dynamic(ctx, accept)
    facts = cpu_facts()
    plan = plan_for(ctx.profile.name, dict(ctx.profile.options), ctx.precision)
    caveat = _announce(ctx, plan, facts)
    min_opset = QNN_INT16_OPSET if plan.activation_type == "uint16" else MIN_QDQ_OPSET
    source_opset = model_opset(ctx.data.model)
    ctx.progress(f"{ctx.profile.name}: preparing (opset {source_opset} → "
                 f"{max(source_opset, min_opset)})")
    prepared = prepare(ctx, min_opset)
    from converters.onnx_unquantisable import type_ml_outputs

    if not has_external_data(prepared):
        type_ml_outputs(prepared, ctx.data.calibration.sample(0))
    cpu_passes = not plan.qnn and not has_external_data(prepared)
    rewritten: dict[str, list[str]] = {}
    if cpu_passes:
        prepared, rewritten = rewrite_for_cpu(prepared, ctx.workdir)
    prepared, bias_vectors = vector_biases(prepared, ctx.workdir)
    engine = _engine(ctx, prepared, plan) if cpu_passes else None   # converters/quant
    prepared = engine.model if engine else prepared
    ctx.progress(f"{ctx.profile.name}: calibrating ({ctx.request.calibration_method}, "
                 f"{len(ctx.data.calibration)} samples, streamed)")
    from converters.onnx_calibrate import calibrate

    cache, method = calibrate(prepared, ctx.data.calibration, ctx.request.calibration_method,
                              ctx.workdir)
    if engine:
        from converters.quant import range_passes

        cache = range_passes(engine, cache, method, ctx.data.calibration, ctx.workdir,
                             ctx.request.calibration_method)
    float_nodes: dict[str, str] = dict(engine.float_nodes) if engine else {}
    perf_summary: dict[str, Any] = {}
    out = ctx.workdir / "model.onnx"
    scores: dict[str, tuple[float, float]] = {}     # validation scores by the model's bytes
    shared: dict[str, Any] = {}
    if cpu_passes:
        import onnx

        from converters.onnx_int8_graph import shared_concat_ranges

        graph = onnx.load(str(prepared), load_external_data=False)
        ranges = calibrated_ranges(cache)

    import onnx

    from converters.onnx_tail import postprocessing_tail, unquantise_outputs

    tail = postprocessing_tail(onnx.load(str(prepared), load_external_data=False))
    quantise_tail = bool(ctx.request.options.get("quantise_tail", False))
    float_tail = {} if quantise_tail else tail
    float_nodes.update(float_tail)
    freed_outputs: list[str] = []
    fallback = QuantiserFallback(ctx.profile.name, ctx.request.model, ctx.progress)
    # x86 without VNNI: 7-bit weights or 7-bit inputs per layer, every artifact proved exact
    # (converters/x86_bits); the previous default (7-bit weights everywhere) until chosen.
    split: BitSplit | None = BitSplit("w7a8") if cpu_passes and plan.exact_split else None
    exactness: dict[str, Any] = {}

    def make(exclude: set[str], wide: set[str] | None = None) -> Path:
        nonlocal split, exactness
        exclude = exclude | set(float_tail) | set(engine.float_nodes if engine else ())
        shared.clear()
        if cpu_passes:
            shared.update(shared_concat_ranges(graph, ranges, exclude))
        # bias correction measured 7-bit weights: a layer given 8-bit ones keeps its own bias,
        # and AdaRound's rounding on the 8-bit grid once made (after the split is chosen)
        eight = split.eight_bit_nodes() if split is not None else frozenset()
        src = engine.source_for(exclude, ctx.workdir, eight) if engine else prepared

        def quantise_with(overrides: dict[str, Any]) -> None:
            fallback.run(lambda cfg: _quantise_static(src, cache, method, plan, exclude, out,
                                                      overrides, cfg),
                         check=lambda model: runs_as_written(model,
                                                             ctx.data.calibration.sample(0)))
            if not has_external_data(out):
                if not quantise_tail:
                    freed_outputs[:] = unquantise_outputs(out)
                _keep_float(out)

        if split is None:
            # QNN: the lifted layers' activations in uint16 (converters/onnx_mixed)
            quantise_with({**shared, **_uint16_overrides(src, wide)} if wide else shared)
        else:
            from converters.x86_bits import enforce

            split, exactness = enforce(out, split, ranges, shared, quantise_with,
                                       f"target {ctx.profile.name}")
        return out

    if engine and (engine.range_candidates or engine.bias or engine.adaround):  # on the metric
        ctx.progress(f"{ctx.profile.name}: choosing ranges on the task metric (quantising "
                     "and validating each candidate)")

        def drop_with(candidate: Path | None) -> float:
            nonlocal cache, ranges
            if candidate is not None:
                cache, ranges = candidate, calibrated_ranges(candidate)
            return _validation_score(ctx, make(set()), scores)[0]

        chosen = engine.choose(drop_with)
        if chosen is not None:
            cache, ranges = chosen, calibrated_ranges(chosen)
    split_drops: dict[str, dict[str, float]] = {}
    made = False
    if split is not None:
        from converters.x86_bits import candidates as split_candidates
        from converters.x86_bits import choose as choose_split

        ctx.progress(f"{ctx.profile.name}: choosing 7-bit weights or 7-bit inputs per layer")

        # (candidate, split as made, its proof) of the quantisation ``out`` holds
        last_scored: list[tuple[BitSplit, BitSplit, dict[str, Any]]] = []

        def score_of(candidate: BitSplit) -> tuple[float, float]:
            nonlocal split
            split = candidate
            score = _validation_score(ctx, make(set()), scores)
            last_scored[:] = [(candidate, split, exactness)]
            return score

        splits = split_candidates(prepared, ctx.data.calibration.iter_samples(), ranges)
        forced = ctx.request.options.get("bit_split")     # experiments and benchmarks
        if forced is not None:
            if forced not in splits:
                raise ConfigError(f"unknown bit split {forced!r}",
                                  hint=f"use one of {', '.join(splits)}")
            splits = {forced: splits[forced]}
        split, split_drops = choose_split(splits, score_of)
        if engine and engine.adaround_enabled:
            _round_eight_bit_on_the_metric(ctx, engine, split, split_drops, make)
            if engine.eight_bit:        # the engine's weights changed since the split's scoring
                last_scored.clear()
        if last_scored and last_scored[0][0] is split:
            # The split chosen was the last one quantised (always so with one candidate) and
            # nothing changed since: ``out`` already holds what make(set()) would write again
            # (builds are deterministic), so it is not quantised a third time.
            split, exactness = last_scored[0][1], last_scored[0][2]
            made = True
    per = "per channel" if plan.per_channel else "per tensor"
    ctx.progress(f"{ctx.profile.name}: quantising (QDQ, {plan.activation_type} activations, "
                 f"{plan.weight_type} weights {per})")
    if not made:
        make(set())
    from converters.onnx_unquantisable import any_quantised, ship_fp32, unquantisable_nodes

    if not any_quantised(out):                  # e.g. a scikit-learn tree ensemble
        return ship_fp32(ctx, ctx.data.model)
    import onnx

    float_nodes.update(unquantisable_nodes(onnx.load(str(prepared), load_external_data=False)))
    float_nodes.update(_recurrent(prepared, ctx.data.states))
    native = _native(ctx, facts)
    perf_aware = bool(ctx.request.options.get("perf_aware", True))
    large = has_external_data(prepared)   # over 2 GB: each trial would re-quantise it all
    if not plan.qnn and native and perf_aware and not large:
        from converters.onnx_perf import slower_groups

        ctx.progress(f"{ctx.profile.name}: measuring which node groups are faster in float")
        perf_floats, perf_summary = slower_groups(ctx, prepared, make, _quantised_nodes(out),
                                                  facts, out)
        float_nodes.update(perf_floats)
        make(set(float_nodes))
        from converters.onnx_perf import all_float_verdict

        verdict = all_float_verdict(perf_summary) if not _quantised_nodes(out) else None
        if verdict is not None:
            ctx.progress(f"{ctx.profile.name}: {verdict}")
            perf_summary = {**perf_summary, "verdict": verdict}
            if perf_summary.get("ships") == "fp32 source" and "fp32" in ctx.profile.precisions \
                    and not ctx.profile.static_shapes and not ctx.data.source.external_data:
                from converters.onnx_unquantisable import ship_source

                return ship_source(ctx, verdict, {
                    "performance_aware": "measured on the build machine",
                    "performance": perf_summary, "build_machine": facts,
                    "float_nodes": dict(sorted(float_nodes.items())),
                    **({"warnings": [f"{ctx.profile.name}: {caveat}"]} if caveat else {})})
    plan_details: dict[str, Any] = asdict(plan)
    details_base = {
        "pass": "static-qdq",
        "performance_aware": "skipped: turned off (--no-perf-aware)" if not perf_aware
        else "skipped: the model is over 2 GB (external data)" if large
        else "measured on the build machine" if native and not plan.qnn
        else "skipped: the build machine cannot run this target's kernels",
        **({"performance": perf_summary} if perf_summary else {}),
        "plan": plan_details, "build_machine": facts,
        **({"warnings": [f"{ctx.profile.name}: {w}" for w in (caveat, perf_summary.get(
            "verdict")) if w]} if caveat or perf_summary.get("verdict") else {}),
        "opset": {"source": source_opset, "artifact": model_opset_path(out)},
        "postprocessing_tail": ({"float": sorted(tail), "outputs_unquantised": freed_outputs}
                                if not quantise_tail else
                                {"float": [], "quantised_on_request": sorted(tail)}),
        "calibration": {"method": ctx.request.calibration_method,
                        "samples": len(ctx.data.calibration),
                        "synthetic": ctx.data.synthetic,
                        "streamed_chunk": 16},
    }
    if _validation_score(ctx, out, scores)[0] > ctx.request.max_accuracy_drop:
        # A forced-quantised tail (--quantise-tail) stays quantised: the gate must see it.
        candidates = _quantised_nodes(out) - (set(tail) if quantise_tail else set())
        mixed = _mixed_precision(ctx, plan, out, candidates, float_nodes, engine, prepared,
                                 make, native)
        float_nodes.update(mixed.float_nodes)
        details_base["mixed_precision"] = {
            **mixed.details, "uint16_nodes": dict(sorted(mixed.uint16_nodes.items()))}
    details_base["graph_passes"] = {
        **rewritten, "concat_shared_range_tensors": sorted(shared)
    } if cpu_passes else "skipped: " + ("QNN target" if plan.qnn else "the model is over 2 GB")
    if bias_vectors:    # on every static plan: QNN's quantiser has the same per-channel code
        details_base["gemm_bias_as_vector"] = bias_vectors
    if fallback.warnings:
        details_base["warnings"] = [*details_base.get("warnings", []), *fallback.warnings]
        details_base["quantiser_configuration"] = fallback.config.name
    details_base["quantisation_passes"] = engine.report() if engine else \
        details_base["graph_passes"]
    if split is not None:
        plan_details["bit_split"] = {
            **split.to_dict(), "score_by_policy": {
                k: {m: float(f"{x:.6g}") for m, x in v.items()} for k, v in split_drops.items()},
            "exactness": exactness}
    if not large:
        _check_runs_as_declared(ctx, out)
    quantised = len(_quantised_nodes(out))
    if not quantised and perf_summary.get("verdict") and "fp32" in ctx.profile.precisions:
        # The performance step left every node float: the artifact is the FP32 graph (with its
        # exact rewrites), so the manifest says fp32, like a shipped source, not the request.
        details_base["requested_precision"] = ctx.precision
        ctx = replace(ctx, precision="fp32")
    return accept(ctx, out, {**details_base, "float_nodes": dict(sorted(float_nodes.items())),
                             "quantised_nodes": quantised})


def _round_eight_bit_on_the_metric(ctx: BackendContext, engine: Any, split: BitSplit,
                                   drops: dict[str, dict[str, float]], make: Any) -> None:
    """AdaRound again on the 8-bit grid for the layers the chosen split gives 8-bit weights
    (it rounded them on the 7-bit one), kept only when the build scores at least as well with
    it (gate drop, then output error): lower layer error is not the task metric."""
    engine.round_eight_bit(split.eight_bit_nodes(), ctx.data.calibration)
    if not engine.eight_bit:
        return
    chosen = drops.get(split.policy)
    if chosen is None:
        return
    ctx.progress(f"{ctx.profile.name}: AdaRound again on the 8-bit grid for "
                 f"{len(engine.eight_bit)} layer(s) the bit split gave 8-bit weights")
    without = (chosen["drop"], chosen["output_error"])
    with_it = _validation_score(ctx, make(set()))
    engine.eight_bit_enabled = with_it <= without
    engine.eight_bit_choice = {"gate_drop_with": float(f"{with_it[0]:.6g}"),
                               "gate_drop_without": float(f"{without[0]:.6g}")}


def _mixed_precision(ctx: BackendContext, plan: QuantPlan, out: Path, candidates: set[str],
                     float_nodes: dict[str, str], engine: Any, prepared: Path,
                     make: Any, native: bool) -> Any:
    """The accuracy-aware step (converters/onnx_mixed): lift measured layers out of INT8."""
    import onnx

    from converters.mixed_precision import MixedPrecisionSettings
    from converters.onnx_mixed import recover

    # Ranked against FP32 weights (AdaRound's layers too: their rounding error must show),
    # corrected biases kept: the ranking should see what correction cannot cancel.
    reference = engine.fp32_model(ctx.workdir) if engine else prepared
    # A lifted layer computes on the float weight and uncorrected bias quantize_static would
    # leave it when excluded.
    src = engine.source_for(set(float_nodes) | candidates, ctx.workdir) if engine else prepared
    return recover(ctx, qdq=out, float_model=onnx.load(str(src)),
                   reference=onnx.load(str(reference)), candidates=candidates,
                   already_float=set(float_nodes), make=make,
                   wide=plan.qnn and plan.activation_type == "uint8",
                   timed_here=native and not plan.qnn,
                   settings=MixedPrecisionSettings(max_measured_layers=int(
                       ctx.request.options.get("mixed_precision_layers", 16)),
                       max_prefixes=_optional_int(ctx.request.options.get(
                           "mixed_precision_prefixes"))))


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _keep_float(path: Path) -> None:
    """Float layers stay float under ONNX Runtime's load-time weight quantisation
    (converters/ort_float)."""
    import onnx

    from converters.onnx_utils import save_model
    from converters.ort_float import keep_float

    model = onnx.load(str(path))
    if keep_float(model):
        save_model(model, path)


def _check_runs_as_declared(ctx: BackendContext, path: Path) -> None:
    """Refuse an artifact whose float layers ONNX Runtime would run as INT8 anyway."""
    import onnx

    from converters.ort_float import runtime_quantised

    leaked = runtime_quantised(onnx.load(str(path)))
    if leaked:
        raise ConversionError(
            f"target {ctx.profile.name}: ONNX Runtime would quantise {len(leaked)} layer(s) "
            f"this artifact keeps float ({', '.join(leaked[:5])}"
            f"{', ...' if len(leaked) > 5 else ''}) with per-tensor weights on load",
            hint="this is a converter bug: report it with the model; --precision fp32 "
                 "builds meanwhile")


def _uint16_overrides(src: Path, layers: set[str]) -> dict[str, Any]:
    """TensorQuantOverrides putting the activations around ``layers`` in uint16 (QNN)."""
    import onnx

    m = onnx.load(str(src), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    tensors = sorted({t for n in m.graph.node if n.name in layers
                      for t in (*n.input, *n.output) if t and t not in inits})
    return {t: [{"quant_type": _qtype("uint16")}] for t in tensors}


def _validation_score(ctx: BackendContext, model: Path,
                      memo: dict[str, tuple[float, float]] | None = None) -> tuple[float, float]:
    """The gate's relative drop of the task metric for ``model`` on the validation data and,
    to break its ties, the worst output's -SNR (dB). ``memo``: scores by the model's bytes
    (sha256), so the model the split's scoring validated is not run again for the gate; not
    with external data, which the digest of the .onnx file would not cover."""
    if memo is not None and not has_external_data(model):
        import hashlib

        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        if digest not in memo:
            memo[digest] = _validation_score(ctx, model)
        return memo[digest]
    from converters.validate import gate_drop, run_onnx

    report = ctx.data.accuracy_report(run_onnx(model, ctx.data.validation,
                                               states=ctx.data.states))
    snr = report["summary"].get("snr_db_min")        # None: identical outputs
    return (float(gate_drop(report, ctx.data.gate_metric, ctx.profile.name)[1]),
            -float(snr) if snr is not None else -float("inf"))


def _engine(ctx: BackendContext, prepared: Path, plan: QuantPlan) -> Any:
    """The quantisation engine's graph passes (converters/quant) for this build's effort."""
    from converters.quant import graph_passes

    effort = str(ctx.request.options.get("effort") or "default")
    ctx.progress(f"{ctx.profile.name}: quantisation passes (effort {effort})")
    return graph_passes(prepared, ctx.data.calibration, effort=effort,
                        reduce_range=plan.reduce_range, workdir=ctx.workdir,
                        override=ctx.request.options.get("quant_passes"))


def _recurrent(prepared: Path, states: Mapping[str, str]) -> dict[str, str]:
    """A streaming model's state path stays float: its error would compound step by step."""
    if not states:
        return {}
    import onnx

    from converters.io_layout import recurrent_nodes

    g = onnx.load(str(prepared), load_external_data=False).graph
    names = recurrent_nodes([(n.name, list(n.input), list(n.output)) for n in g.node], states)
    return dict.fromkeys(sorted(names), "sequence: on the recurrent state path (its error "
                                        "would compound along the stream)")


def _native(ctx: BackendContext, facts: dict[str, Any]) -> bool:
    """Whether this machine runs the target's CPU kernels, so timing it here means something."""
    isa = ctx.profile.options.get("isa")
    machine = facts.get("machine", "")
    return (isa == "x86_64" and machine in ("x86_64", "AMD64")) or \
        (isa == "arm64" and machine in ("aarch64", "arm64"))


def _announce(ctx: BackendContext, plan: QuantPlan, facts: dict[str, Any]) -> str | None:
    """Say which ISA the artifact is for, and whether this machine's gate is faithful to it."""
    ctx.progress(f"{ctx.profile.name}: {ctx.precision} for {plan.target_isa} "
                 f"({'7-bit' if plan.reduce_range else '8-bit'} weights): {plan.reason}")
    caveat = build_machine_caveat(plan, facts)
    if caveat:
        ctx.progress(f"{ctx.profile.name}: {caveat}")
    return caveat


def _dynamic(ctx: BackendContext, accept: Any) -> BuiltArtifact:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    facts = cpu_facts()
    # The same rule as static INT8: dynamic MatMulInteger runs the same u8s8 kernels.
    plan = plan_for(ctx.profile.name, dict(ctx.profile.options), ctx.precision)
    caveat = _announce(ctx, plan, facts)
    reduce_range = plan.reduce_range
    model = ctx.data.upgraded(MIN_QDQ_OPSET)
    src = save_model(model, ctx.workdir / "source.onnx")
    out = ctx.workdir / "model.onnx"
    with _quiet():
        quantize_dynamic(str(src), str(out), per_channel=True, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8,
                         use_external_data_format=has_external_data(src))
    inline_if_fits(out)
    from converters.onnx_unquantisable import any_quantised, ship_fp32

    if not any_quantised(out):
        return ship_fp32(ctx, model)
    exactness: dict[str, Any] = {}
    if plan.exact_split and not has_external_data(out):     # x86 without VNNI: prove it
        import onnx

        from converters.x86_bits import check_artifact

        exactness = {"exactness": check_artifact(onnx.load(str(out)),
                                                 f"target {ctx.profile.name}")}
    built: BuiltArtifact = accept(ctx, out, {
        "pass": "dynamic-int8", "build_machine": facts,
        "plan": {"weight_type": "int8", "per_channel": True, "reduce_range": reduce_range,
                 "target_isa": plan.target_isa,
                 "reason": "dynamic: activations quantised at run time; no calibration; "
                           "7-bit weights on every layer (no input range to hold at 127); "
                           + plan.reason, **exactness},
        **({"warnings": [f"{ctx.profile.name}: {caveat}"]} if caveat else {})})
    return built

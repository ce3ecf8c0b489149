"""Orchestrate a build: check everything first, then let each target's backend produce.

Order matters for the "nothing half-written" promise: targets and precisions are resolved, the
model is loaded and checked (every offending node named at once), calibration and validation
data are loaded and matched against the inputs, and the FP32 reference is computed, all before
a single backend runs. Backends work in a scratch directory; only accepted artifacts leave it.

What a backend finds in ``ctx.data`` (also used by converters/tflite) is a
:class:`converters.context.SourceData`: the checked source (``model``, ``model_path``,
``source``), ``inputs`` with ``--input-shape`` applied, ``calibration`` and ``validation``
samples, the FP32 ``reference`` on the validation samples, ``labels``, the ``task`` the gate
measures, ``classifier_outputs``, ``gate_metric``, a sequence's ``states``, ``prequantised``
op counts and whether the data is ``synthetic``; each field is documented there.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from converters.api import BackendContext, BuildRequest, BuiltArtifact, ProgressFn, get_backend
from converters.context import SourceData
from converters.data import InputSpec, Preprocessing, SampleSet, load_labels, load_samples
from converters.drift_baseline import drift_reference_for
from converters.feeds import CarriedSamples, Samples, is_feed_source, spool
from converters.io_layout import parse_states, state_pairs
from converters.model_check import SourceModel, load_source
from converters.tasks import TaskSpec
from converters.validate import (
    classifier_outputs,
    model_inputs,
    run_onnx,
    synthetic_samples,
    tensor_decls,
)
from edgeops.drift.reference import DriftReference
from edgeops.errors import (
    AccuracyGateError,
    BadContentError,
    EdgeOpsError,
    UnsupportedModelError,
    UsageError,
)
from edgeops.targets import TargetProfile, get_profile

__all__ = ["BuildOutcome", "build", "build_artifacts", "check_artifacts_fit", "check_evidence",
           "check_one_file", "resolve_targets"]

SYNTHETIC_CALIBRATION_SAMPLES = 32
SYNTHETIC_VALIDATION_SAMPLES = 16
MAX_VALIDATION_SAMPLES = 200        # accuracy metrics; more adds time, not much confidence
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class BuildOutcome:
    """Everything the packaging step needs: accepted artifacts plus what the manifest states."""

    source: SourceModel
    inputs: list[InputSpec]
    outputs: list[tuple[str, str, tuple[int | str, ...]]]
    artifacts: list[BuiltArtifact]
    baseline: dict[str, Any]
    data: dict[str, Any]                     # where samples came from, counts, warnings
    warnings: list[str] = field(default_factory=list)
    drift: DriftReference | None = None      # converters/drift_baseline.py


def resolve_targets(request: BuildRequest) -> list[tuple[TargetProfile, str]]:
    """Profiles and precisions, checked before anything runs (unknown target: exit 2)."""
    if not request.targets:
        raise UsageError("no --target given", hint="see `edgeops targets`")
    if request.calibration_method not in CALIBRATION_METHODS:
        raise UsageError(f"unknown calibration method '{request.calibration_method}'",
                         hint=f"use one of {', '.join(CALIBRATION_METHODS)}")
    from converters.quant.engine import ALL_PASSES, EFFORTS, passes_for

    try:
        passes_for(str(request.options.get("effort") or "default"),
                   request.options.get("quant_passes"))
    except ValueError as exc:
        raise UsageError(str(exc).split(";")[0],
                         hint=f"efforts: {', '.join(EFFORTS)} (--effort); quantisation "
                              f"passes: {', '.join(ALL_PASSES)}") from None
    if not 0.0 <= request.max_accuracy_drop < 1.0:
        raise UsageError("--max-accuracy-drop must be in [0, 1) (0.01 = 1% relative)")
    per_target = _per_target_precision(request.precision, request.targets)
    out = []
    for name in dict.fromkeys(request.targets):
        profile = get_profile(name)
        precision = per_target.get(name) or (
            request.precision if request.precision and "=" not in request.precision
            else profile.default_precision)
        if precision not in profile.precisions:
            raise UsageError(f"target {name} does not offer precision '{precision}'",
                             hint=f"{name} offers: {', '.join(profile.precisions)}")
        out.append((profile, precision))
    return out


def _per_target_precision(spec: str | None, targets: tuple[str, ...]) -> dict[str, str]:
    """``x86-cpu=int8,cuda-gpu=fp16`` → per-target precisions (a bare value applies to all)."""
    if not spec or "=" not in spec:
        return {}
    out: dict[str, str] = {}
    for part in spec.split(","):
        target, sep, prec = part.strip().partition("=")
        if not sep or not target or not prec:
            raise UsageError(f"--precision '{spec}' is not PRECISION or TARGET=PRECISION,...")
        if target not in targets:
            raise UsageError(f"--precision names target '{target}', which is not a --target")
        out[target] = prec
    return out


def _outputs(model: Any) -> list[tuple[str, str, tuple[int | str, ...]]]:
    import onnx

    outs = []
    for vi in model.graph.output:
        tt = vi.type.tensor_type
        dims: list[int | str] = []
        for i, d in enumerate(tt.shape.dim):
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or f"d{i}"))
        dtype = str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))) \
            if tt.elem_type else "unknown"
        outs.append((vi.name, dtype, tuple(dims)))
    return outs


def _baseline(samples: SampleSet) -> dict[str, Any]:
    """Per-input feature statistics for on-device drift detection.

    Channel axis: axis 1 of the sample (NCHW images, [batch, features] tables); a rank-1 sample
    is one feature. Values are rounded to 6 significant digits so builds stay byte-identical.
    """
    out: dict[str, Any] = {}
    for name, a in sorted(samples.arrays.items()):
        if not np.issubdtype(a.dtype, np.number) or a.ndim < 2:
            continue
        x = a.astype(np.float64)
        axes = tuple(i for i in range(x.ndim) if i != 1)
        stats = {"mean": x.mean(axis=axes), "std": x.std(axis=axes),
                 "min": x.min(axis=axes), "max": x.max(axis=axes)}
        out[name] = {"axis": 1, "samples": len(samples),
                     **{k: [float(f"{v:.6g}") for v in s.tolist()] for k, s in stats.items()}}
    return out


def preprocessing_from(spec: Mapping[str, Any] | None) -> Preprocessing | None:
    """A ``Preprocessing`` from its JSON form (``size``, ``layout``, ``mean``, ``std``,
    ``scale``); unknown keys or bad values are a :class:`UsageError`."""
    if spec is None:
        return None
    known = {"size", "layout", "mean", "std", "scale"}
    if not isinstance(spec, Mapping) or set(spec) - known:
        raise UsageError(f"preprocessing spec has unknown keys {sorted(set(spec) - known)}"
                         if isinstance(spec, Mapping) else "preprocessing spec is not an object",
                         hint=f"use keys {sorted(known)}")
    try:
        kw: dict[str, Any] = {}
        if "size" in spec:
            h, w = (int(v) for v in spec["size"])
            kw["size"] = (h, w)
        if "layout" in spec:
            if spec["layout"] not in ("NCHW", "NHWC"):
                raise ValueError("layout must be NCHW or NHWC")
            kw["layout"] = spec["layout"]
        for k in ("mean", "std"):
            if k in spec:
                kw[k] = tuple(float(v) for v in spec[k])
        if "scale" in spec:
            kw["scale"] = float(spec["scale"])
    except (TypeError, ValueError) as exc:
        raise UsageError(f"preprocessing spec is invalid: {exc}") from None
    return Preprocessing(**kw)


def _source_name(src: Any) -> str:
    return Path(src).name if not is_feed_source(src) else f"python feeds ({type(src).__name__})"


def _read(src: Any, inputs: list[InputSpec], what: str, pre: Preprocessing | None,
          workdir: Path, values: dict[str, float], zeros: list[str]) -> Samples:
    if is_feed_source(src):
        return spool(src, inputs, what=what, workdir=workdir, values=values, zeros=zeros)
    return load_samples(src, inputs, what=what, preprocessing=pre, values=values, zeros=zeros)


def _load_data(request: BuildRequest, inputs: list[InputSpec], progress: ProgressFn,
               workdir: Path, states: Mapping[str, str] | None = None
               ) -> tuple[Samples, SampleSet, np.ndarray | None, dict[str, Any]]:
    """Calibration and validation samples, labels and what the report says about them.

    Python feed sources are spooled under ``workdir`` (removed with it); a sequence's state
    inputs may be absent from the data (``states``): they start at zeros.
    """
    info: dict[str, Any] = {}
    cal: Samples | None = None
    val_src: Samples | None = None
    labels = None
    pre = preprocessing_from(request.options.get("preprocessing"))
    values = {k: float(v) for k, v in (request.options.get("input_values") or {}).items()}
    unknown = sorted(set(values) - {s.name for s in inputs})
    if unknown:
        raise UsageError(f"--input-value names unknown inputs {unknown}",
                         hint=f"the model's inputs are {[s.name for s in inputs]}")
    zeros = sorted(set((states or {}).values()))
    work = workdir / "data"
    if request.calibration is not None:
        cal = _read(request.calibration, inputs, "calibration", pre, work, values, zeros)
        info["calibration"] = {"source": _source_name(request.calibration), "samples": len(cal)}
    if request.validation is not None:
        if not is_feed_source(request.validation):
            labels = load_labels(request.validation, inputs)
        val_src = _read(request.validation, inputs, "validation", pre, work, values, zeros)
        info["validation"] = {"source": _source_name(request.validation),
                              "samples": len(val_src)}
    if cal is None and val_src is None:
        progress("no --calibration/--validation: using seeded synthetic samples")
        cal = synthetic_samples(inputs, SYNTHETIC_CALIBRATION_SAMPLES, seed=0, values=values,
                                zeros=zeros)
        val_src = synthetic_samples(inputs, SYNTHETIC_VALIDATION_SAMPLES, seed=1, values=values,
                                    zeros=zeros)
        info["synthetic"] = True
        info["calibration"] = {"source": "synthetic(seed=0)", "samples": len(cal)}
        info["validation"] = {"source": "synthetic(seed=1)", "samples": len(val_src)}
    elif val_src is None:
        assert cal is not None
        val_src = cal
        info["validation"] = {**info["calibration"], "note": "calibration data reused"}
    elif cal is None:
        cal = val_src
        info["calibration"] = {**info["validation"], "note": "validation data reused"}
    assert cal is not None and val_src is not None
    if len(val_src) > MAX_VALIDATION_SAMPLES:
        labels = labels[:MAX_VALIDATION_SAMPLES] if labels is not None else None
        info["validation"]["used"] = MAX_VALIDATION_SAMPLES
    val = val_src if isinstance(val_src, SampleSet) and len(val_src) <= MAX_VALIDATION_SAMPLES \
        else val_src.head(min(len(val_src), MAX_VALIDATION_SAMPLES))
    return cal, val, labels, info


def _states(request: BuildRequest, model: Any, progress: ProgressFn) -> tuple[dict[str, str],
                                                                              str | None]:
    """A streaming model's state output → input pairs, and how they were found (or none).

    ``--state OUT=IN`` names them; ``--sequence`` requires some; by default (``sequence`` unset)
    pairs whose names and shapes match are taken and reported; ``--no-sequence`` turns it off.
    """
    mode = request.options.get("sequence")
    inits = {i.name for i in model.graph.initializer}
    ins = [d for d in tensor_decls(model.graph.input) if d.name not in inits]
    outs = tensor_decls(model.graph.output)
    given = list(request.options.get("states") or ())
    if given:
        return parse_states(given, [d.name for d in ins], [d.name for d in outs]), "--state"
    if mode is False:
        return {}, None
    pairs = state_pairs(ins, outs)
    if mode is True and not pairs:
        raise UsageError("--sequence: no output/input pair looks like a recurrent state "
                         f"(outputs {[d.name for d in outs]}, inputs {[d.name for d in ins]})",
                         hint="name the pairs with --state OUTPUT=INPUT")
    if pairs and mode is None:
        progress("sequence mode (auto: state outputs match inputs by name and shape): "
                 + ", ".join(f"{o} -> {i}" for o, i in pairs.items())
                 + "; --no-sequence turns it off")
    return pairs, ("--sequence" if mode else "auto") if pairs else None


def _check_finite(reference: Mapping[str, np.ndarray], samples: int) -> None:
    """A source model whose FP32 outputs hold NaN/Inf has nothing to be compared against."""
    bad = {}
    for name, out in reference.items():
        a = np.asarray(out)
        if np.issubdtype(a.dtype, np.floating):
            rows = ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1) if a.ndim else ~np.isfinite(a)
            if rows.any():
                bad[name] = int(np.count_nonzero(rows))
    if bad:
        where = ", ".join(f"'{n}' on {k} of {samples} samples" for n, k in sorted(bad.items()))
        raise BadContentError(f"the source model outputs NaN or Inf ({where})",
                              hint="fix the model (bad weights or export); nothing was built")

# Artifact weight bytes per fp32 weight byte, by precision (INT8 stores 1 byte per weight).
_WEIGHT_SCALE = {"fp32": 1.0, "fp16": 0.5, "int16": 0.5, "int8": 0.25, "int8-dynamic": 0.25}


def check_artifacts_fit(source: SourceModel, targets: list[tuple[TargetProfile, str]]) -> None:
    """Refuse, before any work, an ONNX artifact whose weights cannot fit in one file.

    A bundle carries one self-contained file per target (the agent fetches, verifies and loads
    exactly that file), and an ONNX file without external data holds under 2 GB; so a source
    over that (weights in external data) builds only at a precision that shrinks it enough.
    """
    from converters.onnx_utils import PROTOBUF_SAFE_BYTES

    if not source.external_data:
        return                                  # a one-file source fits as one file
    weights = source.weight_bytes
    for profile, precision in targets:
        est = weights * _WEIGHT_SCALE.get(precision, 1.0)
        if profile.format != "onnx" or est <= PROTOBUF_SAFE_BYTES:
            continue
        fits = [p for p in profile.precisions
                if weights * _WEIGHT_SCALE.get(p, 1.0) <= PROTOBUF_SAFE_BYTES]
        raise UnsupportedModelError(
            f"target {profile.name}: the {precision} artifact of this model would hold "
            f"{est / 2**30:.2f} GiB of weights, over the 2 GB one ONNX file can hold (bundles "
            "carry one self-contained file per target)",
            hint=(f"build it with --precision {profile.name}={fits[0]} (this target offers "
                  f"{', '.join(fits)} at this size)" if fits else
                  f"{profile.name} offers no precision that small; pick another --target or a "
                  "smaller model") + "; nothing was built")


def check_one_file(artifact: BuiltArtifact) -> None:
    """An ONNX artifact that ended up with external data (over 2 GB) cannot be bundled."""
    from converters.onnx_utils import has_external_data

    if artifact.format == "onnx" and has_external_data(artifact.path):
        raise UnsupportedModelError(
            f"target {artifact.target}: the {artifact.precision} artifact came out over the 2 GB "
            "one ONNX file can hold (its weights went to external data, e.g. too many nodes "
            "kept in float); bundles carry one self-contained file per target",
            hint=f"use a smaller precision (--precision {artifact.target}=int8) or allow a "
                 "larger accuracy drop so fewer weights stay float; nothing was built")


def task_for(request: BuildRequest, model: Any, reference: Mapping[str, np.ndarray],
             validation: SampleSet, scores: frozenset[str] = frozenset(),
             labels: bool = False) -> TaskSpec:
    """The task the gate measures (``--task``, default auto) and a user's ``--metric``.

    ``options["metric"]`` is ``module:function`` or (Python API) the function itself: it gets
    one sample's FP32 and candidate outputs and returns a higher-is-better score.
    """
    from converters.tasks import TASKS, infer_task, load_user_metric

    task = str(request.options.get("task") or "auto")
    if task not in TASKS:
        raise UsageError(f"unknown --task '{task}'", hint=f"use one of {', '.join(TASKS)}")
    feeds = {k: tuple(np.shape(v)) for k, v in validation.sample(0).items()}
    try:
        spec = infer_task(model, reference, feeds, task, scores, labels)
    except ValueError as exc:
        raise UsageError(str(exc), hint="pick the --task that matches the model's outputs, or "
                                        "--task auto") from None
    metric = request.options.get("metric")
    if metric is None:
        return spec
    if isinstance(metric, str):
        try:
            fn, name = load_user_metric(metric), metric
        except ValueError as exc:
            raise UsageError(str(exc), hint="pass --metric package.module:function, importable "
                                            "from the current directory") from None
    elif callable(metric):
        fn, name = metric, getattr(metric, "__name__", "user_metric")
    else:
        raise UsageError("the metric option is neither module:function nor a function")
    return replace(spec, user_metric=fn, user_metric_name=name,
                   why=spec.why + f"; gated on the user metric {name}")


# What validation data must show for each task's metric to judge anything (the refusal's hint).
_EVIDENCE_WANTED = {"detection": "with objects the model detects",
                    "segmentation": "with the classes the model segments",
                    "text-detection": "with text in it", "ctc": "with text in it",
                    "vad": "in which the decision changes, e.g. speech and silence",
                    "classification": "in which the model takes both decisions"}


def check_evidence(task: TaskSpec, reference: Mapping[str, np.ndarray],
                   labels: np.ndarray | None, targets: list[str], samples: int, *,
                   synthetic: bool = False) -> None:
    """Refuse (:class:`AccuracyGateError`, before anything is built) when FP32's own outputs on
    the validation data give the task metric nothing to judge: every artifact would pass it (or
    fail it at 100 %) without proving anything about its accuracy."""
    from converters.tasks import missing_evidence

    data = f"the {samples} {'synthetic ' if synthetic else ''}validation sample" \
           f"{'' if samples == 1 else 's'}"
    found = missing_evidence(task, reference, data, labels)
    if found is None:
        return
    metric, why = found
    names = ("target " if len(targets) == 1 else "targets ") + ", ".join(targets)
    wanted = _EVIDENCE_WANTED.get(task.task, "in which the model finds what it is for")
    raise AccuracyGateError(
        f"{names}: {metric} cannot judge this artifact: {why}",
        hint=f"give --validation (or --calibration) data {wanted}, or choose the gate metric "
             "with --gate-metric cosine; nothing was built")


def build(request: BuildRequest, progress: ProgressFn, workdir: Path) -> BuildOutcome:
    """Check everything, then run each target's backend; artifacts land under ``workdir``.

    Whatever fails below (ONNX Runtime, its quantiser, shape inference, a backend) reaches the
    caller as one :class:`edgeops.errors.BadContentError` line naming the model, the step and
    the node or input involved (converters/failures); the cause stays chained for ``--debug``.
    """
    step = ["loading the model"]

    def tracked(msg: str) -> None:
        step[0] = msg
        progress(msg)

    try:
        return _build(request, tracked, workdir)
    except (EdgeOpsError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        from converters.failures import explain

        raise explain(exc, request.model, f"'{step[0]}'") from exc


def _build(request: BuildRequest, progress: ProgressFn, workdir: Path) -> BuildOutcome:
    targets = resolve_targets(request)
    preprocessing_from(request.options.get("preprocessing"))
    progress(f"checking {request.model}")
    source = load_source(request.model)
    check_artifacts_fit(source, targets)
    from converters.prequantised import check_prequantised_targets, quantised_ops

    prequantised = quantised_ops(source.model)
    check_prequantised_targets(prequantised, targets)
    inputs = model_inputs(source.model, request.input_shapes, request.options.get("batch_axes"))
    states, found = _states(request, source.model, progress)
    for profile, _ in targets:
        if profile.static_shapes:
            dyn = [s.name for s in inputs
                   if any(d is None for i, d in enumerate(s.shape) if i != s.batch_axis)]
            if dyn:
                raise UsageError(f"target {profile.name} needs static shapes; inputs {dyn} "
                                 "have dynamic dims",
                                 hint="fix them with --input-shape NAME=1x3x224x224")
    cal, val, labels, info = _load_data(request, inputs, progress, workdir, states)
    if states:
        # Calibration and the passes see the states FP32 carries along the stream, not zeros.
        info["sequence"] = {"states": dict(states), "found": found}
        cal = CarriedSamples(cal, source.path, states)
        val = CarriedSamples(val, source.path, states).head(len(val))
    progress(f"FP32 reference on {len(val)} validation samples")
    reference = run_onnx(source.path, val, threads=request.threads, states=states)
    _check_finite(reference, len(val))
    drift = drift_reference_for(request, source.path, inputs, val, reference,
                                synthetic=bool(info.get("synthetic")), progress=progress,
                                preprocessing=preprocessing_from(request.options.get(
                                    "preprocessing")), stateful=bool(states))
    gate_metric = str(request.options.get("gate_metric", "auto"))
    if gate_metric not in ("auto", "top1", "cosine"):
        raise UsageError(f"unknown gate metric '{gate_metric}'", hint="use auto, top1 or cosine")
    classes = classifier_outputs(source.model) if gate_metric == "auto" else (
        [n for n, _, shape in _outputs(source.model) if len(shape) == 2]
        if gate_metric == "top1" else [])
    task = task_for(request, source.model, reference, val, frozenset(classifier_outputs(
        source.model)), labels is not None)
    progress(f"task: {task.task} ({'inferred' if task.inferred else 'requested'}: {task.why})")
    if gate_metric == "auto":
        check_evidence(task, reference, labels, [p.name for p, _ in targets], len(val),
                       synthetic=bool(info.get("synthetic")))
    data = SourceData(source=source, inputs=tuple(inputs), calibration=cal, validation=val,
                      reference=reference, task=task, labels=labels,
                      classifier_outputs=tuple(classes), gate_metric=gate_metric,
                      states=states, prequantised=prequantised,
                      synthetic=bool(info.get("synthetic")))
    warnings: list[str] = []
    artifacts = []
    for profile, precision in targets:
        if info.get("synthetic") and precision in ("int8", "int16") and not prequantised:
            warnings.append(f"{profile.name}: {precision} calibrated on synthetic data; "
                            "accuracy on real inputs is unknown (pass --calibration)")
        progress(f"{profile.name}: building {precision}")
        tdir = workdir / profile.name
        tdir.mkdir(parents=True, exist_ok=True)
        ctx = BackendContext(request=request, profile=profile, precision=precision,
                             workdir=tdir, progress=progress, data=data)
        artifacts.append(get_backend(profile.format)(ctx))
        check_one_file(artifacts[-1])
        if artifacts[-1].precision != precision and warnings and \
                warnings[-1].startswith(f"{profile.name}: {precision} calibrated on synthetic"):
            warnings.pop()                      # shipped another precision (nothing to quantise)
        for key in ("details", "metrics"):      # backends may flag what the user must know
            src = getattr(artifacts[-1], key)
            warnings.extend(str(w) for w in (src.get("warnings") or
                                             src.get("latency", {}).get("warnings") or []))
    stats_src = cal if isinstance(cal, SampleSet) and (
        request.calibration is not None or request.validation is None) else val
    return BuildOutcome(source=source, inputs=inputs, outputs=_outputs(source.model),
                        artifacts=artifacts, baseline=_baseline(stats_src), data=info,
                        warnings=warnings,
                        drift=drift)


def build_artifacts(request: BuildRequest, progress: ProgressFn,
                    workdir: Path | None = None) -> list[BuiltArtifact]:
    """The contract entry point: accepted artifacts (in ``workdir`` or a fresh temp dir)."""
    wd = workdir or Path(tempfile.mkdtemp(prefix="edgeops-build-"))
    return build(request, progress, wd).artifacts

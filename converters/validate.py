"""Shared validation helpers: run an artifact, time it, compare it with FP32, gate it.

Every backend (ONNX here, TFLite in converters/tflite) accepts an artifact only after running it
in its real runtime on validation samples and comparing the outputs with the FP32 source model's.
These helpers are that common ground, so both backends measure and gate the same way.

Golden files (``write_golden``) are what devices replay after install. Layout of the npz:
``input/<name>`` holds the samples (first axis = samples, each fed as a batch of one), and
``output/<name>`` the artifact's outputs on them, stacked with
:func:`edgeops.golden.stack_outputs` (the layout is a contract the agent and the hardware tests
share, so it is stated in :mod:`edgeops.golden`).
"""

from __future__ import annotations

import io
import math
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from converters.data import InputSpec, SampleSet
from converters.feeds import carry
from converters.ort_session import open_session
from converters.tasks import TaskSpec
from converters.tasks import evaluate as evaluate_task
from edgeops.compare import compare_outputs, relative_drop
from edgeops.errors import AccuracyGateError, UsageError
from edgeops.fsutil import atomic_open
from edgeops.golden import stack_outputs

__all__ = [
    "DEFAULT_DYNAMIC_DIM",
    "accuracy_report",
    "accuracy_section",
    "check_gate",
    "classifier_outputs",
    "concrete_shape",
    "gate_drop",
    "latency_ms",
    "model_inputs",
    "run_onnx",
    "synthetic_samples",
    "task_note",
    "tensor_decls",
    "write_golden",
]

# Dims named in the model but not fixed by --input-shape: batch becomes 1; others must be given.
DEFAULT_DYNAMIC_DIM = 1
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)   # fixed zip timestamps keep golden files byte-identical


def _ort_dtype(elem_type: int) -> np.dtype[Any]:
    import onnx

    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def model_inputs(model: Any, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                 batch_axes: Mapping[str, int | None] | None = None) -> list[InputSpec]:
    """The model's real inputs (initialisers excluded), with ``--input-shape`` overrides applied.

    Dynamic dims are ``None`` unless an override fixes them. Each input's batch axis comes from
    the declared dims (converters/io_layout) unless ``batch_axes`` (``--batch-axis``) names it.
    An override for an unknown input or with the wrong rank is a :class:`UsageError`.
    """
    from converters.io_layout import batch_axes as discover_batch_axes

    input_shapes = dict(input_shapes or {})
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    decls = [d for d in tensor_decls(graph.input) if d.name not in inits]
    axes = discover_batch_axes(decls, batch_axes)
    specs: list[InputSpec] = []
    for vi in graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims: list[int | None] = []
        for d in tt.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None)
        rank_known = tt.HasField("shape") or vi.name in input_shapes
        if vi.name in input_shapes:
            want = tuple(input_shapes.pop(vi.name))
            if len(want) != len(dims):
                raise UsageError(f"--input-shape {vi.name}={'x'.join(map(str, want))} has rank "
                                 f"{len(want)}, the model's input has rank {len(dims)}")
            for got, fixed in zip(dims, want, strict=True):
                if got is not None and got != fixed:
                    raise UsageError(f"--input-shape {vi.name}: dim {fixed} contradicts the "
                                     f"model's fixed dim {got}")
            dims = list(want)
        axis = axes[vi.name]
        if axis is not None and axis >= len(dims):
            axis = None if rank_known else 0
        specs.append(InputSpec(vi.name, _ort_dtype(tt.elem_type), tuple(dims), axis, rank_known))
    if input_shapes:
        raise UsageError(f"--input-shape names unknown inputs {sorted(input_shapes)}",
                         hint=f"the model's inputs are {[s.name for s in specs]}")
    return specs


def tensor_decls(values: Any) -> list[Any]:
    """Graph inputs or outputs as :class:`converters.io_layout.TensorDecl` (dims as declared)."""
    from converters.io_layout import Dim, TensorDecl

    out = []
    for vi in values:
        tt = vi.type.tensor_type
        dims: tuple[Dim, ...] | None = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0
            else (d.dim_param or None) for d in tt.shape.dim) if tt.HasField("shape") else None
        out.append(TensorDecl(vi.name, tt.elem_type, dims))
    return out


def concrete_shape(spec: InputSpec) -> tuple[int, ...]:
    """The shape one sample is fed with: batch 1, every other dim fixed or an error."""
    shape: list[int] = []
    for i, d in enumerate(spec.shape):
        if d is not None:
            shape.append(d)
        elif i == spec.batch_axis:
            shape.append(DEFAULT_DYNAMIC_DIM)
        else:
            example = "x".join(str(x) if x is not None else "1" if j == spec.batch_axis
                               else "D" for j, x in enumerate(spec.shape))
            raise UsageError(f"input '{spec.name}' has a dynamic dim {i} and no data fixes it",
                             hint=f"pass --input-shape {spec.name}={example}"
                                  " or give --calibration / --validation data")
    return tuple(shape)


def synthetic_samples(inputs: Sequence[InputSpec], n: int, seed: int = 0,
                      values: Mapping[str, float] | None = None,
                      zeros: Sequence[str] = ()) -> SampleSet:
    """Deterministic stand-in samples (seeded), each input in its real shape and dtype.

    Normal floats, small non-negative integers; ``values`` (``--input-value``) fills an input
    with one value, ``zeros`` (a sequence's state inputs) with zeros. A scalar integer input (a
    sample rate, a mode) has no stand-in that means anything: it needs a value.
    """
    rng = np.random.default_rng(seed)
    values = dict(values or {})
    arrays: dict[str, np.ndarray] = {}
    for spec in inputs:
        full = concrete_shape(spec)
        shape = (n, *(d for i, d in enumerate(full) if i != spec.batch_axis))
        if spec.name in values or spec.name in zeros:
            arrays[spec.name] = np.full(shape, values.get(spec.name, 0)).astype(spec.dtype)
        elif not np.issubdtype(spec.dtype, np.floating) and spec.dtype != np.bool_ \
                and spec.batch_axis is None and int(np.prod(full)) <= 1:
            raise UsageError(f"input '{spec.name}' is a {spec.dtype} scalar (a sample rate, a "
                             "mode...): synthetic data cannot guess a valid value",
                             hint=f"pass --input-value {spec.name}=VALUE (e.g. "
                                  f"--input-value {spec.name}=16000) or give --calibration data")
        elif np.issubdtype(spec.dtype, np.floating):
            arrays[spec.name] = rng.standard_normal(shape, dtype=np.float32).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            arrays[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            arrays[spec.name] = rng.integers(0, 8, shape).astype(spec.dtype)
    return SampleSet(arrays, {s.name: s.batch_axis for s in inputs})




def run_onnx(model: Path | bytes, samples: Any,
             providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 1,
             states: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Run every sample (batch of one) through ONNX Runtime; outputs stacked over samples.

    ``states`` (output → input, a streaming model's recurrent state) runs the samples in order,
    each step fed the state its own previous step produced (converters/feeds).

    Providers missing from this onnxruntime build are skipped (CPU is the fallback), so a CUDA
    profile's artifact is still loaded and checked on a CPU-only build machine.
    """
    sess = open_session(model, providers, threads)
    names = [o.name for o in sess.get_outputs()]
    per: dict[str, list[np.ndarray]] = {n: [] for n in names}

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(names, feed), strict=True))

    for _, out in carry(run, samples, states or {}):
        for n in names:
            per[n].append(np.asarray(out[n]))
    return {n: stack_outputs(v) for n, v in per.items()}


def latency_ms(run_once: Callable[[], object], *, warmup: int = 3, runs: int = 30
               ) -> dict[str, float]:
    """Wall-clock latency of ``run_once`` in milliseconds: p50, p95, mean and the run count."""
    for _ in range(warmup):
        run_once()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_once()
        times.append((time.perf_counter() - t0) * 1000.0)
    a = np.asarray(times)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "mean": float(a.mean()), "runs": float(runs)}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def accuracy_report(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                    labels: np.ndarray | None = None,
                    classifier_outputs: Sequence[str] | None = None,
                    task: TaskSpec | None = None) -> dict[str, Any]:
    """Per-output metrics and a summary (worst case over outputs) of candidate vs reference.

    ``labels`` (class index per sample) adds top-1 accuracy of both models on the first
    classifier-shaped output. ``classifier_outputs`` names the outputs that are class scores
    (see :func:`classifier_outputs`); ``None`` keeps the shape rule (every ``[n, classes]``
    output), which mistakes e.g. a multi-step forecast for a classifier. ``task`` adds the
    ``task`` section (converters/tasks: the task metric the gate reads, and the per-channel
    worst case). Infinite values (SNR of identical outputs) become ``None`` so the report stays
    JSON.
    """
    per = compare_outputs(reference, candidate)
    if classifier_outputs is not None:
        keep = set(classifier_outputs)
        per = [m if m.name in keep else replace(m, top1_agreement=None) for m in per]
    outputs = {m.name: {k: (_finite(v) if isinstance(v, float) else v)
                        for k, v in m.to_dict().items()} for m in per}
    # Label (integer) outputs count by agreement only, unless there is nothing else.
    tensors = [m for m in per if m.label_agreement is None] or per
    summary: dict[str, Any] = {
        "cosine_min": min(m.cosine for m in tensors),
        "max_abs_error": max(m.max_abs_error for m in tensors),
        "snr_db_min": _finite(min(m.snr_db for m in tensors)),
    }
    agree = [m.label_agreement for m in per if m.label_agreement is not None]
    if agree:
        summary["label_agreement"] = min(agree)
    top1 = [m.top1_agreement for m in per if m.top1_agreement is not None]
    if top1:
        summary["top1_agreement"] = min(top1)
    if labels is not None:
        cls = next((n for n, m in zip(reference, per, strict=False)
                    if m.top1_agreement is not None), None)
        if cls is not None:
            lab = np.asarray(labels).reshape(-1)
            summary["top1_accuracy_reference"] = float(
                (np.asarray(reference[cls]).argmax(axis=1) == lab).mean())
            summary["top1_accuracy"] = float(
                (np.asarray(candidate[cls]).argmax(axis=1) == lab).mean())
    report: dict[str, Any] = {"outputs": outputs, "summary": summary}
    if task is not None:
        report["task"] = _json_safe(evaluate_task(task, reference, candidate, labels))
    return report


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return _finite(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def classifier_outputs(model: Any) -> list[str]:
    """Outputs that hold class scores: ``[batch, classes]`` and produced by Softmax/LogSoftmax
    or named like logits/probabilities/scores/classes. Everything else is compared by cosine."""
    import re

    producers = {o: n for n in model.graph.node for o in n.output}

    def made_by(name: str) -> str | None:
        # Exporters end graphs in Identity chains (tf2onnx's ``Identity:0``, paddle2onnx's
        # ``save_infer_model/scale_0``): look through them to the op that computes the output.
        seen: set[str] = set()
        while (node := producers.get(name)) is not None and node.op_type == "Identity" \
                and name not in seen:
            seen.add(name)
            name = node.input[0]
        return node.op_type if node is not None else None

    hint = re.compile(r"logit|prob|score|class|label|softmax", re.IGNORECASE)
    out = []
    for vi in model.graph.output:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != 2 or (dims[1].HasField("dim_value") and dims[1].dim_value < 2):
            continue
        if made_by(vi.name) in ("Softmax", "LogSoftmax") or hint.search(vi.name):
            out.append(vi.name)
    return out


def gate_drop(report: Mapping[str, Any], metric: str = "auto", target: str | None = None
              ) -> tuple[str, float]:
    """The metric the gate reads and its relative drop vs FP32.

    ``auto``: the task metric when the report has one (converters/tasks); else labels given,
    top-1 accuracy; classifier outputs or integer (label) outputs,
    the worse of top-1 agreement and label agreement; otherwise cosine similarity (a drop of
    0.01 means cosine 0.99). ``top1`` or ``cosine`` force one.

    A task metric that could not be computed (not a finite number: ``None`` in the report) is
    refused with :class:`AccuracyGateError` saying why, never read as a 100% drop, which would
    make the accuracy-aware pass float nodes against a number that means nothing; the
    refusal names ``target`` when given, as :func:`check_gate`'s does.
    """
    s = report["summary"]
    task = report.get("task")
    if metric == "auto" and task is not None:
        if task["value"] is None or task.get("drop") is None:
            raise _uncomputable(task, target)
        return task["metric"], float(task["drop"])
    if metric == "cosine":
        return "cosine", relative_drop(1.0, s["cosine_min"])
    if "top1_accuracy" in s:
        return "top1_accuracy", relative_drop(s["top1_accuracy_reference"], s["top1_accuracy"])
    agreements = [(k, relative_drop(1.0, s[k])) for k in ("top1_agreement", "label_agreement")
                  if k in s and (metric == "auto" or k == "top1_agreement")]
    if agreements:
        return max(agreements, key=lambda kv: kv[1])
    return "cosine", relative_drop(1.0, s["cosine_min"])


def _uncomputable(task: Mapping[str, Any], target: str | None) -> AccuracyGateError:
    """Why the task metric in a report's ``task`` section has no value, as a refusal."""
    metric = (f"target {target}: " if target else "") + task["metric"]
    note = f" (task {task['task']}, {'inferred' if task.get('inferred') else 'requested'})"
    if task.get("reference") is None:
        return AccuracyGateError(
            f"{metric} cannot be computed{note}: the FP32 model's own score on the validation "
            "data is not a finite number (NaN or infinite), so no artifact can be judged by it",
            hint="a --metric function must return a finite number for FP32's outputs; check "
                 "that the validation data give FP32 finite outputs, or choose another --task")
    return AccuracyGateError(
        f"{metric} cannot be computed{note}: the artifact's score on the validation data is "
        f"not a finite number (NaN or infinite; FP32 scores {task['reference']:.6g})",
        hint="a --metric function must return a finite number for any outputs, a quantised "
             "model's too; or build this target with --precision fp32")


def check_gate(report: Mapping[str, Any], max_drop: float, target: str,
               metric: str = "auto") -> None:
    """Raise :class:`AccuracyGateError` naming the target and metric when the drop is too big."""
    metric, drop = gate_drop(report, metric, target)
    if drop > max_drop:
        raise AccuracyGateError(
            f"target {target}: {metric} dropped {drop:.2%} vs FP32{task_note(report, metric)}, "
            f"over the {max_drop:.2%} budget")


def accuracy_section(report: Mapping[str, Any], metric: str, drop: float) -> dict[str, Any]:
    """An artifact's ``metrics["accuracy"]``: the gate's metric and drop, and the accuracy
    report's summary, task and per-output figures to 6 significant digits."""
    return {"gate_metric": metric, "drop": round(drop, 6),
            "summary": _rounded(report["summary"]),
            **({"task": _rounded(report["task"])} if "task" in report else {}),
            "outputs": _rounded(report["outputs"])}


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    return obj


def task_note(report: Mapping[str, Any], metric: str) -> str:
    """`` (task detection, inferred)`` when the gate read a task metric."""
    task = report.get("task")
    if task is None or task.get("metric") != metric:
        return ""
    return f" (task {task['task']}, {'inferred' if task.get('inferred') else 'requested'})"


def write_golden(path: Path, inputs: Mapping[str, np.ndarray],
                 outputs: Mapping[str, np.ndarray]) -> None:
    """Write the golden npz atomically and byte-deterministically (fixed zip timestamps)."""
    with atomic_open(Path(path)) as f:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
            for prefix, arrays in (("input", inputs), ("output", outputs)):
                for name in sorted(arrays):
                    arr = io.BytesIO()
                    np.lib.format.write_array(arr, np.ascontiguousarray(arrays[name]),
                                              allow_pickle=False)
                    z.writestr(zipfile.ZipInfo(f"{prefix}/{name}.npy", _ZIP_EPOCH),
                               arr.getvalue())
        f.write(buf.getvalue())

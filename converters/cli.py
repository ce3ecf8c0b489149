"""``edgeops targets`` and ``edgeops build``: a thin shell over converters.build and .package.

Everything is checked before anything is written: name, version, targets, precision, keys,
model and data. The build runs in a scratch directory; the bundle and reports are written
atomically into ``--out`` only once every artifact has been accepted.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from edgeops.cli.common import emit, json_option, passphrase_from_env, progress_printer
from edgeops.errors import InvalidBundleError, KeyError_, UsageError

__all__ = ["build", "targets"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@click.command("targets")
@json_option
def targets(as_json: bool) -> None:
    """List the target profiles and what each one produces.

    \b
    Example:
      edgeops targets
      edgeops targets --json
    """
    from edgeops.targets import PROFILES

    rows: list[dict[str, Any]] = [{"name": p.name, "format": p.format, "runtime": p.runtime,
             "providers": list(p.providers), "precisions": list(p.precisions),
             "default_precision": p.default_precision, "hardware": p.hardware,
             "static_shapes": p.static_shapes, "description": p.description,
             "options": dict(p.options)} for p in sorted(PROFILES.values(), key=lambda p: p.name)]

    def text() -> str:
        w = max(len(r["name"]) for r in rows)
        return "\n".join(f"{r['name']:<{w}}  {r['format']:<6}  "
                         f"{'/'.join(r['precisions']):<26}  {r['description']}" for r in rows)

    emit(as_json, rows, text)


def _parse_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for v in values:
        name, sep, dims = v.rpartition("=")
        scalar = dims.strip().lower() in ("scalar", "()")
        try:
            shape = () if scalar else tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape, scalar = (), False
        if not sep or not name or not (shape or scalar) or any(d <= 0 for d in shape):
            raise UsageError(f"--input-shape '{v}' is not NAME=DxDx... (or NAME=scalar)",
                             hint="e.g. --input-shape input=1x3x224x224")
        out[name] = shape
    return out


def _options(preprocessing: str | None) -> dict[str, Any]:
    if preprocessing is None:
        return {}
    text = preprocessing
    if not preprocessing.lstrip().startswith("{"):
        try:
            text = Path(preprocessing).read_text()
        except OSError as exc:
            raise UsageError(f"--preprocessing: cannot read {preprocessing} ({exc.strerror})",
                             hint="give inline JSON or a readable .json file") from None
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--preprocessing is not valid JSON: {exc}") from None
    return {"preprocessing": spec}


def _signers() -> list[Any]:
    """Every targets key held here (with a threshold, co-sign later: `edgeops bundle sign`)."""
    from edgeops.keys import KeyStore

    store = KeyStore()
    if not any(store.dir.glob("targets*.pem")):
        raise KeyError_(f"no targets signing key in {store.dir}",
                        hint="run `edgeops keys init` first (or set EDGEOPS_HOME)")
    return list(store.targets_signers(passphrase_from_env()))


@click.command("build")
@click.argument("model")
@click.option("--name", required=True, help="Bundle name (lower-case, e.g. vehicle-classifier).")
@click.option("--version", "version", required=True, help="Semantic version, e.g. 1.0.0.")
@click.option("--target", "target_names", multiple=True, required=True,
              help="Target profile (repeatable); see `edgeops targets`. INT8 is planned for "
                   "the target's CPU, never this machine's: x86-cpu (7-bit weights) runs on any "
                   "x86-64 CPU, x86-cpu-vnni (8-bit) only on CPUs with AVX-512 VNNI or "
                   "AVX-VNNI.")
@click.option("--precision", default=None,
              help="Precision for every target, or per target: x86-cpu=fp32,cuda-gpu=fp16 "
                   "(default: each profile's first).")
@click.option("--calibration", default=None,
              help=".npz (arrays keyed by input name, samples first) or a directory of .npy: "
                   "whole inputs (N, *input shape) or batch-stacked on a batch-first input; "
                   "or a run artifact, runs:/RUN_ID/PATH.")
@click.option("--validation", default=None,
              help="Same forms as --calibration; may hold 'labels' (class per sample).")
@click.option("--batch-axis", "batch_axes", multiple=True,
              help="An input's batch axis when the model's dims do not say: NAME=K or "
                   "NAME=none (repeatable).")
@click.option("--input-value", "input_values", multiple=True,
              help="Fill an input the data lacks with one value: NAME=16000 (repeatable).")
@click.option("--sequence/--no-sequence", "sequence", default=None,
              help="Streaming model: feed samples in order, each state output into the next "
                   "step's state input (default: on when output/input pairs match by name and "
                   "shape).")
@click.option("--state", "states", multiple=True,
              help="A state pair for --sequence: OUTPUT=INPUT (repeatable; implies --sequence).")
@click.option("--reference", "drift_reference", type=click.Path(path_type=Path), default=None,
              help="Drift reference data (same forms as --calibration; default: the "
                   "validation data). See docs/DRIFT.md.")
@click.option("--preprocessing", "preprocessing", default=None,
              help="For image directories: JSON (or a .json file) with size [h, w], layout "
                   "NCHW|NHWC, mean, std, scale; recorded in the manifest.")
@click.option("--input-shape", "input_shapes", multiple=True,
              help="Fix an input's shape: NAME=1x3x224x224, NAME=2x1x128, NAME=scalar "
                   "(repeatable; any input, whatever its batch axis).")
@click.option("--max-accuracy-drop", type=float, default=0.01, show_default=True,
              help="Relative drop allowed on the gate metric vs FP32 (0.01 = 1%).")
@click.option("--gate-metric", type=click.Choice(["auto", "top1", "cosine"]), default="auto",
              show_default=True,
              help="auto: top-1 accuracy with labels, top-1 agreement on class-score outputs "
                   "(Softmax or named logits/prob/score), else cosine.")
@click.option("--task", type=click.Choice(["auto", "classification", "detection",
                                           "segmentation", "text-detection", "ctc",
                                           "regression", "vad", "embedding"]),
              default="auto", show_default=True,
              help="What the model does, so accuracy is measured as its users judge it "
                   "(auto: read from the outputs and ops; the report says what it chose).")
@click.option("--metric", "user_metric", default=None, metavar="MODULE:FUNCTION",
              help="Gate on your own score: FUNCTION(fp32_outputs, candidate_outputs) per "
                   "sample, higher is better.")
@click.option("--quantise-tail", is_flag=True,
              help="Also quantise the post-processing tail and graph outputs (kept float by "
                   "default).")
@click.option("--perf-aware/--no-perf-aware", default=True, show_default=True,
              help="Keep in float what INT8 makes slower, measured on this machine.")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]),
              default="minmax", show_default=True)
@click.option("--effort", type=click.Choice(["fast", "default", "max"]), default="default",
              show_default=True,
              help="INT8 quantisation passes: fast = MinMax ranges only; default = "
                   "equalisation, SmoothQuant, bias correction and MSE ranges; max = default "
                   "plus AdaRound weight rounding (numpy, no extra to install; slower builds) "
                   "(docs/CONVERTERS.md).")
@click.option("--mixed-precision-layers", "mixed_layers", type=int, default=16,
              show_default=True,
              help="When INT8 misses the accuracy budget: layers whose effect on the task "
                   "metric is measured one by one (one validation run each) before choosing "
                   "which leave INT8 (docs/CONVERTERS.md, accuracy-aware step).")
@click.option("--mixed-precision-prefixes", "mixed_prefixes", type=int, default=None,
              help="Try budget of the accuracy-aware step's last resort: at most N prefixes "
                   "of the sensitivity ranking quantised and verified before the build is "
                   "refused (default: doubling up to half the layers). Bounds how long a "
                   "build that will be refused takes.")
@click.option("--threads", type=int, default=1, show_default=True,
              help="Threads for latency measurement.")
@click.option("--keep-io-layout", is_flag=True, envvar="EDGEOPS_KEEP_IO_LAYOUT",
              help="TFLite targets: keep the ONNX (NCHW) input/output layout instead of NHWC.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out"),
              show_default=True, help="Output directory.")
@click.option("--timestamp", default=None,
              help="Creation time written into the manifest (default: none, reproducible).")
@click.option("--sign-latency", is_flag=True,
              help="Put a coarse latency budget into the signed manifest (see docs).")
@click.option("--mlflow-log", is_flag=True,
              help="Log the reports and per-target metrics to the source run and tag the "
                   "model version with the bundle (MODEL must be models:/ or runs:/).")
@json_option
def build(model: str, name: str, version: str, target_names: tuple[str, ...],
          precision: str | None, calibration: str | None, validation: str | None,
          batch_axes: tuple[str, ...], input_values: tuple[str, ...], sequence: bool | None,
          states: tuple[str, ...], preprocessing: str | None, input_shapes: tuple[str, ...],
          max_accuracy_drop: float,
          gate_metric: str, task: str, user_metric: str | None, quantise_tail: bool,
          perf_aware: bool, calibration_method: str, effort: str,
          mixed_layers: int, mixed_prefixes: int | None, threads: int, keep_io_layout: bool,
          out_dir: Path, timestamp: str | None,
          sign_latency: bool, mlflow_log: bool, as_json: bool,
          drift_reference: Path | None = None) -> None:
    """Convert a trained ONNX model into a signed bundle of per-target artifacts.

    MODEL is an .onnx file or an MLflow model URI (models:/NAME/VERSION, models:/NAME@ALIAS,
    runs:/RUN_ID/PATH; the server is MLFLOW_TRACKING_URI, extra `mlflow`); a registry build
    records its lineage (registry, version, alias, run, git commit, data digests) in the
    signed manifest. Writes OUT/NAME-VERSION.edgebundle, OUT/NAME-VERSION.report.json and
    OUT/NAME-VERSION.report.md, and prints the bundle path.

    \b
    Example:
      edgeops build model.onnx --name vehicle-classifier --version 1.0.0 \\
          --target x86-cpu --target cuda-gpu --calibration cal.npz --validation val.npz
      edgeops build model.onnx --name m --version 1.0.0 --target x86-cpu --precision fp32
      MLFLOW_TRACKING_URI=http://mlflow:5000 edgeops build models:/vehicle@champion \\
          --name vehicle-classifier --version 1.1.0 --target x86-cpu --mlflow-log
    """
    from converters.api import BuildRequest
    from converters.io_layout import parse_batch_axes, parse_input_values
    from edgeops.bundle.manifest import parse_version

    if not _NAME.match(name):
        raise UsageError(f"--name '{name}' is invalid",
                         hint="use lower-case letters, digits, '.', '_' or '-' (max 64)")
    try:
        parse_version(version)
    except InvalidBundleError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None
    if threads < 1:
        raise UsageError("--threads must be at least 1")
    if mixed_layers < 1:
        raise UsageError("--mixed-precision-layers must be at least 1")
    if mixed_prefixes is not None and mixed_prefixes < 1:
        raise UsageError("--mixed-precision-prefixes must be at least 1")
    from edgeops.registry import is_registry_uri

    if mlflow_log and not is_registry_uri(model):
        raise UsageError("--mlflow-log needs a registry model",
                         hint="build from models:/NAME@ALIAS, models:/NAME/VERSION or "
                              "runs:/RUN_ID/PATH")
    options = {**_options(preprocessing), "gate_metric": gate_metric, "perf_aware": perf_aware,
               "batch_axes": parse_batch_axes(batch_axes),
               "input_values": parse_input_values(input_values), "sequence": sequence,
               "states": states, "task": task, "quantise_tail": quantise_tail, "effort": effort,
               "mixed_precision_layers": mixed_layers,
               **({"mixed_precision_prefixes": mixed_prefixes} if mixed_prefixes else {}),
               **({"metric": user_metric} if user_metric else {}),
               **({"drift_reference": str(drift_reference)} if drift_reference else {})}
    shapes = _parse_shapes(input_shapes)
    from converters.build import resolve_targets

    def request_for(model_path: Path, cal: Path | None, val: Path | None) -> BuildRequest:
        return BuildRequest(
            model=model_path, name=name, version=version, targets=target_names,
            precision=precision, calibration=cal, validation=val, input_shapes=shapes,
            max_accuracy_drop=max_accuracy_drop, calibration_method=calibration_method,
            threads=threads, keep_io_layout=keep_io_layout, options=options)

    resolve_targets(request_for(Path(model), None, None))
    signers = _signers()
    progress = progress_printer(as_json)
    from converters.build import build as run_build
    from converters.package import write_outputs
    from edgeops.registry.source import prepare_sources

    work = Path(tempfile.mkdtemp(prefix="edgeops-build-"))
    try:
        if is_registry_uri(model):
            progress(f"resolving {model}")
        sources = prepare_sources(model, calibration, validation, work / "inputs")
        request = request_for(sources.model, sources.calibration, sources.validation)
        outcome = run_build(request, progress, work / "build")
        paths = write_outputs(request, outcome, out_dir, signers, created=timestamp,
                              sign_latency=sign_latency, lineage=sources.lineage)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logged = None
    if mlflow_log and sources.registry is not None and sources.lineage is not None:
        from edgeops.registry.report_back import log_build_results

        progress("logging results to MLflow")
        logged = log_build_results(sources.registry, sources.lineage, paths,
                                   outcome.source.sha256)
    for w in outcome.warnings:
        if not as_json:
            click.echo(f"warning: {w}", err=True)
    emit(as_json, {"bundle": str(paths["bundle"]), "report_json": str(paths["report_json"]),
                   "report_md": str(paths["report_md"]), "warnings": outcome.warnings,
                   "lineage": sources.lineage.to_dict() if sources.lineage else None,
                   "mlflow_logged": logged,
                   "targets": {a.target: {"precision": a.precision, "metrics": a.metrics}
                               for a in outcome.artifacts}},
         str(paths["bundle"]))

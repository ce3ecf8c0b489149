"""Turn a build outcome into the signed bundle plus its JSON and Markdown reports.

Reproducibility: building twice from the same inputs gives byte-identical bundles. So the
manifest only holds what is deterministic on one machine (sizes, accuracy metrics, tolerances,
quantisation choices); run-to-run latency stays in the reports unless ``sign_latency`` is set,
in which case the manifest carries a coarse ``latency_budget_ms`` (2 x p95 rounded up to 1-2-5),
which may change between builds only when p95 crosses a grid step, for the artifacts whose
latency was measured on their own provider (:func:`latency_signable`). No timestamp unless given.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from converters.api import BuildRequest, BuiltArtifact, timed_on_target
from converters.build import BuildOutcome
from converters.onnx_accept import nice_ceil
from edgeops.bundle import ArtifactEntry, Lineage, Manifest, TensorSpec, file_ref, write_bundle
from edgeops.fsutil import atomic_write

__all__ = ["manifest_for", "provenance", "render_markdown", "report_for", "write_outputs"]


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def provenance(cwd: Path | None = None) -> dict[str, Any]:
    import numpy
    import onnx
    import onnxruntime

    import edgeops

    prov: dict[str, Any] = {"edgeops": edgeops.__version__, "onnx": onnx.__version__,
                            "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
                            "python": platform.python_version()}
    commit = _git_commit(cwd or Path.cwd())
    if commit:
        prov["git_commit"] = commit
    return prov


def latency_signable(a: BuiltArtifact, lat: dict[str, Any] | None) -> bool:
    """Whether ``lat`` was measured on the provider the device will use, so it can be signed
    (the rule: :func:`converters.api.timed_on_target`)."""
    if not lat:
        return False
    return timed_on_target(a.runtime, a.providers, lat.get("provider"))


def _manifest_metrics(a: BuiltArtifact, sign_latency: bool) -> dict[str, Any]:
    m = {k: v for k, v in a.metrics.items() if k != "latency"}
    lat = a.metrics.get("latency")
    if sign_latency and lat and latency_signable(a, lat):
        m["latency_budget_ms"] = nice_ceil(2 * lat["p95_ms"])
        m["latency_threads"] = lat["threads"]
    return m


def manifest_for(request: BuildRequest, outcome: BuildOutcome, *, created: str | None = None,
                 sign_latency: bool = False, cwd: Path | None = None,
                 lineage: Lineage | None = None) -> Manifest:
    src = outcome.source
    entries = []
    for a in outcome.artifacts:
        entries.append(ArtifactEntry(
            target=a.target, file=file_ref(f"artifacts/{a.target}/{a.path.name}", a.path),
            format=a.format, runtime=a.runtime, providers=a.providers, precision=a.precision,
            golden=file_ref(f"artifacts/{a.target}/golden.npz", a.golden_path),
            metrics=_manifest_metrics(a, sign_latency), tolerance=a.tolerance,
            details=a.details))
    state_from = {i: o for o, i in (outcome.data.get("sequence") or {}).get("states", {}).items()}
    inputs = tuple(TensorSpec(s.name, str(s.dtype),
                              tuple(d if d is not None else _dim_name(src.model, s.name, i,
                                                                      s.batch_axis)
                                    for i, d in enumerate(s.shape)),
                              batch_axis=s.batch_axis, state_from=state_from.get(s.name))
                   for s in outcome.inputs)
    outputs = tuple(TensorSpec(n, dt, shape) for n, dt, shape in outcome.outputs)
    return Manifest(
        name=request.name, version=request.version, source_sha256=src.sha256,
        inputs=inputs, outputs=outputs, artifacts=tuple(entries),
        provenance=provenance(cwd),
        source={"filename": src.path.name, "size": src.size, "opset": src.opset,
                "producer": src.producer, "external_data": src.external_data},
        baseline=outcome.baseline, drift=outcome.drift, created=created, lineage=lineage,
        preprocessing=dict(request.options["preprocessing"])
        if request.options.get("preprocessing") else None)


def _dim_name(model: Any, name: str, index: int, batch_axis: int | None = 0) -> str:
    vi = next(v for v in model.graph.input if v.name == name)
    dims = vi.type.tensor_type.shape.dim
    d = dims[index] if index < len(dims) else None
    return (d.dim_param if d is not None else "") or (
        "batch" if index == batch_axis else f"dim{index}")


def report_for(request: BuildRequest, outcome: BuildOutcome, bundle: Path,
               lineage: Lineage | None = None) -> dict[str, Any]:
    extra = {"lineage": lineage.to_dict() | {"links": lineage.links()}} if lineage else {}
    return extra | {
        "name": request.name, "version": request.version, "bundle": bundle.name,
        "source": {"file": outcome.source.path.name, "sha256": outcome.source.sha256,
                   "opset": outcome.source.opset, "producer": outcome.source.producer,
                   "size_bytes": outcome.source.size},
        "data": outcome.data, "warnings": outcome.warnings,
        "max_accuracy_drop": request.max_accuracy_drop,
        "targets": {a.target: {"precision": a.precision, "providers": list(a.providers),
                               "metrics": a.metrics, "tolerance": a.tolerance,
                               "details": a.details} for a in outcome.artifacts},
    }


def _fmt_size(n: int) -> str:
    return f"{n / 1024**2:.2f} MiB" if n >= 1024**2 else f"{n / 1024:.1f} KiB"


def _lineage_lines(lineage: dict[str, Any] | None) -> list[str]:
    """One line saying where the model came from, linked into MLflow when possible."""
    if not lineage or not (lineage.get("model_name") or lineage.get("run_id")):
        return []
    links = lineage.get("links") or {}
    parts = [f"`{lineage['source_uri']}`"]
    if lineage.get("model_version"):
        v = f"version {lineage['model_version']}"
        parts.append(f"[{v}]({links['model_version']})" if "model_version" in links else v)
    if lineage.get("run_id"):
        r = f"run {lineage['run_id'][:12]}"
        parts.append(f"[{r}]({links['run']})" if "run" in links else r)
    if lineage.get("git_commit"):
        parts.append(f"commit `{lineage['git_commit'][:12]}`")
    return [f"From {', '.join(parts)}", ""]


def render_markdown(report: dict[str, Any]) -> str:
    """A pull-request-comment-sized summary: one row per target, then the float nodes."""
    lines = [f"### edgeops build: {report['name']} {report['version']}", "",
             f"Source `{report['source']['file']}` (opset {report['source']['opset']}, "
             f"{_fmt_size(report['source']['size_bytes'])}, sha256 "
             f"`{report['source']['sha256'][:12]}`)", ""]
    lines += _lineage_lines(report.get("lineage"))
    for w in report["warnings"]:
        lines.append(f"> **warning:** {w}")
    if report["warnings"]:
        lines.append("")
    lines += ["| target | precision | size | p50 ms | p95 ms | speedup vs FP32 | gate metric "
              "| drop | cosine min | calibration |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for t, r in report["targets"].items():
        m, d = r["metrics"], r["details"]
        lat, acc = m.get("latency", {}), m["accuracy"]
        cal = d.get("calibration", {})
        cal_s = f"{cal.get('method', '-')} × {cal.get('samples', '-')}" if cal else "-"
        lines.append(
            f"| {t} | {r['precision']} | {_fmt_size(m['size_bytes'])} | {lat.get('p50_ms', '-')} "
            f"| {lat.get('p95_ms', '-')} | {lat.get('speedup_vs_fp32', '-')}× "
            f"| {acc['gate_metric']} | {acc['drop']:.2%} | "
            f"{acc['summary']['cosine_min']:.5f} | {cal_s} |")
    for t, r in report["targets"].items():
        task = r["metrics"]["accuracy"].get("task")
        if task:
            lines += ["", _task_line(t, task)]
    threads = {r["metrics"].get("latency", {}).get("threads") for r in report["targets"].values()}
    lines += ["", f"Latency on the build machine, {', '.join(map(str, threads))} thread(s), "
              "batch 1."]
    for t, r in report["targets"].items():
        floats = r["details"].get("float_nodes") or {}
        if floats:
            lines += ["", f"<details><summary>{t}: {len(floats)} node(s) kept in float</summary>",
                      "", *(f"- `{n}`: {why}" for n, why in sorted(floats.items())), "",
                      "</details>"]
    return "\n".join(lines) + "\n"


def _task_line(target: str, task: dict[str, Any]) -> str:
    """What the gate measured: task (and whether auto chose it), metric, worst channel."""
    how = f"auto: {task['why']}" if task.get("inferred") else task.get("why", "requested")
    worst = task.get("channels", {}).get("worst_channel", {})
    value = task.get("value")
    line = (f"{target}: task **{task['task']}** ({how}); gate metric {task['metric']} "
            f"{'n/a' if value is None else f'{value:.4f}'} vs FP32 {task['reference']:.4f}")
    if worst.get("output"):
        line += (f"; worst channel: `{worst['output']}` channel {worst['channel']}, cosine "
                 f"{worst['cosine']:.4f}")
    return line + "."


def write_outputs(request: BuildRequest, outcome: BuildOutcome, out_dir: Path,
                  signers: Sequence[Any], *, created: str | None = None,
                  sign_latency: bool = False, lineage: Lineage | None = None) -> dict[str, Path]:
    """Bundle first (atomic), then the reports (atomic); returns the three paths."""
    manifest = manifest_for(request, outcome, created=created, sign_latency=sign_latency,
                            lineage=lineage)
    files = {}
    for a in outcome.artifacts:
        files[f"artifacts/{a.target}/{a.path.name}"] = a.path
        files[f"artifacts/{a.target}/golden.npz"] = a.golden_path
    bundle = out_dir / manifest.bundle_filename
    write_bundle(bundle, manifest, files, signers)
    report = report_for(request, outcome, bundle, lineage)
    stem = f"{request.name}-{request.version}"
    rj, rm = out_dir / f"{stem}.report.json", out_dir / f"{stem}.report.md"
    atomic_write(rj, json.dumps(report, indent=2, sort_keys=True).encode() + b"\n")
    atomic_write(rm, render_markdown(report).encode())
    return {"bundle": bundle, "report_json": rj, "report_md": rm}

"""A CML-style pull-request comment from a bundle: one table per target, deltas against a
previous bundle.

Pure: fed with manifests and the build's JSON reports (for latency, which the signed manifest
deliberately leaves out), it returns Markdown. ``edgeops report`` (edgeops/cli/report_cmds.py)
does the reading and writing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeops.bundle import Manifest

__all__ = ["COMMENT_MARKER", "Row", "TargetFigures", "figures", "render_github", "report_json"]

# A hidden first line, so a CI job can find and update its own comment instead of adding one.
COMMENT_MARKER = "<!-- edgeops-report:{name} -->"


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    better: str            # "lower" | "higher" | "" (no direction)
    digits: int


ROWS: tuple[Row, ...] = (
    Row("size_bytes", "size", "KiB", "lower", 1),
    Row("latency_p50_ms", "latency p50", "ms", "lower", 3),
    Row("latency_p95_ms", "latency p95", "ms", "lower", 3),
    Row("speedup_vs_fp32", "speed-up vs FP32", "×", "higher", 2),
    Row("task_metric", "task metric", "", "higher", 4),
    Row("accuracy_drop", "accuracy drop vs FP32", "%", "lower", 3),
    Row("cosine_min", "cosine min vs FP32", "", "higher", 6),
)


@dataclass(frozen=True)
class TargetFigures:
    target: str
    precision: str
    task_metric_name: str | None
    values: dict[str, float]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def figures(manifest: Manifest, report: Mapping[str, Any] | None) -> dict[str, TargetFigures]:
    """Per-target figures: accuracy and size from the signed manifest, latency from the report."""
    out: dict[str, TargetFigures] = {}
    targets = (report or {}).get("targets", {})
    for a in sorted(manifest.artifacts, key=lambda a: a.target):
        m = dict(a.metrics)
        rep = (targets.get(a.target) or {}).get("metrics", {})
        lat = rep.get("latency") or {}
        acc = m.get("accuracy") or rep.get("accuracy") or {}
        summary = acc.get("summary") or {}
        gate = acc.get("gate_metric")
        task = summary.get(gate) if isinstance(gate, str) and gate != "cosine" else None
        drop = _num(acc.get("drop"))
        raw = {"size_bytes": _num(a.file.size), "latency_p50_ms": _num(lat.get("p50_ms")),
               "latency_p95_ms": _num(lat.get("p95_ms")),
               "speedup_vs_fp32": _num(lat.get("speedup_vs_fp32")), "task_metric": _num(task),
               "accuracy_drop": drop * 100 if drop is not None else None,
               "cosine_min": _num(summary.get("cosine_min"))}
        if raw["size_bytes"] is not None:
            raw["size_bytes"] = raw["size_bytes"] / 1024
        out[a.target] = TargetFigures(a.target, a.precision,
                                      gate if task is not None else None,
                                      {k: v for k, v in raw.items() if v is not None})
    return out


def _fmt(v: float | None, row: Row) -> str:
    if v is None:
        return "–"
    unit = "" if not row.unit else (row.unit if row.unit in ("×", "%") else f" {row.unit}")
    return f"{v:,.{row.digits}f}{unit}"


def _delta(new: float | None, old: float | None, row: Row) -> str:
    if new is None or old is None:
        return "–"
    d = new - old
    if round(d, row.digits) == 0:
        return "="
    rel = f" ({d / old:+.1%})" if old else ""
    good = (d < 0) == (row.better == "lower") if row.better else None
    mark = "" if good is None else (" ✅" if good else " ⚠️")
    return f"{d:+,.{row.digits}f}{rel}{mark}"


def report_json(manifest: Manifest, report: Mapping[str, Any] | None,
                against: Manifest | None = None,
                against_report: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The same content as the comment, as data (``--format json``)."""
    cur = figures(manifest, report)
    old = figures(against, against_report) if against else {}
    return {"name": manifest.name, "version": manifest.version,
            "against": f"{against.name}@{against.version}" if against else None,
            "targets": {t: {"precision": f.precision, "task_metric": f.task_metric_name,
                            "values": f.values,
                            "against": old[t].values if t in old else None}
                        for t, f in cur.items()},
            "lineage": manifest.lineage.to_dict() if manifest.lineage else None}


def render_github(manifest: Manifest, report: Mapping[str, Any] | None,
                  against: Manifest | None = None,
                  against_report: Mapping[str, Any] | None = None) -> str:
    """Markdown for a pull-request comment (GitHub-flavoured: tables, emoji, details)."""
    cur = figures(manifest, report)
    old = figures(against, against_report) if against else {}
    vs = f" vs {against.name} {against.version}" if against else ""
    lines = [COMMENT_MARKER.format(name=manifest.name),
             f"## edgeops: {manifest.name} {manifest.version}{vs}", ""]
    lin = manifest.lineage
    if lin is not None:
        links = lin.links()
        parts = [f"`{lin.source_uri}`"]
        if lin.model_version:
            ver = f"version {lin.model_version}"
            parts.append(f"[{ver}]({links['model_version']})" if "model_version" in links
                         else ver)
        if lin.run_id:
            r = f"run `{lin.run_id[:12]}`"
            parts.append(f"[{r}]({links['run']})" if "run" in links else r)
        if lin.git_commit:
            parts.append(f"commit `{lin.git_commit[:12]}`")
        lines += [f"Model from {', '.join(parts)}.", ""]
    gone = sorted(set(old) - set(cur))
    for t, f in cur.items():
        o = old.get(t)
        was = f", was {o.precision}" if o and o.precision != f.precision else ""
        new_target = " (new target)" if against and o is None else ""
        lines += [f"### `{t}` · {f.precision}{was}{new_target}", ""]
        if against:
            lines += [f"| | {manifest.version} | {against.version} | Δ |", "|---|---:|---:|---:|"]
        else:
            lines += [f"| | {manifest.version} |", "|---|---:|"]
        for row in ROWS:
            label = row.label if row.key != "task_metric" else (f.task_metric_name or "")
            if row.key == "task_metric" and not f.task_metric_name:
                continue
            v = f.values.get(row.key)
            if against:
                ov = o.values.get(row.key) if o else None
                if v is None and ov is None:
                    continue
                lines.append(f"| {label} | {_fmt(v, row)} | {_fmt(ov, row)} | {_delta(v, ov, row)} |")
            elif v is not None:
                lines.append(f"| {label} | {_fmt(v, row)} |")
        lines.append("")
    if gone:
        lines += [f"Targets no longer built: {', '.join(f'`{t}`' for t in gone)}.", ""]
    if report is None:
        lines += ["_Latency not shown: the build's report.json was not found beside the "
                  "bundle (pass `--report`)._", ""]
    lines.append("<sub>Latency on the build machine, batch 1; accuracy vs the FP32 source "
                 "on the validation set; sizes and accuracy are from the signed manifest.</sub>")
    return "\n".join(lines) + "\n"

"""What benchmarks/converter_zoo.py compares (the variant catalogue) and how a result reads:
merging runs, the Markdown table and the goals check under it. Pure: dicts in, text out.

Why apart from the runner: the runner measures (minutes per model), this only reads; the
reading is what the unit tests pin (tests/benchmarks/test_converter_zoo.py), and
``--markdown-only`` rewrites the table from the JSON without measuring anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from benchmarks._zoo_goals import FULLINT_TARGETS, check_goals, figures, refused

__all__ = ["FULLINT_MODELS", "VARIANTS", "Variant", "goals_text", "markdown", "merged",
           "variants_of"]


@dataclass(frozen=True)
class Variant:
    """One row of a model: who builds it, for which target, with which settings."""

    key: str
    tool: str                                   # fp32 | ort | nncf | edgeops
    label: str                                  # the settings, as the table states them
    target: str | None = None                   # edgeops target
    effort: str | None = None                   # edgeops --effort
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def full_integer(self) -> bool:
        return self.target in FULLINT_TARGETS


_EFFORTS = ("fast", "default", "max")
VARIANTS: tuple[Variant, ...] = (
    Variant("fp32", "fp32", "FP32 source, ORT default session optimisations"),
    Variant("ort-stock", "ort", "quantize_static QDQ per-channel MinMax, default S8S8",
            settings={"tuned": False}),
    Variant("ort-tuned", "ort", "quant_pre_process + quantize_static QDQ per-channel MinMax "
            "u8s8", settings={"tuned": True}),
    Variant("nncf-performance", "nncf", "NNCF preset performance",
            settings={"preset": "performance"}),
    Variant("nncf-mixed", "nncf", "NNCF preset mixed", settings={"preset": "mixed"}),
    Variant("nncf-mixed-full-bc", "nncf", "NNCF preset mixed, full bias correction",
            settings={"preset": "mixed", "fast_bias_correction": False}),
    Variant("nncf-mixed-transformer", "nncf", "NNCF preset mixed, model_type transformer",
            settings={"preset": "mixed", "model_type": "transformer"}),
    *(Variant(f"edgeops-vnni-{e}", "edgeops", f"x86-cpu-vnni (8-bit weights) --effort {e}",
              target="x86-cpu-vnni", effort=e) for e in _EFFORTS),
    *(Variant(f"edgeops-x86-{e}", "edgeops", f"x86-cpu (7-bit weights, non-VNNI CPUs) "
              f"--effort {e}", target="x86-cpu", effort=e) for e in _EFFORTS),
    *(Variant(f"edgeops-{t}-{e}", "edgeops", f"{t} full-integer int8"
              + (", --effort max (AdaRound on the writer's grid)" if e == "max" else "")
              + ", in LiteRT", target=t, effort=e)
      for e in ("default", "max") for t in FULLINT_TARGETS),
)
# the full-integer rows are built for these models only (the two hard cases)
FULLINT_MODELS = ("ocr-cls", "ocr-det-640")
_BY_KEY = {v.key: v for v in VARIANTS}
# rows of results written before the variant catalogue existed
_LEGACY = {"fp32": "fp32", "stock": "ort-stock", "edgeops": "edgeops-x86-{effort}"}
_RUN_KEYS = ("threads", "rounds", "runs_per_round", "samples", "perf_aware", "loadavg_start",
             "loadavg_end", "versions", "cpu", "effort", "budget", "holdout", "exact_u8s8")


def variants_of(entry: Mapping[str, Any], effort: str = "default") -> dict[str, Any]:
    """A model entry's rows by variant key; an entry of the older three-row format is read
    as its ``fp32`` / ``ort-stock`` / ``edgeops-x86-<effort>`` rows."""
    if "variants" in entry:
        return dict(entry["variants"])
    return {new.format(effort=entry.get("earlier_run", {}).get("effort", effort)): entry[old]
            for old, new in _LEGACY.items() if old in entry}


def merged(new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` plus what only ``old`` measured: whole models, and rows of a model that ``new``
    measured with fewer variants; each kept row tagged with ``old``'s run settings."""
    tag = {k: old[k] for k in _RUN_KEYS if k in old}
    out = {**new, "models": {k: dict(e) for k, e in new.get("models", {}).items()}}
    for name, e in old.get("models", {}).items():
        if name not in out["models"]:
            out["models"][name] = {**e, "earlier_run": e.get("earlier_run") or tag}
            continue
        mine = out["models"][name]
        rows = variants_of(mine)
        for key, v in variants_of(e, str(old.get("effort", "default"))).items():
            if key not in rows:
                rows[key] = {**v, "earlier_run": v.get("earlier_run") or e.get("earlier_run")
                             or tag}
        mine["variants"] = rows
    return out


def _earlier(run: Mapping[str, Any]) -> str:
    isa = "" if "cpu" not in run else "VNNI, " if run["cpu"].get("vnni") else "no VNNI, "
    held = f" + {run['holdout']} held-out" if run.get("holdout") else ""
    return (f"[earlier run: {isa}{run.get('samples', '?')}{held} samples, "
            f"{run.get('rounds', '?')}×{run.get('runs_per_round', '?')} runs]")


def _metric(v: Mapping[str, Any]) -> str:
    fig = figures(v)
    if not fig:
        return "-"
    main = str(v["task_metric"])
    parts = [f"{main} {fig.pop(main):.4f}"] + [
        f"{k.replace('_', ' ')} {val:.4f}" for k, val in fig.items() if k != "cer"]
    return ", ".join(parts)


def _note(key: str, v: Mapping[str, Any], best_nncf: str | None, twin: str | None = None
          ) -> str:
    notes = []
    if v.get("same_as_source"):
        notes.append("the source byte for byte (sha256): FP32's own model, any speed gap is "
                     "noise")
    elif twin is not None:
        notes.append(f"the same bytes as `{twin}` (sha256): any speed gap between them is noise")
    if "error" in v:
        err = str(v["error"]).split("; most sensitive")[0].split("; limited by")[0].split(
            " (hint:")[0]
        notes.append(f"{'refused' if refused(v) else 'failed'}: {err[:220]}")
    if v.get("quantised_nodes") is not None and "error" not in v:
        notes.append(f"{v['float_nodes']} node(s) float, {v.get('quantised_nodes')} quantised")
    if v.get("pass") == "prequantised":
        notes.append("already quantised: shipped as it is")
    if "gate" in v and v["gate"].get("budget", 0) > 0.5 and "error" not in v:
        drop = v["gate"].get("drop")
        notes.append("gate opened to measure; the default 1% budget would "
                     + ("accept" if drop is not None and drop <= 0.01 else "refuse")
                     + (f" ({v['gate'].get('metric')} drop {drop:.2%})" if drop is not None
                        else ""))
    if "litert_p50_ms" in v:
        notes.append(f"LiteRT XNNPACK {v['litert_p50_ms']:.2f} ms (CPU, not the NPU)")
    if v.get("note"):
        notes.append(str(v["note"]))
    if "task_calibration" in v:
        cal = v["task_calibration"]
        arg = cal.get("details", {}).get("argmax_agreement")
        notes.append(f"on the calibration samples {v.get('task_metric')} {cal['value']:.4f}"
                     + (f", argmax agreement {arg:.4f}" if arg is not None else ""))
    if v.get("argmax_flips"):
        f = v["argmax_flips"]
        notes.append(f"{f['flips']} of {f['steps']} steps flipped: {f['on_padding']} on "
                     f"padding ({f['padding_steps']} padding steps), {f['on_text']} on text"
                     + (f"; FP32 top-1 minus top-2 there: median {f['fp32_margin_median']:.3f}"
                        f", max {f['fp32_margin_max']:.3f}" if f["flips"] else ""))
    if key == best_nncf:
        notes.append("best NNCF setting here")
    if "earlier_run" in v:
        notes.append(_earlier(v["earlier_run"]))
    return "; ".join(notes).replace("|", "/")


def _best_nncf(rows: Mapping[str, Any]) -> str | None:
    """The NNCF row with the highest task metric (then the fastest): its 'best preset'."""
    scored = [(v["task_value"], v.get("speedup_vs_fp32", 0.0), k) for k, v in rows.items()
              if k.startswith("nncf-") and "task_value" in v]
    return max(scored)[2] if scored else None


def _twins(rows: Mapping[str, Any], order: list[str]) -> dict[str, str]:
    """Each row whose artifact has the same bytes as an earlier row's: that row's key."""
    first: dict[str, str] = {}
    out: dict[str, str] = {}
    for k in order:
        sha = rows[k].get("sha256")
        if sha is None:
            continue
        if sha in first:
            out[k] = first[sha]
        else:
            first[sha] = k
    return out


def _row(name: str, key: str, v: Mapping[str, Any], best: str | None,
         twin: str | None = None) -> str:
    var = _BY_KEY.get(key)
    label = f"`{key}`" + (f": {var.label}" if var else "")
    quart = v.get("speedup_quartiles")
    spread = f" ({quart[0]:.2f}–{quart[1]:.2f})" if quart else ""
    speed = f"{v['speedup_vs_fp32']:.2f}×{spread}" if "speedup_vs_fp32" in v else (
        "n/a (NPU)" if var is not None and var.full_integer and "task_value" in v else "-")
    p50 = f"{v['p50_ms']:.2f}" if "p50_ms" in v else "-"
    build = f"{v['build_s']:.1f}" if "build_s" in v else "-"
    mem = f"{v['peak_rss_mib']:.0f}" if "peak_rss_mib" in v else "-"
    return (f"| {name} | {label} | {speed} | {p50} | {_metric(v)} | {build} | {mem} | "
            f"{_note(key, v, best, twin)} |")


def goals_text(result: Mapping[str, Any]) -> list[str]:
    mark = {True: "met", False: "MISSED", None: "not measured"}
    lines = ["### Goals of issue 16 (computed from the rows above)", "",
             "No noise allowance, except for an artifact that is the source byte for byte "
             "(sha256): that is FP32's own model, so \"never slower than FP32\" is met and "
             "its speed counts as 1.00x against ORT stock (its measured gap is noise).", ""]
    for c in check_goals(result, variants_of):
        lines.append(f"- {mark[c.met]}: {c.goal}: {c.subject}: {c.figures}")
    return lines


_EXACT = (" (accuracy, and our builds' gates, on ORT's exact U8U8 kernels: what a VNNI CPU "
          "computes; timings on this machine's default int8 kernels, not a VNNI CPU's)")


def _samples(r: Mapping[str, Any]) -> str:
    if r.get("holdout"):
        return (f"{r['samples']} real samples per model to calibrate (the builds' gates read "
                f"them too); accuracy vs FP32 on {r['holdout']} further held-out samples")
    return f"{r['samples']} real samples per model (calibration = validation)"


def markdown(r: Mapping[str, Any]) -> str:
    vers = r["versions"]
    if "round_budget_s" in r:       # time-budgeted rounds: the runs differ per model
        per_model = ", ".join(f"{k} {e['runs_per_round']}" for k, e in r["models"].items()
                              if "runs_per_round" in e and "earlier_run" not in e)
        runs = (f"as many runs of every ONNX variant as fill {r['round_budget_s']:g} s of "
                f"FP32's time, at least {r['runs_per_round']} (runs per round: {per_model})")
    else:
        runs = f"{r['runs_per_round']} runs of every ONNX variant"
    lines = [
        "## Converter on pretrained models: FP32, ORT stock and tuned, NNCF, edgeops per "
        "effort and target", "",
        f"{r['threads']} intra-op thread(s), batch 1; {r['rounds']} interleaved rounds (order "
        f"reversed every other round) of {runs} of "
        "a model in one process; speed = median over rounds of FP32's round median / the "
        "variant's (in brackets: quartiles of those round ratios, the noise); p50 over all "
        f"runs; {_samples(r)}. onnxruntime {vers['onnxruntime']}, onnx {vers['onnx']}, numpy "
        f"{vers['numpy']}, Python {vers['python']}, NNCF {vers.get('nncf', 'absent')}, "
        f"LiteRT {vers.get('litert', '?')}; "
        f"{'VNNI' if r['cpu'].get('vnni') else 'no VNNI'}"
        f"{_EXACT if r.get('exact_u8s8') else ''}; perf-aware pass "
        f"{'on' if r['perf_aware'] else 'off'}"
        f"{'; our ONNX builds at --max-accuracy-drop ' + str(r['budget']) if 'budget' in r else ''}"
        f". Build s: the build alone; peak MiB: peak RSS "
        "of the fresh process that built it (imports included). Full-integer rows: built with "
        "the gate opened, run in LiteRT, scored against FP32 in ONNX Runtime. Load average "
        f"{r['loadavg_start'][0]:.1f} → {r['loadavg_end'][0]:.1f} (shared cores).", ""]
    if r.get("nncf_missing"):
        lines += [f"NNCF: {r['nncf_missing']}", ""]
    lines += ["| model | variant | speed vs FP32 | p50 ms | task metric vs FP32 | build s "
              "| peak MiB | note |", "|---|---|---:|---:|---|---:|---:|---|"]
    order = {v.key: i for i, v in enumerate(VARIANTS)}
    for name, e in r["models"].items():
        task = e["task"]
        head = f"{name} ({task['task']}, {'auto' if task['inferred'] else '--task'})"
        if "earlier_run" in e:
            head += " " + _earlier(e["earlier_run"])
        if "runs_per_round" in e:
            head += f" [{e['runs_per_round']} runs/round]"
        rows = variants_of(e, str(r.get("effort", "default")))
        best = _best_nncf(rows)
        keys = sorted(rows, key=lambda k: order.get(k, len(order)))
        twins = _twins(rows, keys)
        for key in keys:
            lines.append(_row(head, key, rows[key], best, twins.get(key)))
    lines += ["", *goals_text(r)]
    return "\n".join(lines) + "\n"

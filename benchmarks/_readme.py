"""Assemble benchmarks/README.md from the benchmark modules and their latest results.

Why: the numbers live in ``benchmarks/results/<name>.md`` (each written by its benchmark with
its machine, versions, parameters and baseline side by side); the README is the one page that
lists every benchmark, how to run it, what it compares against, and its latest table. Run
``python -m benchmarks._readme`` after ``make bench`` (or after any single benchmark).
"""

from __future__ import annotations

import ast
import os
import platform
from pathlib import Path

from benchmarks import _nncf

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

_INTRO = """# Benchmarks

`make bench` runs `python -m benchmarks.run`: every module `benchmarks/<name>.py` in turn (never
in parallel, they would disturb each other's timings) except the opt-in `converter_large` (a
2 GiB model: run it by name), each writing `benchmarks/results/<name>.json` and a Markdown table
`<name>.md`, then merges them into `benchmarks/results.json` and `benchmarks/results.md`. One
benchmark alone: `python -m benchmarks.<name>`; `python -m benchmarks.run --list` lists them.
`python -m benchmarks._readme` rebuilds this page from the modules' docstrings and the latest
results.

Rules every benchmark follows: it states the machine, versions, threads and parameters; it
measures against its baseline side by side in the same run (same process or interleaved) and
reports medians and ratios; performance is never asserted in tests.

**Machine of the results below**: {machine}; 2 CPU cores *shared with other jobs* while
these ran (several benchmarks record the load average): absolute times are noisy, the ratios
against the same-run baseline are what to compare.

**Results from other machines** sit beside this machine's, in files named
`results/<name>.<machine>.md` and shown under the same benchmark: `h200` is a GPU box lent for
one session (NVIDIA H200, driver 580.159.04, onnxruntime-gpu 1.31.1 for CUDA 13 without
TensorRT, 16-core Intel Xeon with AVX-512 VNNI and AMX, Python 3.12); `h200-cpu` is that box's
CPU. A partial run (`--only`) of a benchmark is kept the same way, as
`results/<name>.only-<variants>.md`. The `cuda-gpu` figures (`converter_gpu`,
`hardware_tests.h200`) come only from there: CI and this machine have no GPU. AVX-512 VNNI:
the AMD EPYC of the sessions up to 2026-12-07's eighth had it, so the converter's "2× over
FP32 on a VNNI CPU" goal was measured there and on the Xeon; the machine of the ninth session
(same day, also CI's) is an AMD EPYC with AVX2 only (no AVX-512, no VNNI): results files
written in that session say "no VNNI" in their header, and their INT8 speed ratios are AVX2
kernels' (not comparable with the VNNI ones); their accuracy of `x86-cpu-vnni` builds is
exact (converters/ort_session: the gate runs ORT's exact U8U8 kernels there).

| benchmark | what it measures | baseline beside it |
|---|---|---|
{index}
"""

_BASELINES = {
    "agent_core": "ONNX Runtime called directly, interleaved",
    "agent_footprint": "ORT-only (LiteRT-only) process with the same model; ORT direct calls "
                       "and its C++ binding",
    "console": "plain API paging / first scrape in the same run",
    "converter_large": "FP32 source (external data) in the same run; opt-in, run by hand",
    "converter_gpu": "FP32 source on the same CUDA provider, interleaved",
    "converter_onnx": "FP32 model and stock `quantize_static`; the 8-bit `x86-cpu-vnni` build "
                      "beside the 7-bit `x86-cpu` one",
    "converter_tflite": "ONNX Runtime FP32 and ORT static INT8",
    "converter_zoo": "FP32 source, ORT `quantize_static` stock and tuned, NNCF 3.4 presets "
                     "(own venv), interleaved in one run per model",
    "mixed_precision": "the same builds on the tree before the change (the doubling loop), "
                       "run alongside; opt-in, run by hand",
    "fleet_delivery_agents": "none in the same run: the 60 s goal beside each size",
    "delta": "full artifact, zstd -19, bsdiff4 and zstd --patch-from of the same pair",
    "drift": "Alibi Detect's KSDrift and Evidently's DataDriftPreset on the raw windows (own "
             "venv) and the agent's standardised mean shift, on the same windows",
    "drift_alerts": "on-demand `drift_status` for the same cohort; the rest of /metrics; plain "
                    "urllib POSTs to the same receiver",
    "fleet_delivery": "unicast (one publication per fetch) in the same run",
    "fleet_ingest": "naive ingest (one transaction per message) in the same run",
    "fleet_store": "SQLite executemany vs PostgreSQL executemany vs COPY",
    "hardware_tests": "bare runtime call of the same artifact",
    "quant_passes": "effort `fast` (MinMax, no pass) on the same model, data and run",
    "x86_bit_split": "7-bit weights on every layer (`bit_split=\"w7a8\"`, the previous "
                     "default) and the FP32 source, same run; opt-in, run by name",
    "registry_build": "the same build from the local .onnx file, interleaved",
    "security": "the previous ACL-file config and plain TCP, interleaved (wall and broker CPU)",
    "sim_scale": "same process before any agent; N × one-agent-per-process RSS",
}


# What a benchmark needs beyond the project's venv, printed under its "Run:" line.
_SETUP = {
    "converter_zoo": (
        "Needs (benchmark-only, not in `pyproject.toml`) a venv for NNCF 3.4, which "
        f"the benchmark runs as a subprocess (`benchmarks/_nncf.py`): `{_nncf.SETUP}` "
        "(pulls scikit-learn, scipy, networkx, openvino-telemetry; no torch). Another "
        "path: `--nncf-venv PATH`. Without it the NNCF rows say \"not installed: <that "
        "command>\" and the rest runs. The whole table (issue 16's goals are checked "
        "from it): `PYTHONPATH=. .venv/bin/python -m benchmarks.converter_zoo`; it prints "
        "its expected duration first; one model or variant: `--models ocr-cls "
        "--variants ort-tuned,nncf-mixed --merge`. Accuracy on samples the builds never "
        "saw: `--holdout 32` (the CTC recogniser's flipped steps counted on padding and "
        "text); on an x86 machine without VNNI, `--exact-u8s8` scores the `x86-cpu-vnni` "
        "rows (and gates our builds) as a VNNI CPU computes them. `converter_zoo."
        "issue16-ctc`: `--models ocr-rec --variants fp32,ort-tuned,edgeops-vnni-default "
        "--holdout 32 --exact-u8s8 --out converter_zoo.issue16-ctc`."),
}


def _summary(mod: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(mod.read_text())) or ""
    except SyntaxError:
        return ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    return first.replace("|", "/")


def build() -> str:
    mods = sorted(p for p in HERE.glob("*.py")
                  if not p.stem.startswith("_") and p.stem not in ("run", "__init__"))
    machine = (f"{platform.machine()} Linux, Python {platform.python_version()}, "
               f"{os.cpu_count()} CPUs")
    rows = [f"| [`{m.stem}`](#{m.stem}) | {_summary(m)} | {_BASELINES.get(m.stem, 'see table')} |"
            for m in mods]
    parts = [_INTRO.format(machine=machine, index="\n".join(rows))]
    for m in mods:
        parts.append(f'<a id="{m.stem}"></a>\n\n## {m.stem}\n\n'
                     f"Run: `python -m benchmarks.{m.stem}` (source: `benchmarks/{m.name}`).\n"
                     + (f"\n{_SETUP[m.stem]}\n" if m.stem in _SETUP else ""))
        md = RESULTS / f"{m.stem}.md"
        # results/<name>.<machine>.md: the same benchmark run on another machine (a GPU box)
        variants = sorted(RESULTS.glob(f"{m.stem}.*.md"))
        if not md.exists() and not variants:
            parts.append("_No results yet: run it._\n")
        for path in ([md] if md.exists() else []) + variants:
            body = path.read_text().strip()
            # demote the result's own headings below this section's
            body = "\n".join(("###" + ln.lstrip("#")) if ln.startswith("#") else ln
                             for ln in body.splitlines())
            if path is not md:
                body = f"Results file: `benchmarks/results/{path.name}`.\n\n{body}"
            parts.append(body + "\n")
    return "\n".join(parts)


def main() -> int:
    (HERE / "README.md").write_text(build())
    print(f"wrote {HERE / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

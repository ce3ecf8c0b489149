"""Pretrained models from PyPI wheels: FP32, ORT stock and tuned, NNCF and ours, side by side.

    python -m benchmarks.converter_zoo [--models ocr-cls,magika] [--variants fp32,ort-stock,...]
        [--samples 8] [--holdout 0] [--rounds 5] [--runs 5] [--round-budget-s 0.25]
        [--threads 1]
        [--no-perf-aware] [--exact-u8s8] [--merge]
        [--nncf-venv /work/venvs/nncf] [--markdown-only]

The whole table, as the issue-16 goals are judged (every model, every variant; it prints its
expected duration, taken from the last results file's per-model wall times, before it starts)::

    PYTHONPATH=. .venv/bin/python -m benchmarks.converter_zoo

``--merge`` keeps what the last results file measured and this run does not: whole models,
and the rows of a model rerun with fewer ``--variants`` (each kept row marked with the
settings of the run that measured it), so a slow model or one variant can be rerun alone.

For each model of the real-model zoo (tests/realzoo.py: pinned wheels, cached under
~/.cache/edgeops-test-models; inputs from tests/zoo_inputs.py, made of the photos, scans and
text the test suite uses - the CTC recogniser reads single detected words and runs of words
of a printed line, aspect kept and zero-padded to 48x320 as PaddleOCR feeds it; ``ocr-det-640``
is the DBNet detector at the issue's 640x640), side
by side in one run on one machine (the catalogue: ``benchmarks/_zoo_report.VARIANTS``):

* ``fp32``: the source model in ONNX Runtime (default session optimisations);
* ``ort-stock``: ``quantize_static``, QDQ, per-channel, MinMax, its default S8S8 types, after
  the opset-13 upgrade it needs; ``ort-tuned``: the stock quantiser's best x86 settings
  (``quant_pre_process``, u8s8) - see benchmarks/_zoo_builds.py;
* ``nncf-*``: NNCF 3.4's ``nncf.quantize`` (ONNX backend) from its own venv
  (benchmarks/_nncf.py), each preset (performance, mixed) and what else its ONNX backend
  offers (full bias correction, the transformer model type); the best of them is marked;
* ``edgeops-vnni-<effort>`` / ``edgeops-x86-<effort>``: ``edgeops build`` for x86-cpu-vnni
  (8-bit weights, as stock, tuned and NNCF write; this machine has AVX-512 VNNI) and for
  x86-cpu (7-bit weights, what non-VNNI CPUs need) at each ``--effort``, default gate: what it
  accepts, or the line it refuses with;
* ``edgeops-edgetpu-<effort>`` / ``edgeops-ethos-u-<effort>``, effort ``default`` or ``max``
  (ocr-cls and ocr-det-640 only): full-integer builds, gate opened (``max_accuracy_drop``
  0.99) so the artifact exists to be measured, run in LiteRT against FP32 in ONNX Runtime;
  the row says whether the default gate would have accepted it.

``--samples`` is what every build calibrates on, and by default also what the accuracy is
measured on (calibration = validation, as the builds' own gates see it). ``--holdout N``
measures it on ``N`` further samples instead (the model's inputs after the calibration ones:
distinct inputs as far as tests/zoo_inputs.py has them, e.g. 102 word crops for the CTC
recogniser), and keeps the calibration samples' figures beside them (``task_calibration``):
a gap between the two is overfitting to the calibration set, and 8 samples' 320 time steps
make one CTC step flip 0.3 % of argmax agreement. For the CTC recogniser each row also counts
the held-out steps whose argmax differs from FP32's (``argmax_flips``, benchmarks/_zoo_ctc.py):
on zero padding or on text, and FP32's top-1 minus top-2 probability at each.

``--exact-u8s8`` is for an x86 machine without VNNI measuring the ``x86-cpu-vnni`` rows: every
variant is scored, and our builds' gates validate, on ONNX Runtime's exact U8U8 kernels
(benchmarks/_zoo_builds.exact_session), which compute what a VNNI CPU computes (without it
the saturating vpmaddubsw path scores, and gates, a model no VNNI CPU runs); the timings stay
this machine's default kernels: speed-ups of AVX2 int8, not of a VNNI CPU.

Every build runs in a fresh process (benchmarks/_zoo_builds.py): build time without imports,
peak memory = that process's own peak RSS (VmHWM). Accuracy vs FP32 on the validation samples: the task
metric the build's gate reads (the task ``auto`` infers, or the one named per model below) and
what else it measured (per-timestep argmax agreement for the CTC recogniser, class-score cosine
for the YOLO head). Latency: batch 1, ``threads`` intra-op threads, ``rounds`` interleaved
rounds of every ONNX variant, each round of each variant as many runs as fill
``round_budget_s`` of FP32's time (at least ``runs``: a 0.3 ms model gets hundreds, a 100 ms
one ``runs``; the count is recorded per model); speed vs FP32 = the median over rounds of each
round's ratio of medians (the load of shared cores drifts between rounds). An artifact that is
the source byte for byte (sha256, e.g. a pre-quantised model passed through) is marked: it is
FP32's own model, and its speed gap is noise. Issue 16's goals
are checked from the rows and printed under the table (benchmarks/_zoo_goals.py). A variant
that fails is a row saying why. Results go to benchmarks/results/converter_zoo.{json,md}
(``--out STEM``: another file, for a partial run), rewritten after every model.

Inputs changed on 2026-12-07 (eighth session): the DBNet samples had been two scans repeated
(four copies each, squashed to a square) and the recogniser's two-line strips; the whole-zoo
file ``converter_zoo.md`` and ``.x86-cpu-vnni`` predate that for ocr-det, ocr-det-640 and
ocr-rec (and predate the float-layer fix, converters/ort_float). For those models read the
``issue16-*``, ``mixfix-*``, ``ctcdata`` and ``tfround`` files, which say their inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _nncf
from benchmarks._zoo_builds import exact_session, in_child, ort_child, ours_child
from benchmarks._zoo_report import FULLINT_MODELS, VARIANTS, Variant, markdown, merged

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# model -> --task (None: auto)
MODELS: dict[str, str | None] = {"ocr-cls": None, "magika": None, "ocr-det": "text-detection",
                                 "ocr-det-small": None, "ocr-rec": None, "name-encoder": None,
                                 "yolov8-doc": None, "quantised-encoder": None,
                                 "nucleus-seg-256": "segmentation",
                                 "ocr-det-640": "text-detection"}
# a zoo model measured at another input size: the model file it is made of
_SAME_FILE = {"ocr-det-640": "ocr-det"}
# per-model wall time when the last results file has none (a first run)
_GUESS_S = 900.0
# timing: FP32 time each variant gets per round (runs = this / FP32's latency, at least
# --runs), the warm-up runs that measure that latency, and the most runs a round may take
ROUND_BUDGET_S = 0.25
WARMUP = 3
MAX_RUNS = 2000


def _source(name: str) -> Path:
    """The zoo model's .onnx: a pinned file, or one made from it (tests/realzoo_made.py)."""
    from tests.realzoo import model_path
    from tests.realzoo_made import nucleus_seg

    if name == "nucleus-seg-256":
        return nucleus_seg(256)
    return model_path(_SAME_FILE.get(name, name))


def _session(path: Path | bytes, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so,
                                providers=["CPUExecutionProvider"])


def _feeds(data: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(data.values())))
    return [{k: v[i:i + 1] for k, v in data.items()} for i in range(n)]


def _run(sess: Any, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    from edgeops.golden import stack_outputs

    names = [o.name for o in sess.get_outputs()]
    per: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for f in feeds:
        for n, v in zip(names, sess.run(names, f), strict=True):
            per[n].append(np.asarray(v))
    return {n: stack_outputs(v) for n, v in per.items()}


def _raw_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    r = ref.reshape(len(ref), -1).astype(np.float64)
    g = got.reshape(len(got), -1).astype(np.float64)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    return float(np.where(den > 0, (r * g).sum(1) / np.where(den > 0, den, 1), 0.0).mean())


def _latency(sessions: dict[str, Any], feed: dict[str, np.ndarray], rounds: int, runs: int
             ) -> dict[str, float]:
    """p50 ms per session over interleaved rounds (benchmarks/x86_bit_split.py reads it)."""
    return {k: v["p50_ms"] for k, v in _interleaved(sessions, feed, rounds, runs).items()}


def _interleaved(sessions: dict[str, Any], feed: dict[str, np.ndarray], rounds: int, runs: int,
                 clock: Callable[[], float] = time.perf_counter, round_budget_s: float = 0.0
                 ) -> dict[str, dict[str, Any]]:
    """p50 over all runs, and speed vs FP32 as the median over rounds of the round's FP32
    median / the variant's: on shared cores the load drifts between rounds, a round's ratio
    compares like with like. Every other round runs the variants in reverse order.

    ``runs`` is the least number of runs per variant and round; with ``round_budget_s`` a
    round gets enough runs to fill that much of FP32's time (timed over ``WARMUP`` runs,
    clamped to ``MAX_RUNS``): 5 runs of a 0.3 ms model are 1.5 ms of timing, which the
    scheduler's hiccups decide. Each row carries the ``runs_per_round`` used."""
    from converters.onnx_perf import runs_per_round

    per: dict[str, list[list[float]]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, feed)
    if round_budget_s > 0:
        probe = []
        for _ in range(WARMUP):
            t0 = clock()
            sessions["fp32"].run(None, feed)
            probe.append(clock() - t0)
        runs = runs_per_round(min(probe), round_budget_s, runs, MAX_RUNS)
    keys = list(sessions)
    for r in range(rounds):
        for k in keys if r % 2 == 0 else reversed(keys):
            ts = []
            for _ in range(runs):
                t0 = clock()
                sessions[k].run(None, feed)
                ts.append((clock() - t0) * 1000)
            per[k].append(ts)
    fp32 = [float(np.median(t)) for t in per["fp32"]]
    out: dict[str, dict[str, Any]] = {}
    for k, v in per.items():
        ratios = [f / float(np.median(t)) for f, t in zip(fp32, v, strict=True)]
        out[k] = {"p50_ms": float(np.median(np.concatenate(v))),
                  "speedup_vs_fp32": float(np.median(ratios)),
                  # the spread of the round ratios: how far apart noise alone puts them
                  "speedup_quartiles": [float(q) for q in np.percentile(ratios, (25, 75))],
                  "runs_per_round": runs}
    return out


def _opset13(src: Path, out: Path) -> Path:
    """The copy ORT's quantiser and NNCF get: opset 13 at least (``quantize_static`` needs it
    for per-channel QDQ); the source itself when it already is."""
    import onnx

    m = onnx.load(str(src))
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 13:
        return src
    onnx.save_model(onnx.version_converter.convert_version(m, 13), str(out))
    return out


def _build(var: Variant, name: str, up: Path, src: Path, cal: Path, tmp: Path, threads: int,
           perf_aware: bool, shapes: dict[str, tuple[int, ...]], nncf: Path | None,
           nncf_missing: str, budget: float = 0.01, exact: bool = False) -> dict[str, Any]:
    """One variant's build (in its own process): its row so far, with ``path`` when built."""
    out = tmp / f"{var.key}.onnx"
    if var.tool == "ort":
        res = in_child(ort_child, str(up), str(cal), str(out), bool(var.settings["tuned"]))
        return res if "error" in res else {**res, "path": str(out)}
    if var.tool == "nncf":
        if nncf is None:
            return {"error": nncf_missing}
        res = _nncf.quantise(nncf, up, cal, out, dict(var.settings))
        res.pop("versions", None)
        return res if "error" in res else {**res, "path": str(out)}
    task = MODELS.get(name)
    opts: dict[str, Any] = {"perf_aware": perf_aware, **({"task": task} if task else {})}
    assert var.target is not None and var.effort is not None
    return in_child(ours_child, str(src), str(cal), str(tmp / var.key), var.target, var.effort,
                    opts, shapes if var.full_integer else {},
                    0.99 if var.full_integer else budget, exact and not var.full_integer)


def _litert(v: dict[str, Any], output_names: list[str], feeds: list[dict[str, np.ndarray]],
            runs: int) -> tuple[dict[str, np.ndarray], float]:
    """A full-integer artifact's float outputs in ONNX layout (stacked), and its median ms."""
    from converters.tflite._runtime import LiteRT
    from converters.tflite.convert import to_artifact_layout, to_onnx_layout
    from edgeops.golden import stack_outputs

    rt = LiteRT(Path(v["path"]).read_bytes())
    lay = v["io_layout"]
    ins = [str(d["name"]) for d in rt.inputs]
    if not all(n in feeds[0] for n in ins):       # names not kept: the ONNX graph's order
        ins = list(feeds[0])
    outs = [str(d["name"]) for d in rt.outputs]
    if not all(n in output_names for n in outs):
        outs = output_names
    per: dict[str, list[np.ndarray]] = {n: [] for n in outs}
    for f in feeds:
        for n, y in zip(outs, rt.run_float([to_artifact_layout(f[k], lay[k]) for k in ins]),
                        strict=True):
            per[n].append(to_onnx_layout(y, lay[n]))
    x = rt.quantise_inputs([to_artifact_layout(feeds[0][k], lay[k]) for k in ins])
    times = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        rt.run(x)
        times.append((time.perf_counter() - t0) * 1000)
    return {n: stack_outputs(v) for n, v in per.items()}, float(np.median(times[1:]))


def one(name: str, samples: int, threads: int, rounds: int, runs: int, perf_aware: bool,
        variants: list[Variant], nncf: Path | None, nncf_missing: str,
        budget: float = 0.01, round_budget_s: float = ROUND_BUDGET_S, holdout: int = 0,
        exact: bool = False) -> dict[str, Any]:
    import onnx

    from benchmarks._zoo_ctc import ctc_flips
    from converters.tasks import infer_task, task_score
    from tests.zoo_inputs import INPUTS

    t_start = time.perf_counter()
    src = _source(name)
    src_sha = hashlib.sha256(src.read_bytes()).hexdigest()
    both = INPUTS[name](samples + holdout)
    data = {k: v[:samples] for k, v in both.items()}
    feeds = _feeds(both)                      # calibration samples first, then held-out
    shapes = {k: tuple(int(d) for d in v.shape) for k, v in feeds[0].items()}
    entry: dict[str, Any] = {"samples": samples, "input_shapes": shapes, "variants": {},
                             **({"holdout": holdout} if holdout else {})}
    rows: dict[str, dict[str, Any]] = entry["variants"]
    with tempfile.TemporaryDirectory(prefix="edgeops-zoo-") as tmp_s:
        tmp = Path(tmp_s)
        cal = tmp / "cal.npz"
        np.savez(cal, **data)
        sessions: dict[str, Any] = {"fp32": _session(src, threads)}
        ref = _run(sessions["fp32"], feeds)
        spec = infer_task(onnx.load(str(src)), ref, shapes, MODELS.get(name) or "auto")
        entry["task"] = {"task": spec.task, "inferred": spec.inferred, "why": spec.why}
        up = _opset13(src, tmp / "src13.onnx")
        outputs: dict[str, dict[str, np.ndarray]] = {"fp32": ref}
        rows["fp32"] = {}
        for var in variants:
            if var.tool == "fp32" or (var.full_integer and name not in FULLINT_MODELS):
                continue
            print(f"  {name}: {var.key}", file=sys.stderr, flush=True)
            row = _build(var, name, up, src, cal, tmp, threads, perf_aware, shapes, nncf,
                         nncf_missing, budget, exact)
            rows[var.key] = row
            path = row.pop("path", None)
            if path is None:
                continue
            row["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            if row["sha256"] == src_sha:       # the source passed through: FP32's own model
                row["same_as_source"] = True
            try:
                if var.full_integer:
                    row["path"] = path
                    outputs[var.key], row["litert_p50_ms"] = _litert(row, list(ref), feeds,
                                                                     runs)
                else:
                    sessions[var.key] = _session(Path(path), threads)
                    outputs[var.key] = _run(exact_session(Path(path), threads=threads)
                                            if exact else sessions[var.key], feeds)
            except Exception as exc:       # built but does not run: the row says so
                sessions.pop(var.key, None)
                row["error"] = f"built, but does not run: {type(exc).__name__}: " \
                               f"{str(exc).splitlines()[0][:160] if str(exc) else ''}"
            row.pop("path", None)
            row.pop("io_layout", None)
        first = next(iter(ref))
        cal_part, val_part = slice(0, samples), slice(samples if holdout else 0, None)
        for k, out in outputs.items():
            def part(o: dict[str, np.ndarray], s: slice) -> dict[str, np.ndarray]:
                return {n: v[s] for n, v in o.items()}
            score = task_score(spec, part(ref, val_part), part(out, val_part))
            rows[k].update({"task_metric": score.metric, "task_value": score.value,
                            "task_drop": score.drop, "task_details": score.details,
                            "raw_cosine": _raw_cosine(ref[first][val_part],
                                                      out[first][val_part])})
            if holdout:
                cs = task_score(spec, part(ref, cal_part), part(out, cal_part))
                rows[k]["task_calibration"] = {"value": cs.value, "details": cs.details}
            if spec.task == "ctc" and spec.outputs and k != "fp32":
                o = spec.outputs[0]
                rows[k]["argmax_flips"] = ctc_flips(ref[o][val_part], out[o][val_part],
                                                    next(iter(both.values()))[val_part])
        for k, v in _interleaved(sessions, feeds[0], rounds, runs,
                                 round_budget_s=round_budget_s).items():
            entry["runs_per_round"] = v.pop("runs_per_round")
            rows[k].update(v)
    entry["wall_s"] = time.perf_counter() - t_start
    return entry


def run(models: list[str], samples: int, threads: int, rounds: int, runs: int,
        perf_aware: bool, variants: list[Variant], nncf_venv: Path,
        progress: Callable[[dict[str, Any]], None] | None = None,
        budget: float = 0.01, round_budget_s: float = ROUND_BUDGET_S, holdout: int = 0,
        exact: bool = False) -> dict[str, Any]:
    """Every model in turn; ``progress`` gets the result so far after each model."""
    import onnx
    import onnxruntime

    from converters.onnx_quant import cpu_facts
    from converters.tflite._runtime import litert_version

    nncf, missing = _nncf.find(nncf_venv)
    result: dict[str, Any] = {
        "threads": threads, "rounds": rounds, "runs_per_round": runs,
        "round_budget_s": round_budget_s, "samples": samples,
        **({"holdout": holdout} if holdout else {}),
        **({"exact_u8s8": True} if exact else {}),
        "perf_aware": perf_aware, "cpu": cpu_facts(), "variants": [v.key for v in variants],
        **({"budget": budget} if budget != 0.01 else {}),
        "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                     "numpy": np.__version__, "python": platform.python_version(),
                     "litert": litert_version(),
                     **({"nncf": "3.4.0 (" + str(nncf_venv) + ")"} if nncf else {})},
        **({"nncf_missing": missing} if missing else {}),
        "loadavg_start": list(os.getloadavg()), "models": {}}
    for name in models:
        print(f"== {name}", file=sys.stderr, flush=True)
        result["models"][name] = one(name, samples, threads, rounds, runs, perf_aware,
                                     variants, nncf, missing, budget, round_budget_s,
                                     holdout, exact)
        result["loadavg_end"] = list(os.getloadavg())
        if progress is not None:
            progress(result)
    return result


def expected_s(models: list[str], last: dict[str, Any] | None, variants: int) -> float:
    """The run's expected wall time: each model's from the last results file, scaled from the
    rows that run built to the ``variants`` this one builds (the builds dominate); a first
    guess for a model it lacks or only has from an earlier merged run."""
    total = 0.0
    for name in models:
        e = (last or {}).get("models", {}).get(name, {})
        if "wall_s" not in e or "earlier_run" in e:
            total += _GUESS_S
            continue
        built = max(1, len(e.get("variants", {})))
        total += float(e["wall_s"]) * variants / built
    return total


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(ROOT))             # tests.realzoo / tests.zoo_inputs
    keys = [v.key for v in VARIANTS]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--variants", default=",".join(keys),
                    help=f"comma-separated, of: {', '.join(keys)}")
    ap.add_argument("--samples", type=int, default=8,
                    help="calibration samples per model (also the validation ones, unless "
                         "--holdout)")
    ap.add_argument("--holdout", type=int, default=0,
                    help="measure accuracy on this many further samples, not on the "
                         "calibration ones (0: calibration = validation)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5,
                    help="the least runs per variant and round (more for a fast model: "
                         "--round-budget-s)")
    ap.add_argument("--round-budget-s", type=float, default=ROUND_BUDGET_S,
                    help="FP32 time per variant and round, seconds: runs per round = this / "
                         "FP32's latency, at least --runs (0: exactly --runs)")
    ap.add_argument("--no-perf-aware", dest="perf_aware", action="store_false")
    ap.add_argument("--budget", type=float, default=0.01,
                    help="--max-accuracy-drop of our ONNX builds (default 0.01, the product's "
                         "default; e.g. 0.10 for a goal of mask IoU >= 0.90)")
    ap.add_argument("--exact-u8s8", action="store_true",
                    help="score every variant, and validate our builds, on ORT's exact U8U8 "
                         "kernels: what a VNNI CPU computes, on a machine without VNNI "
                         "(timings stay this machine's)")
    ap.add_argument("--nncf-venv", type=Path, default=_nncf.DEFAULT_VENV)
    ap.add_argument("--merge", action="store_true",
                    help="keep the last results' models and rows that this run does not measure")
    ap.add_argument("--markdown-only", action="store_true",
                    help="rewrite the .md from the last .json")
    ap.add_argument("--out", default="converter_zoo",
                    help="results file stem under benchmarks/results (a partial run's own)")
    args = ap.parse_args(argv)
    last_path = RESULTS / f"{args.out}.json"
    last = json.loads(last_path.read_text()) if last_path.exists() else None
    if args.markdown_only:
        if last is None:
            sys.exit(f"no {last_path}: run the benchmark first")
        md = markdown(last)
        last_path.with_suffix(".md").write_text(md)
        print(md)
        return
    models = [m for m in args.models.split(",") if m]
    wanted = [k for k in args.variants.split(",") if k]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(wanted) - set(keys))
    if unknown:
        sys.exit(f"unknown model(s) or variant(s): {', '.join(unknown)}; models: "
                 f"{', '.join(MODELS)}; variants: {', '.join(keys)}")
    variants = [v for v in VARIANTS if v.key in wanted or v.key == "fp32"]
    print(f"converter_zoo: {len(models)} model(s) x {len(variants)} variant(s); expected "
          f"duration ~{expected_s(models, last, len(variants)) / 60:.0f} min on this machine "
          f"(last run's per-model wall times, {_GUESS_S / 60:.0f} min for a model without one)",
          file=sys.stderr, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)

    def save(r: dict[str, Any]) -> str:        # after every model: a stopped run keeps them
        if args.merge and last is not None:
            r = merged(r, last)
        last_path.write_text(json.dumps(r, indent=2, sort_keys=True, default=str) + "\n")
        md = markdown(r)
        last_path.with_suffix(".md").write_text(md)
        return md

    r = run(models, args.samples, args.threads, args.rounds, args.runs, args.perf_aware,
            variants, args.nncf_venv, save, args.budget, args.round_budget_s, args.holdout,
            args.exact_u8s8)
    print(save(r))


if __name__ == "__main__":
    main()

"""The real-model zoo through edgeops' TFLite writer and through onnx2tf, in one run.

Per zoo model (tests/realzoo.py; fetched once into the test-model cache) and each converter:
conversion wall time and the converting process's peak RSS (a fresh process each, imports
included for both, as a command-line run; edgeops' time without imports beside it), op and
TRANSPOSE counts of the FP32 artifact, LiteRT latency (1 thread, both artifacts loaded side by
side, interleaved rounds, medians of per-round medians and of per-round ratios) and the max
error against ONNX Runtime FP32 on real scans (relative to the output's magnitude, at least
0.01, as in tests/converters/tflite/test_zoo_models.py).

onnx2tf runs from its own venv (``--onnx2tf-venv``, default /work/onnx2tf-venv: ``python3 -m
venv`` + ``pip install onnx2tf tensorflow==2.19.* tf-keras onnxsim onnx_graphsurgeon
sng4onnx``); without it the onnx2tf columns are skipped. It is given a copy of the model with
the input shapes fixed and node names outside TensorFlow's scope-name alphabet replaced (it
crashes on ``@``); it runs with proxies pointing at a closed port so nothing is downloaded,
and with the 20x128x128x3 sample-image file it would otherwise fetch from GitHub for 4D
image inputs (made here from local photos) in its working directory.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx

__all__ = ["ZOO_SHAPES", "bench_zoo", "markdown"]

# zoo model -> input shapes (the dynamic dims fixed as the issue measured them)
ZOO_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "ocr-cls": {"x": (1, 3, 48, 192)},
    "ocr-det": {"x": (1, 3, 640, 640)},
    "ocr-rec": {"x": (1, 3, 48, 320)},
    "ocr-det-small": {"x": (1, 3, 640, 640)},
    "yolov8-doc": {"images": (1, 3, 1024, 1024)},
    "vad": {"input": (1, 576), "state": (2, 1, 128), "sr": ()},
    "vad-ifless": {"input": (1, 576), "state": (2, 1, 128), "sr": ()},
    "magika": {"bytes": (1, 2048)},
    "name-encoder": {"src": (1, 16), "src_mask": (1, 16)},
    "minilm": {"input_ids": (1, 16), "attention_mask": (1, 16), "token_type_ids": (1, 16)},
    "nucleus-seg-256": {"input:0": (1, 256, 256, 1)},
}
_SAMPLE_NPY = "calibration_image_sample_data_20x128x128x3_float32.npy"
_SCOPE_OK = re.compile(r"[^A-Za-z0-9_./>-]")
_OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
            "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
            "NO_PROXY": "", "no_proxy": ""}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _feeds(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], i: int
           ) -> dict[str, np.ndarray]:
    """Real inputs: a scan for image inputs, speech-like noise / byte values otherwise."""
    from tests.realdata import scans

    rng = np.random.default_rng(i)
    out: dict[str, np.ndarray] = {}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    for name, shp in shapes.items():
        et = types.get(name, onnx.TensorProto.FLOAT)
        if len(shp) == 4 and shp[-1] == 1 and shp[1] > 4:   # channels-last grey, in [0, 1]
            img = scans()[i].astype(np.float32) / 255.0
            rows = (np.arange(shp[1]) * img.shape[0] / shp[1]).astype(int)
            cols = (np.arange(shp[2]) * img.shape[1] / shp[2]).astype(int)
            out[name] = np.ascontiguousarray(img[rows][:, cols][None, :, :, None], np.float32)
        elif len(shp) == 4:
            img = scans()[i].astype(np.float32) / 255.0
            rows = (np.arange(shp[2]) * img.shape[0] / shp[2]).astype(int)
            cols = (np.arange(shp[3]) * img.shape[1] / shp[3]).astype(int)
            x = (img[rows][:, cols] - 0.5) / 0.5
            out[name] = np.ascontiguousarray(np.repeat(x[None, None], shp[1], axis=1),
                                             np.float32)
        elif et == onnx.TensorProto.FLOAT:
            out[name] = (rng.standard_normal(shp) * 0.1).astype(np.float32)
        elif et == onnx.TensorProto.BOOL:
            out[name] = np.ones(shp, bool)
        else:
            dt = onnx.helper.tensor_dtype_to_np_dtype(et)
            out[name] = (np.full(shp, 16000) if name == "sr" else     # token ids, small
                         rng.integers(1, 50, shp)).astype(dt)                 # vocabularies
    return out


def _token_feeds(name: str, shapes: dict[str, tuple[int, ...]], i: int
                 ) -> dict[str, np.ndarray] | None:
    """Real-ish token ids for the BERT-vocabulary encoder (its token_type_ids must be 0/1,
    its ids within the vocabulary); None for every other model."""
    if name != "minilm":
        return None
    from tests.zoo_inputs import bert_tokens

    toks = bert_tokens(2, shapes["input_ids"][1])
    return {k: v[i:i + 1] for k, v in toks.items()}


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def _ours_child(path: str, shapes: dict[str, tuple[int, ...]], rewrites: list[str],
                out: str) -> dict[str, Any]:
    """Fresh process: convert, record wall time and the process's own peak RSS (VmHWM:
    ``ru_maxrss`` would carry the parent's across the spawn)."""
    t0 = time.perf_counter()              # a spawned process: imports counted, as for a CLI
    from benchmarks._rss import peak_rss_mib
    from converters.tflite import convert
    from edgeops.errors import EdgeOpsError

    model = onnx.load(path)
    t1 = time.perf_counter()
    try:
        res = convert(model, input_shapes={k: v for k, v in shapes.items() if v},
                      rewrites=tuple(rewrites))
    except EdgeOpsError as exc:
        return {"error": exc.message[:400]}
    Path(out).write_bytes(res.model)
    return {"convert_s": time.perf_counter() - t0, "convert_only_s": time.perf_counter() - t1,
            "peak_rss_mib": peak_rss_mib(),
            "io_layout": res.io_layout, "inputs": res.input_names,
            "outputs": res.output_names}


def _onnx2tf_copy(src: Path, shapes: dict[str, tuple[int, ...]], dst: Path) -> list[str]:
    """The copy onnx2tf gets: static input shapes, scope-safe node names. What was changed."""
    m = onnx.load(str(src))
    changed = []
    for vi in m.graph.input:
        if shapes.get(vi.name):
            dims = vi.type.tensor_type.shape.dim
            for d, v in zip(dims, shapes[vi.name], strict=False):
                d.Clear()
                d.dim_value = v
    renamed = 0
    for n in m.graph.node:
        safe = _SCOPE_OK.sub("_", n.name)
        renamed += safe != n.name
        n.name = safe
    if renamed:
        changed.append(f"{renamed} node names made scope-safe")
    onnx.save(m, str(dst))
    return changed


_TIMED = ("import json, resource, subprocess, sys, time\n"
          "t0 = time.perf_counter()\n"
          "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=600)\n"
          "print(json.dumps({'rc': p.returncode, 's': time.perf_counter() - t0,\n"
          "  'rss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,\n"
          "  'tail': (p.stdout + p.stderr)[-3000:]}))\n")


def _run_onnx2tf(venv: Path, model: Path, shapes: dict[str, tuple[int, ...]], work: Path
                 ) -> dict[str, Any]:
    from tests.realdata import photos

    work.mkdir(parents=True, exist_ok=True)
    copy = work / "model.onnx"
    changes = _onnx2tf_copy(model, shapes, copy)
    imgs = []
    for p in photos()[:20]:                       # its sample file, made from local photos
        rows = (np.arange(128) * p.shape[0] / 128).astype(int)
        cols = (np.arange(128) * p.shape[1] / 128).astype(int)
        imgs.append(p[rows][:, cols].astype(np.float32) / 255.0)
    while len(imgs) < 20:
        imgs.append(imgs[len(imgs) % 8])
    np.save(work / _SAMPLE_NPY, np.stack(imgs).astype(np.float32))
    before = _sha(copy)
    env = {**os.environ, **_OFFLINE, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
           "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", _TIMED,
                           str(venv / "bin" / "onnx2tf"), "-i", str(copy), "-o",
                           str(work / "out")], cwd=work, env=env, capture_output=True,
                          text=True, timeout=700, check=False)
    try:
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": f"onnx2tf wrapper failed: {proc.stderr[-300:]}"}
    out = work / "out" / "model_float32.tflite"
    doc: dict[str, Any] = {"copy_changes": changes, "rewrote_input": _sha(copy) != before}
    if r["rc"] != 0 or not out.exists():
        last = [ln for ln in r["tail"].splitlines() if "Error" in ln or "ERROR" in ln]
        return {**doc, "error": (last[-1] if last else r["tail"][-200:]).strip()[:300]}
    return {**doc, "convert_s": r["s"], "peak_rss_mib": r["rss_kib"] / 1024, "path": str(out)}


def _op_counts(data: bytes) -> dict[str, int]:
    from converters.tflite._writer import schema

    s = schema()
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    m = s.Model.GetRootAsModel(data, 0)
    sg = m.Subgraphs(0)
    counts: dict[str, int] = {}
    for i in range(sg.OperatorsLength()):
        oc = m.OperatorCodes(sg.Operators(i).OpcodeIndex())
        k = names.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), "CUSTOM")
        if k == "CUSTOM":
            k = f"CUSTOM {(oc.CustomCode() or b'').decode()}"
        counts[k] = counts.get(k, 0) + 1
    return counts


def _match(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """``got`` in ``ref``'s axis order (onnx2tf keeps outputs channels-last); best permutation."""
    import itertools

    if got.shape == ref.shape:
        return got
    best, err = got.reshape(ref.shape) if got.size == ref.size else got, np.inf
    for p in itertools.permutations(range(got.ndim)):
        t = np.transpose(got, p)
        if t.shape == ref.shape:
            e = float(np.abs(t - ref).max())
            if e < err:
                best, err = t, e
    return best


def _rel_err(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Worst output error; outputs paired by element count (onnx2tf may reorder them), the
    best-fitting candidate taken; an output without a counterpart is an error of inf."""
    worst = 0.0
    for r in ref:
        errs = [float(np.abs(_match(r, g).astype(np.float64) - r).max()
                      / max(float(np.abs(r).max()), 1e-2))
                for g in got if g.size == r.size and _match(r, g).shape == r.shape]
        worst = max(worst, min(errs, default=float("inf")))
    return worst


def _latency(rts: dict[str, Any], feeds: dict[str, list[np.ndarray]], rounds: int, runs: int
             ) -> dict[str, Any]:
    for k, rt in rts.items():
        for _ in range(2):
            rt.run(feeds[k])
    per: dict[str, list[float]] = {k: [] for k in rts}
    keys = list(rts)
    for r in range(rounds):
        for k in (keys if r % 2 == 0 else list(reversed(keys))):
            ts = []
            for _ in range(runs):
                t0 = time.perf_counter()
                rts[k].run(feeds[k])
                ts.append((time.perf_counter() - t0) * 1e3)
            per[k].append(statistics.median(ts))
    out: dict[str, Any] = {k: statistics.median(v) for k, v in per.items()}
    if len(keys) == 2:
        out["ratio"] = statistics.median(a / b for a, b in zip(per[keys[0]], per[keys[1]],
                                                                strict=True))
    return out


def _onnx2tf_feeds(rt: Any, onnx_feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnx2tf's inputs are NHWC for 4D images; match each by name, then by shape."""
    vals = []
    for d in rt.inputs:
        name = d["name"].split(":")[0].removeprefix("serving_default_")
        src = onnx_feeds.get(name)
        if src is None:
            src = next((v for v in onnx_feeds.values() if v.size == int(np.prod(d["shape"]))),
                       next(iter(onnx_feeds.values())))
        shape = tuple(int(v) for v in d["shape"])
        if src.ndim == 4 and src.transpose(0, 2, 3, 1).shape == shape:
            vals.append(src.transpose(0, 2, 3, 1).astype(d["dtype"]))  # its NCHW -> NHWC
            continue
        vals.append(_match(np.zeros(shape), src).astype(d["dtype"])
                    if src.ndim == len(shape) else src.reshape(shape))
    return vals


def _source(name: str) -> Path:
    """The zoo model file; ``nucleus-seg-256`` is the segmenter re-made for 256x256 tiles."""
    from tests.realzoo import model_path
    from tests.realzoo_made import nucleus_seg

    return nucleus_seg(256) if name == "nucleus-seg-256" else model_path(name)


def bench_zoo(names: list[str], venv: Path | None, rounds: int = 7, runs: int = 3,
              progress: Callable[[list[dict[str, Any]]], None] | None = None
              ) -> list[dict[str, Any]]:
    from converters.tflite._fusion_perf import measured_rewrites
    from converters.tflite._runtime import LiteRT
    from converters.tflite.convert import to_artifact_layout, to_onnx_layout

    rewrites = measured_rewrites(1)["enabled"]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="tflite-zoo-"))
    try:
        for name in names:
            src = _source(name)
            shapes = ZOO_SHAPES[name]
            digest = _sha(src)
            model = onnx.load(str(src))
            row: dict[str, Any] = {"model": name, "shapes": {k: list(v) for k, v in
                                                             shapes.items()}}
            ours_path = tmp / f"{name}.edgeops.tflite"
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
                ours = ex.submit(_ours_child, str(src), shapes, rewrites, str(ours_path)).result()
            row["edgeops"] = {k: v for k, v in ours.items()
                              if k not in ("io_layout", "inputs", "outputs")}
            row["input_unchanged"] = _sha(src) == digest
            if venv is not None:
                o2t = _run_onnx2tf(venv, src, shapes, tmp / f"{name}-onnx2tf")
                row["onnx2tf"] = {k: v for k, v in o2t.items() if k != "path"}
            else:
                o2t = {"error": "skipped: no onnx2tf venv"}
                row["onnx2tf"] = o2t
            feeds = [_token_feeds(name, shapes, i) or _feeds(model, shapes, i) for i in range(2)]
            try:
                refs = [_ort(model, f) for f in feeds]
            except Exception as exc:                # no reference: report, keep going
                row["reference_error"] = str(exc)[:200]
                rows.append(row)
                continue
            rts: dict[str, Any] = {}
            lat_feeds: dict[str, list[np.ndarray]] = {}
            if "error" not in ours:
                rt = LiteRT(ours_path.read_bytes())
                got = [[to_onnx_layout(g, ours["io_layout"][o])
                        for o, g in zip(ours["outputs"],
                                        rt.run_float([to_artifact_layout(f[n], ours["io_layout"][n])
                                                      for n in ours["inputs"]]), strict=True)]
                       for f in feeds]
                row["edgeops"]["max_rel_err"] = max(_rel_err(r, g) for r, g in zip(refs, got,
                                                                                   strict=True))
                counts = _op_counts(ours_path.read_bytes())
                row["edgeops"].update(ops=sum(counts.values()),
                                      transposes=counts.get("TRANSPOSE", 0), op_counts=counts)
                rts["edgeops"] = rt
                lat_feeds["edgeops"] = [to_artifact_layout(feeds[0][n], ours["io_layout"][n])
                                        for n in ours["inputs"]]
            if "error" not in o2t:
                data = Path(o2t["path"]).read_bytes()
                try:
                    rt2 = LiteRT(data)
                except (RuntimeError, ValueError) as exc:
                    flex = sorted({k for k in _op_counts(data) if k.startswith("CUSTOM")})
                    o2t = row["onnx2tf"] = {
                        **row["onnx2tf"],
                        "error": f"converted in {o2t['convert_s']:.0f} s, but the artifact "
                                 f"does not run in LiteRT ({', '.join(flex) or ''}"
                                 f"{str(exc).split('Node number')[-1][:80]})"}
            if "error" not in o2t:
                got2 = [rt2.run(_onnx2tf_feeds(rt2, f)) for f in feeds]
                row["onnx2tf"]["max_rel_err"] = max(_rel_err(r, g) for r, g in zip(refs, got2,
                                                                                   strict=True))
                counts = _op_counts(data)
                row["onnx2tf"].update(ops=sum(counts.values()),
                                      transposes=counts.get("TRANSPOSE", 0), op_counts=counts)
                rts["onnx2tf"] = rt2
                lat_feeds["onnx2tf"] = _onnx2tf_feeds(rt2, feeds[0])
            if rts:
                row["litert_ms"] = _latency(rts, lat_feeds, rounds, runs)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "shapes"}, default=str),
                  file=sys.stderr)
            if progress is not None:
                progress(rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [f"# Real-model zoo: edgeops vs onnx2tf ({machine['litert']}, 1 thread)", "",
             f"Machine: {machine['processor']}, {machine['cpus']} CPUs, load average (1 min) "
             f"before/after {machine['load_before']}/{machine['load_after']}; onnx2tf "
             f"{machine.get('onnx2tf', 'absent')}. Latency: both artifacts in the same LiteRT, "
             "interleaved rounds; ratio = median per-round edgeops/onnx2tf (below 1: edgeops "
             "faster)." + (f" {machine['merged']}" if machine.get("merged") else ""), "",
             "| model | tool | convert s | peak RSS MiB | ops / TRANSPOSE | LiteRT ms | "
             "ratio | max rel err vs ORT | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = r.get("litert_ms", {})
        if "reference_error" in r:
            lines.append(f"| {r['model']} | - | no ONNX Runtime reference: "
                         f"{r['reference_error'][:120]} | | | | | | |")
            continue
        for tool in ("edgeops", "onnx2tf"):
            d = r[tool]
            if "error" in d:
                lines.append(f"| {r['model'] if tool == 'edgeops' else ''} | {tool} | fails: "
                             f"{d['error'][:160].replace('|', '/')} | | | | | | |")
                continue
            note = []
            if tool == "edgeops" and not r.get("input_unchanged", True):
                note.append("INPUT MODIFIED")
            if tool == "onnx2tf":
                note += d.get("copy_changes", [])
                if d.get("rewrote_input"):
                    note.append("rewrote its input copy")
            lines.append(
                f"| {r['model'] if tool == 'edgeops' else ''} | {tool} | "
                f"{d['convert_s']:.1f} | {d['peak_rss_mib']:.0f} | "
                f"{d['ops']} / {d['transposes']} | {_f(lat.get(tool), '.2f')} | "
                f"{_f(lat.get('ratio'), '.3f') if tool == 'edgeops' else ''} | "
                f"{d['max_rel_err']:.1e} | {'; '.join(note)} |")
    return "\n".join(lines) + "\n"

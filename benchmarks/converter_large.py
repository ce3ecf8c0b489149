"""Converter on a model over 2 GiB (external data): `edgeops build` x86-cpu INT8, end to end.

    flock /tmp/bench.lock python -m benchmarks.converter_large [--layers 17] [--d-model 2048]
        [--d-ff 8192] [--seq 16] [--opset 12] [--calibration 32] [--validation 16] [--runs 10]

Opt-in: `make bench` / ``benchmarks.run`` skip it unless named (it writes ~10 GB of scratch files
and takes tens of minutes on 2 cores); run it by hand after touching the converter's large-model
path. In a temp dir it builds a transformer-like stack of feed-forward blocks (per layer:
LayerNorm decomposed as older exporters emit it, MatMul d->4d + bias, quick-GELU, MatMul 4d->d
+ bias, residual), weights written straight to one external ``.data`` file (default 17 layers of
2048x8192 = 2.28 GB fp32, over protobuf's 2 GiB), with trained-like statistics: Gaussian
(std 0.02) plus 0.1% heavy-tailed outliers up to ~20 sigma; calibration and validation ``.npz``
with a few large-activation channels (as in real transformers). Then it runs the real CLI,
``edgeops build --target x86-cpu`` (default INT8), as a child process and measures: wall time,
peak RSS of the child (VmHWM polled from /proc), per-stage times from its progress lines, the
artifact and bundle sizes; then it verifies the bundle's signature, extracts the artifact, loads
it in ONNX Runtime (load check), compares it with the FP32 source on the validation set (cosine
per sample) and times FP32 vs INT8 at batch 1, 1 intra-op thread, interleaved rounds.
The temp dir is removed afterwards (``--keep`` keeps it). Results go to
benchmarks/results/converter_large.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.converter_onnx import _cpu as converter_onnx_cpu
from benchmarks.converter_onnx import _outputs, _session

RESULTS = Path(__file__).resolve().parent / "results"
PASSPHRASE = "converter-large-bench"  # noqa: S105 - throwaway keys in a temp dir
WEIGHT_STD = 0.02
OUTLIER_FRACTION = 0.001
SCRATCH_FACTOR = 5          # source + prepared copy + quantiser scratch + artifacts, in weight sizes


# ---------------------------------------------------------------------------------------- model


def _weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Trained-like weights: Gaussian core, a few heavy-tailed outliers (|w| up to ~20 sigma)."""
    w = rng.standard_normal(shape, dtype=np.float32) * np.float32(WEIGHT_STD)
    n = int(w.size * OUTLIER_FRACTION)
    idx = rng.integers(0, w.size, n)
    w.reshape(-1)[idx] = (rng.standard_t(3, n) * 4 * WEIGHT_STD).clip(-20 * WEIGHT_STD,
                                                                       20 * WEIGHT_STD)
    return w


def make_model(path: Path, layers: int, d_model: int, d_ff: int, seq: int, opset: int,
               seed: int = 0) -> int:
    """Write ``path`` + ``path.data`` (every initialiser external); returns the weight bytes."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    data_name = f"{path.name}.data"
    inits: list[Any] = []
    offset = 0
    with open(path.parent / data_name, "wb") as data:

        def add(name: str, a: np.ndarray) -> str:
            nonlocal offset
            a = np.ascontiguousarray(a, dtype=np.float32)
            raw = a.tobytes()
            data.write(raw)
            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(a.shape),
                            data_location=TensorProto.EXTERNAL)
            for k, v in (("location", data_name), ("offset", str(offset)),
                         ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
            offset += len(raw)
            pad = -offset % 4096                       # page-aligned, as onnx's own writer does
            data.write(b"\0" * pad)
            offset += pad
            inits.append(t)
            return name

        def const(name: str, value: float) -> str:
            inits.append(helper.make_tensor(name, TensorProto.FLOAT, [], [value]))
            return name

        nodes = []
        eps, two, gelu_k = const("ln_eps", 1e-5), const("two", 2.0), const("gelu_k", 1.702)
        x = "x"
        for i in range(layers):
            p = f"l{i}"
            g = add(f"{p}.ln.weight", 1.0 + 0.1 * rng.standard_normal(d_model, dtype=np.float32))
            b = add(f"{p}.ln.bias", 0.02 * rng.standard_normal(d_model, dtype=np.float32))
            w1 = add(f"{p}.fc1.weight", _weights(rng, (d_model, d_ff)))
            b1 = add(f"{p}.fc1.bias", 0.01 * rng.standard_normal(d_ff, dtype=np.float32))
            w2 = add(f"{p}.fc2.weight", _weights(rng, (d_ff, d_model)) / np.float32(2.0))
            b2 = add(f"{p}.fc2.bias", 0.01 * rng.standard_normal(d_model, dtype=np.float32))
            t = {k: f"{p}.{k}" for k in ("mu", "xc", "sq", "var", "ve", "sd", "xn", "xg", "ln",
                                         "h", "hb", "hk", "hs", "ha", "o", "ob", "res")}
            nodes += [
                helper.make_node("ReduceMean", [x], [t["mu"]], axes=[-1], keepdims=1),
                helper.make_node("Sub", [x, t["mu"]], [t["xc"]]),
                helper.make_node("Pow", [t["xc"], two], [t["sq"]]),
                helper.make_node("ReduceMean", [t["sq"]], [t["var"]], axes=[-1], keepdims=1),
                helper.make_node("Add", [t["var"], eps], [t["ve"]]),
                helper.make_node("Sqrt", [t["ve"]], [t["sd"]]),
                helper.make_node("Div", [t["xc"], t["sd"]], [t["xn"]]),
                helper.make_node("Mul", [t["xn"], g], [t["xg"]]),
                helper.make_node("Add", [t["xg"], b], [t["ln"]]),
                helper.make_node("MatMul", [t["ln"], w1], [t["h"]]),
                helper.make_node("Add", [t["h"], b1], [t["hb"]]),
                helper.make_node("Mul", [t["hb"], gelu_k], [t["hk"]]),
                helper.make_node("Sigmoid", [t["hk"]], [t["hs"]]),
                helper.make_node("Mul", [t["hb"], t["hs"]], [t["ha"]]),
                helper.make_node("MatMul", [t["ha"], w2], [t["o"]]),
                helper.make_node("Add", [t["o"], b2], [t["ob"]]),
                helper.make_node("Add", [x, t["ob"]], [t["res"]]),
            ]
            x = t["res"]
        nodes.append(helper.make_node("Identity", [x], ["hidden"]))
    graph = helper.make_graph(
        nodes, "ffn_stack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", seq, d_model])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", seq, d_model])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="benchmarks.converter_large")
    model.ir_version = 7 if opset <= 15 else 8
    onnx.save_model(model, str(path))
    return offset


def make_data(path: Path, n: int, seq: int, d_model: int, seed: int) -> None:
    """Hidden-state-like inputs: unit Gaussian plus 4 outlier channels (x8), as in real LLMs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, seq, d_model), dtype=np.float32)
    x[:, :, np.arange(4) * (d_model // 4)] *= 8.0
    np.savez(path, x=x)


# ---------------------------------------------------------------------------------------- build


def _hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def run_build(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run the CLI; poll the child's VmHWM (monotonic) and stamp its progress lines."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    stages: list[tuple[float, str]] = []
    err_lines: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line.rstrip())
            stages.append((round(time.perf_counter() - t0, 1), line.strip().lstrip("… ")))
            print(f"   [{stages[-1][0]:7.1f}s] {line.rstrip()}", file=sys.stderr, flush=True)

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    hwm = 0
    while proc.poll() is None:
        hwm = max(hwm, _hwm_kib(proc.pid) or 0)
        time.sleep(0.1)
    out = proc.stdout.read() if proc.stdout else ""
    th.join()
    return {"exit_code": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_mib": round(hwm / 1024, 1), "stages": stages, "stdout": out.strip(),
            "stderr_tail": err_lines[-5:]}


# ----------------------------------------------------------------------------------- measuring


def _cosine(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    r = ref.reshape(len(ref), -1).astype(np.float64)
    g = got.reshape(len(got), -1).astype(np.float64)
    return np.asarray((r * g).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)))


def _latency(sessions: dict[str, Any], x: np.ndarray, rounds: int, runs: int
             ) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {"x": x[:1]})
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, {"x": x[:1]})
                times[k].append((time.perf_counter() - t0) * 1000)
    return {k: {"p50_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)),
                "runs": len(v)} for k, v in times.items()}


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import onnx
    import onnxruntime

    from edgeops.bundle import read_bundle
    from edgeops.keys import ROLES, KeyStore

    result: dict[str, Any] = {
        "params": {k: getattr(args, k) for k in ("layers", "d_model", "d_ff", "seq", "opset",
                                                  "calibration", "validation", "threads",
                                                  "rounds", "runs")},
        "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "cpu": _cpu(), "loadavg_start": list(os.getloadavg())}
    src = tmp / "model" / "model.onnx"
    src.parent.mkdir()
    t0 = time.perf_counter()
    weight_bytes = make_model(src, args.layers, args.d_model, args.d_ff, args.seq, args.opset)
    make_data(tmp / "cal.npz", args.calibration, args.seq, args.d_model, seed=1)
    make_data(tmp / "val.npz", args.validation, args.seq, args.d_model, seed=2)
    result["model"] = {"weight_bytes": weight_bytes, "weight_gib": round(weight_bytes / 2**30, 3),
                       "proto_bytes": src.stat().st_size,
                       "data_bytes": (src.parent / "model.onnx.data").stat().st_size,
                       "generate_s": round(time.perf_counter() - t0, 1)}
    print(f"   model: {weight_bytes / 2**30:.2f} GiB of weights", file=sys.stderr)

    home = tmp / "home"
    store = KeyStore(home)
    for role in ROLES:
        store.generate(role, PASSPHRASE.encode())
    env = {**os.environ, "EDGEOPS_HOME": str(home), "EDGEOPS_KEY_PASSPHRASE": PASSPHRASE}
    cli = Path(sys.executable).parent / "edgeops"
    out = tmp / "out"
    cmd = [str(cli), "build", str(src), "--name", "ffn-large", "--version", "1.0.0",
           "--target", "x86-cpu", "--calibration", str(tmp / "cal.npz"),
           "--validation", str(tmp / "val.npz"), "--threads", str(args.threads),
           "--out", str(out), *(["--precision", args.precision] if args.precision else [])]
    result["command"] = " ".join(["edgeops", *cmd[1:]]).replace(str(tmp), "$TMP")
    b = run_build(cmd, env)
    result["build"] = {k: v for k, v in b.items() if k != "stdout"}
    if b["exit_code"] != 0:
        return result
    bundle_path = Path(b["stdout"].splitlines()[-1])
    report = json.loads((out / "ffn-large-1.0.0.report.json").read_text())
    t = report["targets"]["x86-cpu"]
    result["build"]["report"] = {"precision": t["precision"], "accuracy": t["metrics"]["accuracy"],
                                 "latency": t["metrics"]["latency"],
                                 "quantised_nodes": t["details"].get("quantised_nodes"),
                                 "float_nodes": len(t["details"].get("float_nodes") or {}),
                                 "warnings": report["warnings"]}
    bundle = read_bundle(bundle_path)
    keyids = bundle.verify([store.public_key("targets")])
    art = bundle.manifest.artifact_for("x86-cpu")
    assert art is not None
    artifact = bundle.extract_file(art.file.path, tmp / "extracted" / "model.onnx")
    result["artifact"] = {"bundle_bytes": bundle_path.stat().st_size, "file": art.file.path,
                          "artifact_bytes": art.file.size, "signature_keys": len(keyids),
                          "size_vs_source": round(art.file.size / weight_bytes, 4)}
    shutil.rmtree(out)                          # disk: the bundle is no longer needed

    with np.load(tmp / "val.npz") as z:
        x = z["x"]
    t0 = time.perf_counter()
    q = _session(artifact, args.threads)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    f = _session(src, args.threads)
    fp32_load_s = time.perf_counter() - t0
    ref, got = _outputs(f, x), _outputs(q, x)
    cos = _cosine(ref, got)
    result["accuracy"] = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                          "max_abs_error": float(np.abs(ref - got).max()),
                          "ref_abs_max": float(np.abs(ref).max()), "samples": len(x)}
    result["load"] = {"int8_session_s": round(load_s, 2), "fp32_session_s": round(fp32_load_s, 2)}
    lat = _latency({"fp32": f, "int8": q}, x, args.rounds, args.runs)
    lat["int8"]["speedup_vs_fp32"] = lat["fp32"]["p50_ms"] / lat["int8"]["p50_ms"]
    result["latency"] = lat
    result["loadavg_end"] = list(os.getloadavg())
    return result


def _cpu() -> dict[str, Any]:
    mem = ""
    try:
        mem = next(ln.split(":", 1)[1].strip() for ln in
                   Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    except (OSError, StopIteration):
        pass
    return {**converter_onnx_cpu(), "cpus": os.cpu_count(), "memory": mem}


def _isa(cpu: dict[str, Any]) -> str:
    if cpu.get("vnni"):
        return "VNNI"
    return "AVX-512, no VNNI" if cpu.get("avx512") else "AVX2, no VNNI"


def markdown(r: dict[str, Any]) -> str:
    p, m, b = r["params"], r["model"], r["build"]
    lines = ["## Converter on a model over 2 GiB (external data), x86-cpu INT8", "",
             f"Model: {p['layers']} feed-forward blocks, d_model {p['d_model']}, d_ff {p['d_ff']},"
             f" seq {p['seq']}, opset {p['opset']}; {m['weight_bytes'] / 2**30:.2f} GiB of fp32 "
             f"weights in one external .data file (graph proto {m['proto_bytes'] / 1024:.0f} "
             f"KiB); {p['calibration']} calibration / {p['validation']} validation samples. "
             f"CPU: {r['cpu']['model']} ({_isa(r['cpu'])}), {r['cpu']['cpus']} cores shared "
             "with other jobs, "
             f"{r['cpu']['memory']} RAM. onnxruntime {r['versions']['onnxruntime']}, onnx "
             f"{r['versions']['onnx']}, numpy {r['versions']['numpy']}, Python "
             f"{r['versions']['python']}. Load average (1 min) {r['loadavg_start'][0]:.1f} at "
             "start.", "", f"Command: `{r['command']}`", ""]
    if b["exit_code"] != 0:
        lines += [f"**Build failed** (exit {b['exit_code']}) after {b['wall_s']} s, peak RSS "
                  f"{b['peak_rss_mib']:.0f} MiB: `{' / '.join(b['stderr_tail'])}`", ""]
        return "\n".join(lines)
    a, acc, lat, rep = r["artifact"], r["accuracy"], r["latency"], b["report"]
    lines += [
        "| measure | value |", "|---|---|",
        f"| build wall time | {b['wall_s']:.0f} s |",
        f"| build peak RSS (child VmHWM) | {b['peak_rss_mib'] / 1024:.2f} GiB "
        f"({b['peak_rss_mib'] / (m['weight_bytes'] / 2**20):.1f}x the weights) |",
        f"| artifact ({a['file']}) | {a['artifact_bytes'] / 2**20:.0f} MiB "
        f"({a['size_vs_source']:.3f}x the fp32 weights) |",
        f"| bundle | {a['bundle_bytes'] / 2**20:.0f} MiB, signature verified |",
        f"| artifact load (ORT session) | {r['load']['int8_session_s']:.1f} s "
        f"(FP32 source: {r['load']['fp32_session_s']:.1f} s) |",
        f"| cosine vs FP32, mean / min over {acc['samples']} samples | {acc['cosine_mean']:.5f} "
        f"/ {acc['cosine_min']:.5f} |",
        f"| max abs error (output max {acc['ref_abs_max']:.2f}) | {acc['max_abs_error']:.4f} |",
        f"| latency FP32, p50 (p95), {p['threads']} thread | {lat['fp32']['p50_ms']:.1f} "
        f"({lat['fp32']['p95_ms']:.1f}) ms |",
        f"| latency INT8, p50 (p95), {p['threads']} thread | {lat['int8']['p50_ms']:.1f} "
        f"({lat['int8']['p95_ms']:.1f}) ms, {lat['int8']['speedup_vs_fp32']:.2f}x FP32 |",
        f"| quantised / float nodes | {rep['quantised_nodes']} / {rep['float_nodes']} |",
        "", f"Latency: batch 1, {p['rounds']} interleaved rounds x {p['runs']} runs, median and "
        "p95. Build stages (seconds since start, from the CLI's progress lines):", ""]
    lines += [f"- {s:.0f} s: {msg}" for s, msg in b["stages"]]
    if rep["warnings"]:
        lines += ["", "Build warnings: " + "; ".join(rep["warnings"])]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=17)
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--d-ff", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--opset", type=int, default=12, help="12: the build upgrades it to 13")
    ap.add_argument("--calibration", type=int, default=32)
    ap.add_argument("--validation", type=int, default=16)
    ap.add_argument("--precision", default=None, help="default: the profile's (int8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--tmp", type=Path, default=None, help="parent of the scratch dir")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results")
    args = ap.parse_args(argv)
    weight_bytes = args.layers * (2 * args.d_model * args.d_ff) * 4
    parent = args.tmp or Path(tempfile.gettempdir())
    free = shutil.disk_usage(parent).free
    if free < SCRATCH_FACTOR * weight_bytes:
        print(f"error: {parent} has {free / 2**30:.1f} GiB free; this run needs about "
              f"{SCRATCH_FACTOR * weight_bytes / 2**30:.1f} GiB (pass --tmp DIR elsewhere)",
              file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="edgeops-large-", dir=parent))
    try:
        r = run(args, tmp)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    md = markdown(r)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "converter_large.json").write_text(json.dumps(r, indent=2, sort_keys=True)
                                                      + "\n")
        (RESULTS / "converter_large.md").write_text(md)
    print(md)
    return 0 if r["build"]["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""cuda-gpu FP16 artifact vs the FP32 source model, both on ONNX Runtime's CUDA provider.

    python -m benchmarks.converter_gpu [--rounds 5] [--runs 50] [--batches 1,256] [--models a,b]

Needs onnxruntime-gpu and an NVIDIA GPU; without ``CUDAExecutionProvider`` it says so and
writes nothing (exit 0, so ``make bench`` on a CPU machine goes on). For each model in
benchmarks/models (PyTorch exports with trained weights, see make_models.py) it runs the real
``edgeops build --target cuda-gpu`` (converters.build: FP16 with FP32 I/O, unsafe ops kept
FP32, the artifact loaded and compared with FP32 before it is accepted) and then, side by side in one process:

* ``fp32``: the source model on the CUDA provider (the baseline);
* ``fp16``: the accepted artifact on the CUDA provider;
* ``fp32-cpu``: the source model on the CPU provider (all cores), for scale.

Latency: ``rounds`` interleaved rounds of ``runs`` calls of ``session.run`` with NumPy I/O (so
host-device copies are included, as a device application sees them), per batch size; median and
p95. Accuracy vs FP32 on the validation set: cosine similarity (mean and min), top-1 agreement
for classifiers, pixel agreement for segmentation. The session's active providers are recorded,
so a silent CPU fallback shows in the table. Results go to
benchmarks/results/converter_gpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.converter_onnx import MODELS, MODELS_DIR, RESULTS, _accuracy, _latency

CUDA = "CUDAExecutionProvider"


def _session(path: Path, providers: list[str]) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=providers)


def _outputs(sess: Any, x: np.ndarray, batch: int = 50) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0]
                           for i in range(0, len(x), batch)])


def _build(name: str, work: Path) -> tuple[Path, dict[str, Any], float]:
    from converters.api import BuildRequest
    from converters.build import build

    req = BuildRequest(model=MODELS_DIR / f"{name}.onnx", name=name, version="1.0.0",
                       targets=("cuda-gpu",), validation=MODELS_DIR / f"{name}.val.npz")
    t0 = time.perf_counter()
    (art,) = build(req, lambda m: print(f"    {m}", file=sys.stderr), work).artifacts
    return art.path, dict(art.details), time.perf_counter() - t0


def _gpu_name() -> str:
    from hardware_tests.machine import gpu_state

    gpus = gpu_state()
    return f"{gpus[0].get('name', '?')}, {gpus[0].get('driver_version', '?')}" if gpus else "?"


def run(models: tuple[str, ...], batches: tuple[int, ...], rounds: int, runs: int) -> dict[str, Any]:
    import onnxruntime as ort

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        for name in models:
            src = MODELS_DIR / f"{name}.onnx"
            val = np.load(MODELS_DIR / f"{name}.val.npz")
            x = val["input"].astype(np.float32)
            labels = val["labels"] if "labels" in val.files else None
            print(f"{name}: edgeops build --target cuda-gpu", file=sys.stderr)
            art, details, build_s = _build(name, Path(d) / name)
            sessions = {"fp32": _session(src, [CUDA, "CPUExecutionProvider"]),
                        "fp16": _session(art, [CUDA, "CPUExecutionProvider"]),
                        "fp32-cpu": _session(src, ["CPUExecutionProvider"])}
            active = {k: s.get_providers()[0] for k, s in sessions.items()}
            ref = _outputs(sessions["fp32-cpu"], x)
            acc = {k: _accuracy(name, ref, _outputs(s, x), labels) for k, s in sessions.items()}
            for b in batches:
                xb = np.ascontiguousarray(np.resize(x, (b, *x.shape[1:])))
                lat = _latency(sessions, xb, rounds, runs, batch=b, warmup=10)
                for k in sessions:
                    rows.append({"model": name, "variant": k, "batch": b, "provider": active[k],
                                 "size_kib": round((art if k == "fp16" else src).stat().st_size / 1024),
                                 **lat[k], "speedup_vs_fp32_cuda": lat["fp32"]["p50_ms"] / lat[k]["p50_ms"],
                                 **acc[k], "build_s": round(build_s, 1) if k == "fp16" else None,
                                 "fp32_op_types": details.get("fp32_op_types") if k == "fp16" else None})
    return {"benchmark": "converter_gpu", "rounds": rounds, "runs": runs, "rows": rows,
            "machine": {"gpu": _gpu_name(), "platform": platform.platform(), "cpus": os.cpu_count()},
            "versions": {"python": platform.python_version(), "onnxruntime": ort.__version__,
                         "numpy": np.__version__, "providers": ort.get_available_providers()}}


def markdown(r: dict[str, Any]) -> str:
    v, m = r["versions"], r["machine"]
    lines = ["## cuda-gpu FP16 artifact vs FP32, both on the CUDA provider", "",
             f"GPU: {m['gpu']}; {m['cpus']} CPUs. onnxruntime {v['onnxruntime']} "
             f"(available providers: {', '.join(v['providers'])}), numpy {v['numpy']}, "
             f"Python {v['python']}. Latency = median (p95) of {r['rounds']}×{r['runs']} interleaved "
             "`session.run` calls with NumPy I/O (host-device copies included); accuracy vs the "
             "FP32 model on the CPU provider over the validation set.", "",
             "| model | batch | variant | provider | size KiB | p50 ms (p95) | × vs FP32 CUDA | "
             "cosine mean / min | top-1 / pixel agree |",
             "|---|---:|---|---|---:|---|---:|---|---|"]
    for x in r["rows"]:
        agree = x.get("top1_agreement", x.get("pixel_agreement"))
        lines.append(
            f"| {x['model']} | {x['batch']} | {x['variant']} | {x['provider']} | {x['size_kib']} | "
            f"{x['p50_ms']:.3f} ({x['p95_ms']:.3f}) | {x['speedup_vs_fp32_cuda']:.2f}× | "
            f"{x['cosine_mean']:.5f} / {x['cosine_min']:.5f} | "
            f"{'-' if agree is None else f'{agree:.4f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        print("converter_gpu: no CUDAExecutionProvider in this ONNX Runtime; install "
              "onnxruntime-gpu on a machine with an NVIDIA GPU and run it there", file=sys.stderr)
        return 2
    r = run(tuple(args.models.split(",")), tuple(int(b) for b in args.batches.split(",")),
            args.rounds, args.runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "converter_gpu.json").write_text(json.dumps(r, indent=2, sort_keys=True) + "\n")
    md = markdown(r)
    (RESULTS / "converter_gpu.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

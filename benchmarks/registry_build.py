"""What building from an MLflow registry adds to `edgeops build`, beside a build from a local file.

The same model is built twice per repeat, interleaved: from its local ``.onnx`` file (the
baseline) and from ``models:/NAME@champion`` on a real MLflow tracking server on loopback
(``mlflow server``, SQLite backend, local artifact store; started once, its start-up reported
apart). Both are whole ``edgeops build`` processes (x86-cpu, FP32, 1 thread, synthetic data),
so the registry side pays everything a user pays: importing the MLflow client, the health
probe, resolving the alias, the run lookup for its git commit, downloading the model's files
and digesting them. A second table times that resolution alone in one process
(:func:`edgeops.registry.source.prepare_sources`), after a warm-up, to separate it from the
import. Models: the example vehicle classifier (small MLP) and a 4 MB MLP, both logged with
``mlflow.onnx.log_model``. Medians over repeats; ratios against the same-run local build.

Run: ``python -m benchmarks.registry_build [--repeats N]``; writes
results/registry_build.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeops.fsutil import atomic_write

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _mlp(path: Path, width: int = 512, depth: int = 4) -> Path:
    """A plain MLP, float32 weights (~width² × depth × 4 bytes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(depth):
        w = (rng.standard_normal((width, width)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"]))
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", width])], [helper.make_tensor_value_info(
            prev, TensorProto.FLOAT, ["N", width])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _log(uri: str, name: str, model: Path) -> None:
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        mlflow.set_tag("mlflow.source.git.commit", "0" * 40)
        info = mlflow.onnx.log_model(onnx.load(str(model)), name="model",
                                     registered_model_name=name)
    MlflowClient(uri).set_registered_model_alias(name, "champion",
                                                 str(info.registered_model_version))


def _build(src: str, out: Path, env: dict[str, str]) -> float:
    cmd = [sys.executable, "-m", "edgeops.cli.main", "build", src, "--name", "bench",
           "--version", "1.0.0", "--target", "x86-cpu", "--precision", "fp32",
           "--no-perf-aware", "--out", str(out), "--json"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=ROOT, timeout=300)
    return time.perf_counter() - t


def _import_s(code: str, env: dict[str, str], n: int = 3) -> float:
    """Median wall time of a fresh interpreter running ``code``."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=120)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _resolve_only(src: str, scratch: Path, n: int) -> list[float]:
    from edgeops.registry.source import prepare_sources

    prepare_sources(src, None, None, scratch / "warm")          # imports, connection
    times = []
    for i in range(n):
        t = time.perf_counter()
        prepare_sources(src, None, None, scratch / f"r{i}")
        times.append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    import mlflow

    from edgeops.examples import make_vehicle_classifier
    from edgeops.registry.mlflow_server import LocalMlflowServer

    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "loadavg_start": list(os.getloadavg())},
        "versions": {"mlflow": mlflow.__version__}, "repeats": args.repeats,
        "build": {"targets": ["x86-cpu"], "precision": "fp32", "threads": 1}, "models": {}}
    with tempfile.TemporaryDirectory(prefix="edgeops-bench-reg-") as tmp_s:
        tmp = Path(tmp_s)
        server = LocalMlflowServer(tmp / "mlflow")
        t = time.perf_counter()
        uri = server.start()
        result["server_start_s"] = round(time.perf_counter() - t, 2)
        try:
            models = {"vehicle-classifier": make_vehicle_classifier(tmp / "vc").model,
                      "mlp-4mb": _mlp(tmp / "mlp.onnx")}
            env = {**os.environ, "EDGEOPS_HOME": str(tmp / "home"),
                   "EDGEOPS_KEY_PASSPHRASE": "bench", "MLFLOW_TRACKING_URI": uri,
                   "PYTHONPATH": str(ROOT)}
            subprocess.run([sys.executable, "-m", "edgeops.cli.main", "keys", "init"],
                           check=True, capture_output=True, env=env, cwd=ROOT)
            os.environ["MLFLOW_TRACKING_URI"] = uri
            bare = _import_s("import edgeops.cli.main", env)
            with_mlflow = _import_s("import edgeops.cli.main, mlflow.artifacts, mlflow.models; "
                                    "from mlflow.tracking import MlflowClient", env)
            result["mlflow_import_s"] = round(with_mlflow - bare, 3)
            for name, path in models.items():
                _log(uri, name, path)
                local, registry = [], []
                for r in range(args.repeats):
                    local.append(_build(str(path), tmp / f"out-l-{name}-{r}", env))
                    registry.append(_build(f"models:/{name}@champion",
                                           tmp / f"out-r-{name}-{r}", env))
                resolve = _resolve_only(f"models:/{name}@champion", tmp / f"res-{name}",
                                        args.repeats * 2)
                ml, mr = statistics.median(local), statistics.median(registry)
                result["models"][name] = {
                    "size_bytes": path.stat().st_size,
                    "local_s": [round(x, 3) for x in local],
                    "registry_s": [round(x, 3) for x in registry],
                    "local_median_s": round(ml, 3), "registry_median_s": round(mr, 3),
                    "added_s": round(mr - ml, 3), "ratio": round(mr / ml, 3),
                    "resolve_only_ms": [round(x * 1000, 1) for x in resolve],
                    "resolve_only_median_ms": round(statistics.median(resolve) * 1000, 1)}
        finally:
            server.stop()
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    RESULTS.mkdir(exist_ok=True)
    atomic_write(RESULTS / "registry_build.json",
                 (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    atomic_write(RESULTS / "registry_build.md", _markdown(result).encode())
    print(_markdown(result))
    return 0


def _markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"# registry_build: `edgeops build` from MLflow vs from a local file "
             f"(median of {r['repeats']} interleaved repeats)", "",
             f"Python {m['python']}, MLflow {r['versions']['mlflow']} (mlflow-skinny client, "
             f"`mlflow server` on loopback, SQLite + local artifacts), {m['cpus']} CPUs "
             f"(load {m['loadavg_start'][0]:.1f} → {m['loadavg_end'][0]:.1f}); build: x86-cpu "
             f"FP32, 1 thread, one `edgeops build` process each. Server start-up (once, not in "
             f"the table): {r['server_start_s']} s.", "",
             "| model | size | local file s | models:/NAME@champion s | added s | ratio "
             "| resolution alone, in-process ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, d in r["models"].items():
        lines.append(f"| {name} | {d['size_bytes'] / 1024:.0f} KiB | {d['local_median_s']} "
                     f"| {d['registry_median_s']} | {d['added_s']:+} | {d['ratio']} "
                     f"| {d['resolve_only_median_ms']} |")
    lines += ["", "Added time = MLflow client import + health probe + alias/version/run "
              "lookups + download + digest; the in-process column is the same without the "
              f"import (warm client). Importing the MLflow client alone costs "
              f"{r['mlflow_import_s']} s in a fresh interpreter (median of 3, against "
              "`import edgeops.cli.main`): most of the added time is that import."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

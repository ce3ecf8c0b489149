"""Agent core: what the local inference API adds over ONNX Runtime, and what an install costs.

Why: the agent sits between the application and the runtime on every device, so its per-call
overhead must be small next to the model (goal: <= 5 % at p50 in-process), and an install
(verify, write + fsync into the slot, health check, recovery scan) must be quick enough not to
matter. Measured side by side in one run:

* inference, per model (a tiny 4-feature model and a 4-layer 512-wide MLP): the baseline
  ``InferenceSession.run`` called directly, interleaved call by call with
  ``InferenceService.predict`` (in-process); then, from a separate client process as a device
  application would be, the local socket API over loopback HTTP and over a Unix socket (npz
  bodies and the compact tensors frame, keep-alive) interleaved with that process's own
  direct ORT session; median latency of N calls per repetition, median over repetitions,
  ratio to the baseline;
* install path for the MLP bundle: ``verify_update`` (signature + digests), staging into the
  inactive slot (write + fsync), the health check in-process (baseline) and isolated in a child
  process (what crash isolation costs), and ``SlotStore.recover`` with digest checks.

Run: ``python -m benchmarks.agent_core [--calls 2000] [--reps 3]``. ONNX Runtime with one intra-op
thread, CPU provider. Writes benchmarks/results/agent_core.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
PASS = b"bench-passphrase"


def _model(kind: str) -> tuple[bytes, int]:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if kind == "tiny":
        width, layers = 4, 1
    else:
        width, layers = 512, 4
    nodes, inits = [], []
    prev = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}" if i < layers - 1 else "y"]))
        prev = f"r{i}"
    g = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      ["n", width])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString(), width


def _bundle(work: Path, kind: str) -> tuple[Path, Any]:
    import onnxruntime as ort

    from edgeops.bundle import ArtifactEntry, FileRef, Manifest, TensorSpec, write_bundle
    from edgeops.keys import ROLES, KeyStore
    from edgeops.trust import create_root

    store = KeyStore(work / "home")
    if not store.exists():
        for role in ROLES:
            store.generate(role, PASS)
    root = create_root(store, PASS)
    data, width = _model(kind)
    src = work / kind
    src.mkdir(parents=True, exist_ok=True)
    (src / "model.onnx").write_bytes(data)
    x = np.random.default_rng(1).standard_normal((3, width), dtype=np.float32)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    y = np.concatenate([sess.run(["y"], {"x": x[i:i + 1]})[0] for i in range(3)])
    buf = io.BytesIO()
    np.savez(buf, **{"input/x": x, "output/y": y})
    (src / "golden.npz").write_bytes(buf.getvalue())

    def ref(name: str) -> FileRef:
        b = (src / name).read_bytes()
        return FileRef(f"artifacts/x86-cpu/{name}", hashlib.sha256(b).hexdigest(), len(b))

    entry = ArtifactEntry("x86-cpu", ref("model.onnx"), "onnx", "onnxruntime",
                          ("CPUExecutionProvider",), "fp32", ref("golden.npz"),
                          metrics={"latency_ms": {"p50": 50.0, "p95": 100.0}},
                          tolerance={"atol": 1e-5, "rtol": 1e-4})
    spec = TensorSpec("x", "float32", ("n", width))
    manifest = Manifest(kind, "1.0.0", hashlib.sha256(data).hexdigest(), (spec,),
                        (TensorSpec("y", "float32", ("n", width)),), (entry,))
    out = write_bundle(work / f"{kind}.edgebundle", manifest,
                       {entry.file.path: src / "model.onnx",
                        entry.golden.path: src / "golden.npz"},  # type: ignore[union-attr]
                       [store.signer("targets", PASS)])
    return out, root


def _paired_us(base: Callable[[], object], cand: Callable[[], object], calls: int,
               reps: int) -> tuple[float, float, list[float], list[float]]:
    """Alternate baseline and candidate call by call, so load from other processes on a
    shared machine hits both alike; per repetition the median of each, then the median."""
    for _ in range(min(200, calls)):
        base()
        cand()
    b_reps, c_reps = [], []
    for _ in range(reps):
        tb, tc = np.empty(calls), np.empty(calls)
        for i in range(calls):
            t0 = time.perf_counter()
            base()
            t1 = time.perf_counter()
            cand()
            t2 = time.perf_counter()
            tb[i], tc[i] = t1 - t0, t2 - t1
        b_reps.append(float(np.median(tb)) * 1e6)
        c_reps.append(float(np.median(tc)) * 1e6)
    return statistics.median(b_reps), statistics.median(c_reps), b_reps, c_reps


def _median_ms(fn: Callable[[], object], reps: int) -> tuple[float, list[float]]:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ts), ts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--client", help=argparse.SUPPRESS)   # internal: socket client process
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--format", default="npz", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        return _client(args)

    import onnxruntime as ort

    from device_agent.health import HealthSettings, check_slot, check_slot_isolated
    from device_agent.inference import InferenceService
    from device_agent.installer import InstallRequest, verify_update
    from device_agent.local_api import LocalApiServer
    from device_agent.slots import SlotStore
    from edgeops.bundle import read_bundle
    from edgeops.trust import trusted_targets_keys

    rows: list[dict[str, Any]] = []
    install_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        work = Path(tmp)
        for kind in ("tiny", "mlp"):
            path, root = _bundle(work, kind)
            b = read_bundle(path)
            entry = b.manifest.artifact_for("x86-cpu")
            assert entry is not None and entry.golden is not None
            req = InstallRequest(b.manifest_bytes, b.signatures.to_bytes(),
                                 b.read_file(entry.file.path), b.read_file(entry.golden.path))
            keys, threshold = trusted_targets_keys(root)
            store = SlotStore(work / f"slots-{kind}")
            w = store.begin_install()
            for name, data in (("manifest.json", req.manifest), ("model.onnx", req.artifact),
                               ("golden.npz", req.golden)):
                assert isinstance(data, bytes)
                w.write_bytes(name, data)
            info = w.commit(name=kind, version="1.0.0", target="x86-cpu",
                            model_file="model.onnx")
            store.activate(info.slot)
            store.confirm()

            svc = InferenceService(threads=1)
            svc.load_slot(store, info)
            width = b.manifest.inputs[0].shape[1]
            feed = {"x": np.random.default_rng(2).standard_normal((1, int(width)),
                                                                  dtype=np.float32)}
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
            sess = ort.InferenceSession(str(store.path(info.slot, "model.onnx")), so,
                                        providers=["CPUExecutionProvider"])
            def direct(s: Any = sess, f: dict[str, np.ndarray] = feed) -> object:
                return s.run(["y"], f)

            base, med, base_runs, runs = _paired_us(
                direct, lambda s=svc, f=feed: s.predict(f), args.calls, args.reps)
            rows.append({"model": kind, "path": "InferenceService.predict (in-process)",
                         "p50_us": med, "runs": runs, "baseline_p50_us": base,
                         "baseline_runs": base_runs, "ratio": med / base,
                         "overhead_us": med - base})
            sock = Path(tempfile.gettempdir()) / f"edgeops-bench-{os.getpid()}.sock"
            with LocalApiServer(svc, http=("127.0.0.1", 0), unix_socket=sock) as srv:
                assert srv.http_address is not None
                for label, where, fmt in (
                        ("local HTTP, npz (client process)", f"http:{srv.http_address[1]}",
                         "npz"),
                        ("local HTTP, tensors frame (client process)",
                         f"http:{srv.http_address[1]}", "tensors"),
                        ("Unix socket, npz (client process)", f"unix:{sock}", "npz"),
                        ("Unix socket, tensors frame (client process)", f"unix:{sock}",
                         "tensors")):
                    n = max(200, args.calls // 4)
                    out = subprocess.run(
                        [sys.executable, "-m", "benchmarks.agent_core", "--client", where,
                         "--model", str(store.path(info.slot, "model.onnx")),
                         "--width", str(width), "--calls", str(n), "--reps", str(args.reps),
                         "--format", fmt],
                        capture_output=True, text=True, check=True,
                        cwd=Path(__file__).resolve().parents[1])
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    rows.append({"model": kind, "path": label, **r})
            if kind != "mlp":
                continue
            fast = HealthSettings(warmup_runs=2, timed_runs=20)
            steps: list[tuple[str, Callable[[], object]]] = [
                ("verify_update (signature + digests)",
                 lambda r=req, k=keys, t=threshold: verify_update(r, target="x86-cpu",
                                                                   trusted=k, threshold=t)),
                ("stage into slot (write + fsync)",
                 lambda s=store, r=req: _stage(s, r)),
                ("health check in-process (baseline)",
                 lambda s=store, i=info, h=fast: check_slot(s.root / i.slot, "x86-cpu", h)),
                ("health check isolated (child process)",
                 lambda s=store, i=info, h=fast: check_slot_isolated(s.root / i.slot,
                                                                     "x86-cpu", h)),
                ("recover with digest check",
                 lambda s=store: s.recover(check_digests=True)),
            ]
            for label, fn in steps:
                med, runs = _median_ms(fn, max(3, args.reps))
                install_rows.append({"step": label, "median_ms": med, "runs_ms": runs,
                                     "artifact_bytes": entry.file.size})
            iso = next(r for r in install_rows if r["step"].startswith("health check isolated"))
            inproc = next(r for r in install_rows if r["step"].startswith("health check in"))
            iso["ratio"] = iso["median_ms"] / inproc["median_ms"]
            inproc["ratio"] = 1.0

    versions = {"python": platform.python_version(), "onnxruntime": ort.__version__,
                "numpy": np.__version__, "platform": platform.platform(),
                "cpus": os.cpu_count(), "ort_threads": 1}
    result = {"versions": versions, "calls": args.calls, "reps": args.reps,
              "inference": rows, "install": install_rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "agent_core.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# agent_core: local inference overhead and install path (median of {args.reps} "
          f"repetitions × {args.calls} calls)\n",
          f"Python {versions['python']}, ONNX Runtime {versions['onnxruntime']} (CPU, 1 "
          f"intra-op thread), numpy {versions['numpy']}, {versions['cpus']} CPUs, batch 1.\n",
          "| model | path | p50 µs | ORT direct p50 µs (same run, interleaved) | ratio "
          "| added µs | per-rep p50 µs |",
          "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        md.append(f"| {r['model']} | {r['path']} | {r['p50_us']:.1f} | "
                  f"{r['baseline_p50_us']:.1f} | {r['ratio']:.2f} | {r['overhead_us']:.1f} | "
                  + ", ".join(f"{v:.1f}" for v in r["runs"]) + " |")
    size = install_rows[0]["artifact_bytes"] if install_rows else 0
    md += ["", f"| install step (mlp, {size} bytes) | median ms | ratio | runs ms |",
           "|---|---:|---:|---|"]
    for r in install_rows:
        ratio = f"{r['ratio']:.1f}" if "ratio" in r else ""
        md.append(f"| {r['step']} | {r['median_ms']:.1f} | {ratio} | "
                  + ", ".join(f"{v:.1f}" for v in r["runs_ms"]) + " |")
    (RESULTS / "agent_core.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def _client(args: argparse.Namespace) -> int:
    """The application's side of the socket API, in its own process (as on a device), with
    its own ONNX Runtime session as the interleaved baseline."""
    import onnxruntime as ort

    from device_agent.local_api import LocalClient

    kind, _, where = args.client.partition(":")
    client = LocalClient(http=("127.0.0.1", int(where))) if kind == "http" \
        else LocalClient(unix_socket=Path(where))
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(2).standard_normal((1, args.width), dtype=np.float32)}
    base, med, base_runs, runs = _paired_us(lambda: sess.run(["y"], feed),
                                            lambda: client.predict(feed, fmt=args.format),
                                            args.calls, args.reps)
    print(json.dumps({"p50_us": med, "runs": runs, "baseline_p50_us": base,
                      "baseline_runs": base_runs, "ratio": med / base,
                      "overhead_us": med - base}))
    return 0


def _stage(store: Any, req: Any) -> None:
    w = store.begin_install()
    for name, data in (("manifest.json", req.manifest), ("model.onnx", req.artifact),
                       ("golden.npz", req.golden)):
        w.write_bytes(name, data)
    w.commit(name="mlp", version="2.0.0", target="x86-cpu", model_file="model.onnx")


if __name__ == "__main__":
    sys.exit(main())

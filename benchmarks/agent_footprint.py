"""Agent footprint: latency overhead, resident memory and idle CPU of the real agent.

Why: the agent runs beside the application on small devices. Goals from issue 6: the
in-process API adds <= 5 % at p50 over calling ONNX Runtime directly (and we state what the
socket API adds), the agent process stays <= 60 MB RSS with ONNX Runtime and the model loaded,
and an idle agent uses < 1 % of a core. Measured side by side in one run:

* latency, per model (tiny 4-feature affine; 4-layer 512-wide MLP): ``InferenceSession.run``
  directly (baseline), the session's C++ binding without ORT's Python wrapper (what
  ``InferenceService`` calls after its own input check, so the agent's own cost shows too),
  ``InferenceService.predict`` alone, with the daemon's mean-shift observer attached, with the
  drift sketch too (what a device really runs) and with an open data capture on top, and the
  local API over a Unix socket (npz bodies, keep-alive). Median
  per-call latency of N calls per repetition, median over repetitions, ratio to both baselines;
* memory: RSS of a real ``device_agent.daemon.run`` subprocess (connected to a real mosquitto,
  model installed and loaded, telemetry on) beside baseline subprocesses that only import
  ONNX Runtime and load the same model (plain, and with the agent's allocator settings), the
  floor (ONNX Runtime with a 4x4 model), and the same pair for the MLP as a TFLite artifact in
  LiteRT (a tflite-cpu device never loads ONNX Runtime); resident MB by mapping from smaps;
* idle CPU: CPU seconds of both subprocesses over the same idle window, as % of one core;
* many agents (fleet simulator, issue 9): N model-less agents in one process, RSS and threads
  per agent and total idle CPU.

Run: ``python -m benchmarks.agent_footprint [--calls 2000] [--reps 3] [--idle-s 30]``. ONNX
Runtime with one intra-op thread, CPU provider. Needs ``mosquitto`` on PATH or /usr/sbin.
Writes benchmarks/results/agent_footprint.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import socket
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
    width, layers = (4, 1) if kind == "tiny" else (512, 4)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}" if i < layers - 1 else "y"]))
        prev = f"r{i}"
    g = helper.make_graph(
        nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString(), width


def _fleet(work: Path) -> Any:
    from edgeops.keys import ROLES, KeyStore
    from edgeops.trust import create_root

    store = KeyStore(work / "home")
    for role in ROLES:
        store.generate(role, PASS)
    create_root(store, PASS)
    return store


def _tflite(data: bytes, width: int) -> bytes:
    """The ONNX model as an FP32 TFLite flatbuffer, through the project's own converter."""
    import onnx

    from converters.tflite.convert import convert

    return convert(onnx.load_from_string(data), input_shapes={"x": (1, width)}).model


def _bundle(work: Path, store: Any, kind: str, fmt: str = "onnx") -> dict[str, Any]:
    """A signed bundle's parts for one model, written as the TUF client would leave them;
    ``fmt`` "tflite" makes a tflite-cpu artifact served by LiteRT instead of ONNX Runtime."""
    from edgeops.bundle import ArtifactEntry, FileRef, Manifest, TensorSpec, write_bundle

    data, width = _model(kind)
    src = work / f"src-{kind}-{fmt}"
    src.mkdir(parents=True)
    (src / "model.onnx").write_bytes(data)
    x = np.random.default_rng(1).standard_normal((2, width)).astype(np.float32)
    if fmt == "tflite":
        from edgeops.runtime import load_runner

        (src / f"model.{fmt}").write_bytes(_tflite(data, width))
        runner = load_runner(src / f"model.{fmt}", runtime="litert")
        y = np.concatenate([runner.run({"x": x[i:i + 1]})["y"] for i in range(2)])
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        y = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(2)])
    buf = io.BytesIO()
    np.savez(buf, **{"input/x": x, "output/y": y})
    (src / "golden.npz").write_bytes(buf.getvalue())

    def ref(name: str, path: str) -> FileRef:
        b = (src / name).read_bytes()
        return FileRef(path, hashlib.sha256(b).hexdigest(), len(b))

    target = "tflite-cpu" if fmt == "tflite" else "x86-cpu"
    model_path = f"artifacts/{target}/model.{fmt}"
    entry = ArtifactEntry(
        target=target, file=ref(f"model.{fmt}", model_path), format=fmt,
        runtime="litert" if fmt == "tflite" else "onnxruntime",
        providers=() if fmt == "tflite" else ("CPUExecutionProvider",), precision="fp32",
        golden=ref("golden.npz", f"artifacts/{target}/golden.npz"),
        metrics={"latency_ms": {"p50": 50.0, "p95": 100.0}}, tolerance={"atol": 1e-4})
    spec = TensorSpec("x", "float32", ("n", width))
    manifest = Manifest(name=f"bench-{kind}", version="1.0.0",
                        source_sha256=hashlib.sha256(data).hexdigest(), inputs=(spec,),
                        outputs=(TensorSpec("y", "float32", ("n", width)),),
                        artifacts=(entry,), baseline={"x": {"mean": 0.0, "std": 1.0}})
    out = write_bundle(work / f"{kind}-{fmt}.edgebundle", manifest,
                       {model_path: src / f"model.{fmt}",
                        f"artifacts/{target}/golden.npz": src / "golden.npz"},
                       [store.signer("targets", PASS)])
    from edgeops.bundle import read_bundle

    b = read_bundle(out)
    return {"manifest": b.manifest_bytes, "signatures": b.signatures.to_bytes(),
            "artifact": src / f"model.{fmt}", "golden": src / "golden.npz", "width": width,
            "model": data, "name": manifest.name, "target": target}


def _config(work: Path, store: Any, device: str, broker_port: int,
            unix_socket: Path | None, target: str = "x86-cpu") -> Any:
    from device_agent.config import AgentConfig

    key = store.public_key("manager")
    d = {"schema": "edgeops.agent-config/v1", "device_id": device, "target": target,
         "broker": {"url": f"mqtt://127.0.0.1:{broker_port}", "keepalive_s": 30},
         "data_dir": str(work / device),
         "trust": {"root": str(store.home / "trust" / "root.json"),
                   "manager_keys": [{"keyid": key.keyid, **key.to_dict()}]},
         "inference": {"socket": str(unix_socket) if unix_socket else None, "http": None},
         "telemetry": {"interval_s": 10, "queue_max_records": 100000}}
    return AgentConfig.from_dict(d, base_dir=work)


def _install(cfg: Any, parts: dict[str, Any]) -> Any:
    """Install through the real agent core (verify, slot, isolated health check)."""
    from device_agent.core import AgentCore
    from device_agent.installer import InstallRequest

    core = AgentCore(cfg)
    core.start(serve_api=False)
    out = core.install(InstallRequest(parts["manifest"], parts["signatures"], parts["artifact"],
                                      parts["golden"], "bench"))
    core.close()
    if out.phase.value != "healthy":
        raise SystemExit(f"benchmark install failed: {out.phase.value} {out.reason}")
    return out


def _median_call_us(fn: Callable[[], object], calls: int, reps: int) -> tuple[float, list[float]]:
    per_rep = []
    for _ in range(reps):
        for _ in range(min(200, calls)):
            fn()
        lat = []
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            fn()
            lat.append((time.perf_counter_ns() - t0) / 1000.0)
        per_rep.append(statistics.median(lat))
    return statistics.median(per_rep), per_rep


def _latency(work: Path, store: Any, parts: dict[str, Any], calls: int, reps: int,
             broker_port: int) -> dict[str, Any]:
    import onnxruntime as ort

    from device_agent.capture import CaptureSampler
    from device_agent.core import AgentCore
    from device_agent.drift_sketch import DriftSketch
    from device_agent.local_api import LocalClient
    from device_agent.telemetry import FeatureStats
    from edgeops.drift.features import build_reference
    from edgeops.protocol.capture import CaptureOrder

    width = parts["width"]
    x = np.random.default_rng(2).standard_normal((1, width)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(parts["model"], so, providers=["CPUExecutionProvider"])
    sock = work / f"{parts['name']}.sock"
    cfg = _config(work, store, f"lat-{parts['name']}", broker_port, sock)
    _install(cfg, parts)
    core = AgentCore(cfg)
    core.start()
    client = LocalClient(unix_socket=sock)
    binding = sess._sess          # the C++ session under ORT's Python wrapper
    paths: list[tuple[str, Callable[[], object], int]] = [
        ("ort_direct", lambda: sess.run(None, {"x": x}), calls),
        ("ort_binding", lambda: binding.run(["y"], {"x": x}, None), calls),
        ("in_process_core_only", lambda: core.inference.predict({"x": x}), calls),
        ("in_process", lambda: observed(), calls),
        ("in_process_sketch", lambda: sketched(), calls),
        ("in_process_sketch_capture", lambda: captured(), calls),
        ("unix_socket", lambda: client.predict({"x": x}), max(200, calls // 4))]
    drift = FeatureStats()            # the daemon's drift observer, as it wires it

    def observed() -> object:
        out = core.inference.predict({"x": x})
        drift.observe({"x": x}, 0.0, True)
        return out

    # The drift sketch (1 in 4, the reference's default) and an open data capture (1 in 20,
    # caps out of reach, a buffer drained by nobody: every sampled request pays its copy), as
    # the daemon wires them: output observers after the latency was taken.
    ref_x = np.random.default_rng(3).standard_normal((2000, width)).astype(np.float32)
    reference = build_reference({"x": ref_x}, {"y": sess.run(None, {"x": ref_x})[0]})
    sketch = DriftSketch(time.time)
    sketch.set_reference("bench@1", reference)
    sampler = CaptureSampler(work / f"{parts['name']}-capture.json", time.time,
                             buffer_max_bytes=2**40)
    sampler.apply(CaptureOrder("c-00000000000000be", True, 0.05, 2**40, 2**40,
                               time.time() + 86_400, 64 * 1024).to_dict())

    def sketched() -> object:
        out = core.inference.predict({"x": x})
        drift.observe({"x": x}, 0.0, True)
        sketch.observe({"x": x}, out)
        return out

    def captured() -> object:
        out = core.inference.predict({"x": x})
        drift.observe({"x": x}, 0.0, True)
        sketch.observe({"x": x}, out)
        sampler.observe({"x": x}, out)
        return out

    per_rep: dict[str, list[float]] = {name: [] for name, _, _ in paths}
    try:
        # interleaved: every repetition measures every path, so load drift hits all alike
        for _ in range(reps):
            for name, fn, n in paths:
                if name == "unix_socket":
                    # a fresh keep-alive connection each repetition: on a loaded machine the
                    # other paths can outlast the server's 30 s idle timeout
                    client.close()
                per_rep[name].append(_median_call_us(fn, n, 1)[0])
    finally:
        client.close()
        core.close()
    rows: dict[str, Any] = {
        name: {"p50_us": round(statistics.median(v), 2), "per_rep_us": [round(u, 2) for u in v],
               "calls": n}
        for (name, _, n), v in zip(paths, per_rep.values(), strict=True)}
    base, bound = rows["ort_direct"]["p50_us"], rows["ort_binding"]["p50_us"]
    for r in rows.values():
        r["ratio"] = round(r["p50_us"] / base, 3)
        r["ratio_vs_binding"] = round(r["p50_us"] / bound, 3)
    for k in ("in_process_core_only", "in_process", "in_process_sketch",
              "in_process_sketch_capture"):
        rows[k]["overhead_pct"] = round((rows[k]["ratio"] - 1) * 100, 1)
    rows["unix_socket"]["added_us"] = round(rows["unix_socket"]["p50_us"] - base, 1)
    return rows


_BASELINE_CODE = """
import sys, time, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
s = ort.InferenceSession(open(sys.argv[1], "rb").read(), so, providers=["CPUExecutionProvider"])
print("ready", flush=True)
time.sleep(3600)
"""

# The baseline with the allocator settings the agent's entry point applies (device_agent/memory.py),
# so "agent minus baseline" compares like with like.
_BASELINE_TUNED_CODE = "from device_agent.memory import tune_allocator; tune_allocator()\n" + \
    _BASELINE_CODE

# The same for LiteRT: numpy and the interpreter with the MLP as TFLite, allocator tuned.
_LITERT_BASELINE_CODE = """
import sys, time
from device_agent.memory import tune_allocator; tune_allocator()
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
print("ready", flush=True)
time.sleep(3600)
"""

# Where resident pages live, by mapping (Linux /proc/PID/smaps), grouped.
_GROUPS = (
    ("onnxruntime", ("onnxruntime",)),
    ("LiteRT", ("litert", "LiteRt")),
    ("model file (mapped)", (".tflite", ".onnx")),
    ("numpy + OpenBLAS", ("numpy", "openblas", "gfortran", "_multiarray", "_umath")),
    ("cryptography (Rust)", ("_rust.abi3",)),
    ("OpenSSL (ssl, hashlib)", ("libcrypto", "libssl", "_ssl.", "_hashlib")),
    ("libpython, libc, libstdc++", ("libpython", "libc.", "libstdc++", "libm.", "ld-linux")),
    ("heap + anonymous", ("[heap]", "[anon]", "[stack]")),
)


def _smaps_groups(pid: int) -> dict[str, float]:
    """Resident MB per group of mappings; 'other' for the rest (small extension modules)."""
    kb: dict[str, int] = {g: 0 for g, _ in _GROUPS}
    kb["other"] = 0
    name = "[anon]"
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and ":" not in head[0]:  # a mapping's first line: range perms ... path
            name = head[5] if len(head) > 5 else "[anon]"
            continue
        if head[0] == "Rss:":
            base = os.path.basename(name) if name.startswith("/") else name
            group = next((g for g, keys in _GROUPS if any(k in base for k in keys)), "other")
            kb[group] += int(head[1])
    return {g: round(v / 1024, 1) for g, v in kb.items()}


_AGENT_CODE = """
import sys, logging
from device_agent.config import AgentConfig
from device_agent.daemon import run
sys.exit(run(AgentConfig.from_file(sys.argv[1])))
"""


def _process_footprint(work: Path, store: Any, parts: dict[str, Any],
                       litert_parts: dict[str, Any], broker_port: int,
                       idle_s: float) -> dict[str, Any]:
    import psutil

    agents: dict[str, subprocess.Popen[bytes]] = {}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name, p in (("agent", parts), ("agent_litert", litert_parts)):
        cfg = _config(work, store, f"footprint-{name}", broker_port, None, p["target"])
        _install(cfg, p)
        cfg_file = work / f"{name}.json"
        cfg_file.write_text(json.dumps(cfg.to_dict()))
        agents[name] = subprocess.Popen([sys.executable, "-c", _AGENT_CODE, str(cfg_file)],
                                        env=env, stderr=subprocess.DEVNULL)
    model_file = work / "baseline.onnx"
    model_file.write_bytes(parts["model"])
    tiny_file = work / "floor.onnx"
    tiny_file.write_bytes(_model("tiny")[0])
    others = {name: subprocess.Popen([sys.executable, "-c", code, str(f)], env=env,
                                     stdout=subprocess.PIPE)
              # the floor: the same interpreter, numpy and ORT with a 4x4 model, nothing else
              for name, code, f in (("ort_floor", _BASELINE_CODE, tiny_file),
                                    ("ort_baseline", _BASELINE_CODE, model_file),
                                    ("ort_baseline_tuned", _BASELINE_TUNED_CODE, model_file),
                                    ("litert_baseline_tuned", _LITERT_BASELINE_CODE,
                                     litert_parts["artifact"]))}
    try:
        for p in others.values():
            assert p.stdout is not None
            p.stdout.readline()
        # the agent is up once it has loaded the model and connected: give it a settle period
        time.sleep(8)
        procs = {**{k: psutil.Process(p.pid) for k, p in agents.items()},
                 **{k: psutil.Process(p.pid) for k, p in others.items()}}
        if any(a.poll() is not None for a in agents.values()):
            raise SystemExit("an agent subprocess exited early")
        t0 = {k: p.cpu_times() for k, p in procs.items()}
        w0 = time.monotonic()
        time.sleep(idle_s)
        wall = time.monotonic() - w0
        out: dict[str, Any] = {"idle_window_s": round(wall, 1)}
        for k, p in procs.items():
            t1 = p.cpu_times()
            cpu = (t1.user - t0[k].user) + (t1.system - t0[k].system)
            mem = p.memory_info()
            out[k] = {"rss_mb": round(mem.rss / 2**20, 1),
                      "uss_mb": round(p.memory_full_info().uss / 2**20, 1),
                      "threads": p.num_threads(),
                      "idle_cpu_pct_of_core": round(100 * cpu / wall, 3),
                      "rss_by_mapping_mb": _smaps_groups(p.pid)}
        out["agent_minus_baseline_rss_mb"] = round(out["agent"]["rss_mb"]
                                                   - out["ort_baseline"]["rss_mb"], 1)
        out["agent_minus_tuned_baseline_rss_mb"] = round(
            out["agent"]["rss_mb"] - out["ort_baseline_tuned"]["rss_mb"], 1)
        out["agent_litert_minus_tuned_baseline_rss_mb"] = round(
            out["agent_litert"]["rss_mb"] - out["litert_baseline_tuned"]["rss_mb"], 1)
        return out
    finally:
        for p in (*agents.values(), *others.values()):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


_MANY_CODE = """
import json, sys, time, psutil
from device_agent.config import AgentConfig
from device_agent.daemon import Agent
paths, idle_s = sys.argv[1:-1], float(sys.argv[-1])
p = psutil.Process()
configs = [AgentConfig.from_file(x) for x in paths]
rss0, thr0 = p.memory_info().rss, p.num_threads()
agents = [Agent(c) for c in configs]
for a in agents:
    a.start()
deadline = time.monotonic() + 60
while not all(a.conn.connected.is_set() for a in agents) and time.monotonic() < deadline:
    time.sleep(0.1)
time.sleep(3)
t0, w0 = p.cpu_times(), time.monotonic()
time.sleep(idle_s)
t1, wall = p.cpu_times(), time.monotonic() - w0
out = {"agents": len(agents), "connected": sum(a.conn.connected.is_set() for a in agents),
       "rss_per_agent_mb": round((p.memory_info().rss - rss0) / len(agents) / 2**20, 2),
       "threads_per_agent": round((p.num_threads() - thr0) / len(agents), 1),
       "idle_cpu_pct_of_core": round(100 * ((t1.user - t0.user) + (t1.system - t0.system))
                                     / wall, 2)}
for a in agents:
    a.stop()
print(json.dumps(out), flush=True)
"""


def _many_agents(work: Path, store: Any, broker_port: int, n: int,
                 idle_s: float) -> dict[str, Any]:
    """N agents without a model in one process: the fleet simulator's per-device cost."""
    paths = []
    for i in range(n):
        cfg = _config(work, store, f"sim-{i:04d}", broker_port, None)
        f = work / f"sim-{i:04d}.json"
        f.write_text(json.dumps(cfg.to_dict()))
        paths.append(str(f))
    out = subprocess.run([sys.executable, "-c", _MANY_CODE, *paths, str(idle_s)],
                         capture_output=True, timeout=600, check=True)
    return dict(json.loads(out.stdout.decode().strip().splitlines()[-1]))


def _mosquitto(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    import getpass

    conf = work / "mosquitto.conf"
    conf.write_text(f"user {getpass.getuser()}\nallow_anonymous true\npersistence false\n"
                    f"listener {port} 127.0.0.1\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def _versions() -> dict[str, str]:
    import onnxruntime
    import paho.mqtt
    import tuf

    return {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "paho-mqtt": paho.mqtt.__version__, "tuf": tuf.__version__,
            "numpy": np.__version__, "platform": platform.platform(),
            "cpu_count": str(os.cpu_count())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--many-agents", type=int, default=50,
                    help="also run this many model-less agents in one process (0: skip)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker, port = _mosquitto(work)
        try:
            store = _fleet(work)
            latency = {}
            parts = {}
            for kind in ("tiny", "mlp512x4"):
                parts[kind] = _bundle(work, store, kind)
                print(f"latency: {kind} ...", file=sys.stderr)
                latency[kind] = _latency(work, store, parts[kind], args.calls, args.reps, port)
            print(f"footprint: idle {args.idle_s:.0f} s ...", file=sys.stderr)
            litert = _bundle(work, store, "mlp512x4", "tflite")
            footprint = _process_footprint(work, store, parts["mlp512x4"], litert, port,
                                           args.idle_s)
            many = None
            if args.many_agents:
                print(f"{args.many_agents} agents in one process ...", file=sys.stderr)
                many = _many_agents(work, store, port, args.many_agents, args.idle_s)
        finally:
            broker.terminate()
            broker.wait(10)
    result = {"benchmark": "agent_footprint", "versions": _versions(),
              "settings": {"calls": args.calls, "reps": args.reps, "idle_s": args.idle_s,
                           "ort_intra_op_threads": 1, "provider": "CPUExecutionProvider"},
              "latency": latency, "process": footprint, "many_agents": many,
              "goals": {"in_process_overhead_pct_p50": 5.0, "agent_rss_mb": 60.0,
                        "idle_cpu_pct_of_core": 1.0}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "agent_footprint.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "agent_footprint.md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


def _markdown(r: dict[str, Any]) -> str:
    v, s = r["versions"], r["settings"]
    lines = ["# Agent footprint", "",
             f"Python {v['python']}, onnxruntime {v['onnxruntime']}, paho-mqtt {v['paho-mqtt']}, "
             f"tuf {v['tuf']}; {v['cpu_count']} CPUs; ORT intra-op threads "
             f"{s['ort_intra_op_threads']}; {s['calls']} calls x {s['reps']} reps (median of "
             "medians).", "",
             "`ort_direct` is `InferenceSession.run` (ORT's Python wrapper re-validates each "
             "feed); `ort_binding` is the C++ session under it, which `InferenceService` calls "
             "after its own input check: the agent's own cost is the ratio against that. "
             "`in_process` adds today's mean-shift observer (1 in 8); `in_process_sketch` also "
             "the drift sketch (device_agent/drift_sketch.py, 1 in 4); "
             "`in_process_sketch_capture` also an open data capture (device_agent/capture.py, "
             "1 in 20 sampled; with no capture open it costs one attribute read).", "",
             "| model | path | p50 µs | ratio vs ORT direct | ratio vs ORT binding |",
             "|---|---|---:|---:|---:|"]
    for model, rows in r["latency"].items():
        for path, row in rows.items():
            lines.append(f"| {model} | {path} | {row['p50_us']} | {row['ratio']} | "
                         f"{row.get('ratio_vs_binding', '')} |")
    p = r["process"]
    procs = ("ort_floor", "ort_baseline", "ort_baseline_tuned", "agent",
             "litert_baseline_tuned", "agent_litert")
    lines += ["", f"Idle window {p['idle_window_s']} s. `ort_floor`: Python, numpy and ONNX "
              "Runtime with a 4x4 model, nothing else. `ort_baseline`: the same with the agent's "
              "model (mlp512x4); `_tuned` adds the allocator settings the agent applies "
              "(device_agent/memory.py). `agent`: the daemon, connected, telemetry on, "
              "mlp512x4 loaded. `litert_baseline_tuned` and `agent_litert`: the same MLP as an "
              "FP32 TFLite artifact (tflite-cpu target) in LiteRT; ONNX Runtime never loads.", "",
              "| process | RSS MB | USS MB | threads | idle CPU % of a core |",
              "|---|---:|---:|---:|---:|"]
    for k in procs:
        q = p[k]
        lines.append(f"| {k} | {q['rss_mb']} | {q['uss_mb']} | {q['threads']} | "
                     f"{q['idle_cpu_pct_of_core']} |")
    groups = list(p["agent"].get("rss_by_mapping_mb", {}))
    if groups:
        lines += ["", "Resident MB by mapping (/proc/PID/smaps):", "",
                  "| mapping | " + " | ".join(procs) + " |",
                  "|---|" + "---:|" * len(procs)]
        for g in groups:
            lines.append(f"| {g} | " + " | ".join(
                str(p[k]["rss_by_mapping_mb"].get(g, "")) for k in procs) + " |")
    lines += ["", f"Agent minus baseline RSS: {p['agent_minus_baseline_rss_mb']} MB; minus the "
              f"tuned baseline: {p['agent_minus_tuned_baseline_rss_mb']} MB; LiteRT agent minus "
              f"its baseline: {p['agent_litert_minus_tuned_baseline_rss_mb']} MB. Goals: in-process "
              "overhead <= 5 % at p50, agent RSS <= 60 MB, idle CPU < 1 % of a core. The floor "
              "row is what any Python process with this ONNX Runtime pays before an agent.", ""]
    m = r.get("many_agents")
    if m:
        lines += [f"{m['agents']} agents without a model in one process ({m['connected']} "
                  f"connected): {m['rss_per_agent_mb']} MB RSS and {m['threads_per_agent']} "
                  f"threads per agent, {m['idle_cpu_pct_of_core']} % of a core idle in total.",
                  ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

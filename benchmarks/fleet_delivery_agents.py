"""Bundle delivery to REAL device agents: deploy → 100% activated / healthy for a ~10 MB artifact.

Issue 5 asks for the delivery figure "with the real device agent code and a real Mosquitto".
``benchmarks/fleet_delivery.py`` measures the manager side against a protocol simulator; this
one runs the whole chain, nothing simulated:

* a real manager (``fleet.server.FleetServer`` with its HTTP API under uvicorn, SQLite store,
  rollout engine, TUF repository and the :class:`fleet.worker.ManagerWorker`), the same one
  ``edgeops fleet serve`` runs (``tests/fleet/live.py`` starts it);
* N real agents (:class:`device_agent.daemon.Agent`, many per process) started by the fleet
  simulator :class:`edgeops_sim.SimFleet` (enrolment through the fleet API, one agent config and
  credentials folder per device), its driver idle (no inference load, no roaming);
* real keys (``tests.edgeops.bundles.make_keystore``), a real signed bundle built with
  :func:`edgeops.bundle.write_bundle` around a real ~10 MB ONNX model (Gemm → Relu → Gemm whose
  weights are the 10 MB; ONNX Runtime loads it and the agent's health check runs it against
  the bundle's golden samples), published with offline-signed TUF targets, deployed through
  the HTTP API with one 100% phase;
* a real Mosquitto with the tuned configuration of ``tests/mosquitto.py``.

Each agent refreshes TUF, downloads manifest, signatures, its artifact and golden file over the
chunk protocol, verifies signatures and digests, installs into its inactive slot, activates,
loads the model into ONNX Runtime, runs the health check and reports. The clock starts at the
HTTP ``POST /api/v1/deployments`` and stops when the deployment's device counts show every
device activated (and, separately, healthy).

Measured beside it: manager chunk egress (bytes the worker published on chunk topics) against
the artifact size, broker messages and bytes from Mosquitto's ``$SYS`` counters, the process's
peak RSS and CPU time, the load average.

Run: ``python -m benchmarks.fleet_delivery_agents [--devices 200 --size-mb 10]``; writes
benchmarks/results/fleet_delivery_agents.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._fleet_common import SysCounters, machine, versions, write_results

ROOT = Path(__file__).resolve().parent.parent


def big_model(path: Path, size_bytes: int, seed: int = 0) -> Path:
    """y = relu(relu(x @ W1 + b1) @ W2 + b2) with W1 (4×K), W2 (K×3): ~size_bytes of weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = max(8, size_bytes // (4 * 8))            # 4 + 3 + 1 floats per hidden unit
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((4, k)) / 2).astype(np.float32)
    b1 = rng.standard_normal(k).astype(np.float32) * 0.1
    w2 = (rng.standard_normal((k, 3)) / np.sqrt(k)).astype(np.float32)
    b2 = rng.standard_normal(3).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (b1, "B1"), (w2, "W2"),
                                                         (b2, "B2"))]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "W2", "B2"], ["z"]), helper.make_node("Relu", ["z"], ["y"])],
        "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


LATENCY_P95_MS = 1000.0
"""The bundle's declared p95 latency. The agent's health check fails a model whose p50 exceeds
twice this. Agents health-checking at once on two shared cores measured 14-22 ms (5 agents)
and up to 322 ms (50 agents) for a model that takes ~2 ms alone: the benchmark measures
delivery, so it declares 1 s (the golden-output check and the latency check still run)."""


def build_bundle(work: Path, keys: Any, size_bytes: int, name: str = "big",
                 version: str = "1.0.0", target: str = "x86-cpu") -> Path:
    """A signed bundle with the big model and golden samples, as ``edgeops build`` lays out."""
    import onnxruntime as ort

    from edgeops.bundle import ArtifactEntry, Manifest, TensorSpec, file_ref, write_bundle
    from tests.edgeops.bundles import PASSPHRASE

    work.mkdir(parents=True, exist_ok=True)
    model = big_model(work / "model.onnx", size_bytes)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    golden = work / "golden.npz"
    with open(golden, "wb") as f:
        np.savez(f, **{"input/x": x, "output/y": y})
    art_path, gold_path = f"artifacts/{target}/model.onnx", f"artifacts/{target}/golden.npz"
    entry = ArtifactEntry(
        target=target, file=file_ref(art_path, model), format="onnx", runtime="onnxruntime",
        providers=("CPUExecutionProvider",), precision="fp32",
        golden=file_ref(gold_path, golden), metrics={"latency_ms_p95": LATENCY_P95_MS},
        tolerance={"atol": 1e-4, "rtol": 1e-3})
    manifest = Manifest(
        name=name, version=version,
        source_sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
        inputs=(TensorSpec("x", "float32", ("N", 4)),),
        outputs=(TensorSpec("y", "float32", ("N", 3)),), artifacts=(entry,),
        provenance={"edgeops": "benchmark"})
    return write_bundle(work / manifest.bundle_filename, manifest,
                        {art_path: model, gold_path: golden},
                        [keys.signer("targets", PASSPHRASE)])


AGENTS_PER_PROCESS = 100
"""Agents per process. Until the agent's MQTT adapter moved to one epoll network loop per
process (``edgeops.netloop``), paho's ``select()`` loop capped a process at ~100 agents
(descriptors >= 1024) and this was 80. Now the bound is CPU: one process runs its agents under
one GIL, so two processes of 100 keep both cores busy without more interpreters' memory."""


def _agent_host(specs: list[Any], workdir: str, broker_url: str, fleet_url: str, token: str,
                ready: Any, stop: Any, out: Any) -> None:
    """One process running a slice of the fleet's real agents (edgeops_sim.SimFleet)."""
    import psutil

    from edgeops_sim import SimFleet, SimOptions
    from fleet.client import FleetClient

    logging.basicConfig(level=logging.ERROR)
    proc = psutil.Process()
    sim = SimFleet(specs, Path(workdir), broker_url,
                   SimOptions(tick_s=3600.0, telemetry_interval_s=30.0,
                              vehicles_drive=False, vehicles_roam=False))
    sim.enrol(FleetClient(fleet_url, token))
    cpu0 = proc.cpu_times()
    sim.start()
    ready.set()
    stop.wait()
    cpu1 = proc.cpu_times()
    snap = sim.snapshot()
    out.put({"agents": len(specs), "threads": proc.num_threads(),
             "fds": proc.num_fds(), "rss_mb": round(proc.memory_info().rss / 2**20),
             "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
             "cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 1),
             "serving": snap["serving"]})
    sim.stop()


def _broker_cpu_s(broker: Any) -> float | None:
    """CPU seconds used so far by the Mosquitto process (None if it cannot be read)."""
    import psutil

    proc = getattr(broker, "_proc", None)
    try:
        t = psutil.Process(proc.pid).cpu_times() if proc is not None else None
    except psutil.Error:
        return None
    return None if t is None else float(t.user + t.system)


def _record_fetches(delivery: Any) -> list[tuple[float, str, int | None]]:
    """Wrap the manager's ``ChunkDelivery.submit`` to log (time, artifact, ranges) per fetch."""
    log: list[tuple[float, str, int | None]] = []
    submit = delivery.submit

    def recording(req: Any, target: str | None) -> int:
        missing = None if req.missing is None else sum(b - a for a, b in req.missing)
        log.append((time.monotonic(), req.artifact, missing))
        return int(submit(req, target))

    delivery.submit = recording
    return log


def _summarise_fetches(log: list[tuple[float, str, int | None]], t0: float,
                       artifact: str) -> dict[str, Any]:
    """When the fetches for the big artifact came (s after deploy) and how many re-asked."""
    by_art: dict[str, list[tuple[float, int | None]]] = {}
    for t, art, missing in log:
        by_art.setdefault(art, []).append((t - t0, missing))
    out: dict[str, Any] = {"files": len(by_art)}
    big = by_art.get(artifact)
    if big:
        times = sorted(t for t, _ in big)
        out["artifact_fetches"] = len(times)
        out["artifact_partial_fetches"] = sum(1 for _, m in big if m is not None)
        out["artifact_first_s"] = round(times[0], 1)
        out["artifact_p50_s"] = round(times[len(times) // 2], 1)
        out["artifact_last_s"] = round(times[-1], 1)
        hist: dict[str, int] = {}
        for t in times:                      # requests per 0.25 s after deploy
            key = f"{int(t * 4) / 4:.2f}"
            hist[key] = hist.get(key, 0) + 1
        out["artifact_histogram"] = hist
    return out


def _wait(what: str, check: Any, timeout_s: float, poll_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll_s)
    raise TimeoutError(f"timed out waiting for {what} (last: {last})")


def run(devices: int, size_bytes: int, timeout_s: float,
        per_process: int = AGENTS_PER_PROCESS) -> dict[str, Any]:
    import psutil

    from edgeops.bundle import read_bundle
    from edgeops_sim.streams import DeviceSpec
    from fleet.client import FleetClient
    from tests.edgeops.bundles import make_keystore
    from tests.fleet.live import live_fleet, publish_bundle
    from tests.mosquitto import MosquittoBroker

    tmp = Path(tempfile.mkdtemp(prefix="bench-agents-"))
    keys = make_keystore(tmp / "home")
    bundle = build_bundle(tmp / "bundle", keys, size_bytes)
    art = read_bundle(bundle).manifest.artifacts[0]
    artifact_bytes = int(art.file.size)
    proc = psutil.Process()
    res: dict[str, Any] = {"devices": devices, "artifact_bytes": artifact_bytes,
                           "bundle_bytes": bundle.stat().st_size}
    broker = MosquittoBroker(sys_interval_s=1).start()
    sysc = SysCounters(broker.host, broker.port)
    try:
        with live_fleet(keys, tmp / "mgr", broker=broker.url) as lf:
            c = FleetClient(lf.url, lf.admin)
            specs = [DeviceSpec(f"cam-{i:04d}", "traffic-camera", "camera", "x86-cpu",
                                {"district": "4"}, seed=i) for i in range(devices)]
            ctx = mp.get_context("spawn")     # the parent runs threads: no fork
            stop, outq = ctx.Event(), ctx.Queue()
            hosts = []
            t = time.monotonic()
            for k in range(0, devices, per_process):
                ready = ctx.Event()
                p = ctx.Process(target=_agent_host, args=(
                    specs[k:k + per_process], str(tmp / "sim"), broker.url, lf.url,
                    lf.admin, ready, stop, outq))
                p.start()
                hosts.append((p, ready))
            try:
                for _p, ready in hosts:
                    if not ready.wait(max(180.0, devices * 2.0)):
                        raise TimeoutError("an agent process did not start")
                res["enrol_and_start_s"] = round(time.monotonic() - t, 1)
                _wait("agents online", lambda: c.devices(online="true", limit=1)["total"]
                      == devices, max(120.0, devices * 1.0), poll_s=1.0)
                res["all_online_s"] = round(time.monotonic() - t, 1)
                res["agent_processes"] = len(hosts)
                publish_bundle(c, keys, bundle)
                worker = lf.server.worker
                fetch_log = _record_fetches(worker.delivery)
                egress0 = worker.delivery.stats.bytes_published
                chunks0 = worker.delivery.stats.chunks_published
                before = sysc.snapshot()
                load = os.getloadavg()
                bcpu0 = _broker_cpu_s(broker)
                cpu0 = proc.cpu_times()
                t0 = time.monotonic()
                dep = c.deploy("big", "1.0.0", "all", {"phases": ["100%"],
                                                       "device_timeout_s": timeout_s})
                marks: dict[str, float] = {}
                last_counts: dict[str, int] = {}
                timeline: list[tuple[float, dict[str, int]]] = []

                def progress() -> bool:
                    nonlocal last_counts
                    d = c.deployment(dep["id"])
                    counts = d.get("counts", {})
                    last_counts = counts
                    activated = counts.get("activated", 0) + counts.get("healthy", 0)
                    now = time.monotonic() - t0
                    if not timeline or timeline[-1][1] != counts:
                        timeline.append((round(now, 1), dict(counts)))
                    if activated >= devices and "activated" not in marks:
                        marks["activated"] = now
                    if counts.get("healthy", 0) >= devices:
                        marks["healthy"] = now
                        return True
                    if d["status"] not in ("running", "pending"):
                        devs = c.deployment_devices(dep["id"]).get("items", [])
                        why = sorted({str(x.get("reason")) for x in devs if x.get("reason")})
                        res["ended"] = {"status": d["status"], "counts": counts,
                                        "reasons": why[:5]}
                        return True
                    return False

                try:
                    _wait("all healthy", progress, timeout_s, poll_s=0.5)
                except TimeoutError:
                    res["timed_out"] = True
                cpu1 = proc.cpu_times()
                bcpu1 = _broker_cpu_s(broker)
                res["broker_process_cpu_s"] = (round(bcpu1 - bcpu0, 1)
                                               if bcpu0 is not None and bcpu1 is not None
                                               else None)
                res["seconds_to_all_activated"] = (round(marks["activated"], 1)
                                                   if "activated" in marks else None)
                res["seconds_to_all_healthy"] = (round(marks["healthy"], 1)
                                                 if "healthy" in marks else None)
                res["final_counts"] = last_counts
                res["load_avg_at_start"] = [round(x, 2) for x in load]
                res["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
                res["manager_process_cpu_s"] = round(
                    (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 1)
                res["manager_rss_peak_mb"] = round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
                res["manager_rss_after_mb"] = round(proc.memory_info().rss / 2**20)
                egress = worker.delivery.stats.bytes_published - egress0
                res["manager_chunk_egress_bytes"] = egress
                res["chunks_published"] = worker.delivery.stats.chunks_published - chunks0
                res["egress_ratio_to_artifact"] = round(egress / artifact_bytes, 3)
                res["delivery_stats"] = worker.stats()["delivery"]
                res["timeline"] = timeline
                res["fetches"] = _summarise_fetches(fetch_log, t0, str(art.file.sha256))
                after = sysc.snapshot()
                res["broker"] = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            finally:
                stop.set()
                hosts_out = []
                for _ in hosts:
                    try:
                        hosts_out.append(outq.get(timeout=60))
                    except Exception as exc:  # a host that died: its numbers are missing
                        print(f"  an agent process reported nothing: {exc!r}", file=sys.stderr)
                for p, _r in hosts:
                    p.join(timeout=60)
                res["agent_hosts"] = hosts_out
    finally:
        sysc.close()
        broker.stop()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[200])
    ap.add_argument("--size-mb", type=float, default=10.0)
    ap.add_argument("--timeout-s", type=float, default=600.0)
    ap.add_argument("--per-process", type=int, default=AGENTS_PER_PROCESS,
                    help="agents per process (default %(default)s)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.devices, args.size_mb, args.timeout_s = [5], 1.0, 120.0
    logging.basicConfig(level=logging.ERROR)
    runs = []
    for n in args.devices:
        r = run(n, int(args.size_mb * 1e6), args.timeout_s, args.per_process)
        print(f"  {n} agents: activated {r['seconds_to_all_activated']} s, healthy "
              f"{r['seconds_to_all_healthy']} s, egress x{r['egress_ratio_to_artifact']}, "
              f"load {r['load_avg_at_start']}", file=sys.stderr, flush=True)
        runs.append(r)
    data = {"benchmark": "fleet_delivery_agents", "machine": machine(), "versions": versions(),
            "device_side": f"real device_agent.daemon.Agent instances, up to "
                           f"{args.per_process} per process (edgeops_sim.SimFleet, driver idle)",
            "parameters": vars(args), "goals": {"seconds": 60, "egress_ratio": 1.2},
            "runs": runs}

    def fmt(x: object) -> str:
        return f"{x:.1f}" if isinstance(x, float) else "did not finish"

    lines = ["## fleet_delivery_agents: real device agents, real manager, real Mosquitto", "",
             f"Real `device_agent.daemon.Agent`s ({args.per_process} per process, started by "
             f"`edgeops_sim.SimFleet`), the real manager (`FleetServer`: HTTP API, SQLite, "
             f"rollout engine, TUF repository, ManagerWorker), a signed bundle with a "
             f"{args.size_mb:g} MB ONNX model, Mosquitto {data['versions']['mosquitto']}, "
             f"{os.cpu_count()} cores shared by broker, manager, agents and other jobs. Clock: "
             f"HTTP deploy (one 100% phase) → deployment counts show every device activated / "
             f"healthy. One run per size.", "",
             "| agents (processes) | deploy → all activated (s) | → all healthy (s) | goal (s) | "
             "artifact (MB) | manager chunk egress (MB) | egress / artifact | broker msgs "
             "sent / received | broker MB sent | CPU s manager / agents / broker | RSS MB manager / "
             "agents | agent threads | load avg at start → end |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|---:|---|"]
    for r in runs:
        b = r["broker"]
        hosts = r.get("agent_hosts", [])
        lines.append(
            f"| {r['devices']} ({r.get('agent_processes', '?')}) | "
            f"{fmt(r['seconds_to_all_activated'])} | "
            f"{fmt(r['seconds_to_all_healthy'])} | 60 | {r['artifact_bytes'] / 1e6:.1f} | "
            f"{r['manager_chunk_egress_bytes'] / 1e6:.1f} | {r['egress_ratio_to_artifact']} | "
            f"{b.get('messages/sent', 0)} / {b.get('messages/received', 0)} | "
            f"{b.get('bytes/sent', 0) / 1e6:.0f} | {r['manager_process_cpu_s']} / "
            f"{sum(h['cpu_s'] for h in hosts):.1f} / {r.get('broker_process_cpu_s')} | "
            f"{r['manager_rss_peak_mb']} / "
            f"{sum(h['rss_peak_mb'] for h in hosts)} | {sum(h['threads'] for h in hosts)} | "
            f"{r['load_avg_at_start'][0]} → {r['load_avg_at_end'][0]} |")
    write_results("fleet_delivery_agents", data, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Simulator scale: resident memory and CPU of N real agents in one process (issue 9: 1,000).

Why: ``edgeops sim`` promises that 1,000 devices running the real agent fit on this machine.
One process holds at most ~100 agents (paho's select() loop, see ``edgeops_sim/shards.py``), so
the simulator runs 80 per process; this measures one such process and a sharded 1,000. Each
in-process size runs in a fresh child process connected to a real mosquitto:

* baseline, same process, before any agent: the interpreter with every import the simulator
  needs (agent, paho, TUF, ONNX Runtime, numpy) — RSS, threads, idle CPU over the window;
* N agents started through :class:`edgeops_sim.SimFleet` (its driver loop running: sensor
  readings into every agent's telemetry queue, telemetry sent every 10 s), no model yet:
  time until all are connected, RSS and threads per agent, CPU of the whole process;
* model sessions: ONNX Runtime sessions of the project's example vehicle classifier loaded
  in the same process (what each device adds once a model is installed), RSS per session.

Side by side, the reference for "one agent per process" is the single-agent RSS measured by
``benchmarks/agent_footprint.py`` (read from its results when present).

* sharded N (default 1,000): ``edgeops_sim.shards.ShardedFleet`` processes; time until every
  agent is connected, total RSS and CPU of all shard processes over the window.

Run: ``python -m benchmarks.sim_scale [--sizes 80] [--sharded 1000] [--idle-s 20]
[--sessions 50]``.
Writes benchmarks/results/sim_scale.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

_CHILD = r"""
import json, sys, time, random, threading
from pathlib import Path
import psutil
import numpy as np
import onnxruntime as ort
import paho.mqtt, tuf
from device_agent.daemon import Agent
from edgeops_sim import SimFleet, SimOptions, smart_city
from edgeops_sim.fleet import SimDevice

paths, idle_s, sessions, model = sys.argv[1].split(","), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
p = psutil.Process()

def window():
    t0, w0 = p.cpu_times(), time.monotonic()
    time.sleep(idle_s)
    t1, wall = p.cpu_times(), time.monotonic() - w0
    return round(100 * ((t1.user - t0.user) + (t1.system - t0.system)) / wall, 2)

time.sleep(1)
base = {"rss_mb": round(p.memory_info().rss / 2**20, 1), "threads": p.num_threads(),
        "cpu_pct_of_core": window()}
specs = smart_city(len(paths))
fleet = SimFleet(specs, Path(paths[0]).parent.parent, "unused",
                 SimOptions(vehicles_drive=False, vehicles_roam=False, tick_s=1.0))
for spec, cfg in zip(specs, paths):
    fleet.devices[spec.id] = SimDevice(spec, Path(cfg), rng=random.Random(spec.seed))
t0 = time.monotonic()
fleet.start()
deadline = time.monotonic() + 300
agents = [d.agent for d in fleet.devices.values()]
while sum(a.conn.connected.is_set() for a in agents) < len(agents) and time.monotonic() < deadline:
    time.sleep(0.1)
connect_s = round(time.monotonic() - t0, 1)
time.sleep(3)
cpu = window()
rss = p.memory_info().rss / 2**20
n = len(agents)
many = {"agents": n, "connected": sum(a.conn.connected.is_set() for a in agents),
        "connect_all_s": connect_s, "rss_mb": round(rss, 1),
        "rss_per_agent_mb": round((rss - base["rss_mb"]) / n, 3),
        "threads": p.num_threads(), "threads_per_agent": round((p.num_threads() - base["threads"]) / n, 2),
        "cpu_pct_of_core": cpu, "sensor_records": fleet.sensor_records}
fleet.stop()
sess = None
if sessions:
    r0 = p.memory_info().rss
    keep = [ort.InferenceSession(model, providers=["CPUExecutionProvider"]) for _ in range(sessions)]
    per = (p.memory_info().rss - r0) / sessions / 2**20
    sess = {"sessions": sessions, "rss_per_session_mb": round(per, 3)}
print(json.dumps({"baseline": base, "many": many, "model_sessions": sess}), flush=True)
"""


def _versions() -> dict[str, str]:
    import onnxruntime
    import paho.mqtt

    return {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "paho-mqtt": paho.mqtt.__version__, "platform": platform.platform(),
            "cpu_count": str(os.cpu_count())}


def _configs(work: Path, store: Any, port: int, n: int) -> list[str]:
    from benchmarks.agent_footprint import _config

    out = []
    (work / "cfg").mkdir(exist_ok=True)
    for spec_id in (f"sim-{i:04d}" for i in range(n)):
        cfg = _config(work, store, spec_id, port, None)
        f = work / "cfg" / f"{spec_id}.json"
        f.write_text(json.dumps(cfg.to_dict()))
        out.append(str(f))
    return out


def _sharded(work: Path, store: Any, port: int, n: int, idle_s: float) -> dict[str, Any]:
    """N agents as shard processes of <= PER_PROCESS (how ``edgeops sim`` runs 1,000)."""
    import psutil

    from benchmarks.agent_footprint import _config
    from edgeops_sim.shards import PER_PROCESS, ShardedFleet
    from edgeops_sim.streams import smart_city

    specs = smart_city(n)
    for spec in specs:
        d = work / "devices" / spec.id
        d.mkdir(parents=True)
        cfg = _config(d, store, spec.id, port, None)
        (d / "agent.json").write_text(json.dumps(cfg.to_dict()))
    fleet = ShardedFleet(work, f"mqtt://127.0.0.1:{port}", [s.id for s in specs], n=n, seed=0,
                         prefix="", options={"vehicles_drive": False, "vehicles_roam": False})
    t0 = time.monotonic()
    fleet.start()
    try:
        deadline = time.monotonic() + 600
        while fleet.snapshot().get("connected", 0) < n and time.monotonic() < deadline:
            time.sleep(1.0)
        connect_s = round(time.monotonic() - t0, 1)
        time.sleep(3)
        procs = [psutil.Process(pid) for pid in fleet.pids()]
        c0, w0 = sum(sum(p.cpu_times()[:2]) for p in procs), time.monotonic()
        time.sleep(idle_s)
        c1, wall = sum(sum(p.cpu_times()[:2]) for p in procs), time.monotonic() - w0
        rss = sum(p.memory_info().rss for p in procs) / 2**20
        snap = fleet.snapshot()
        return {"agents": n, "processes": len(procs), "per_process": PER_PROCESS,
                "connected": snap.get("connected", 0), "connect_all_s": connect_s,
                "rss_mb_total": round(rss, 1), "rss_per_agent_mb": round(rss / n, 3),
                "threads_total": sum(p.num_threads() for p in procs),
                "cpu_pct_of_core": round(100 * (c1 - c0) / wall, 2),
                "sensor_records": snap.get("sensor_records", 0)}
    finally:
        fleet.stop()


def _single_agent_reference() -> float | None:
    f = RESULTS / "agent_footprint.json"
    try:
        return float(json.loads(f.read_text())["process"]["agent"]["rss_mb"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="80", help="agent counts in ONE process")
    ap.add_argument("--sharded", default="1000",
                    help="agent counts run as shard processes (0: skip)")
    ap.add_argument("--idle-s", type=float, default=20.0, help="measurement window")
    ap.add_argument("--sessions", type=int, default=50, help="ORT sessions to load (0: skip)")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    from benchmarks.agent_footprint import _fleet
    from edgeops.examples import make_vehicle_classifier
    from fleet.embedded_broker import EmbeddedBroker

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp, \
            EmbeddedBroker("mosquitto") as broker:
        work = Path(tmp)
        store = _fleet(work)
        model = make_vehicle_classifier(work / "model").model
        for n in sizes:
            run_dir = work / f"n{n}"
            run_dir.mkdir()
            paths = _configs(run_dir, store, broker.port, n)
            print(f"{n} agents in one process ...", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, "-c", _CHILD, ",".join(paths),
                                  str(args.idle_s), str(args.sessions), str(model)],
                                 capture_output=True, timeout=1200, check=False)
            if out.returncode != 0:
                print(out.stderr.decode()[-3000:], file=sys.stderr)
                return 1
            runs.append(json.loads(out.stdout.decode().strip().splitlines()[-1]))
        shard_runs = []
        for n in [int(x) for x in args.sharded.split(",") if int(x)]:
            print(f"{n} agents in shard processes ...", file=sys.stderr, flush=True)
            d = work / f"sharded{n}"
            d.mkdir()
            shard_runs.append(_sharded(d, store, broker.port, n, args.idle_s))
    ref = _single_agent_reference()
    result = {"benchmark": "sim_scale", "versions": _versions(),
              "parameters": {"sizes": sizes, "idle_s": args.idle_s, "sessions": args.sessions,
                             "broker": "mosquitto", "telemetry_interval_s": 10,
                             "sim_tick_s": 1.0},
              "single_agent_process_rss_mb": ref, "runs": runs, "sharded": shard_runs,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sim_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["## sim_scale: N real agents in one process (fleet simulator)", "",
             f"Python {result['versions']['python']}, ONNX Runtime "
             f"{result['versions']['onnxruntime']}, paho-mqtt "
             f"{result['versions']['paho-mqtt']}, {result['versions']['cpu_count']} CPUs "
             "(shared), mosquitto on loopback; measurement window "
             f"{args.idle_s:g} s with the simulator's driver running.", "",
             "| agents | connected | connect all (s) | process RSS MB | baseline RSS MB "
             "(imports only) | RSS per agent MB | threads per agent | CPU % of a core "
             "(baseline) | N × one-agent-per-process RSS MB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        m, b = r["many"], r["baseline"]
        sep = f"{ref * m['agents']:,.0f}" if ref else "n/a"
        lines.append(f"| {m['agents']} | {m['connected']} | {m['connect_all_s']} | "
                     f"{m['rss_mb']} | {b['rss_mb']} | {m['rss_per_agent_mb']} | "
                     f"{m['threads_per_agent']} | {m['cpu_pct_of_core']} "
                     f"({b['cpu_pct_of_core']}) | {sep} |")
    if shard_runs:
        lines += ["", "Sharded (how `edgeops sim` runs more than 80 devices: paho's select() loop "
                      "cannot watch file descriptors >= 1024, about 100 agents per process):", "",
                  "| agents | processes | connected | connect all (s) | total RSS MB | RSS per "
                  "agent MB | threads | CPU % of a core | N × one-agent-per-process RSS MB |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m in shard_runs:
            sep = f"{ref * m['agents']:,.0f}" if ref else "n/a"
            lines.append(f"| {m['agents']} | {m['processes']} | {m['connected']} | "
                         f"{m['connect_all_s']} | {m['rss_mb_total']} | "
                         f"{m['rss_per_agent_mb']} | {m['threads_total']} | "
                         f"{m['cpu_pct_of_core']} | {sep} |")
    sess = next((r["model_sessions"] for r in runs if r["model_sessions"]), None)
    if sess:
        lines += ["", f"Model: each installed vehicle-classifier session adds "
                      f"{sess['rss_per_session_mb']} MB (mean over {sess['sessions']} ONNX "
                      "Runtime sessions in one process)."]
    (RESULTS / "sim_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

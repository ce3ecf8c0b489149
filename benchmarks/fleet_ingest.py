"""Telemetry ingest rate at QoS 1, end to end, with zero loss: tuned worker vs naive baseline.

End to end means: simulated devices (real paho clients in separate processes) publish telemetry
batches at QoS 1 to a real Mosquitto; the real :class:`fleet.worker.ManagerWorker` consumes them
through its shared subscription and persists them in the store. The clock runs from the first
publish to the moment the last row is visible in the database; then rows are counted against
messages sent (loss).

Variants, side by side in one run on the same machine:

* ``tuned``: the worker's defaults (TCP_NODELAY, Receive Maximum 2000, manual acks after a
  batched commit of up to 5,000 rows or 100 ms), broker with unlimited in-flight and a large
  queue, publishers with TCP_NODELAY and a 1,000-message in-flight window;
* ``tuned, threaded publishers``: the same, but the publishers on paho's ``loop_start``
  threads (how earlier runs published). The worker receives through paho's public API only
  (issue 21 removed the adapter's ``FastClient``, which overrode paho's private receive
  methods: results from before that change show it as ``tuned`` against ``tuned, plain paho
  receive (before)``);
* ``naive`` (baseline): paho and mosquitto defaults (Nagle on, 20 in flight, broker queue of
  1,000 messages per client) and one transaction per message;
* ``2 workers``: two worker processes splitting the shared subscription (PostgreSQL);
* ``e2e ack`` (issue 22): the worker publishes an end-to-end ``ack`` per device per flush
  (QoS 0, on ``devices/<id>/ack``, which each publisher subscribes to) and stores each
  (device, batch seq) once (``telemetry_batches``); every other variant runs without both,
  as the worker did before, so the pairs show what the acknowledgement costs. Publishers
  still send without waiting for acks: a real agent keeps one batch (up to 1,000 records) in
  flight, which bounds a device, not the manager;
* ``drain backlog``: the workers subscribe, go away, the devices publish everything (the broker
  queues it in the workers' sessions), then the workers come back and the clock measures only
  broker → worker → database, without the publishers competing for the same two cores.

Before/after a change of the worker's code: ``--against LABEL=PATH`` (repeatable) also runs every
tuned variant with the code of another checkout (``git worktree add ../old <commit>``), in a
subprocess whose imports come from PATH, alternating with this tree's run of the same variant
in every repeat; the rows say which code ran (the baseline runs with this tree only).

Run: ``python -m benchmarks.fleet_ingest [--quick]``; writes results/fleet_ingest.{json,md}
(``--only``/``--against`` runs: results/fleet_ingest.only-<variants>[-vs-<labels>].{json,md}).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from benchmarks._fleet_common import SysCounters, machine, versions, write_results
from edgeops.protocol import TelemetryBatch, topics
from fleet.ingest import IngestConfig
from fleet.mqtt import MqttOptions
from fleet.store import Device, open_store
from fleet.worker import ManagerWorker, WorkerConfig
from tests.mosquitto import MosquittoBroker

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Variant:
    name: str
    db: str                       # "sqlite" | "postgresql"
    tuned: bool
    devices: int
    messages_per_device: int
    workers: int = 1              # worker processes sharing the subscription
    drain: bool = False           # publish a backlog first, then time the workers alone
    threaded_publishers: bool = False   # paho loop_start per client (the previous runs)
    acks: bool = False            # end-to-end acks + exactly-once store (issue 22)


def _worker_proc(db_url: str, data_dir: str, broker_url: str, client_id: str, tuned: bool,
                 ready: Any, stop: Any, out: Any, acks: bool = False) -> None:
    """One manager worker in its own process (as `fleet serve` would run it)."""
    store = open_store(db_url, Path(data_dir))
    # the session outlives stop() (drain variants), as it would a crash
    common = {"send_acks": acks, "end_session_on_stop": False}
    if tuned:
        cfg = WorkerConfig(mqtt=MqttOptions(client_id="x"),
                           ingest=IngestConfig(exactly_once=acks), **common)
    else:
        cfg = WorkerConfig(mqtt=MqttOptions(client_id="x", tcp_nodelay=False,
                                            receive_maximum=20, max_inflight_out=20),
                           ingest=IngestConfig(telemetry_batch_rows=1, exactly_once=acks),
                           **common)
    worker = ManagerWorker(store, broker_url, client_id=client_id, config=cfg)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    worker.start()
    ready.set()
    stop.wait()
    worker.stop()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    stats = worker.stats()
    stats["cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out.put(stats)
    store.close()


def _publisher(host: str, port: int, ids: list[str], n: int, tuned: bool, start: Any,
               done: Any, threaded: bool = True, acks: bool = False) -> None:
    """One process publishing ``n`` telemetry batches (one record each) per device.

    ``threaded``: each client runs paho's ``loop_start`` thread, and every publish from this
    thread wakes it through paho's socket pair (how the previous runs published). Otherwise
    one thread drives all of this process's clients with ``loop()``: a publish is written at
    once and PUBACKs are read in bulk, the same QoS 1 traffic for less of the shared CPU
    (the load generator stands in for devices, which have CPUs of their own)."""
    clients = []
    acked = [0]
    e2e = [0]            # end-to-end acks received (the ``e2e ack`` variants)
    lock = threading.Lock()

    def on_publish(*_a: Any) -> None:
        with lock:
            acked[0] += 1

    def on_message(*_a: Any) -> None:
        with lock:
            e2e[0] += 1

    for dev in ids:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{dev}",
                        protocol=MQTTProtocolVersion.MQTTv5)
        if tuned:
            c.max_inflight_messages_set(1000)
            c.on_socket_open = lambda cl, ud, s: s.setsockopt(socket.IPPROTO_TCP,
                                                              socket.TCP_NODELAY, 1)
        c.on_publish = on_publish
        c.on_message = on_message
        c.connect(host, port)
        if acks:
            c.subscribe(topics.device_topic(dev, "ack"), qos=0)
        if threaded:
            c.loop_start()
        clients.append((dev, c))
    if not threaded:
        deadline = time.monotonic() + 30
        while not all(c.is_connected() for _, c in clients) and time.monotonic() < deadline:
            for _, c in clients:
                c.loop(timeout=0.01)
    time.sleep(0.5)
    start.wait()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for seq in range(n):
        for dev, c in clients:
            rec = {"kind": "system", "ts": time.time(), "cpu_pct": 12.5, "mem_mb": 311,
                   "temp_c": 48.0}
            c.publish(topics.device_topic(dev, "telemetry"),
                      TelemetryBatch(dev, seq, (rec,)).to_bytes(), qos=1)
        if not threaded and seq % 10 == 9:
            for _, c in clients:
                c.loop(timeout=0)
    total = n * len(ids)
    deadline = time.monotonic() + 600
    while acked[0] < total and time.monotonic() < deadline:
        if threaded:
            time.sleep(0.01)
        else:
            for _, c in clients:
                c.loop(timeout=0.002)
    for _, c in clients:
        c.disconnect()
        if threaded:
            c.loop_stop()
        else:
            c.loop(timeout=0.01)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    done.put((acked[0], (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), e2e[0]))


def _open(db: str, tmp: Path) -> tuple[str, str]:
    """A database URL for this run (a fresh file, or a fresh PostgreSQL database)."""
    if db == "sqlite":
        return str(tmp / "fleet.db"), "sqlite (WAL)"
    import psycopg

    name = f"edgeops_bench_{os.getpid()}_{int(time.time() * 1000)}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres",
                         autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:5432/{name}", name


def _drop(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cpu_of(broker: MosquittoBroker) -> float:
    import psutil

    proc = broker.proc
    if proc is None:
        return 0.0
    t = psutil.Process(proc.pid).cpu_times()
    return float(t.user + t.system)


def run_variant(v: Variant, publishers: int = 2) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    broker = (MosquittoBroker(sys_interval_s=1) if v.tuned else MosquittoBroker(
        max_inflight_messages=20, max_queued_messages=1000, tcp_nodelay=False,
        sys_interval_s=1)).start()
    sysc = SysCounters(broker.host, broker.port)
    url, dbname = _open(v.db, tmp)
    store = open_store(url, tmp / "data")      # the parent's own connection: setup + counting
    ids = [f"sensor-{i:04d}" for i in range(v.devices)]
    for i in ids:
        store.upsert_device(Device(i, "sensor", "x86-cpu", {}, enrolled_at=1.0))
    ctx = mp.get_context("fork")

    def start_workers() -> tuple[list[Any], Any, Any]:
        stop, out = ctx.Event(), ctx.Queue()
        readies = [ctx.Event() for _ in range(v.workers)]
        ps = [ctx.Process(target=_worker_proc, args=(url, str(tmp / "data"), broker.url,
                                                     f"bench-mgr-{k}", v.tuned,
                                                     readies[k],
                                                     stop, out, v.acks))
              for k in range(v.workers)]
        for p in ps:
            p.start()
        for r in readies:
            r.wait(30)
        return ps, stop, out

    wprocs, wstop, wout = start_workers()
    if v.drain:
        # subscribe once, then go away: the broker keeps the sessions and queues everything
        wstop.set()
        for p in wprocs:
            p.join(timeout=30)
        [wout.get(timeout=10) for _ in wprocs]
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_publisher, args=(broker.host, broker.port, ids[k::publishers],
                                                  v.messages_per_device, v.tuned, start, done,
                                                  v.threaded_publishers, v.acks))
             for k in range(publishers)]
    for p in procs:
        p.start()
    time.sleep(1.5 + v.devices * 0.01)
    total = v.devices * v.messages_per_device
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    start.set()
    if v.drain:
        pubs = [done.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        wprocs, wstop, wout = start_workers()
    last, last_change = -1, time.monotonic()
    last_row_at = t0
    rows = 0
    while True:
        rows = store.count_telemetry()
        now = time.monotonic()
        if rows >= total:
            break
        if rows != last:
            last, last_change, last_row_at = rows, now, now
        elif now - last_change > 10:
            break          # no progress for 10 s: the rest is lost
        time.sleep(0.25)
    # when rows stop short (loss), the rate counts up to the last row seen, not the wait
    elapsed = (time.monotonic() if rows >= total else last_row_at) - t0
    if not v.drain:
        pubs = [done.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
    wstop.set()
    wstats = [wout.get(timeout=60) for _ in wprocs]
    for p in wprocs:
        p.join(timeout=30)
    time.sleep(0.5)
    rows = store.count_telemetry()
    store.close()
    acked = sum(p[0] for p in pubs)
    publisher_cpu = sum(p[1] for p in pubs)
    broker_cpu = _cpu_of(broker)
    counters = sysc.snapshot()
    sysc.close()
    broker.stop()
    if v.db == "postgresql":
        _drop(dbname)
    # the count is polled every 0.25 s, so the figure is slightly pessimistic
    persisted_rate = min(rows, total) / elapsed if elapsed > 0 else 0.0
    return {"variant": v.name, "db": v.db, "tuned": v.tuned,
            "devices": v.devices,
            "workers": v.workers, "drain": v.drain, "messages_sent": total, "messages_acked_by_broker": acked,
            "rows_persisted": rows, "lost": total - rows, "duplicates": max(0, rows - total),
            "seconds": round(elapsed, 2), "persisted_msgs_per_s": round(persisted_rate, 1),
            "messages_per_worker": [w["telemetry_messages"] for w in wstats],
            "worker_cpu_s": round(sum(w["cpu_s"] for w in wstats), 2),
            "worker_cpu_us_per_msg": round(sum(w["cpu_s"] for w in wstats) / max(1, rows) * 1e6),
            "broker_cpu_s": round(broker_cpu, 2),
            "publisher_cpu_s": round(publisher_cpu, 2),
            "broker_cpu_us_per_msg": round(broker_cpu / max(1, rows) * 1e6),
            "publisher_cpu_us_per_msg": round(publisher_cpu / max(1, rows) * 1e6),
            "broker_dropped_messages": counters.get("publish/messages/dropped", 0),
            "worker_flushes": sum(w["flushes"] for w in wstats),
            "worker_errors": sum(w["errors"] for w in wstats),
            "e2e_acks_sent": sum(w.get("acks_sent", 0) for w in wstats),
            "e2e_acks_received": sum(p[2] for p in pubs),
            "publisher_processes": publishers, "load_avg_1m_at_start": round(load, 2)}


_ELSEWHERE = """
import json, sys
from benchmarks.fleet_ingest import Variant, run_variant
print("RESULT " + json.dumps(run_variant(Variant(**json.loads(sys.argv[1])))))
"""


def _revision(path: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip()


def run_variant_elsewhere(path: Path, v: Variant) -> dict[str, Any]:
    """``run_variant(v)`` with the code of the checkout at ``path`` (its own worker, adapter and
    benchmark), in a subprocess; that checkout's ``Variant`` must accept this one's fields."""
    env = dict(os.environ, PYTHONPATH=str(path))
    proc = subprocess.run([sys.executable, "-c", _ELSEWHERE, json.dumps(dataclasses.asdict(v))],
                          cwd=path, env=env, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"fleet_ingest: {v.name} ({v.db}) with the code in {path} failed: {tail}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def _arms(against: list[str]) -> list[tuple[str, Path | None]]:
    """This tree first, then each ``LABEL=PATH`` of ``--against``."""
    arms: list[tuple[str, Path | None]] = [(f"this tree ({_revision(ROOT)})", None)]
    for spec in against:
        label, sep, path = spec.partition("=")
        where = Path(path).resolve()
        if not sep or not label or not (where / "fleet" / "worker.py").is_file():
            raise SystemExit(f"fleet_ingest: --against {spec!r} is not LABEL=PATH of a checkout "
                             "of this repository (e.g. before=../ingest-old)")
        arms.append((f"{label} ({_revision(where)})", where))
    return arms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--messages", type=int, default=1500, help="per device (tuned variants)")
    ap.add_argument("--naive-messages", type=int, default=300, help="per device (baseline)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small run to check it works")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--only", default=None,
                    help="run only variants whose name contains this (plus the baseline)")
    ap.add_argument("--against", action="append", default=[], metavar="LABEL=PATH",
                    help="also run each tuned variant with another checkout's code, "
                         "alternating with this tree (repeatable)")
    args = ap.parse_args(argv)
    arms = _arms(args.against)
    if args.quick:
        args.devices, args.messages, args.naive_messages, args.repeats = 4, 200, 10, 1
    variants = [Variant("naive (baseline)", "sqlite", False, args.devices, args.naive_messages,
                        threaded_publishers=True),
                Variant("tuned, threaded publishers", "sqlite", True, args.devices,
                        args.messages, threaded_publishers=True),
                Variant("tuned", "sqlite", True, args.devices, args.messages)]
    if not args.no_postgres:
        variants.append(Variant("tuned", "postgresql", True, args.devices, args.messages))
        variants.append(Variant("tuned, 2 workers", "postgresql", True, args.devices,
                                args.messages, workers=2))
    variants.append(Variant("tuned, drain backlog", "sqlite", True, args.devices,
                            args.messages, drain=True))
    if not args.no_postgres:
        variants.append(Variant("tuned, 2 workers, drain backlog", "postgresql", True,
                                args.devices, args.messages, workers=2, drain=True))
    variants.append(Variant("tuned, e2e ack", "sqlite", True, args.devices, args.messages,
                            acks=True))
    if not args.no_postgres:
        variants.append(Variant("tuned, e2e ack", "postgresql", True, args.devices,
                                args.messages, acks=True))
        variants.append(Variant("tuned, 2 workers, e2e ack", "postgresql", True, args.devices,
                                args.messages, workers=2, acks=True))
    if args.only:
        variants = [variants[0], *(v for v in variants[1:] if args.only in v.name
                                   or v.name in ("tuned", "tuned, 2 workers"))]
    runs: list[dict[str, Any]] = []
    for r in range(args.repeats):
        for v in variants:
            for code, path in (arms if v.tuned else arms[:1]):
                res = run_variant(v) if path is None else run_variant_elsewhere(path, v)
                res["repeat"] = r
                res["code"] = code
                print(f"  {v.name:17} {v.db:10} {code:24} {res['persisted_msgs_per_s']:>9.1f} "
                      f"msg/s lost {res['lost']}", file=sys.stderr, flush=True)
                runs.append(res)
    summary = []
    groups = [(v, code) for v in variants for code, _ in (arms if v.tuned else arms[:1])]
    for v, code in groups:
        mine = [x for x in runs
                if x["variant"] == v.name and x["db"] == v.db and x["code"] == code]
        rates = sorted(x["persisted_msgs_per_s"] for x in mine)
        median = rates[len(rates) // 2]
        summary.append({"variant": v.name, "db": v.db, "code": code, "median_msgs_per_s": median,
                         "runs": len(mine), "messages_per_run": mine[0]["messages_sent"],
                         "max_lost": max(x["lost"] for x in mine),
                         "max_duplicates": max(x["duplicates"] for x in mine),
                         "max_broker_dropped": max(x["broker_dropped_messages"] for x in mine),
                         "load_avg_1m": [x["load_avg_1m_at_start"] for x in mine],
                         "median_worker_cpu_us_per_msg": sorted(
                             x["worker_cpu_us_per_msg"] for x in mine)[len(mine) // 2],
                         "median_broker_cpu_us_per_msg": sorted(
                             x["broker_cpu_us_per_msg"] for x in mine)[len(mine) // 2],
                         "median_publisher_cpu_us_per_msg": sorted(
                             x["publisher_cpu_us_per_msg"] for x in mine)[len(mine) // 2]})
    base = summary[0]["median_msgs_per_s"] or 1.0
    for s in summary:
        s["ratio_vs_baseline"] = round(s["median_msgs_per_s"] / base, 1)
    data = {"benchmark": "fleet_ingest", "machine": machine(), "versions": versions(),
            "parameters": {"devices": args.devices, "messages_per_device": args.messages,
                           "naive_messages_per_device": args.naive_messages,
                           "records_per_message": 1, "qos": 1, "repeats": args.repeats,
                           "worker_threads": "per worker process: 1 paho network thread + "
                                             "1 ingest consumer (+ idle chunk session)",
                           "publisher_processes": 2, "goal_msgs_per_s": 5000,
                           "code": [code for code, _ in arms]},
            "summary": summary, "runs": runs}
    lines = ["## fleet_ingest: telemetry persisted end to end at QoS 1", "",
             f"{args.devices} devices in 2 publisher processes, 1 record per message, real "
             f"Mosquitto {data['versions']['mosquitto']}, paho {data['versions']['paho-mqtt']}, "
             f"ManagerWorker processes (1 network + 1 ingest thread each), {os.cpu_count()} "
             f"cores shared by broker, publishers, workers and the database. Median of "
             f"{args.repeats}. The machine is shared with other jobs: see the load average.", ""]
    if len(arms) > 1:
        lines += ["Code: this tree's and that of " + ", ".join(c for c, _ in arms[1:]) +
                  ", run alternately (same variant, one after the other, in every repeat).", ""]
    lines += ["| variant | store | code | messages/run | median msg/s | × baseline | max lost | "
              "max dup | broker dropped | CPU µs/msg worker / broker / publishers | "
              "load avg at start |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for s in summary:
        lines.append(f"| {s['variant']} | {s['db']} | {s['code']} | {s['messages_per_run']} | "
                     f"{s['median_msgs_per_s']:.0f} | {s['ratio_vs_baseline']} | "
                     f"{s['max_lost']} | {s['max_duplicates']} | {s['max_broker_dropped']} | "
                     f"{s['median_worker_cpu_us_per_msg']} / "
                     f"{s['median_broker_cpu_us_per_msg']} / "
                     f"{s['median_publisher_cpu_us_per_msg']} | {s['load_avg_1m']} |")
    lines += ["", "CPU µs/msg: user+system CPU time over the run divided by rows persisted, "
              "for the worker processes (all threads, including idle polling), the broker "
              "process (whole run, setup included) and the publisher processes (from the first "
              "publish). 10⁶ / the worker figure is what one uncontended core could sustain; "
              "the sum of the three, times the rate, is what the two shared cores must "
              "supply (PostgreSQL's own CPU comes on top)."]
    # a partial run (--only) gets its own files, next to the full run's, shown beside them in
    # benchmarks/README.md (results/fleet_ingest.only-<variants>.md)
    only = "-".join(re.findall(r"[a-z0-9]+", args.only.lower())) if args.only else ""
    if only and all(v.name in ("tuned", "tuned, 2 workers") for v in variants[1:]):
        only = "tuned"        # --only matched nothing beyond the variants it always keeps
    name = f"fleet_ingest.only-{only}" if only else "fleet_ingest"
    if len(arms) > 1:
        labels = [spec.partition("=")[0] for spec in args.against]
        name += "-vs-" + "-".join(re.findall(r"[a-z0-9]+", "-".join(labels).lower()))
    write_results(name, data, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

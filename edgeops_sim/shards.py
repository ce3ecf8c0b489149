"""A large simulated fleet as several processes of at most ``per_process`` agents each.

Why it exists: the agents of one process share one interpreter lock, so one process uses at
most one core however many agents it runs. A large fleet therefore runs as shard processes
(``python -m edgeops_sim.shards SPEC``), each a :class:`edgeops_sim.fleet.SimFleet` over its part
of the enrolled devices, reporting its snapshot as one JSON line every couple of seconds.
(Until the agent's MQTT adapter moved to one epoll loop per process, paho's ``select()`` also
capped a process at ~100 agents: descriptors numbered 1024 or above lost their connections for
ever. That limit is gone; ``edgeops.netloop``.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["PER_PROCESS", "ShardedFleet", "merge_snapshots"]

PER_PROCESS = 100       # agents per process (one core each at most; no descriptor limit)


def merge_snapshots(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the counters of several shards' snapshots; ``serving`` merged per label."""
    out: dict[str, Any] = {}
    serving: Counter[str] = Counter()
    for s in snaps:
        for k, v in s.items():
            if k == "serving":
                serving.update(v)
            elif k == "sim_hour":
                out[k] = v
            elif isinstance(v, int | float):
                out[k] = out.get(k, 0) + v
    out["serving"] = dict(sorted(serving.items()))
    return out


class ShardedFleet:
    """Start shard processes over already-enrolled devices; same snapshot/stop as SimFleet."""

    def __init__(self, workdir: Path, broker_url: str, device_ids: list[str], *, n: int,
                 seed: int, prefix: str, options: dict[str, Any],
                 per_process: int = PER_PROCESS) -> None:
        self.workdir, self.broker_url = workdir, broker_url
        self.groups = [device_ids[i:i + per_process]
                       for i in range(0, len(device_ids), per_process)]
        self.common = {"workdir": str(workdir), "broker": broker_url, "n": n, "seed": seed,
                       "prefix": prefix, "options": options}
        self.procs: list[subprocess.Popen[str]] = []
        self._latest: list[dict[str, Any]] = []
        self._readers: list[threading.Thread] = []

    def start(self) -> None:
        self._latest = [{} for _ in self.groups]
        for i, ids in enumerate(self.groups):
            spec = json.dumps({**self.common, "ids": ids})
            p = subprocess.Popen([sys.executable, "-m", "edgeops_sim.shards", spec],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 start_new_session=True)
            self.procs.append(p)
            t = threading.Thread(target=self._read, args=(i, p), daemon=True,
                                 name=f"sim-shard-{i}")
            t.start()
            self._readers.append(t)

    def _read(self, i: int, p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            try:
                self._latest[i] = json.loads(line)
            except ValueError:
                continue

    def snapshot(self) -> dict[str, Any]:
        snap = merge_snapshots([s for s in self._latest if s])
        snap["processes"] = len(self.procs)
        return snap

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for t in self._readers:
            t.join(5)
        self.procs.clear()
        self._readers.clear()


def _shard_main(spec_json: str) -> int:
    from edgeops_sim.faults import FaultPlan
    from edgeops_sim.fleet import SimFleet, SimOptions
    from edgeops_sim.streams import smart_city

    spec = json.loads(spec_json)
    opts = dict(spec["options"])
    faults = FaultPlan(frozenset(opts.pop("faults", [])), share=opts.pop("fault_share", 0.1))
    ids = set(spec["ids"])
    specs = [s for s in smart_city(spec["n"], spec["seed"], spec["prefix"]) if s.id in ids]
    fleet = SimFleet(specs, Path(spec["workdir"]), spec["broker"],
                     SimOptions(**opts, faults=faults))
    fleet.attach()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fleet.start()
    while not stop.wait(2.0):
        print(json.dumps(fleet.snapshot()), flush=True)
    fleet.stop()
    print(json.dumps({**fleet.snapshot(), "online": 0}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_shard_main(sys.argv[1]))

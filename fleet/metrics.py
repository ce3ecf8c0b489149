"""``/metrics``: the fleet's state in the Prometheus text exposition format (version 0.0.4).

Written by hand rather than with ``prometheus-client``: every figure here is read from the
store at scrape time (devices by state, deployment progress), not counted in process, so the
client's registry and its global state would add a dependency without doing any work.

Two figures need memory between scrapes and live in :class:`MetricsCollector`:
- the inference latency histogram is a *cumulative* counter, as Prometheus expects: each scrape
  sums only the inference rows inserted since the previous one (by primary key), so a scrape
  costs the new rows, not the table;
- the telemetry ingest rate (rows per second over the last minute) comes from samples of the
  ingest counter (``MAX(id)`` of the telemetry table); ``rate(edgeops_telemetry_records_total
  [1m])`` gives the same figure on the Prometheus side.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from fleet.console.queries import FleetQueries

__all__ = ["CONTENT_TYPE", "Family", "MetricsCollector", "RateTracker", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric family: name, type, help, samples (suffix, labels, value)."""

    name: str
    kind: str                     # gauge | counter | histogram
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((suffix, tuple(sorted(labels.items())), float(value)))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if v == int(v) and abs(v) < 2**53 else repr(v)


def render(families: Iterable[Family]) -> str:
    """The exposition text: ``# HELP``, ``# TYPE`` then one line per sample."""
    out: list[str] = []
    for f in families:
        out.append(f"# HELP {f.name} {f.help.replace(chr(92), chr(92) * 2)}")
        out.append(f"# TYPE {f.name} {f.kind}")
        for suffix, labels, value in f.samples:
            lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            out.append(f"{f.name}{suffix}{{{lab}}} {_value(value)}" if lab
                       else f"{f.name}{suffix} {_value(value)}")
    return "\n".join(out) + "\n"


class RateTracker:
    """Per-second rate of a monotonic counter over a sliding window of samples."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.window_s = window_s
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque()

    def observe(self, value: float) -> float | None:
        """Record ``value`` now; the rate since the oldest sample in the window (None: 1st)."""
        now = self.clock()
        if self._samples and value < self._samples[-1][1]:
            self._samples.clear()           # the counter was reset (e.g. a new database)
        self._samples.append((now, value))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        t0, v0 = self._samples[0]
        if now <= t0:
            return None
        return (value - v0) / (now - t0)


class MetricsCollector:
    """Reads the store at each scrape; keeps the cumulative latency histogram between scrapes."""

    def __init__(self, queries: FleetQueries, *, scan_batch: int = 50_000,
                 catch_up_budget_s: float = 2.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.q = queries
        self.scan_batch = scan_batch
        # a scrape must answer within Prometheus' timeout (10 s by default): after a restart
        # on a large table the histogram catches up over several scrapes instead
        self.catch_up_budget_s = catch_up_budget_s
        self.monotonic = monotonic
        self.clock = clock
        self._lock = threading.Lock()
        self._after_id = 0
        self._le: tuple[float | None, ...] = ()
        self._counts: list[int] = []
        self._inferences = 0
        self._errors = 0
        self._rate = RateTracker(60.0, monotonic)

    def _catch_up(self) -> None:
        start = self.monotonic()
        while True:
            scan = self.q.scan_inference(self._after_id, self.scan_batch)
            self._after_id = scan.last_id
            self._inferences += scan.inferences
            self._errors += scan.errors
            if scan.le_ms:
                if not self._le:
                    self._le, self._counts = scan.le_ms, [0] * len(scan.le_ms)
                if scan.le_ms == self._le:
                    self._counts = [a + b for a, b in zip(self._counts, scan.counts,
                                                          strict=True)]
            if scan.records < self.scan_batch:
                return
            if self.monotonic() - start >= self.catch_up_budget_s:
                return

    def collect(self) -> list[Family]:
        with self._lock:
            self._catch_up()
            ingested = self.q.telemetry_max_id()
            rate = self._rate.observe(float(ingested))
            le, counts = self._le, list(self._counts)
            inferences, errors = self._inferences, self._errors
        fams: list[Family] = []
        dev = Family("edgeops_devices", "gauge", "Enrolled devices by class and state.")
        counts_by = self.q.device_counts()
        for c in counts_by["by_class"]:
            dev.add(c["online"], **{"class": c["name"], "state": "online"})
            dev.add(c["offline"], **{"class": c["name"], "state": "offline"})
        fams.append(dev)
        deps = Family("edgeops_deployments", "gauge", "Deployments by status.")
        for status, n in sorted(self.q.deployment_status_counts().items()):
            deps.add(n, status=status)
        fams.append(deps)
        fams += self._deployment_progress()
        rec = Family("edgeops_telemetry_records_total", "counter",
                     "Telemetry records ingested (all kinds).")
        rec.add(ingested)
        fams.append(rec)
        rf = Family("edgeops_telemetry_ingest_rate", "gauge",
                    "Telemetry records ingested per second over the last minute.")
        if rate is not None:
            rf.add(rate)
        fams.append(rf)
        inf = Family("edgeops_inferences_total", "counter",
                     "Inferences reported by devices (sum of inference telemetry).")
        inf.add(inferences)
        err = Family("edgeops_inference_errors_total", "counter",
                     "Failed inferences reported by devices.")
        err.add(errors)
        fams += [inf, err, _histogram_family(le, counts)]
        return fams

    def _deployment_progress(self) -> list[Family]:
        active = self.q.store.list_deployments(["running", "paused"], 100)
        per_state = Family("edgeops_deployment_devices", "gauge",
                           "Devices of each active deployment by rollout state.")
        progress = Family("edgeops_deployment_progress_ratio", "gauge",
                          "Share of an active deployment's devices healthy or activated.")
        phase = Family("edgeops_deployment_phase", "gauge",
                       "Current phase index of each active deployment.")
        for d in active:
            counts = self.q.store.deployment_counts(d.id)
            for state, n in sorted(counts.items()):
                per_state.add(n, deployment=d.id, bundle=d.bundle, state=state)
            total = sum(counts.values())
            done = counts.get("healthy", 0) + counts.get("activated", 0)
            progress.add(done / total if total else 0.0, deployment=d.id, bundle=d.bundle,
                         status=d.status)
            phase.add(d.phase_index, deployment=d.id, bundle=d.bundle)
        return [per_state, progress, phase]

    def text(self) -> str:
        return render(self.collect())


def _histogram_family(le_ms: Sequence[float | None], counts: Sequence[int]) -> Family:
    """Cumulative Prometheus buckets in seconds; ``_sum`` is estimated from bucket midpoints
    (devices report bucketed counts, not sums)."""
    h = Family("edgeops_inference_latency_seconds", "histogram",
               "Inference latency reported by devices (bucketed on the device).")
    running, est_sum, lower = 0, 0.0, 0.0
    for bound, n in zip(le_ms, counts, strict=True):
        running += n
        if bound is None:
            est_sum += n * lower / 1000.0
            continue
        est_sum += n * (lower + bound) / 2 / 1000.0
        h.add(running, "_bucket", le=_value(bound / 1000.0))
        lower = bound
    h.add(running, "_bucket", le="+Inf")
    h.add(est_sum, "_sum")
    h.add(running, "_count")
    return h

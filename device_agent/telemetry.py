"""Telemetry: what the agent measures, and the on-disk queue that gets it to the fleet.

Why it exists: devices go offline for hours (tunnels, broker restarts, power cuts) and the fleet
still needs their heartbeats, system and inference figures and the data-drift signal. Records
are appended to a bounded SQLite queue first and leave it only when the broker has acknowledged
the batch (QoS 1 PUBACK), so neither an outage nor an agent restart loses any; when the bound
is hit the oldest go first and ``dropped`` says how many.

Record kinds (docs/PROTOCOL.md ``telemetry``): ``heartbeat``, ``system``, ``inference``,
``drift``, each a typed class of :mod:`edgeops.protocol.records`. The ``system`` and ``drift``
builders are here; the collector (device_agent/collector.py) decides when to call them.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.diskspace import is_disk_full
from edgeops.protocol.records import DriftFeature, DriftRecord, SystemRecord

__all__ = [
    "DurableQueue",
    "FeatureStats",
    "TelemetryLimits",
    "drift_record",
    "system_record",
    "take_batch",
]

_SQLITE_IOERR_SHMSIZE = 4874     # no room to grow the -shm file (SQLITE_IOERR | 19 << 8)


@dataclass(frozen=True)
class TelemetryLimits:
    """Bounds with units in the names; the queue bound comes from the agent config."""

    max_records_per_batch: int = 1000          # TelemetryBatch.MAX_RECORDS
    max_batch_bytes: int = 192 * 1024          # under Limits.max_mqtt_payload_bytes (256 KiB)
    max_features: int = 64                     # per-input summaries kept for drift
    drift_sample_every: int = 8                # summarise one inference request in N


class DurableQueue:
    """A bounded FIFO of byte records in SQLite (WAL), safe across crashes and restarts.

    ``push`` never blocks on the network; ``peek``/``ack`` let the sender delete records only
    after the broker acknowledged them. Thread-safe (one connection behind a lock).
    """

    def __init__(self, path: Path, max_records: int) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.path = path
        self.max_records = max_records
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = self._open_wal(path)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                         " body BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('dropped', 0), ('seq', 0)")
        # the batch on its way (end-to-end ack): its seq and last record id; 0 = none
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('batch_seq', 0), ('batch_last', 0)")

    @staticmethod
    def _open_wal(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            if exc.sqlite_errorcode != _SQLITE_IOERR_SHMSIZE and not is_disk_full(exc):
                raise
            # A full disk at start: no room for the WAL index file (-shm). In exclusive mode
            # SQLite keeps that index in memory, so the queue opens and its records are sent;
            # one agent per data directory (AgentLock) means nobody else wanted the file.
            logging.getLogger(__name__).warning(
                "%s: disk full, opened in exclusive mode (%s)", path, exc)
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def push(self, body: bytes) -> None:
        self.push_many([body])

    def push_many(self, bodies: list[bytes]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO q (body) VALUES (?)", [(b,) for b in bodies])
                (n,) = self._db.execute("SELECT COUNT(*) FROM q").fetchone()
                excess = n - self.max_records
                if excess > 0:      # the bound is hit: the oldest go first, and are counted
                    self._db.execute("DELETE FROM q WHERE id IN (SELECT id FROM q ORDER BY id"
                                     " LIMIT ?)", (excess,))
                    self._db.execute("UPDATE meta SET v = v + ? WHERE k = 'dropped'", (excess,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def peek(self, n: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return [(int(i), bytes(b)) for i, b in self._db.execute(
                "SELECT id, body FROM q ORDER BY id LIMIT ?", (n,))]

    def ack(self, last_id: int) -> None:
        """Delete every record up to and including ``last_id`` (the batch was acknowledged)."""
        with self._lock:
            self._db.execute("DELETE FROM q WHERE id <= ?", (last_id,))

    def next_seq(self) -> int:
        """A persisted, increasing batch sequence number."""
        with self._lock:
            self._db.execute("UPDATE meta SET v = v + 1 WHERE k = 'seq'")
            return int(self._db.execute("SELECT v FROM meta WHERE k = 'seq'").fetchone()[0])

    def pinned_batch(self) -> tuple[int, int] | None:
        """(seq, last id) of the batch sent and not yet acknowledged, or None."""
        with self._lock:
            d = dict(self._db.execute("SELECT k, v FROM meta WHERE k IN ('batch_seq', "
                                      "'batch_last')").fetchall())
        return (int(d["batch_seq"]), int(d["batch_last"])) if d.get("batch_seq") else None

    def pin_batch(self, last_id: int) -> int:
        """Give the records up to ``last_id`` a new batch seq, persisted: a re-send after a
        restart carries the same seq and records, so the manager stores them once."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE meta SET v = v + 1 WHERE k = 'seq'")
                (seq,) = self._db.execute("SELECT v FROM meta WHERE k = 'seq'").fetchone()
                self._db.execute("UPDATE meta SET v = ? WHERE k = 'batch_seq'", (seq,))
                self._db.execute("UPDATE meta SET v = ? WHERE k = 'batch_last'", (last_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(seq)

    def ack_batch(self, last_id: int) -> None:
        """The pinned batch is stored by the manager: delete its records and unpin it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM q WHERE id <= ?", (last_id,))
                self._db.execute("UPDATE meta SET v = 0 WHERE k IN ('batch_seq', 'batch_last')")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @property
    def dropped(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT v FROM meta WHERE k='dropped'").fetchone()[0])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM q").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def take_batch(queue: DurableQueue, limits: TelemetryLimits = TelemetryLimits(),
               upto: int | None = None) -> tuple[int, list[dict[str, Any]]] | None:
    """The oldest records that fit one batch: (last id, records), or None if empty.

    ``upto``: only records with an id up to this one (re-sending a pinned batch).
    """
    rows = queue.peek(limits.max_records_per_batch)
    if upto is not None:
        rows = [r for r in rows if r[0] <= upto]
    if not rows:
        return None
    out: list[dict[str, Any]] = []
    size, last = 0, rows[0][0]
    for rid, body in rows:
        if out and size + len(body) + 1 > limits.max_batch_bytes:
            break
        try:
            out.append(json.loads(body))
        except ValueError:
            pass  # a record the disk mangled is skipped (and acked with the batch)
        size += len(body) + 1
        last = rid
    return last, out


class FeatureStats:
    """Running per-input-feature summaries (Welford), fed by the inference observer hook.

    A "feature" is one model input; its values are summarised over all elements seen since the
    last :meth:`drain`. Compared with the manifest's ``baseline`` this is the drift signal.
    Only every ``sample_every``-th request is summarised: drift is a population statistic, and
    sampling keeps the hook's cost off the request path (benchmarks/agent_footprint.py).
    """

    def __init__(self, max_features: int = 64, sample_every: int = 8) -> None:
        self.max_features = max_features
        self.sample_every = max(1, sample_every)
        self._calls = 0
        self._lock = threading.Lock()
        self._s: dict[str, list[float]] = {}   # name -> [n, mean, m2, min, max]

    def observe(self, inputs: Mapping[str, np.ndarray], _latency_ms: float = 0.0,
                _ok: bool = True) -> None:
        """Signature matches ``InferenceService`` observers: (inputs, latency_ms, ok)."""
        self._calls += 1            # a lost increment under a race only shifts the sample
        if self._calls % self.sample_every:
            return
        for name, arr in inputs.items():
            summary = _summary(np.asarray(arr))
            if summary is not None:
                self._merge(name, *summary)

    def _merge(self, name: str, n_b: float, mean_b: float, m2_b: float, lo: float,
               hi: float) -> None:
        with self._lock:
            s = self._s.get(name)
            if s is None:
                if len(self._s) < self.max_features:
                    self._s[name] = [n_b, mean_b, m2_b, lo, hi]
                return
            n_a, mean_a, m2_a = s[0], s[1], s[2]
            n = n_a + n_b
            delta = mean_b - mean_a
            s[0], s[1] = n, mean_a + delta * n_b / n
            s[2] = m2_a + m2_b + delta * delta * n_a * n_b / n
            s[3], s[4] = min(s[3], lo), max(s[4], hi)

    def drain(self) -> dict[str, dict[str, float]]:
        """Summaries since the last drain (count, mean, std, min, max), then start afresh."""
        with self._lock:
            s, self._s = self._s, {}
        return {k: {"count": int(v[0]), "mean": v[1], "std": math.sqrt(v[2] / v[0]),
                    "min": v[3], "max": v[4]} for k, v in s.items()}


def _summary(a: np.ndarray) -> tuple[float, float, float, float, float] | None:
    """(count, mean, sum of squared deviations, min, max) of the finite elements, or None.

    Few, cheap numpy calls (sum, dot, min, max): this runs on the inference path.
    """
    if a.size == 0 or a.dtype.kind not in "fiub":
        return None
    v = a.ravel().astype(np.float64, copy=False)
    total, squares = float(v.sum()), float(np.dot(v, v))
    if not (math.isfinite(total) and math.isfinite(squares)):   # NaN/inf somewhere
        v = v[np.isfinite(v)]
        if v.size == 0:
            return None
        total, squares = float(v.sum()), float(np.dot(v, v))
    n = float(v.size)
    mean = total / n
    return n, mean, max(0.0, squares - total * mean), float(v.min()), float(v.max())


def drift_record(ts: float, live: Mapping[str, Mapping[str, float]],
                 baseline: Mapping[str, Any], bundle: str | None) -> DriftRecord | None:
    """Live summaries beside the manifest baseline, with a standardised mean shift per feature.

    ``shift = |mean_live - mean_base| / std_base``: the fleet can alert on it without knowing
    the model. None when nothing was observed.
    """
    if not live:
        return None
    features: dict[str, DriftFeature] = {}
    for name, cur in live.items():
        f = (_finite(cur["count"]), _finite(cur["mean"]), _finite(cur["std"]),
             _finite(cur["min"]), _finite(cur["max"]))
        base = baseline.get(name)
        bmean, bstd = (base.get("mean"), base.get("std")) if isinstance(base, Mapping) else (
            None, None)
        if (isinstance(bmean, int | float) and isinstance(bstd, int | float)
                and math.isfinite(bmean) and math.isfinite(bstd)):
            shift = _finite(abs(cur["mean"] - bmean) / bstd) if bstd > 0 else None
            features[name] = DriftFeature(*f, float(bmean), float(bstd), shift)
        else:
            features[name] = DriftFeature(*f)
    return DriftRecord(ts, bundle, features)


def _finite(v: float) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def system_record(ts: float, disk_path: Path) -> SystemRecord:
    """CPU, memory, disk and (where the OS exposes it) temperature, via psutil."""
    import psutil

    mem = psutil.virtual_memory()
    try:
        disk_free: float | None = round(psutil.disk_usage(str(disk_path)).free / 2**20, 1)
    except OSError:
        disk_free = None
    return SystemRecord(ts, cpu_pct=psutil.cpu_percent(interval=None),
                        mem_mb=round(mem.used / 2**20, 1), mem_pct=mem.percent,
                        agent_rss_mb=round(psutil.Process().memory_info().rss / 2**20, 1),
                        disk_free_mb=disk_free, temp_c=_temperature())


def _temperature() -> float | None:
    import psutil

    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        temps = reader()
    except (OSError, RuntimeError):
        return None
    values = [t.current for entries in temps.values() for t in entries
              if isinstance(t.current, int | float) and t.current > 0]
    return round(max(values), 1) if values else None

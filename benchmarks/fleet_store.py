"""Telemetry insert rate of the fleet store (SQLite vs PostgreSQL, executemany vs COPY), and
deployment status at 10,000 devices (rows loaded vs counted in the store).

Why: the ingest path must persist >= 5,000 telemetry records/s on a 2-core machine; this
isolates the store's share of that budget. Each case inserts the same rows in batches (one
transaction per batch, as fleet/ingest.py flushes) into a fresh database, three repetitions,
and reports the median rows/s and the ratio against the SQLite executemany baseline.

Deployment status: ``RolloutEngine.status()`` (what ``GET /api/v1/deployments/{id}`` and
``edgeops fleet status`` answer) on one deployment over ``--status-devices`` devices in a mix of
states, timed beside its former implementation (load every device row, count in Python) on the
same database, interleaved; both answers are checked equal.

Run: ``python -m benchmarks.fleet_store [--rows 50000] [--batch 500] [--status-devices 10000]``.
PostgreSQL is the one on 127.0.0.1:5432 (EDGEOPS_TEST_PG overrides); cases that need it are
skipped if it is absent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from fleet.rollout import RolloutEngine, Strategy
from fleet.store import Deployment, DeploymentDevice, Device, Store, TelemetryRow, open_store

PG_BASE = os.environ.get("EDGEOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
RESULTS = Path(__file__).parent / "results"


def _rows(n: int) -> list[TelemetryRow]:
    now = time.time()
    return [TelemetryRow(f"cam-{i % 200:03d}", now + i * 1e-3, "inference",
                         {"count": 100, "errors": i % 3, "p50_ms": 3.1, "p95_ms": 7.5,
                          "p99_ms": 9.9}, seq=i) for i in range(n)]


def _time_inserts(store: Store, rows: list[TelemetryRow], batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        store.insert_telemetry(rows[i : i + batch])
    dt = time.perf_counter() - t0
    assert store.count_telemetry() == len(rows), "rows went missing"
    return len(rows) / dt


def _sqlite_case(rows: list[TelemetryRow], batch: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        store = open_store(f"sqlite:///{Path(d) / 'bench.db'}")
        try:
            return _time_inserts(store, rows, batch)
        finally:
            store.close()


def _pg_case(use_copy: bool) -> Callable[[list[TelemetryRow], int], float]:
    def run(rows: list[TelemetryRow], batch: int) -> float:
        import psycopg

        from fleet.store.postgres import PostgresStore

        name = f"edgeops_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        try:
            store = PostgresStore(f"{PG_BASE}/{name}", use_copy=use_copy)
            try:
                return _time_inserts(store, rows, batch)
            finally:
                store.close()
        finally:
            with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return run


@contextlib.contextmanager
def _fresh_pg() -> Iterator[Store]:
    import psycopg

    from fleet.store.postgres import PostgresStore

    name = f"edgeops_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        store = PostgresStore(f"{PG_BASE}/{name}")
        try:
            yield store
        finally:
            store.close()
    finally:
        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def _fresh_sqlite() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as d:
        store = open_store(f"sqlite:///{Path(d) / 'bench.db'}")
        try:
            yield store
        finally:
            store.close()


_STATES = ("healthy",) * 5 + ("activated", "notified", "downloading", "failed", "pending")


def _seed_deployment(store: Store, n: int) -> str:
    """``n`` devices (a tenth offline) and one running deployment over all of them."""
    now = time.time()
    ids = [f"cam-{i:05d}" for i in range(n)]
    for i, d in enumerate(ids):
        store.upsert_device(Device(d, "camera", "x86-cpu", {"city": "lyon"}, enrolled_at=now))
        if i % 10 == 0:
            store.set_status(d, False, now)
    dep = Deployment("d-bench", "vc", "1.0.0", "all", Strategy().to_dict(), "running", 0, now,
                     now, now)
    store.create_deployment(dep, [DeploymentDevice(dep.id, d, i % 3, _STATES[i % len(_STATES)],
                                                   "x86-cpu", now) for i, d in enumerate(ids)])
    return dep.id


def _status_by_rows(store: Store, deployment_id: str) -> dict[str, Any]:
    """``RolloutEngine.status()`` as it was before: every device row loaded and counted."""
    dep = store.get_deployment(deployment_id)
    assert dep is not None
    rows = store.deployment_devices(dep.id)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    waiting_offline = store.waiting_offline(dep.id) if counts.get("notified") else 0
    done = sum(counts.get(s, 0) for s in ("healthy", "activated"))
    return {**dep.to_dict(), "devices": len(rows), "counts": counts,
            "waiting_offline": waiting_offline,
            "phases": len(Strategy.from_dict(dep.strategy).phases),
            "progress": done / len(rows) if rows else 0.0}


def _status_case(opened: Callable[[], contextlib.AbstractContextManager[Store]], devices: int,
                 repeat: int) -> dict[str, Any]:
    with opened() as store:
        dep_id = _seed_deployment(store, devices)
        # status() reads the store only; it never sends or signs
        engine = RolloutEngine(store, cast(Any, None), cast(Any, None))
        before, after = _status_by_rows(store, dep_id), engine.status(dep_id)
        assert before == after, (before, after)
        times: dict[str, list[float]] = {"rows": [], "grouped": []}
        for _ in range(repeat):       # interleaved: load drifts hit both alike
            for key, fn in (("rows", lambda: _status_by_rows(store, dep_id)),
                            ("grouped", lambda: engine.status(dep_id))):
                t0 = time.perf_counter()
                fn()
                times[key].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"rows_median_ms": round(med["rows"], 2), "grouped_median_ms": round(med["grouped"], 2),
            "speedup": round(med["rows"] / med["grouped"], 1),
            "rows_runs_ms": [round(x, 2) for x in times["rows"]],
            "grouped_runs_ms": [round(x, 2) for x in times["grouped"]]}


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(f"{PG_BASE}/postgres", connect_timeout=3) as c:
            return str(c.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    except Exception:
        return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--status-devices", type=int, default=10_000)
    ap.add_argument("--status-repeat", type=int, default=15)
    args = ap.parse_args(argv)
    rows = _rows(args.rows)
    pg_version = _pg_available()
    cases: list[tuple[str, Callable[[list[TelemetryRow], int], float]]] = [
        ("sqlite-wal executemany", _sqlite_case)]
    if pg_version:
        cases += [("postgresql executemany", _pg_case(False)),
                  ("postgresql COPY", _pg_case(True))]
    results = []
    for name, fn in cases:
        rates = [fn(rows, args.batch) for _ in range(args.repeat)]
        results.append({"case": name, "median_rows_per_s": round(statistics.median(rates)),
                        "runs_rows_per_s": [round(r) for r in rates]})
        print(f"  … {name}: {statistics.median(rates):,.0f} rows/s", file=sys.stderr)
    status_cases: list[tuple[str, Callable[[], contextlib.AbstractContextManager[Store]]]] = [
        ("sqlite-wal", _fresh_sqlite)]
    if pg_version:
        status_cases.append(("postgresql", _fresh_pg))
    status = []
    for name, opened in status_cases:
        r = {"store": name, **_status_case(opened, args.status_devices, args.status_repeat)}
        status.append(r)
        print(f"  … status {name}: rows {r['rows_median_ms']} ms, grouped "
              f"{r['grouped_median_ms']} ms", file=sys.stderr)
    base = results[0]["median_rows_per_s"]
    for r in results:
        r["ratio_vs_sqlite"] = round(r["median_rows_per_s"] / base, 2)
    import psycopg

    out = {"benchmark": "fleet_store telemetry insert", "rows": args.rows, "batch": args.batch,
           "repeat": args.repeat, "threads": 1, "python": platform.python_version(),
           "sqlite": sqlite3.sqlite_version, "postgresql": pg_version,
           "psycopg": psycopg.__version__, "cpu_count": os.cpu_count(),
           "machine": platform.machine(), "results": results,
           "status": {"devices": args.status_devices, "repeat": args.status_repeat,
                      "results": status},
           "note": "one writer thread, one transaction per batch, fresh database per run; "
                   "machine shared with other work, so compare ratios within one run"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fleet_store.json").write_text(json.dumps(out, indent=2) + "\n")
    md = [f"# fleet_store: telemetry insert rate ({args.rows:,} rows, batches of {args.batch}, "
          f"median of {args.repeat})", "",
          f"Python {out['python']}, SQLite {out['sqlite']}, PostgreSQL {pg_version or 'absent'}, "
          f"psycopg {out['psycopg']}, 1 writer thread, {out['cpu_count']} CPUs.", "",
          "| case | median rows/s | ratio vs SQLite | runs |", "|---|---:|---:|---|"]
    md += [f"| {r['case']} | {r['median_rows_per_s']:,} | {r['ratio_vs_sqlite']} | "
           f"{', '.join(f'{x:,}' for x in r['runs_rows_per_s'])} |" for r in results]
    md += ["", f"## Deployment status, {args.status_devices:,} devices (median of "
                 f"{args.status_repeat}, interleaved)", "",
           "`RolloutEngine.status()` counting in the store (GROUP BY) against its former "
           "implementation loading every device row; same database, same answer checked.", "",
           "| store | all rows loaded (baseline) ms | GROUP BY ms | × faster |",
           "|---|---:|---:|---:|"]
    md += [f"| {r['store']} | {r['rows_median_ms']} | {r['grouped_median_ms']} | "
           f"{r['speedup']} |" for r in status]
    (RESULTS / "fleet_store.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return out


if __name__ == "__main__":
    main()

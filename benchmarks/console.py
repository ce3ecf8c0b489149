"""Console API and page response times on a fleet of 10,000 devices, beside full-table baselines.

A real manager (FleetServer's app under uvicorn on loopback, SQLite) is seeded through the real
store, repository and rollout engine (tests/console/fleet_seed.py): 10,000 devices, two
published bundles, a three-phase deployment over every device, an aborted one, an hour of
telemetry for 50 devices plus bulk inference telemetry. Each route is fetched sequentially by
one client thread (urllib) ``--repeats`` times; medians and p95 are reported.

Baselines, measured in the same run on the same data:
- *overview from the device list*: what a console without aggregate routes must do, page
  through ``/api/v1/devices`` (1,000 per page) and count in the browser;
- *deployment progress from every device row*: ``/api/v1/deployments/{id}/devices`` (what a
  console without grouped routes must fetch) against the console's grouped ``.../waves`` page
  and the rollout engine's status ``/api/v1/deployments/{id}`` (counted with GROUP BY in the
  store; ``benchmarks/fleet_store.py`` times it against its former row-loading version);
- */metrics, cold*: the first scrape sums every inference row; later scrapes read only rows
  inserted since the previous one.
With Chromium present, the time until each page has rendered its data is measured too.

Run: ``python -m benchmarks.console`` (``--quick`` for a small check).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._fleet_common import machine, write_results
from fleet.api.auth import create_token
from fleet.api.console_routes import _DIGESTS, collector_for
from fleet.metrics import MetricsCollector
from fleet.store import TelemetryRow
from tests.console.fleet_seed import LE_MS, seed_fleet
from tests.edgeops.bundles import make_bundle, make_keystore
from tests.fleet.live import live_fleet


def _get(url: str, token: str) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 - loopback
        return bytes(r.read())


def _time(fn: Callable[[], Any], repeats: int, warm: bool = True) -> dict[str, Any]:
    if warm:
        fn()  # warm caches and connections once
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 2),
            "p95_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.95))], 2),
            "runs": repeats}


def _bulk_telemetry(store: Any, devices: list[str], rows: int) -> None:
    rng = random.Random(3)
    now = time.time()
    batch: list[TelemetryRow] = []
    for k in range(rows):
        d = devices[k % len(devices)]
        counts = [0] * len(LE_MS)
        for _ in range(8):
            counts[rng.randrange(4, 9)] += 5
        batch.append(TelemetryRow(d, now - rng.random() * 3600, "inference", {
            "count": 40, "errors": 0, "p50_ms": 5.0, "p95_ms": 25.0, "p99_ms": 50.0,
            "histogram": {"le_ms": list(LE_MS), "counts": counts}}))
        if len(batch) == 1000:
            store.insert_telemetry(batch)
            batch = []
    if batch:
        store.insert_telemetry(batch)


def _pages(url: str, token: str, running: str, device: str, repeats: int
           ) -> dict[str, Any] | None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    out: dict[str, Any] = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"])
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(url + "/console/")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_selector("[data-testid=kpi-devices]")
        for name, route, ready in (
                ("overview", "#/", "[data-testid=kpi-devices]"),
                ("devices", "#/devices", "[data-testid=devices-table]"),
                ("devices, filtered", "#/devices?class=camera&tag=city%3Dlyon",
                 "[data-testid=devices-table]"),
                ("device detail", f"#/devices/{device}", "svg[aria-label=latency]"),
                ("deployment detail", f"#/deployments/{running}",
                 "svg[aria-label='phase progress']"),
                ("bundles", "#/bundles", "[data-testid=bundles-table]")):
            def load(route: str = route, ready: str = ready) -> None:
                page.goto("about:blank")
                page.goto(url + "/console/" + route)
                page.wait_for_selector(ready)
                page.wait_for_selector(f'#view[data-rendered="{route}"]', state="attached")
            out[name] = _time(load, repeats)
        out["chromium"] = b.version
        b.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--telemetry-rows", type=int, default=200_000,
                    help="bulk inference records besides the charted devices' hour")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="small run to check it works")
    args = ap.parse_args(argv)
    if args.quick:
        args.devices, args.telemetry_rows, args.repeats = 400, 5_000, 3
    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    try:
        keys = make_keystore(tmp / "keys")
        bundles = {"1.0.0": make_bundle(tmp, keys, version="1.0.0"),
                   "1.1.0": make_bundle(tmp, keys, version="1.1.0", seed=1)}
        with live_fleet(keys, tmp / "fleet", tick_s=3600.0) as lf:
            svc = lf.server.services
            t0 = time.perf_counter()
            seeded = seed_fleet(svc, keys, bundles, args.devices, charted=50, points=60)
            _bulk_telemetry(svc.store, seeded.devices, args.telemetry_rows)
            seed_s = time.perf_counter() - t0
            print(f"seeded {args.devices} devices in {seed_s:.1f} s", file=sys.stderr)
            token, _ = create_token(svc.store, "viewer", "bench")
            u = lf.url

            def get(path: str) -> Callable[[], bytes]:
                return lambda: _get(u + path, token)

            def device_list_full() -> None:
                cursor = ""
                while True:
                    page = __import__("json").loads(_get(
                        u + "/api/v1/devices?limit=1000" + (f"&cursor={cursor}" if cursor
                                                             else ""), token))
                    cursor = page["next_cursor"]
                    if not cursor:
                        return

            mid = sorted(seeded.devices)[len(seeded.devices) // 2]
            dev = seeded.charted[1]
            rows: list[dict[str, Any]] = []

            def row(group: str, name: str, fn: Callable[[], Any], baseline: bool = False,
                    repeats: int | None = None) -> None:
                r = {"group": group, "request": name, "baseline": baseline,
                     **_time(fn, repeats or args.repeats, warm=repeats is None)}
                rows.append(r)
                print(f"  {group:24} {name:54} {r['median_ms']:9.1f} ms", file=sys.stderr)

            # -- overview vs counting in the browser ---------------------------------------
            row("overview", "GET /api/v1/console/overview", get("/api/v1/console/overview"))

            def cold_overview() -> None:
                _DIGESTS.pop(svc.store, None)   # as after a restart: digest rebuilt
                _get(u + "/api/v1/console/overview", token)
            row("overview", "GET /api/v1/console/overview, first after restart",
                cold_overview, repeats=3)
            row("overview", "page through /api/v1/devices (1000/page)", device_list_full,
                baseline=True)
            # -- deployment progress ---------------------------------------------------------
            row("deployment", "GET /api/v1/console/deployments/{id}/waves?limit=50",
                get(f"/api/v1/console/deployments/{seeded.running}/waves?limit=50"))
            row("deployment", "GET /api/v1/deployments/{id} (status, GROUP BY)",
                get(f"/api/v1/deployments/{seeded.running}"))
            row("deployment", "GET /api/v1/deployments/{id}/devices (every device row)",
                get(f"/api/v1/deployments/{seeded.running}/devices"), baseline=True)
            # -- metrics: incremental vs cold ------------------------------------------------
            # the first scrapes catch up on the histogram, 2 s each (see fleet/metrics.py)
            catch_up = 0
            while True:
                t0 = time.perf_counter()
                _get(u + "/metrics", token)
                catch_up += 1
                if time.perf_counter() - t0 < 1.0:
                    break
            print(f"  /metrics caught up after {catch_up} scrapes", file=sys.stderr)
            row("metrics", "GET /metrics (steady scrape)", get("/metrics"))

            def cold_metrics() -> None:
                # no time budget: the whole table, as a collector without memory would read it
                MetricsCollector(collector_for(svc).q, catch_up_budget_s=float("inf")).text()
            row("metrics", "first scrape (sums every inference row)", cold_metrics,
                baseline=True, repeats=3)
            # -- the rest, no baseline -------------------------------------------------------
            for name, path in (
                    ("GET /console/ (index.html)", "/console/"),
                    ("GET /console/console.js", "/console/console.js"),
                    ("GET /api/v1/console/facets", "/api/v1/console/facets"),
                    ("GET /api/v1/devices?limit=50", "/api/v1/devices?limit=50"),
                    ("GET /api/v1/devices?limit=50 (middle page)",
                     f"/api/v1/devices?limit=50&cursor={mid}"),
                    ("GET /api/v1/devices?class=camera&tag=city=lyon",
                     "/api/v1/devices?limit=50&class=camera&tag=city%3Dlyon"),
                    ("GET /api/v1/devices?search=turin&status=offline",
                     "/api/v1/devices?limit=50&search=turin&status=offline"),
                    ("GET /api/v1/console/devices/{id}/series",
                     f"/api/v1/console/devices/{dev}/series"),
                    ("GET /api/v1/console/bundles", "/api/v1/console/bundles"),
                    ("GET /api/v1/deployments", "/api/v1/deployments")):
                row("pages' API", name, get(path))
            pages = _pages(u, token, seeded.running, dev, max(3, args.repeats // 3))
            telemetry = svc.store.count_telemetry()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    import starlette
    import uvicorn

    vers = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "starlette": starlette.__version__, "uvicorn": uvicorn.__version__,
            "chromium": (pages or {}).get("chromium", "not run")}
    for g in ("overview", "deployment", "metrics"):
        mine = [r for r in rows if r["group"] == g]
        base = next(r for r in mine if r["baseline"])
        for r in mine:
            r["ratio_vs_baseline"] = round(base["median_ms"] / r["median_ms"], 1) \
                if r["median_ms"] else None
    data = {"benchmark": "console", "machine": machine(), "versions": vers,
            "parameters": {"devices": args.devices, "telemetry_rows": telemetry,
                           "repeats": args.repeats, "seed_s": round(seed_s, 1),
                           "store": "sqlite (WAL)",
                           "threads": "server: uvicorn event loop + Starlette's thread pool in "
                                      "the benchmark process; client: 1 thread, sequential"},
            "api": rows, "pages": pages, "metrics_catch_up_scrapes": catch_up}
    lines = ["## console: API and page response times, "
             f"{args.devices:,} devices, {telemetry:,} telemetry rows", "",
             f"Real manager (uvicorn {vers['uvicorn']}, Starlette {vers['starlette']}, SQLite "
             f"{vers['sqlite']} WAL, Python {vers['python']}) on loopback in this process; one "
             f"sequential client thread; {args.repeats} runs after a warm-up; "
             f"{os.cpu_count()} cores shared with other jobs (load avg at start "
             f"{data['machine']['load_avg_at_start'][0]:.2f}). Baselines in the same run.", "",
             "| group | request | median ms | p95 ms | × faster than baseline |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        ratio = "baseline" if r["baseline"] else (r.get("ratio_vs_baseline") or "")
        lines.append(f"| {r['group']} | {r['request']} | {r['median_ms']} | {r['p95_ms']} | "
                     f"{ratio} |")
    lines += ["", f"After the restart, /metrics caught up on the {telemetry:,} rows in {catch_up} "
                  "scrapes of at most 2 s each (then the steady figure above)."]
    if pages:
        lines += ["", f"Pages in headless Chromium {pages['chromium']}: navigation until the "
                      "page has rendered its data (API calls included).", "",
                  "| page | median ms | p95 ms |", "|---|---:|---:|"]
        for name, r in pages.items():
            if isinstance(r, dict):
                lines.append(f"| {name} | {r['median_ms']} | {r['p95_ms']} |")
    write_results("console", data, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

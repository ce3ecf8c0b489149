"""Drift monitors on the manager: what a stored monitor's evaluation, a /metrics scrape and a
webhook delivery cost (issue 18, docs/DRIFT.md section 8).

- **evaluation**: ``DriftAlerts.evaluate_monitor`` for one cohort (reads the cohort's sketches,
  merges, tests, writes the alarm state) beside the baseline ``drift_status`` for the same
  cohort, what ``GET /api/v1/drift?cohort=`` runs on demand (it also computes every device's
  verdict); SQLite store, N devices with 8 windows of sketches each, 10 % of them in the cohort
  and a cohort of all devices.
- **/metrics**: the drift families read from the stored verdicts, beside the rest of /metrics
  (``MetricsCollector.collect``) on the same store.
- **delivery**: attempts per second of ``WebhookSender`` (claim, sign, POST, record) to a local
  ``http.server`` beside plain ``urllib`` POSTs of the same bodies to the same server.

Medians of repeated runs; one thread; SQLite in WAL mode on the local disk.
Run: ``python -m benchmarks.drift_alerts [--devices 300]`` → results/drift_alerts.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from edgeops.bundle import ArtifactEntry, FileRef, Manifest, TensorSpec
from edgeops.drift.features import build_reference, extract
from edgeops.drift.reference import DriftReference
from fleet.console.queries import FleetQueries
from fleet.drift.alerts import DriftAlerts, alert_store, parse_monitor
from fleet.drift.metrics import drift_families
from fleet.drift.monitor import MonitorPolicy
from fleet.drift.service import drift_status
from fleet.drift.webhook_sender import WebhookSender
from fleet.drift.webhooks import RetryPolicy, signed_headers
from fleet.metrics import MetricsCollector
from fleet.store import BundleRecord, Device, Store, TelemetryRow, open_store
from fleet.store._drift_alerts import AlarmState, OutgoingEvent

RESULTS = Path(__file__).parent / "results"
SHA = "0" * 64
WINDOWS = 8


def _reference() -> DriftReference:
    x = np.random.default_rng(1).normal(size=(2000, 8))
    ref = build_reference({"x": x}, {"y": np.stack([x[:, 0], -x[:, 0], x[:, 1]], axis=1)})
    assert ref is not None
    return ref


def _seed(store: Store, ref: DriftReference, n: int, now: float) -> None:
    art = ArtifactEntry("x86-cpu", FileRef("artifacts/x86-cpu/model.onnx", SHA, 10), "onnx",
                        "onnxruntime", ("CPUExecutionProvider",), "fp32")
    m = Manifest("vc", "1.0.0", SHA, (TensorSpec("x", "float32", ("n", 8)),),
                 (TensorSpec("y", "float32", ("n", 3)),), (art,), drift=ref)
    store.put_bundle(BundleRecord("vc", "1.0.0", m.to_bytes(), b"{}", 1.0))
    rng = np.random.default_rng(2)
    rows = []
    for i in range(n):
        dev = f"dev-{i:05d}"
        store.upsert_device(Device(dev, "camera", "x86-cpu",
                                   {"city": "lyon" if i % 10 == 0 else f"c{i % 10}"},
                                   enrolled_at=1.0))
        for w in range(WINDOWS):
            end = (int(now // ref.window_s) - WINDOWS + w + 1) * ref.window_s - 1
            x = rng.normal(size=(225, 8)) * (1.5 if i % 10 == 0 else 1.0)
            y = np.stack([x[:, 0], -x[:, 0], x[:, 1]], axis=1)
            counts = {}
            for rule in ref.rules:
                for name, v in extract(rule, x if rule.side == "input" else y).items():
                    fb = ref.feature(name)
                    assert fb is not None
                    counts[name] = [int(c) for c in fb.bin_counts(v)]
            rows.append(TelemetryRow(dev, end, "drift_sketch", {
                "bundle": "vc@1.0.0", "window_start": end - 900, "window_end": end,
                "requests": 900, "sampled": 225, "sample_every": 4, "counts": counts}))
    store.insert_telemetry(rows)


def _median_s(fn: Any, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _deliveries(store: Store, url: str, n: int) -> dict[str, float]:
    rec, _ = parse_monitor({"name": "sink", "webhooks": [{"url": url,
                                                          "secret": "s" * 32}]},
                           now=1.0, created_by=None)
    a = alert_store(store)
    a.add_monitor(rec)
    body = json.dumps({"specversion": "1.0", "data": {"x": "y" * 600}}).encode()
    for i in range(n):           # n transitions, one event each
        a.update_alarm(AlarmState("sink", f"b{i}", "data", True, 1.0, "alarm",
                                  2, [], 1.0), [OutgoingEvent(f"e{i}", "t", body)], {})
    sender = WebhookSender(a, policy=RetryPolicy(), batch=50)
    t0 = time.perf_counter()
    while sender.run_once():
        pass
    sender_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n):
        req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - loopback
                                     headers=signed_headers("s" * 32, body, time.time()))
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback
            r.read()
    plain_s = time.perf_counter() - t0
    return {"deliveries": n, "sender_per_s": n / sender_s, "plain_post_per_s": n / plain_s,
            "ratio": (n / sender_s) / (n / plain_s)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--deliveries", type=int, default=200)
    args = ap.parse_args(argv)
    ref = _reference()
    now = time.time()
    out: dict[str, Any] = {"versions": {
        "python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
        "machine": platform.machine(), "loadavg_1m": round(os.getloadavg()[0], 2)},
        "devices": args.devices, "windows": WINDOWS, "features": len(ref.features)}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/fleet.db", Path(tmp))
        _seed(store, ref, args.devices, now)
        alerts = DriftAlerts(store, clock=lambda: now)
        rows = []
        for cohort in ("city=lyon", "all"):
            rec, _ = parse_monitor({"name": cohort.replace("=", "-")[:20], "cohort": cohort},
                                   now=now, created_by=None)
            alert_store(store).add_monitor(rec)
            monitor = alert_store(store).get_monitor(rec.name)
            assert monitor is not None
            ev = _median_s(lambda m=monitor: alerts.evaluate_monitor(m, now), args.repeat)
            base = _median_s(lambda c=cohort: drift_status(
                store, now=now, cohorts=[c], policy=MonitorPolicy()), args.repeat)
            members = args.devices // 10 if cohort != "all" else args.devices
            rows.append({"cohort": cohort, "devices": members, "evaluate_s": ev,
                         "drift_status_s": base, "ratio": ev / base})
        out["evaluation"] = rows
        collector = MetricsCollector(FleetQueries(store))
        scrape = _median_s(lambda: drift_families(store, None), args.repeat)
        rest = _median_s(collector.collect, args.repeat)
        out["metrics"] = {"drift_families_ms": scrape * 1000, "rest_of_metrics_ms": rest * 1000,
                          "ratio": scrape / rest}
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            out["delivery"] = _deliveries(store, f"http://127.0.0.1:{srv.server_address[1]}/h",
                                          args.deliveries)
        finally:
            srv.shutdown()
            srv.server_close()
        store.close()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drift_alerts.json").write_text(json.dumps(out, indent=2) + "\n")
    md = _markdown(out)
    (RESULTS / "drift_alerts.md").write_text(md)
    print(md)
    return 0


def _markdown(r: dict[str, Any]) -> str:
    v = r["versions"]
    lines = [f"Python {v['python']}, numpy {v['numpy']}, {v['cpus']} CPUs shared (load "
             f"{v['loadavg_1m']}), {v['machine']}; SQLite; {r['devices']} devices × "
             f"{r['windows']} windows of sketches, {r['features']} features; medians.", "",
             "| cohort | devices | monitor evaluation | baseline: GET /api/v1/drift?cohort= "
             "| ratio |", "|---|---:|---:|---:|---:|"]
    lines += [f"| `{e['cohort']}` | {e['devices']} | {e['evaluate_s']:.3f} s | "
              f"{e['drift_status_s']:.3f} s | {e['ratio']:.2f} |" for e in r["evaluation"]]
    m, d = r["metrics"], r["delivery"]
    lines += ["", "| /metrics | drift families | rest of /metrics (baseline) | ratio |",
              "|---|---:|---:|---:|",
              f"| one scrape | {m['drift_families_ms']:.1f} ms | {m['rest_of_metrics_ms']:.1f} ms"
              f" | {m['ratio']:.2f} |", "",
              "| webhooks | WebhookSender (claim, sign, POST, record) | plain urllib POST "
              "(baseline) | ratio |", "|---|---:|---:|---:|",
              f"| {d['deliveries']} deliveries to a local http.server | "
              f"{d['sender_per_s']:.0f} /s | {d['plain_post_per_s']:.0f} /s | "
              f"{d['ratio']:.2f} |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

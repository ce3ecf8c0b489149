"""Bundle delivery over MQTT to many devices: time to all activated, manager egress, broker load.

A 10 MB artifact goes to 200 devices through a real Mosquitto. The manager side is the real
:class:`fleet.worker.ManagerWorker` (signed desired-state commands on ``devices/<id>/desired``,
fetch handling, the fan-out carousel with its in-flight window and rate limit, state ingest
into the store). The device side is the **protocol simulator** ``tests/fleet/mqtt/devices.py``
(one real paho client per device, all in this process), not ``device_agent``: each device
verifies the Ed25519 command against the pinned manager key, reports ``notified``, subscribes
to the artifact's chunk topic, publishes a ``fetch``, checks every chunk's SHA-256 and the whole
artifact's, re-requests missing ranges when a download stalls, then reports ``verifying``,
``installing`` and ``activated`` with increasing ``seq``. TUF, slot install and health checks
(the agent's work) are not simulated.

Measured: seconds from the first desired-state publication to the last ``activated`` report
persisted by the worker; manager egress (bytes the worker published on chunk topics) against
the artifact size; what delivery without fan-out would have published (chunks requested x
frame size, computed from the same run); broker traffic from Mosquitto's ``$SYS`` counters.

Run: ``python -m benchmarks.fleet_delivery [--devices 200 --size-mb 10] [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from securesystemslib.signer import CryptoSigner

from benchmarks._fleet_common import SysCounters, machine, versions, write_results
from edgeops.protocol import (
    Command,
    CommandRejected,
    DevicePhase,
    MessageError,
    SignedCommand,
    StateReport,
    check_command,
    topics,
)
from fleet.delivery import DeliveryConfig
from fleet.store import BundleRecord, Device, open_store
from fleet.worker import ManagerWorker, WorkerConfig
from tests.fleet.mqtt.devices import DeviceLoop, Download, SimDevice
from tests.mosquitto import MosquittoBroker


class BenchDevice(SimDevice):
    """Reacts to its desired state like an agent would, minus TUF and installation."""

    def __init__(self, device_id: str, host: str, port: int, manager_keys: list[Any],
                 stall_s: float) -> None:
        self.manager_keys = manager_keys
        self.seq = 0
        self.stall_s = stall_s
        self.sha: str | None = None
        self.deployment: str | None = None
        self.activated_at: float | None = None
        self.resumes = 0
        self.last_progress = time.monotonic()
        self.last_count = 0
        self.rejected = 0
        super().__init__(device_id, host, port, max_chunk=4 * 1024 * 1024, connect=False)

    def state(self, phase: DevicePhase) -> None:
        self.seq += 1
        self.publish("state", StateReport(self.device_id, self.seq, time.time(), phase,
                                          self.deployment, "bench@1.0.0").to_bytes())

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic.endswith("/desired"):
            try:
                cmd = check_command(SignedCommand.from_bytes(msg.payload),
                                    device_id=self.device_id, manager_keys=self.manager_keys,
                                    last_seq=0, now=time.time())
            except (MessageError, CommandRejected):
                self.rejected += 1
                return
            self.deployment = str(cmd.body["deployment_id"])
            self.sha = str(cmd.body["artifact"])
            self.state(DevicePhase.NOTIFIED)
            self.downloads[self.sha] = dl = Download(self.sha)
            self.last_progress = time.monotonic()
            self.client.subscribe(topics.artifact_chunks(self.sha), qos=1)
            self.client.publish(topics.device_topic(self.device_id, "fetch"),
                                _fetch_bytes(self.device_id, self.sha, None), qos=1)
            self.state(DevicePhase.DOWNLOADING)
            dl.done.clear()
            return
        super()._on_message(client, userdata, msg)
        dl = self.downloads.get(self.sha or "")
        if dl is not None and dl.done.is_set() and self.activated_at is None:
            self.activated_at = time.monotonic()
            dl.chunks.clear()      # verified; keep memory flat across 200 devices
            self.client.unsubscribe(topics.artifact_chunks(dl.sha256))
            for phase in (DevicePhase.VERIFYING, DevicePhase.INSTALLING, DevicePhase.ACTIVATED):
                self.state(phase)

    def watchdog(self) -> None:
        """Re-request missing ranges after a stall (what an agent does after a disconnect)."""
        dl = self.downloads.get(self.sha or "")
        if dl is None or dl.done.is_set():
            return
        now = time.monotonic()
        if len(dl.chunks) != self.last_count:
            self.last_count, self.last_progress = len(dl.chunks), now
        elif now - self.last_progress > self.stall_s:
            missing = dl.missing()
            self.client.publish(topics.device_topic(self.device_id, "fetch"),
                                _fetch_bytes(self.device_id, dl.sha256, missing), qos=1)
            self.resumes += 1
            self.last_progress = now


class UnicastSchedule:
    """Baseline (benchmark only): every fetch is served by its own publication of the chunks
    it asked for, in arrival order, as a manager without fan-out would."""

    def __init__(self) -> None:
        self.jobs: deque[tuple[Any, deque[int]]] = deque()

    def add(self, info: Any, count: int, indices: Any, now: float) -> int:
        idx = deque(sorted(indices))
        if idx:
            self.jobs.append((info, idx))
        return len(idx)

    def next(self, now: float) -> tuple[Any, int] | None:
        while self.jobs:
            info, idx = self.jobs[0]
            if idx:
                return info, idx.popleft()
            self.jobs.popleft()
        return None

    def wait_s(self, now: float) -> float | None:
        return 0.0 if any(idx for _, idx in self.jobs) else None

    def pending(self, sha256: str) -> int:
        return sum(len(idx) for info, idx in self.jobs if info.sha256 == sha256)


def _fetch_bytes(device_id: str, sha: str, missing: list[tuple[int, int]] | None) -> bytes:
    from edgeops.protocol import FetchRequest

    return FetchRequest(device_id, sha, tuple(missing) if missing else None).to_bytes()


def run(devices: int, size: int, chunk_bytes: int, rate: float, inflight: int,
        window_s: float, stall_s: float, unicast: bool = False) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    broker = MosquittoBroker(sys_interval_s=1, max_packet_size=4 * 1024 * 1024).start()
    store = open_store(str(tmp / "fleet.db"), tmp / "data")
    ids = [f"cam-{i:04d}" for i in range(devices)]
    for i in ids:
        store.upsert_device(Device(i, "camera", "x86-cpu", {"district": "4"}, enrolled_at=1.0))
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    blob = store.blob_path(sha)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    store.add_blob(sha, size)
    store.put_bundle(BundleRecord("bench", "1.0.0", b'{"artifacts": []}', b"{}", time.time(),
                                  {"artifacts/x86-cpu/model.onnx": (sha, size)}))
    activated: set[str] = set()
    lock = threading.Lock()
    all_done = threading.Event()

    def on_state(r: StateReport) -> None:
        if r.phase is DevicePhase.ACTIVATED:
            with lock:
                activated.add(r.device_id)
                if len(activated) == devices:
                    all_done.set()

    signer = CryptoSigner.generate_ed25519()
    cfg = WorkerConfig(delivery=DeliveryConfig(chunk_bytes=chunk_bytes, batch_window_s=window_s,
                                               max_inflight_chunks=inflight,
                                               max_bytes_per_s=rate))
    worker = ManagerWorker(store, broker.url, client_id="bench-mgr", on_state=on_state,
                           config=cfg)
    if unicast:
        worker.delivery._fanout = UnicastSchedule()  # type: ignore[assignment]  # baseline
    worker.start()
    sysc = SysCounters(broker.host, broker.port)
    devs = [BenchDevice(i, broker.host, broker.port, [signer.public_key], stall_s) for i in ids]

    def tick() -> None:
        for d in devs:
            d.watchdog()

    loop = DeviceLoop(tick=tick)
    for d in devs:
        loop.add(d)
        d.client.subscribe(topics.device_topic(d.device_id, "desired"), qos=1)
    loop.start()
    deadline = time.monotonic() + 60
    while not all(d.connected.is_set() for d in devs) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    before = sysc.snapshot()
    print(f"  {devices} devices connected; deploying {size / 1e6:.1f} MB", file=sys.stderr,
          flush=True)
    t0 = time.monotonic()
    now = time.time()
    for i in ids:
        cmd = Command(i, 1, "deploy", now, now + 3600,
                      {"deployment_id": "d-bench", "name": "bench", "version": "1.0.0",
                       "target": "x86-cpu", "artifact": sha})
        worker.send_desired(i, SignedCommand.sign(cmd, signer))
    deadline = t0 + 300
    while not all_done.wait(1.0) and time.monotonic() < deadline:
        with lock:
            n = len(activated)
        print(f"  {time.monotonic() - t0:6.1f} s: {n}/{devices} activated", file=sys.stderr,
              flush=True)
    elapsed = time.monotonic() - t0
    after = sysc.snapshot()
    st = worker.delivery.stats
    finish = sorted(d.activated_at - t0 for d in devs if d.activated_at is not None)
    frame = st.bytes_published / st.chunks_published if st.chunks_published else 0
    persisted = sum(1 for i in ids if (dv := store.get_device(i)) and dv.last_state_seq >= 5)
    result = {
        "mode": "unicast baseline" if unicast else "fan-out",
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "devices": devices, "artifact_bytes": size, "chunk_bytes": chunk_bytes,
        "batch_window_s": window_s, "max_inflight_chunks": inflight, "max_bytes_per_s": rate,
        "seconds_to_all_activated": round(elapsed, 2) if all_done.is_set() else None,
        "activated": len(activated), "state_seq5_persisted": persisted,
        "device_finish_s": {"p50": round(statistics.median(finish), 2) if finish else None,
                            "p95": round(finish[int(len(finish) * 0.95) - 1], 2)
                            if finish else None,
                            "max": round(finish[-1], 2) if finish else None},
        "manager_egress_bytes": st.bytes_published,
        "egress_ratio_to_artifact": round(st.bytes_published / size, 3),
        "chunks_published": st.chunks_published, "fetch_requests": st.requests,
        "without_fanout_egress_bytes_computed": int(st.chunks_requested * (
            st.bytes_published / st.chunks_published)) if st.chunks_published else 0,
        "device_resumes": sum(d.resumes for d in devs),
        "device_bad_chunks": sum(dl.bad for d in devs for dl in d.downloads.values()),
        "broker": {k: after.get(k, 0) - before.get(k, 0) for k in SysCounters.WANT},
        "avg_frame_bytes": round(frame),
        "devices_without_command": sum(1 for d in devs if d.sha is None),
        "devices_download_unfinished": sum(1 for d in devs if d.sha and d.activated_at is None),
        "worker_ingest": worker.ingest.stats.counts,
    }
    loop.stop()
    sysc.close()
    worker.stop()
    store.close()
    broker.stop()
    return result


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["seconds_to_all_activated"] or float("inf"))[
        len(runs) // 2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--size-mb", type=float, default=10.0)
    ap.add_argument("--chunk-kib", type=int, default=64)
    ap.add_argument("--rate-mib-s", type=float, default=64.0, help="delivery egress ceiling")
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--window-s", type=float, default=0.5)
    ap.add_argument("--stall-s", type=float, default=20.0,
                    help="a device re-fetches missing ranges after this long without a chunk")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-devices", type=int, default=20,
                    help="side-by-side fan-out vs unicast at this size (unicast at full size "
                         "would push devices² × artifact through the broker)")
    ap.add_argument("--baseline-size-mb", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.devices, args.size_mb, args.repeats = 10, 1.0, 1
        args.baseline_devices, args.baseline_size_mb = 5, 0.5

    def one(devices: int, size_mb: float, unicast: bool = False) -> dict[str, Any]:
        r = run(devices, int(size_mb * 1e6), args.chunk_kib * 1024, args.rate_mib_s * 1024**2,
                args.inflight, args.window_s, args.stall_s, unicast)
        print(f"  {r['mode']}: {devices} devices, {size_mb:g} MB: "
              f"{r['seconds_to_all_activated']} s, egress x{r['egress_ratio_to_artifact']}",
              file=sys.stderr, flush=True)
        return r

    main_runs = [one(args.devices, args.size_mb) for _ in range(args.repeats)]
    side: dict[str, list[dict[str, Any]]] = {"fan-out": [], "unicast baseline": []}
    for _ in range(args.repeats):
        side["fan-out"].append(one(args.baseline_devices, args.baseline_size_mb))
        side["unicast baseline"].append(one(args.baseline_devices, args.baseline_size_mb,
                                            unicast=True))
    r0 = _median_run(main_runs)
    med = r0["seconds_to_all_activated"]
    data = {"benchmark": "fleet_delivery", "machine": machine(), "versions": versions(),
            "device_side": "protocol simulator tests/fleet/mqtt/devices.py (not device_agent)",
            "parameters": vars(args), "median_seconds_to_all_activated": med,
            "goals": {"seconds": 60, "egress_ratio": 1.2}, "runs": main_runs,
            "side_by_side": side}
    b = r0["broker"]

    def fmt(x: object) -> str:
        return f"{x:.1f}" if isinstance(x, float) else "did not finish"

    lines = [
        "## fleet_delivery: one artifact to many devices over MQTT", "",
        f"{args.devices} simulated devices (protocol simulator, one paho client each, driven by "
        f"one thread; not device_agent), {args.size_mb:g} MB artifact, {args.chunk_kib} KiB "
        f"chunks, batching window {args.window_s} s, {args.inflight} chunks in flight, "
        f"ceiling {args.rate_mib_s:g} MiB/s; real Mosquitto {data['versions']['mosquitto']}, "
        f"one ManagerWorker, {os.cpu_count()} cores shared with other jobs (1-min load "
        f"average at start: {[r['load_avg_1m_at_start'] for r in main_runs]}). Median of "
        f"{args.repeats}.", "",
        "| metric | measured | goal |",
        "|---|---:|---:|",
        f"| deploy → all activated (s) | {fmt(med)} | ≤ 60 |",
        f"| runs (s) | {', '.join(fmt(r['seconds_to_all_activated']) for r in main_runs)} | |",
        f"| manager egress (MB) | {r0['manager_egress_bytes'] / 1e6:.1f} | "
        f"≤ {1.2 * args.size_mb:.1f} |",
        f"| egress / artifact size | {r0['egress_ratio_to_artifact']} | ≤ 1.2 |",
        f"| without fan-out (computed: chunks requested × frame) | "
        f"{r0['without_fanout_egress_bytes_computed'] / 1e6:.0f} MB | |",
        f"| chunk publications by the manager | {r0['chunks_published']} | |",
        f"| broker messages sent / received | {b.get('messages/sent', 0)} / "
        f"{b.get('messages/received', 0)} | |",
        f"| broker bytes sent (MB) | {b.get('bytes/sent', 0) / 1e6:.0f} | |",
        f"| device finish p50 / p95 / max (s) | {r0['device_finish_s']['p50']} / "
        f"{r0['device_finish_s']['p95']} / {r0['device_finish_s']['max']} | |",
        f"| devices that re-fetched missing ranges | {r0['device_resumes']} | |",
        "",
        f"Side by side, {args.baseline_devices} devices, {args.baseline_size_mb:g} MB, same "
        f"run (unicast baseline: one publication per fetch, benchmark-only schedule):", "",
        "| mode | median s to all activated | manager egress (MB) | egress / size | "
        "broker bytes sent (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, rs in side.items():
        r = _median_run(rs)
        lines.append(f"| {mode} | {fmt(r['seconds_to_all_activated'])} | "
                     f"{r['manager_egress_bytes'] / 1e6:.1f} | {r['egress_ratio_to_artifact']} | "
                     f"{r['broker'].get('bytes/sent', 0) / 1e6:.0f} |")
    write_results("fleet_delivery", data, "\n".join(lines) + "\n")
    return 0 if all(r["seconds_to_all_activated"] is not None for r in main_runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())

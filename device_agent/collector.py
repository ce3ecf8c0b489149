"""The telemetry collector: each interval's records, appended to the durable queue.

Why its own part: what a device measures (heartbeat, system, inference statistics, input
drift, the output-drift sketch) changes often and has nothing to do with commands or installs.
The collector observes the inference service, builds the records once per interval and hands
them to the telemetry queue; the outbox sends them (:mod:`device_agent.outbox`). On a full
disk measurements are let go (counted), since the disk reserve is kept for state reports.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device_agent import AGENT_VERSION
from device_agent.core import AgentCore
from device_agent.diskspace import is_disk_full
from device_agent.drift_sketch import DriftSketch
from device_agent.inference import LoadedModel
from device_agent.parts import AgentPart
from device_agent.telemetry import (
    DurableQueue,
    FeatureStats,
    TelemetryLimits,
    drift_record,
    system_record,
)
from edgeops.bundle.manifest import Manifest
from edgeops.errors import EdgeOpsError
from edgeops.protocol.records import (
    HeartbeatRecord,
    InferenceRecord,
    LatencyHistogram,
    TelemetryRecord,
)

__all__ = ["TelemetryCollector"]

log = logging.getLogger(__name__)


class TelemetryCollector(AgentPart):
    """Builds one interval's telemetry records for one device and queues them."""

    def __init__(self, device_id: str, *, core: AgentCore, queue: DurableQueue,
                 limits: TelemetryLimits, interval_s: float, data_dir: Path,
                 clock: Callable[[], float], heartbeat: Callable[[], dict[str, Any]]) -> None:
        """``heartbeat``: the other parts' figures for the heartbeat record (their counters)."""
        self.device_id = device_id
        self.core = core
        self.queue = queue
        self.interval_s = interval_s
        self.data_dir = data_dir
        self.agent_heartbeat = heartbeat
        self._next: float | None = None     # first pass of the I/O loop: collect at once
        self.lost = 0                # records not queued for lack of disk space
        self.started_at = clock()
        self.features = FeatureStats(limits.max_features, limits.drift_sample_every)
        core.inference.observers.append(self.features.observe)
        self.drift_sketch = DriftSketch(clock)
        core.inference.output_observers.append(self.drift_sketch.observe)
        core.inference.model_listeners.append(self._sketch_bins_for)
        self._drift_ref_key: str | None = None
        self._sketch_key_lock = threading.Lock()   # swap (installer thread) vs collector pass
        self._baseline: tuple[str | None, dict[str, Any]] = (None, {})
        # more records per interval from other parts (ground truth, capture): (now, bundle) in
        self.sources: list[Callable[[float, str | None], list[TelemetryRecord]]] = []

    def tick(self, now: float) -> None:
        """The I/O loop's pass: collect when the interval is up."""
        if self._next is None or now >= self._next:
            self._next = now + self.interval_s
            self.collect(now)

    def collect(self, now: float) -> None:
        """Append this interval's records to the durable queue (sent by the I/O loop)."""
        st = self.core.store.status()
        active = st.get("active")
        label = f"{active['name']}@{active['version']}" if active else None
        records: list[TelemetryRecord] = [
            HeartbeatRecord.from_dict({**self.agent_heartbeat(), "ts": now,
                                       "agent_version": AGENT_VERSION,
                                       "uptime_s": round(now - self.started_at, 1),
                                       "active": active}),
            system_record(now, self.data_dir),
            _inference_record(now, label, self.core.inference.stats.snapshot(reset=True))]
        drift = drift_record(now, self.features.drain(), self._baseline_for(active), label)
        if drift is not None:
            records.append(drift)
        wire = [r.to_dict() for r in records]
        sketch = self._drift_sketch_record(now)
        if sketch is not None:          # not typed yet (edgeops/protocol/records.py)
            wire.append(sketch)
        for source in self.sources:
            wire += [r.to_dict() for r in source(now, label)]
        try:
            self.queue.push_many([json.dumps(r, sort_keys=True, separators=(",", ":"),
                                             default=str).encode() for r in wire])
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            # Measurements are let go; the disk reserve is kept for state reports.
            if not self.lost:
                log.error("disk full: telemetry is not queued until there is room (%s)", exc)
            self.lost += len(wire)
            return
        if self.lost:
            log.info("telemetry queued again; %d records were lost to a full disk", self.lost)
            self.lost = 0

    def _manifest(self, active: dict[str, Any]) -> Manifest:
        return Manifest.from_bytes(self.core.store.path(str(active["slot"]),
                                                        "manifest.json").read_bytes())

    def _drift_sketch_record(self, now: float) -> dict[str, Any] | None:
        """The closed sketch window, if due (device_agent/drift_sketch.py)."""
        self._sketch_bins_for(self.core.inference.model)
        return self.drift_sketch.take(now, self.device_id) if self.drift_sketch.due(now) else None

    def _sketch_bins_for(self, model: LoadedModel | None) -> None:
        """Count in the bins of the model inference serves (called at each swap, and at each
        pass in case a swap came before this collector existed). The served model, not the
        store's active slot: during a trial the pointer already names the new slot while the
        old model still serves."""
        key = None if model is None else f"{model.slot}:{model.name}@{model.version}"
        with self._sketch_key_lock:
            if key == self._drift_ref_key:
                return
            self._drift_ref_key = key
            ref = None
            if model is not None and model.slot is not None:
                try:
                    ref = Manifest.from_bytes(self.core.store.path(
                        model.slot, "manifest.json").read_bytes()).drift
                except (OSError, EdgeOpsError, KeyError):
                    ref = None
            self.drift_sketch.set_reference(
                None if model is None else f"{model.name}@{model.version}", ref)

    def _baseline_for(self, active: dict[str, Any] | None) -> dict[str, Any]:
        if active is None:
            return {}
        key = f"{active.get('slot')}:{active.get('name')}@{active.get('version')}"
        if self._baseline[0] != key:
            try:
                self._baseline = (key, dict(self._manifest(active).baseline))
            except (OSError, EdgeOpsError, KeyError):
                self._baseline = (key, {})
        return self._baseline[1]


def _inference_record(now: float, bundle: str | None, snap: dict[str, Any]) -> InferenceRecord:
    """The inference service's figures since the last record (``InferenceStats.snapshot``)."""
    h = snap["histogram"]
    return InferenceRecord(now, bundle, snap["count"], snap["errors"], snap["p50_ms"],
                           snap["p95_ms"], snap["p99_ms"],
                           LatencyHistogram(tuple(h["le_ms"]), tuple(h["counts"])))

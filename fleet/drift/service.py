"""Drift status from the store: which sketches belong to which group, then the pure monitor.

Why it exists apart from fleet/drift/monitor.py: the monitor decides on rows; this module only
reads them (accepted ``drift_sketch`` telemetry of the last few windows, devices, deployments,
bundles) and groups them per device, per cohort (a tag selector) and per deployment. Groups are
per bundle: counts are only comparable within one reference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

from edgeops.bundle.manifest import Manifest
from edgeops.drift.reference import DEFAULT_WINDOW_S, DriftReference
from edgeops.errors import EdgeOpsError
from edgeops.protocol.messages import MessageError
from edgeops.protocol.records import AccuracyRecord, DriftSketchRecord
from fleet.drift.concept import AccuracyWindow, evaluate_accuracy, reference_accuracy
from fleet.drift.monitor import GroupVerdict, MonitorPolicy, Sketch, evaluate, merge_windows
from fleet.errors import NotFoundError
from fleet.selector import parse_selector
from fleet.store import (
    BundleStore,
    DeploymentStore,
    Device,
    DeviceFilter,
    DeviceStore,
    TelemetryStore,
)

__all__ = ["DriftReads", "cohort_concept", "cohort_verdicts", "drift_status",
           "group_histograms"]

MAX_DEVICES = 10_000           # per request; a larger fleet is asked per cohort
ROWS_PER_DEVICE = 1000


class DriftReads(DeviceStore, TelemetryStore, BundleStore, DeploymentStore, Protocol):
    """What drift status reads: devices, their sketch and accuracy telemetry, the bundles'
    references, and a deployment's members."""


def _reference(store: DriftReads, bundle: str, cache: dict[str, DriftReference | None]
               ) -> DriftReference | None:
    if bundle not in cache:
        name, _, version = bundle.partition("@")
        rec = store.get_bundle(name, version)
        ref = None
        if rec is not None:
            try:
                ref = Manifest.from_bytes(rec.manifest).drift
            except EdgeOpsError:
                ref = None
        cache[bundle] = ref
    return cache[bundle]


def _sketches(store: DriftReads, devices: Sequence[Device], since: float) -> dict[str, list[Sketch]]:
    """bundle -> accepted sketches of these devices since ``since``."""
    out: dict[str, list[Sketch]] = defaultdict(list)
    for d in devices:
        for r in store.query_telemetry(d.id, "drift_sketch", since=since, limit=ROWS_PER_DEVICE):
            try:         # stored with its counts unpacked (fleet/drift/intake.py)
                rec = r.record()
            except MessageError:
                continue
            if isinstance(rec, DriftSketchRecord) and rec.counts is not None:
                out[rec.bundle].append(Sketch(d.id, float(rec.window_end), rec.counts))
    return out


def _groups(name: str, per_bundle: dict[str, list[Sketch]], store: DriftReads,
            refs: dict[str, DriftReference | None], policy: MonitorPolicy,
            bundle: str | None = None) -> list[GroupVerdict]:
    out = []
    for b, sketches in sorted(per_bundle.items()):
        if bundle is not None and b != bundle:
            continue
        ref = _reference(store, b, refs)
        if ref is not None and sketches:
            out.append(evaluate(name, b, sketches, ref, policy))
    return out


def drift_status(store: DriftReads, *, now: float, cohorts: Sequence[str] = (),
                 deployment: str | None = None, device: str | None = None,
                 policy: MonitorPolicy | None = None,
                 lookback_s: float = 8 * DEFAULT_WINDOW_S,
                 reference: float | None = None) -> dict[str, Any]:
    """Verdicts per device, per cohort selector and per deployment (see docs/DRIFT.md);
    ``concept``: accuracy against ``reference`` or the bundle's measured one."""
    policy = policy or MonitorPolicy()
    refs: dict[str, DriftReference | None] = {}
    selectors = [parse_selector(c) for c in cohorts]      # bad selector: UsageError first
    if device is not None:
        d = store.get_device(device)
        if d is None:
            raise NotFoundError(f"no device {device!r}")
        devices = [d]
    else:
        devices = store.select_devices(DeviceFilter())[:MAX_DEVICES]
    by_device = {d.id: d for d in devices}
    per_device: dict[str, dict[str, list[Sketch]]] = {}
    for d in devices:
        per_device[d.id] = _sketches(store, [d], now - lookback_s)
    result: dict[str, Any] = {"now": now, "policy": policy.to_dict(), "devices": [],
                              "cohorts": [], "deployments": []}
    for dev_id in sorted(per_device):
        result["devices"] += [v.to_dict() for v in
                              _groups(f"device:{dev_id}", per_device[dev_id], store, refs,
                                      policy)]
    for text, sel in zip(cohorts, selectors, strict=True):
        merged: dict[str, list[Sketch]] = defaultdict(list)
        for dev_id, per_bundle in per_device.items():
            if sel.matches(by_device[dev_id]):
                for b, s in per_bundle.items():
                    merged[b] += s
        result["cohorts"] += [v.to_dict() for v in
                              _groups(f"cohort:{text}", merged, store, refs, policy)]
    if deployment is not None:
        dep = store.get_deployment(deployment)
        if dep is None:
            raise NotFoundError(f"no deployment {deployment!r}")
        members = {row.device_id for row in store.deployment_devices(deployment)}
        merged = defaultdict(list)
        for dev_id in members:
            for b, s in per_device.get(dev_id, {}).items():
                merged[b] += s
        result["deployments"] += [v.to_dict() for v in
                                  _groups(f"deployment:{deployment}", merged, store, refs,
                                          policy, bundle=dep.bundle)]
    result["concept"] = _concept(store, devices, by_device, selectors, cohorts, deployment,
                                 policy, now - lookback_s, reference)
    return result


def _accuracy(store: DriftReads, device_id: str, since: float) -> dict[str, list[AccuracyWindow]]:
    """bundle -> classification accuracy windows of one device (accepted on intake)."""
    out: dict[str, list[AccuracyWindow]] = defaultdict(list)
    for r in store.query_telemetry(device_id, "accuracy", since=since, limit=ROWS_PER_DEVICE):
        try:
            rec = r.record()
        except MessageError:         # checked on intake; a row from before that is skipped
            continue
        if isinstance(rec, AccuracyRecord) and rec.correct is not None:
            out[rec.bundle].append(AccuracyWindow(device_id, float(rec.window_end), rec.total,
                                                  rec.correct))
    return out


def _concept(store: DriftReads, devices: Sequence[Device], by_device: dict[str, Device],
             selectors: Sequence[Any], cohorts: Sequence[str], deployment: str | None,
             policy: MonitorPolicy, since: float, override: float | None
             ) -> list[dict[str, Any]]:
    """Concept drift (fleet/drift/concept.py) per device, cohort and deployment."""
    refs: dict[str, float | None] = {}

    def ref(bundle: str) -> float | None:
        if override is not None:
            return override
        if bundle not in refs:
            name, _, version = bundle.partition("@")
            rec = store.get_bundle(name, version)
            acc = None
            if rec is not None:
                try:
                    acc = reference_accuracy(a.metrics for a in
                                             Manifest.from_bytes(rec.manifest).artifacts)
                except EdgeOpsError:
                    acc = None
            refs[bundle] = acc
        return refs[bundle]

    per_device = {d.id: _accuracy(store, d.id, since) for d in devices}
    groups: list[tuple[str, dict[str, list[AccuracyWindow]]]] = [
        (f"device:{dev}", per_device[dev]) for dev in sorted(per_device)]
    for text, sel in zip(cohorts, selectors, strict=True):
        merged: dict[str, list[AccuracyWindow]] = defaultdict(list)
        for dev, per_bundle in per_device.items():
            if sel.matches(by_device[dev]):
                for b, w in per_bundle.items():
                    merged[b] += w
        groups.append((f"cohort:{text}", merged))
    if deployment is not None:
        members = {row.device_id for row in store.deployment_devices(deployment)}
        merged = defaultdict(list)
        for dev in members:
            for b, w in per_device.get(dev, {}).items():
                merged[b] += w
        groups.append((f"deployment:{deployment}", merged))
    return [evaluate_accuracy(name, b, w, ref(b), policy)
            for name, per_bundle in groups for b, w in sorted(per_bundle.items()) if w]


def cohort_verdicts(store: DriftReads, cohort: str, *, now: float, policy: MonitorPolicy,
                    lookback_s: float = 8 * DEFAULT_WINDOW_S,
                    devices: Sequence[Device] | None = None
                    ) -> list[tuple[GroupVerdict, DriftReference]]:
    """One cohort's verdict per bundle, with the bundle's reference (a stored monitor's view:
    no per-device verdicts computed). ``devices``: the fleet, when the caller already read it
    (one read for every monitor of an evaluation round)."""
    sel = parse_selector(cohort)
    fleet = store.select_devices(DeviceFilter())[:MAX_DEVICES] if devices is None else devices
    members = [d for d in fleet if sel.matches(d)]
    merged = _sketches(store, members, now - lookback_s)
    refs: dict[str, DriftReference | None] = {}
    out = []
    for b, sketches in sorted(merged.items()):
        ref = _reference(store, b, refs)
        if ref is not None and sketches:
            out.append((evaluate(f"cohort:{cohort}", b, sketches, ref, policy), ref))
    return out


def cohort_concept(store: DriftReads, cohort: str, *, now: float, policy: MonitorPolicy,
                   lookback_s: float = 8 * DEFAULT_WINDOW_S,
                   devices: Sequence[Device] | None = None) -> list[dict[str, Any]]:
    """One cohort's concept-drift verdict per bundle (fleet/drift/concept.py), for a stored
    monitor: the same members as :func:`cohort_verdicts`, no per-device verdicts."""
    sel = parse_selector(cohort)
    fleet = store.select_devices(DeviceFilter())[:MAX_DEVICES] if devices is None else devices
    members = [d for d in fleet if sel.matches(d)]
    return [v for v in _concept(store, members, {d.id: d for d in members}, [sel], [cohort],
                                None, policy, now - lookback_s, None)
            if str(v["group"]).startswith("cohort:")]


def group_histograms(store: DriftReads, *, now: float, cohort: str | None = None,
                     device: str | None = None, policy: MonitorPolicy | None = None,
                     lookback_s: float = 8 * DEFAULT_WINDOW_S) -> dict[str, Any]:
    """Reference vs live counts per feature for one cohort or device (the console's drift
    page): per bundle, the latest window's merged counts beside the signed reference, with
    that window's verdict."""
    policy = policy or MonitorPolicy()
    if device is not None:
        d = store.get_device(device)
        if d is None:
            raise NotFoundError(f"no device {device!r}")
        members, group = [d], f"device:{device}"
    else:
        text = cohort or "all"
        sel = parse_selector(text)
        members = [d for d in store.select_devices(DeviceFilter())[:MAX_DEVICES]
                   if sel.matches(d)]
        group = f"cohort:{text}"
    refs: dict[str, DriftReference | None] = {}
    items = []
    for b, sketches in sorted(_sketches(store, members, now - lookback_s).items()):
        ref = _reference(store, b, refs)
        if ref is None or not sketches:
            continue
        verdict = evaluate(group, b, sketches, ref, policy)
        windows = merge_windows(sketches, ref)
        latest = windows[max(windows)] if windows else {}
        tested = {f["feature"]: f for side in (verdict.data, verdict.prediction)
                  for f in side.features}
        feats = []
        for fb in ref.features:
            live = latest.get(fb.name)
            t = tested.get(fb.name, {})
            feats.append({"feature": fb.name, "side": fb.side, "kind": fb.kind,
                          "edges": list(fb.edges), "reference": list(fb.counts),
                          "live": [int(c) for c in live] if live is not None else None,
                          "drift": bool(t.get("drift", False)),
                          "p_adjusted": t.get("p_adjusted"), "psi": t.get("psi")})
        items.append({"bundle": b, "status": verdict.status,
                      "data_status": verdict.data.status,
                      "prediction_status": verdict.prediction.status,
                      "devices": verdict.devices, "windows": verdict.windows,
                      "latest_window_end": verdict.latest_window_end,
                      "window_s": ref.window_s, "features": feats})
    return {"group": group, "now": now, "items": items}

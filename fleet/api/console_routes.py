"""The console's extra API routes: aggregates, chart series, bundle summaries, ``/metrics``.

The console pages call the ordinary ``/api/v1`` routes (the CLI's) for lists and actions and
these for what would otherwise need a whole table in the browser: counts per class and city,
filter facets, per-wave deployment progress, compact chart series. Rows share
:class:`fleet.api.routes.Endpoint` with the core table, so ``/openapi.json`` describes them too.
"""

from __future__ import annotations

import json
import math
import time
import weakref
from typing import Any

from starlette.datastructures import QueryParams
from starlette.responses import Response

from edgeops.bundle.signing import SignatureSet, verify_signatures
from edgeops.errors import EdgeOpsError, UsageError
from edgeops.protocol.messages import MessageError
from edgeops.protocol.records import DriftRecord, InferenceRecord, SystemRecord
from edgeops.trust import trusted_targets_keys
from fleet.api.routes import Call, Endpoint, _int
from fleet.api.services import Services
from fleet.console.digest import TelemetryDigest
from fleet.console.queries import FleetQueries
from fleet.drift.metrics import drift_alarm_alerts, drift_families
from fleet.errors import NotFoundError
from fleet.metrics import CONTENT_TYPE, MetricsCollector, render

__all__ = ["ENDPOINTS", "collector_for", "digest_for", "queries_for"]

_QUERIES: weakref.WeakKeyDictionary[Any, FleetQueries] = weakref.WeakKeyDictionary()
_COLLECTORS: weakref.WeakKeyDictionary[Any, MetricsCollector] = weakref.WeakKeyDictionary()
_DIGESTS: weakref.WeakKeyDictionary[Any, TelemetryDigest] = weakref.WeakKeyDictionary()


def queries_for(svc: Services) -> FleetQueries:
    """One :class:`FleetQueries` per store (cheap, but the collector below keeps state)."""
    q = _QUERIES.get(svc.store)
    if q is None:
        q = _QUERIES[svc.store] = FleetQueries(svc.store)
    return q


def digest_for(svc: Services) -> TelemetryDigest:
    d = _DIGESTS.get(svc.store)
    if d is None:
        d = _DIGESTS[svc.store] = TelemetryDigest(queries_for(svc),
                                                  window_s=queries_for(svc).limits.drift_window_s)
    return d


def collector_for(svc: Services) -> MetricsCollector:
    c = _COLLECTORS.get(svc.store)
    if c is None:
        c = _COLLECTORS[svc.store] = MetricsCollector(queries_for(svc))
    return c


def _since(q: QueryParams, default_s: float) -> float:
    raw = q.get("since")
    if raw is None:
        return time.time() - default_s
    try:
        v = float(raw)
    except ValueError:
        raise UsageError(f"query parameter since={raw!r} is not a number") from None
    if not math.isfinite(v):
        raise UsageError("query parameter since must be a finite unix time")
    return v


# -- handlers --------------------------------------------------------------------------------
def whoami(svc: Services, call: Call) -> Any:
    p = call.principal
    assert p is not None  # the route needs a token
    return {"token_id": p.token_id, "role": p.role, "name": p.name}


def overview(svc: Services, call: Call) -> Any:
    q = queries_for(svc)
    lim = q.limits
    now = time.time()
    devices = q.device_counts()
    active = []
    for d in svc.store.list_deployments(["running", "paused"], 20):
        counts = svc.store.deployment_counts(d.id)
        total = sum(counts.values())
        done = counts.get("healthy", 0) + counts.get("activated", 0)
        active.append({**d.to_dict(), "counts": counts, "devices": total,
                       "progress": done / total if total else 0.0})
    alerts: list[dict[str, Any]] = []
    for a in q.recent_aborts(now - lim.alert_window_s):
        alerts.append({"severity": "critical", "kind": "deployment", "subject": a["id"],
                       "message": f"deployment of {a['bundle']} {a['status']}: "
                                  f"{a['reason'] or 'no reason given'}", "ts": a["updated_at"]})
    alerts += drift_alarm_alerts(svc.store)          # stored monitors in alarm (docs/DRIFT.md)
    for c in devices["by_city"]:
        n = c["online"] + c["offline"]
        if n >= lim.offline_alert_min_devices and c["offline"] / n >= lim.offline_alert_fraction:
            alerts.append({"severity": "warning", "kind": "offline",
                           "subject": c["name"] or "(no city)",
                           "message": f"{c['offline']} of {n} devices offline", "ts": now})
    digest = digest_for(svc)
    for sig in digest.drifting(lim.drift_alert_shift, now - lim.drift_window_s, lim.max_alerts):
        alerts.append({"severity": "warning", "kind": "drift", "subject": sig.device_id,
                       "message": f"input feature {sig.feature!r} drifted {sig.shift:.1f} std "
                                  "from the bundle's baseline", "ts": sig.ts})
    inference = digest.inference(now - 3600.0)
    if inference["error_rate"] is not None and inference["error_rate"] >= lim.error_rate_alert:
        alerts.append({"severity": "warning", "kind": "errors", "subject": "fleet",
                       "message": f"inference error rate {inference['error_rate']:.1%} over "
                                  "the last hour", "ts": now})
    return {"devices": devices, "deployments": {
        "by_status": q.deployment_status_counts(), "active": active},
        "alerts": alerts[:lim.max_alerts], "inference_last_hour": inference, "generated_at": now}


def facets(svc: Services, call: Call) -> Any:
    return queries_for(svc).facets()


def _series_of(rows: list[Any]) -> dict[str, Any]:
    lat: dict[str, list[Any]] = {"ts": [], "p50_ms": [], "p95_ms": [], "p99_ms": [],
                                 "count": [], "errors": []}
    sysm: dict[str, list[Any]] = {"ts": [], "cpu_pct": [], "mem_mb": [], "temp_c": []}
    drift: dict[str, list[Any]] = {"ts": [], "max_shift": []}
    features: dict[str, list[Any]] = {}
    for r in sorted(rows, key=lambda r: r.ts):
        try:
            rec = r.record()
        except MessageError:        # a record that does not parse is not charted
            continue
        if isinstance(rec, InferenceRecord):
            lat["ts"].append(r.ts)
            for k in ("p50_ms", "p95_ms", "p99_ms", "count", "errors"):
                lat[k].append(getattr(rec, k))
        elif isinstance(rec, SystemRecord):
            sysm["ts"].append(r.ts)
            for k in ("cpu_pct", "mem_mb", "temp_c"):
                sysm[k].append(getattr(rec, k))
        elif isinstance(rec, DriftRecord):
            drift["ts"].append(r.ts)
            shifts = {name: f.shift for name, f in rec.features.items()}
            for name in shifts.keys() | features.keys():
                features.setdefault(name, [None] * (len(drift["ts"]) - 1)).append(
                    shifts.get(name))
            top = rec.max_shift()
            drift["max_shift"].append(top[1] if top else None)
    return {"latency": lat, "system": sysm, "drift": {**drift, "features": features}}


def device_series(svc: Services, call: Call) -> Any:
    dev = call.path["device_id"]
    if svc.store.get_device(dev) is None:
        raise NotFoundError(f"no device {dev!r}")
    since = _since(call.query, 24 * 3600.0)
    limit = _int(call.query, "limit", 500, 1, queries_for(svc).limits.max_series_points)
    rows = []
    for kind in ("inference", "system", "drift"):
        rows += svc.store.query_telemetry(dev, kind, since, None, limit)
    last = svc.store.query_telemetry(dev, None, None, None, 1)
    out: dict[str, Any] = _series_of(rows)
    out["last"] = last[0].to_dict() if last else None
    out["since"] = since
    return out


def deployment_waves(svc: Services, call: Call) -> Any:
    dep_id = call.path["deployment_id"]
    dep = svc.store.get_deployment(dep_id)
    if dep is None:
        raise NotFoundError(f"no deployment {dep_id!r}")
    q = queries_for(svc)
    page = q.deployment_devices_page(dep_id, call.query.get("state"),
                                     _int(call.query, "limit", 50, 1, 500),
                                     _int(call.query, "offset", 0, 0, 10_000_000))
    counts = svc.store.deployment_counts(dep_id)
    total = sum(counts.values())
    done = counts.get("healthy", 0) + counts.get("activated", 0)
    phases = dep.strategy.get("phases") if isinstance(dep.strategy, dict) else None
    return {"deployment": {**dep.to_dict(), "counts": counts, "devices": total,
                           "progress": done / total if total else 0.0},
            "phases": phases if isinstance(phases, list) else [],
            "waves": q.wave_counts(dep_id), "page": page}


def _signature_status(svc: Services, manifest: bytes, signatures: bytes) -> dict[str, Any]:
    try:
        keys, threshold = trusted_targets_keys(svc.repository.root)
        good = verify_signatures(manifest, SignatureSet.from_bytes(signatures),
                                 keys, threshold)  # type: ignore[arg-type]
    except EdgeOpsError as exc:
        return {"status": "invalid", "detail": exc.message}
    except (AttributeError, KeyError, ValueError):
        return {"status": "unknown", "detail": "no trusted targets keys to check against"}
    return {"status": "verified", "keyids": [k[:12] for k in good],
            "detail": f"{len(good)} of {threshold} required targets key(s)"}


def _lineage(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Where the model came from, with links into MLflow (http(s) tracking servers only)."""
    from edgeops.bundle import Lineage

    raw = manifest.get("lineage")
    if raw is None:
        return None
    try:
        lin = Lineage.from_dict(raw)
    except EdgeOpsError:
        return None
    return {"source_uri": lin.source_uri, "model_name": lin.model_name,
            "model_version": lin.model_version, "alias": lin.alias, "run_id": lin.run_id,
            "git_commit": lin.git_commit, "links": lin.links()}


def bundles(svc: Services, call: Call) -> Any:
    items = []
    name = call.query.get("name")
    aliases: dict[tuple[str, str], list[str]] = {}
    for a in svc.store.list_aliases(name):
        aliases.setdefault((a.name, a.version), []).append(a.alias)
    for b in svc.store.list_bundles(name):
        m = json.loads(b.manifest)
        arts = [{"target": a.get("target"), "runtime": a.get("runtime"),
                 "precision": a.get("precision"),
                 "size": (a.get("file") or {}).get("size"),
                 "metrics": a.get("metrics") or {}} for a in m.get("artifacts", [])]
        blessings = [{"hardware": x.hardware, "passed": x.passed, "created_at": x.created_at}
                     for x in svc.store.list_blessings(b.name, b.version)]
        items.append({"name": b.name, "version": b.version, "published_at": b.published_at,
                      "targets": sorted(str(a["target"]) for a in arts),
                      "size": sum(s for p, (_, s) in b.files.items()
                                  if not p.endswith(".edgedelta")),    # the bundle, not deltas
                      "artifacts": arts,
                      "signature": _signature_status(svc, b.manifest, b.signatures),
                      "blessings": blessings,
                      "aliases": aliases.get((b.name, b.version), []),
                      "lineage": _lineage(m)})
    items.sort(key=lambda i: -_published(i))
    return {"items": items}


def _published(item: dict[str, Any]) -> float:
    return float(item["published_at"])


def metrics(svc: Services, call: Call) -> Any:
    families = collector_for(svc).collect() + drift_families(svc.store, svc.ingest_counts)
    return Response(render(families), media_type=CONTENT_TYPE)


# -- route table -----------------------------------------------------------------------------
_C = "/api/v1/console"
_OBJ: dict[str, Any] = {"type": "object"}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", f"{_C}/whoami", whoami, "viewer", "The calling token's id, role and name",
             {"type": "object", "required": ["token_id", "role"],
              "properties": {"token_id": {"type": "string"}, "role": {"type": "string"},
                             "name": {"type": "string"}}}, tag="console"),
    Endpoint("GET", f"{_C}/overview", overview, "viewer",
             "Devices online/offline by class and city, active deployments, alerts",
             {"type": "object", "required": ["devices", "deployments", "alerts"],
              "properties": {"devices": _OBJ, "deployments": _OBJ,
                             "alerts": {"type": "array", "items": _OBJ},
                             "inference_last_hour": _OBJ, "generated_at": {"type": "number"}}},
             tag="console"),
    Endpoint("GET", f"{_C}/facets", facets, "viewer",
             "Values (with counts) the device filters offer",
             {"type": "object", "properties": {
                 "class": {"type": "array"}, "target": {"type": "array"},
                 "version": {"type": "array"}, "tags": _OBJ}}, tag="console"),
    Endpoint("GET", f"{_C}/devices/{{device_id}}/series", device_series, "viewer",
             "Chart series of one device: latency, CPU/memory, drift",
             {"type": "object", "required": ["latency", "system", "drift"],
              "properties": {"latency": _OBJ, "system": _OBJ, "drift": _OBJ,
                             "last": {"type": ["object", "null"]},
                             "since": {"type": "number"}}},
             query=(("since", "number", "unix time (default: 24 h ago)"),
                    ("limit", "integer", "points per kind (1-2000)")), tag="console"),
    Endpoint("GET", f"{_C}/deployments/{{deployment_id}}/waves", deployment_waves, "viewer",
             "A deployment's progress per phase and one page of its devices",
             {"type": "object", "required": ["deployment", "waves", "page"],
              "properties": {"deployment": _OBJ, "phases": {"type": "array"},
                             "waves": {"type": "array", "items": {
                                 "type": "object", "properties": {
                                     "wave": {"type": "integer"}, "counts": _COUNTS,
                                     "devices": {"type": "integer"}}}},
                             "page": _OBJ}},
             query=(("state", "string", "only devices in this state"),
                    ("limit", "integer", "page size (1-500)"),
                    ("offset", "integer", "rows to skip")), tag="console"),
    Endpoint("GET", f"{_C}/bundles", bundles, "viewer",
             "Bundles with targets, sizes, metrics, signature status and blessings",
             {"type": "object", "properties": {"items": {"type": "array", "items": _OBJ}}},
             query=(("name", "string", "only this bundle name"),), tag="console"),
    Endpoint("GET", "/metrics", metrics, "viewer",
             "Prometheus metrics: devices, deployments, telemetry ingest, inference latency, "
             "drift monitors",
             {"type": "string"}, tag="meta", produces="text/plain"),
)

"""The JSON API's handlers and the route table that also generates ``/openapi.json``.

Handlers are plain synchronous functions ``(services, call) -> JSON-able | Response`` run in
Starlette's thread pool (the store is synchronous); :mod:`fleet.api.app` wraps each one with
authentication, body parsing and error mapping. Each :class:`Endpoint` row carries the
documentation, so the OpenAPI document cannot drift from the routes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.datastructures import QueryParams
from starlette.responses import FileResponse, Response

from edgeops.errors import BadContentError, UsageError
from fleet.api.auth import ROLES, Principal, create_token
from fleet.api.services import Services
from fleet.enroll import TLS_FILES, agent_config, new_device
from fleet.errors import NotFoundError
from fleet.rollout import Strategy
from fleet.rollout.engine import hardware_class
from fleet.store import Blessing, DeviceFilter

__all__ = ["ENDPOINTS", "Call", "Endpoint"]


@dataclass
class Call:
    path: dict[str, str]
    query: QueryParams
    body: Any
    principal: Principal | None


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Callable[[Services, Call], Any]
    role: str | None                      # None: no token needed
    summary: str
    response: str | dict[str, Any] | None = None    # schema name or inline schema
    body: str | None = None                          # request schema name
    query: tuple[tuple[str, str, str], ...] = ()     # (name, type, description)
    status: int = 200
    tag: str = "fleet"
    raw_body: bool = False                           # streamed binary body (uploads)
    produces: str = "application/json"
    extra: dict[str, Any] = field(default_factory=dict)


# -- helpers ---------------------------------------------------------------------------------
def _int(q: QueryParams, name: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise UsageError(f"query parameter {name}={raw!r} is not an integer") from None
    if not lo <= v <= hi:
        raise UsageError(f"query parameter {name} must be between {lo} and {hi}")
    return v


def _float(q: QueryParams, name: str) -> float | None:
    raw = q.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise UsageError(f"query parameter {name}={raw!r} is not a number") from None


def _filter(q: QueryParams) -> DeviceFilter:
    tags: dict[str, str] = {}
    for t in q.getlist("tag"):
        k, sep, v = t.partition("=")
        if not sep:
            raise UsageError(f"tag filter {t!r} is not key=value")
        tags[k] = v
    online_raw = q.get("online", q.get("status"))
    online = None
    if online_raw is not None:
        if online_raw not in ("true", "false", "online", "offline"):
            raise UsageError("online/status must be true|false|online|offline")
        online = online_raw in ("true", "online")
    return DeviceFilter(device_class=q.get("class"), target=q.get("target"), tags=tags,
                        version=q.get("version"), online=online, search=q.get("search"))


def _obj(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    return body


# -- handlers --------------------------------------------------------------------------------
def healthz(svc: Services, call: Call) -> Any:
    return {"ok": True, "schema_version": svc.store.schema_version()}


def list_devices(svc: Services, call: Call) -> Any:
    page = svc.store.list_devices(_filter(call.query), _int(call.query, "limit", 100, 1, 1000),
                                  call.query.get("cursor"))
    return {"items": [d.to_dict() for d in page.items], "total": page.total,
            "next_cursor": page.next_cursor}


def get_device(svc: Services, call: Call) -> Any:
    d = svc.store.get_device(call.path["device_id"])
    if d is None:
        raise NotFoundError(f"no device {call.path['device_id']!r}")
    out = d.to_dict()
    out["deployments"] = [r.to_dict() for r in svc.store.device_deployments(
        d.id, ("running", "paused", "completed", "aborted", "cancelled", "rolled-back"))][-10:]
    return out


def enrol_device(svc: Services, call: Call) -> Any:
    b = _obj(call.body)
    tags = b.get("tags", {})
    if not isinstance(tags, dict):
        raise UsageError("tags must be an object of strings")
    device = new_device(str(b.get("id", "")), str(b.get("class", "")), str(b.get("target", "")),
                        {str(k): str(v) for k, v in tags.items()})
    svc.store.upsert_device(device)
    stored = svc.store.get_device(device.id)
    assert stored is not None
    config = agent_config(stored, svc.enrol)
    answer: dict[str, Any] = {"device": stored.to_dict(), "agent_config": config,
                              "root_json": svc.enrol.root_json.decode("utf-8")}
    if svc.ca is not None and svc.ca.exists():
        # one-time token for POST /pki/enroll: the certificate's key is made where it is used
        answer["enrolment_token"] = svc.ca.create_token(stored.id)
        config["broker"]["tls"] = dict(TLS_FILES)
    return answer


def device_telemetry(svc: Services, call: Call) -> Any:
    dev = call.path["device_id"]
    if svc.store.get_device(dev) is None:
        raise NotFoundError(f"no device {dev!r}")
    rows = svc.store.query_telemetry(dev, call.query.get("kind"), _float(call.query, "since"),
                                     _float(call.query, "until"),
                                     _int(call.query, "limit", 1000, 1, 10_000))
    return {"items": [r.to_dict() for r in rows]}


def telemetry_aggregate(svc: Services, call: Call) -> Any:
    q = call.query
    dep = q.get("deployment")
    since = _float(q, "since")
    if dep:
        if svc.store.get_deployment(dep) is None:
            raise NotFoundError(f"no deployment {dep!r}")
        return svc.store.aggregate_deployment(dep, since)
    f = _filter(q)
    ids = None
    if f != DeviceFilter():
        ids = [d.id for d in svc.store.select_devices(f)]
    return svc.store.aggregate_telemetry(ids, since)


def list_bundles(svc: Services, call: Call) -> Any:
    name = call.query.get("name")
    aliases: dict[tuple[str, str], list[str]] = {}
    for a in svc.store.list_aliases(name):
        aliases.setdefault((a.name, a.version), []).append(a.alias)
    return {"items": [{k: v for k, v in b.to_dict().items() if k != "manifest"}
                      | {"aliases": aliases.get((b.name, b.version), []),
                         "lineage": _lineage_summary(b.manifest)}
                      for b in svc.store.list_bundles(name)]}


def _lineage_summary(manifest: bytes) -> dict[str, Any] | None:
    """The manifest's lineage with links into MLflow, for listings and the console."""
    from edgeops.bundle import Manifest

    lin = Manifest.from_bytes(manifest).lineage
    return lin.to_dict() | {"links": lin.links()} if lin else None


def list_aliases(svc: Services, call: Call) -> Any:
    return {"items": [a.to_dict() for a in svc.store.list_aliases(call.query.get("name"))]}


def get_alias(svc: Services, call: Call) -> Any:
    from fleet.aliases import resolve_alias

    name, alias = call.path["name"], call.path["alias"]
    rec = resolve_alias(svc.store, name, alias)
    return rec.to_dict() | {"moves": [m.to_dict() for m in svc.store.alias_moves(
        name, alias, _int(call.query, "limit", 100, 1, 1000))]}


def put_alias(svc: Services, call: Call) -> Any:
    from fleet.aliases import AliasRollout, move_alias

    b = _obj(call.body)
    version, rollout = b.get("version"), b.get("rollout")
    if not isinstance(version, str):
        raise UsageError("moving an alias needs 'version'")
    plan = None
    if rollout is not None:
        r = _obj(rollout)
        selector = r.get("selector", "all")
        if not isinstance(selector, str):
            raise UsageError("'rollout.selector' must be a string")
        plan = AliasRollout(selector, Strategy.from_dict(r.get("strategy") or {}))
    who = call.principal
    rec, dep = move_alias(svc.store, svc.engine, call.path["name"], call.path["alias"], version,
                          who.name if who else None, time.time(), plan,
                          created_by=who.token_id if who else None)
    return {"alias": rec.to_dict(),
            "deployment": svc.engine.status(dep.id) if dep is not None else None}


def get_bundle(svc: Services, call: Call) -> Any:
    b = svc.store.get_bundle(call.path["name"], call.path["version"])
    if b is None:
        raise NotFoundError(f"no bundle {call.path['name']}@{call.path['version']}")
    return b.to_dict()


def current_targets(svc: Services, call: Call) -> Any:
    data = svc.repository.current_targets()
    if data is None:
        raise NotFoundError("no targets metadata yet", hint="the first publish creates it")
    return Response(data, media_type="application/json")


def upload_bundle(svc: Services, call: Call) -> Any:
    """Never called: uploads stream in fleet.api.app (``raw_body``), not through a handler."""
    raise NotImplementedError


def publish_bundle(svc: Services, call: Call) -> Any:
    b = _obj(call.body)
    upload, targets = b.get("upload"), b.get("targets")
    if not isinstance(upload, str) or not upload.isalnum() or not isinstance(targets, str):
        raise UsageError("publish needs {'upload': id, 'targets': metadata text}")
    path = svc.upload_dir / f"{upload}.edgebundle"
    if not path.is_file():
        raise NotFoundError(f"no upload {upload!r}", hint="upload the bundle first")
    deltas: dict[str, Path] = {}
    try:
        deltas = _delta_uploads(svc, b.get("deltas", {}))
        r = svc.repository.publish(path, targets.encode("utf-8"), deltas)
    finally:
        path.unlink(missing_ok=True)
        for p in deltas.values():
            p.unlink(missing_ok=True)
    return {"name": r.name, "version": r.version, "new": r.new,
            "targets_version": r.targets_version, "snapshot_version": r.snapshot_version,
            "deltas": sorted(p for p in r.files if p.endswith(".edgedelta"))}


def _delta_uploads(svc: Services, raw: Any) -> dict[str, Path]:
    """``{"deltas": {tuf path: upload id}}`` of a publish body, as upload files (issue 20)."""
    if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.isalnum() for k, v in raw.items()):
        raise UsageError("publish 'deltas' must map TUF paths to upload ids")
    out = {}
    for target_path, upload in raw.items():
        p = svc.upload_dir / f"{upload}.edgebundle"
        if not p.is_file():
            raise NotFoundError(f"no upload {upload!r} for delta {target_path}",
                                hint="upload each delta before publishing")
        out[target_path] = p
    return out


def post_blessing(svc: Services, call: Call) -> Any:
    name, version = call.path["name"], call.path["version"]
    bundle = svc.store.get_bundle(name, version)
    if bundle is None:
        raise NotFoundError(f"no bundle {name}@{version}")
    body = _obj(call.body)
    passed, hardware = _check_report(body, name, version, bundle.manifest)
    b = Blessing(name, version, hardware, passed, body, time.time())
    svc.store.put_blessing(b)
    return b.to_dict()


def _check_report(body: dict[str, Any], name: str, version: str, manifest: bytes
                  ) -> tuple[bool, str]:
    """Validate a hardware report for this bundle; its verdict is recomputed here, always."""
    import hashlib

    from edgeops.blessing import HardwareReport

    report = HardwareReport.from_dict(body)
    if (report.bundle, report.version) != (name, version):
        raise BadContentError(f"the report is for {report.bundle}@{report.version}, not "
                              f"{name}@{version}")
    if report.manifest_sha256 != hashlib.sha256(manifest).hexdigest():
        raise BadContentError("the report was made on a different manifest than the one "
                              "published", hint="rerun hardware_tests on the published bundle")
    expected = hardware_class(report.target)
    if expected is not None and expected != report.hardware:
        raise BadContentError(f"target {report.target} is hardware class {expected}, "
                              f"the report says {report.hardware}")
    return report.passed, report.hardware


def list_blessings(svc: Services, call: Call) -> Any:
    return {"items": [b.to_dict() for b in svc.store.list_blessings(call.path["name"],
                                                                     call.path["version"])]}


def create_deployment(svc: Services, call: Call) -> Any:
    b = _obj(call.body)
    name, version, alias = b.get("name"), b.get("version"), b.get("alias")
    if isinstance(name, str) and version is None and isinstance(alias, str):
        from fleet.aliases import resolve_alias

        version = resolve_alias(svc.store, name, alias).version
    if not isinstance(name, str) or not isinstance(version, str):
        raise UsageError("a deployment needs 'name' and 'version' (or 'alias')")
    selector = b.get("selector", "all")
    if not isinstance(selector, str):
        raise UsageError("'selector' must be a string")
    strategy = Strategy.from_dict(b.get("strategy") or {})
    dep = svc.engine.create(name, version, selector, strategy,
                            created_by=call.principal.token_id if call.principal else None)
    return svc.engine.status(dep.id)


def list_deployments(svc: Services, call: Call) -> Any:
    status = call.query.getlist("status") or None
    deps = svc.store.list_deployments(status, _int(call.query, "limit", 100, 1, 1000))
    return {"items": [{**d.to_dict(), "counts": svc.store.deployment_counts(d.id)}
                      for d in deps]}


def get_deployment(svc: Services, call: Call) -> Any:
    from fleet.deltas import summarise_deliveries

    out = svc.engine.status(call.path["deployment_id"])
    rows = svc.store.deployment_deliveries(out["id"], float(out.get("created_at") or 0.0))
    return out | {"delivery": summarise_deliveries(rows, out["id"])}


def deployed_versions(svc: Services, call: Call) -> Any:
    return {"items": [{"version": v, "target": t, "devices": n}
                      for v, t, n in svc.store.deployed_versions(call.path["name"])]}


def deployment_devices(svc: Services, call: Call) -> Any:
    dep = call.path["deployment_id"]
    if svc.store.get_deployment(dep) is None:
        raise NotFoundError(f"no deployment {dep!r}")
    return {"items": [r.to_dict() for r in svc.store.deployment_devices(
        dep, call.query.getlist("state") or None)]}


def _action(verb: str) -> Callable[[Services, Call], Any]:
    def act(svc: Services, call: Call) -> Any:
        getattr(svc.engine, verb)(call.path["deployment_id"])
        return svc.engine.status(call.path["deployment_id"])
    act.__name__ = f"{verb}_deployment"
    return act


def post_token(svc: Services, call: Call) -> Any:
    b = _obj(call.body)
    role = b.get("role")
    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}")
    token, rec = create_token(svc.store, str(role), str(b.get("name") or role))
    return {"token": token, "token_id": rec.token_id, "role": rec.role, "name": rec.name,
            "created_at": rec.created_at, "revoked": False}


def get_tokens(svc: Services, call: Call) -> Any:
    return {"items": [{"token_id": t.token_id, "role": t.role, "name": t.name,
                       "created_at": t.created_at, "revoked": t.revoked}
                      for t in svc.store.list_tokens()]}


def delete_token(svc: Services, call: Call) -> Any:
    if not svc.store.revoke_token(call.path["token_id"]):
        raise NotFoundError(f"no token {call.path['token_id']!r}")
    return {"token_id": call.path["token_id"], "revoked": True}


def tuf_metadata(svc: Services, call: Call) -> Any:
    return Response(svc.repository.metadata(call.path["filename"]),
                    media_type="application/json")


def tuf_target(svc: Services, call: Call) -> Any:
    return FileResponse(svc.repository.target_file(call.path["path"]),
                        media_type="application/octet-stream")


_DEV_Q = (("class", "string", "device class"), ("target", "string", "target profile"),
          ("tag", "string", "key=value, repeatable (AND)"),
          ("version", "string", "active bundle version or name@version"),
          ("online", "string", "true|false (alias: status=online|offline)"),
          ("search", "string", "substring of the id or a tag value"))
_DEP = "/api/v1/deployments/{deployment_id}"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/healthz", healthz, None, "Liveness and schema version", "Health",
             tag="meta"),
    Endpoint("GET", "/api/v1/devices", list_devices, "viewer",
             "List devices with filters and keyset pagination", "DevicePage",
             query=(*_DEV_Q, ("limit", "integer", "page size (1-1000)"),
                    ("cursor", "string", "next_cursor of the previous page"))),
    Endpoint("POST", "/api/v1/devices", enrol_device, "operator",
             "Enrol a device; returns its agent.json and the TUF root", "Enrolment",
             body="EnrolRequest", status=201),
    Endpoint("GET", "/api/v1/devices/{device_id}", get_device, "viewer", "One device",
             "Device"),
    Endpoint("GET", "/api/v1/devices/{device_id}/telemetry", device_telemetry, "viewer",
             "A device's telemetry, newest first",
             {"type": "object", "properties": {"items": {"type": "array", "items": {
                 "$ref": "#/components/schemas/TelemetryRecord"}}}},
             query=(("kind", "string", "heartbeat|system|inference|drift"),
                    ("since", "number", "unix time"), ("until", "number", "unix time"),
                    ("limit", "integer", "1-10000"))),
    Endpoint("GET", "/api/v1/telemetry/aggregate", telemetry_aggregate, "viewer",
             "Inference totals, error rate and p95 over a deployment or a device group",
             "TelemetryAggregate",
             query=(("deployment", "string", "deployment id"), *_DEV_Q,
                    ("since", "number", "unix time"))),
    Endpoint("GET", "/api/v1/bundles", list_bundles, "viewer", "Published bundles",
             {"type": "object", "properties": {"items": {"type": "array", "items": {
                 "$ref": "#/components/schemas/Bundle"}}}},
             query=(("name", "string", "only this bundle name"),)),
    Endpoint("POST", "/api/v1/uploads", upload_bundle, "publisher",
             "Upload a bundle file (raw body) before publishing it", "Upload", status=201,
             raw_body=True),
    Endpoint("POST", "/api/v1/bundles", publish_bundle, "publisher",
             "Publish an uploaded bundle with offline-signed targets metadata",
             "PublishResult", body="PublishRequest", status=201),
    Endpoint("GET", "/api/v1/bundles/{name}/deployed", deployed_versions, "viewer",
             "Versions of a bundle active on devices, per target (what publish makes deltas "
             "from)", {"type": "object", "properties": {"items": {"type": "array"}}}),
    Endpoint("GET", "/api/v1/bundles/{name}/{version}", get_bundle, "viewer",
             "One bundle with its manifest", "Bundle"),
    Endpoint("GET", "/api/v1/repository/targets", current_targets, "viewer",
             "The current targets metadata (publishers sign the next version from it)",
             {"type": "object"}),
    Endpoint("POST", "/api/v1/bundles/{name}/{version}/blessings", post_blessing, "operator",
             "Upload a hardware_tests report blessing a hardware class", "Blessing",
             body="HardwareReport", status=201),
    Endpoint("GET", "/api/v1/bundles/{name}/{version}/blessings", list_blessings, "viewer",
             "Blessings of a bundle",
             {"type": "object", "properties": {"items": {"type": "array", "items": {
                 "$ref": "#/components/schemas/Blessing"}}}}),
    Endpoint("GET", "/api/v1/aliases", list_aliases, "viewer",
             "Bundle aliases (NAME@champion → version)",
             {"type": "object", "properties": {"items": {"type": "array", "items": {
                 "$ref": "#/components/schemas/Alias"}}}},
             query=(("name", "string", "only this bundle name"),)),
    Endpoint("GET", "/api/v1/bundles/{name}/aliases/{alias}", get_alias, "viewer",
             "One alias and its moves, newest first", "AliasWithMoves",
             query=(("limit", "integer", "moves to return (1-1000)"),)),
    Endpoint("PUT", "/api/v1/bundles/{name}/aliases/{alias}", put_alias, "operator",
             "Point an alias at a published version; optionally start its staged rollout",
             "AliasMove", body="AliasMoveRequest"),
    Endpoint("POST", "/api/v1/deployments", create_deployment, "operator",
             "Start a staged deployment", "DeploymentStatus", body="DeployRequest", status=201),
    Endpoint("GET", "/api/v1/deployments", list_deployments, "viewer", "Deployments, newest first",
             {"type": "object", "properties": {"items": {"type": "array", "items": {
                 "$ref": "#/components/schemas/Deployment"}}}},
             query=(("status", "string", "repeatable"), ("limit", "integer", "1-1000"))),
    Endpoint("GET", _DEP, get_deployment, "viewer", "A deployment with counts per state",
             "DeploymentStatus"),
    Endpoint("GET", _DEP + "/devices", deployment_devices, "viewer",
             "Every device's state in a deployment",
             {"type": "object", "properties": {"items": {"type": "array", "items": {
                 "$ref": "#/components/schemas/DeploymentDevice"}}}},
             query=(("state", "string", "repeatable"),)),
    *(Endpoint("POST", f"{_DEP}/{verb}", _action(verb), "operator",
               f"{verb.capitalize()} a deployment", "DeploymentStatus")
      for verb in ("pause", "resume", "cancel", "rollback")),
    Endpoint("POST", "/api/v1/tokens", post_token, "admin",
             "Create an API token (the secret is shown once)", "Token", body="TokenRequest",
             status=201),
    Endpoint("GET", "/api/v1/tokens", get_tokens, "admin", "List API tokens (no secrets)",
             {"type": "object", "properties": {"items": {"type": "array", "items": {
                 "$ref": "#/components/schemas/Token"}}}}),
    Endpoint("DELETE", "/api/v1/tokens/{token_id}", delete_token, "admin", "Revoke a token",
             "Token"),
    Endpoint("GET", "/tuf/metadata/{filename}", tuf_metadata, None,
             "TUF metadata (N.root.json, timestamp.json, N.snapshot.json, N.targets.json)",
             {"type": "object"}, tag="tuf"),
    Endpoint("GET", "/tuf/targets/{path:path}", tuf_target, None,
             "A TUF target file by consistent-snapshot name <dir>/<sha256>.<basename>",
             {"type": "string", "format": "binary"}, tag="tuf",
             produces="application/octet-stream"),
)


"""The fleet manager's Starlette application: routes from the table, auth, errors, OpenAPI.

Every route in :data:`fleet.api.routes.ENDPOINTS` is wrapped the same way: authenticate the
bearer token against the route's least role, read a size-limited JSON body, run the handler
in the thread pool, and turn an :class:`EdgeOpsError` into ``{"error", "hint"}`` with the
status its class names. Unexpected exceptions answer 500 without details (logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from edgeops import __version__
from edgeops.errors import EdgeOpsError, UsageError
from edgeops.fsutil import atomic_open
from fleet.api.alert_routes import ENDPOINTS as ALERT_ENDPOINTS
from fleet.api.auth import ROLES, authenticate
from fleet.api.capture_routes import ENDPOINTS as CAPTURE_ENDPOINTS
from fleet.api.drift_routes import ENDPOINTS as DRIFT_ENDPOINTS
from fleet.api.routes import ENDPOINTS, Call, Endpoint
from fleet.api.schemas import SCHEMAS, ref
from fleet.api.services import Services
from fleet.errors import http_status

__all__ = ["create_app", "openapi_document"]

log = logging.getLogger(__name__)


def _error(exc: EdgeOpsError) -> JSONResponse:
    return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=http_status(exc))


async def _json(request: Request, limit: int) -> Any:
    if request.method in ("GET", "DELETE"):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UsageError(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise UsageError("request body is not valid JSON") from None


async def _upload(request: Request, svc: Services) -> dict[str, Any]:
    """Stream a bundle body to the upload directory (size-capped, hashed, atomic)."""
    upload = secrets.token_hex(16)
    dest = svc.upload_dir / f"{upload}.edgebundle"
    h, size = hashlib.sha256(), 0
    with atomic_open(dest, mode=0o600) as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > svc.limits.max_bundle_bytes:
                raise UsageError(f"upload is over the {svc.limits.max_bundle_bytes}-byte limit")
            h.update(chunk)
            f.write(chunk)
    if size == 0:
        dest.unlink(missing_ok=True)
        raise UsageError("the upload is empty", hint="send the .edgebundle file as the body")
    return {"upload": upload, "sha256": h.hexdigest(), "size": size}


def _wrap(ep: Endpoint, svc: Services) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            principal = None
            if ep.role is not None:
                principal = await run_in_threadpool(
                    authenticate, svc.store, request.headers.get("authorization"))
                principal.require(ep.role)
            if ep.raw_body:
                return JSONResponse(await _upload(request, svc), status_code=ep.status)
            body = await _json(request, svc.max_json_bytes)
            call = Call(dict(request.path_params), request.query_params, body, principal)
            result = await run_in_threadpool(ep.handler, svc, call)
        except EdgeOpsError as exc:
            return _error(exc)
        except Exception:  # a bug must not leak internals to the client
            log.exception("%s %s failed", request.method, request.url.path)
            return JSONResponse({"error": "internal error", "hint": "see the manager's log"},
                                status_code=500)
        if isinstance(result, Response):
            return result
        return JSONResponse(result, status_code=ep.status)

    endpoint.__name__ = getattr(ep.handler, "__name__", "endpoint")
    return endpoint


def _console_endpoints() -> tuple[Endpoint, ...]:
    from fleet.api.console_routes import ENDPOINTS as CONSOLE_ENDPOINTS

    return CONSOLE_ENDPOINTS


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for every route in the table (plus the PKI routes when mounted)."""
    paths: dict[str, dict[str, Any]] = {}
    for ep in (*ENDPOINTS, *DRIFT_ENDPOINTS, *CAPTURE_ENDPOINTS, *ALERT_ENDPOINTS,
               *_console_endpoints()):
        path = re.sub(r"\{(\w+):path\}", r"{\1}", ep.path)
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in re.findall(r"\{(\w+)(?::path)?\}", ep.path)]
        params += [{"name": n, "in": "query", "required": False, "description": d,
                    "schema": {"type": t}} for n, t, d in ep.query]
        schema = ref(ep.response) if isinstance(ep.response, str) else ep.response
        op: dict[str, Any] = {
            "summary": ep.summary, "operationId": f"{ep.method.lower()}_"
                                                  f"{re.sub(r'[^a-z0-9]+', '_', path.lower())}"
                                                  .strip("_"),
            "tags": [ep.tag], "parameters": params,
            "responses": {str(ep.status): {"description": "OK", "content": {
                ep.produces: {"schema": schema or {}}}},
                **{str(s): {"description": d, "content": {"application/json": {
                    "schema": ref("Error")}}}
                   for s, d in (("400", "bad request"), ("404", "not found"),
                                ("409", "conflict"), ("422", "bad content"))}}}
        if ep.role is not None:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Needs a token with role {ep.role} or higher."
            op["responses"]["401"] = {"description": "no or unknown token",
                                      "content": {"application/json": {"schema": ref("Error")}}}
            op["responses"]["403"] = {"description": "role too low",
                                      "content": {"application/json": {"schema": ref("Error")}}}
        if ep.body:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": ref(ep.body)}}}
        if ep.raw_body:
            op["requestBody"] = {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}
        paths.setdefault(path, {})[ep.method.lower()] = op
    paths.update(_pki_openapi())
    return {"openapi": "3.1.0",
            "info": {"title": "edgeops fleet manager", "version": __version__,
                     "description": "Devices, bundles, staged deployments, telemetry and the "
                                    f"TUF repository. Roles: {' < '.join(ROLES)}."},
            "servers": [{"url": "/"}], "paths": paths,
            "components": {"schemas": SCHEMAS, "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"}}}}


def _pki_openapi() -> dict[str, dict[str, Any]]:
    from fleet.api.pki_routes import OPENAPI_PATHS

    return OPENAPI_PATHS


def _pki_routes() -> list[BaseRoute]:
    from fleet.api.pki_routes import routes

    return list(routes)


def _console_pages() -> list[BaseRoute]:
    from fleet.console.web import routes

    return list(routes)


def create_app(svc: Services, fleet_ca: Any = None) -> Starlette:
    svc.upload_dir.mkdir(parents=True, exist_ok=True)
    doc = openapi_document()

    async def openapi(_request: Request) -> Response:
        return JSONResponse(doc)

    routes: list[BaseRoute] = [Route(ep.path, _wrap(ep, svc), methods=[ep.method])
                               for ep in (*ENDPOINTS, *DRIFT_ENDPOINTS, *CAPTURE_ENDPOINTS,
                                          *ALERT_ENDPOINTS, *_console_endpoints())]
    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    routes += _pki_routes()
    routes += _console_pages()
    app = Starlette(routes=routes)
    app.state.services = svc
    if fleet_ca is not None:
        app.state.fleet_ca = fleet_ca
    return app

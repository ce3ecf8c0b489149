"""``/api/v1/captures``: open, list, stop and export data captures (fleet/capture/service.py).

Apart from fleet/api/routes.py so the capture's request schema and handlers sit together; the
app mounts these endpoints beside the core table and lists them in ``/openapi.json``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from starlette.responses import Response

from edgeops.errors import UsageError
from fleet.api.routes import Call, Endpoint
from fleet.api.services import Services
from fleet.capture.service import (
    CaptureBounds,
    as_capture_store,
    export_npz,
    start_capture,
    stop_capture,
)
from fleet.errors import NotFoundError

__all__ = ["ENDPOINTS"]


def _number(body: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    v = body.get(name, default)
    if v is None:
        raise UsageError(f"capture needs {name!r}")
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or (
            kind is int and not isinstance(v, int)):
        raise UsageError(f"capture {name!r} must be {'an integer' if kind is int else 'a number'}")
    return kind(v)


def post_capture(svc: Services, call: Call) -> Any:
    b = call.body if isinstance(call.body, dict) else {}
    selector = b.get("selector")
    if not isinstance(selector, str) or not selector:
        raise UsageError("capture needs a 'selector' (tag selector, e.g. city=lyon)")
    now = time.time()
    bounds = CaptureBounds(_number(b, "sample_rate", float),
                           _number(b, "max_bytes_per_device", int),
                           _number(b, "max_bytes_per_day", int), _number(b, "until", float),
                           _number(b, "max_sample_bytes", int, 64 * 1024))
    engine = svc.engine
    rec = start_capture(as_capture_store(svc.store), engine.signer, engine.channel,
                        selector=selector,
                        bounds=bounds, now=now,
                        created_by=call.principal.token_id if call.principal else None)
    return rec.to_dict(now)


def _with_totals(svc: Services, d: dict[str, Any]) -> dict[str, Any]:
    n, size, devices = as_capture_store(svc.store).capture_totals(d["id"])
    return {**d, "samples": n, "bytes": size, "devices_sending": devices}


def list_captures(svc: Services, call: Call) -> Any:
    now = time.time()
    return {"items": [_with_totals(svc, c.to_dict(now))
                      for c in as_capture_store(svc.store).list_captures()]}


def get_capture(svc: Services, call: Call) -> Any:
    rec = as_capture_store(svc.store).get_capture(call.path["capture_id"])
    if rec is None:
        raise NotFoundError(f"no capture {call.path['capture_id']!r}")
    return _with_totals(svc, rec.to_dict(time.time()))


def post_stop(svc: Services, call: Call) -> Any:
    rec = stop_capture(as_capture_store(svc.store), svc.engine.signer, svc.engine.channel,
                       call.path["capture_id"], time.time())
    return rec.to_dict(time.time())


def get_export(svc: Services, call: Call) -> Any:
    data, summary = export_npz(as_capture_store(svc.store), call.path["capture_id"])
    return Response(data, media_type="application/x-npz", headers={
        "X-Edgeops-Capture-Samples": str(summary["samples"]),
        "X-Edgeops-Capture-Left-Out": str(summary["left_out"] + summary["unreadable"])})


_CAPTURE = {"type": "object", "required": ["id", "selector", "status"], "properties": {
    "id": {"type": "string"}, "selector": {"type": "string"},
    "sample_rate": {"type": "number"}, "max_bytes_per_device": {"type": "integer"},
    "max_bytes_per_day": {"type": "integer"}, "max_sample_bytes": {"type": "integer"},
    "until": {"type": "number"},
    "status": {"type": "string", "enum": ["open", "stopped", "expired"]},
    "devices": {"type": "array", "items": {"type": "string"}},
    "samples": {"type": "integer"}, "bytes": {"type": "integer"}}}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/api/v1/captures", post_capture, "operator",
             "Open an opt-in data capture on the devices a selector picks (body: selector, "
             "sample_rate, max_bytes_per_device, max_bytes_per_day, until, max_sample_bytes)",
             _CAPTURE, status=201, tag="capture"),
    Endpoint("GET", "/api/v1/captures", list_captures, "viewer",
             "Captures, newest first, with samples and bytes received",
             {"type": "object", "properties": {"items": {"type": "array", "items": _CAPTURE}}},
             tag="capture"),
    Endpoint("GET", "/api/v1/captures/{capture_id}", get_capture, "viewer", "One capture",
             _CAPTURE, tag="capture"),
    Endpoint("POST", "/api/v1/captures/{capture_id}/stop", post_stop, "operator",
             "Stop a capture: devices are told to stop sampling, later uploads are refused",
             _CAPTURE, tag="capture"),
    Endpoint("GET", "/api/v1/captures/{capture_id}/export", get_export, "operator",
             "The capture's inputs as an .npz that `edgeops build --calibration/--validation` "
             "reads", {"type": "string", "format": "binary"}, tag="capture",
             produces="application/x-npz"),
)

"""HTTP endpoints of the fleet PKI: enrolment, renewal and the CRL.

Why it exists: a device can reach the manager's HTTP API before it has a certificate, so
enrolment happens here, authorised by the one-time token rather than an API bearer token (the
device has none). The routes are mounted by the fleet API (``routes``); they find the CA in
``request.app.state.fleet_ca`` (a :class:`fleet.pki.FleetCA`) or, failing that, in
``$EDGEOPS_HOME/ca``.

* ``POST /pki/enroll``  ``{"token", "csr"}`` → ``{"certificate", "ca", "chain", "not_after"}``
* ``POST /pki/renew``   ``{"csr", "certificate", "proof"}`` (proof: base64 signature over the
  CSR by the current key) → same answer
* ``GET /pki/crl``      the current CRL (PEM), for the manager's workers and the broker host
* ``GET /pki/ca``       the CA certificate (PEM)

Refusals are 403 with ``{"error", "hint"}``; tokens and keys are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from edgeops.errors import BadContentError, ConfigError, EdgeOpsError
from fleet.pki import EnrolmentError, FleetCA

__all__ = ["routes"]

log = logging.getLogger(__name__)


def _ca(request: Request) -> FleetCA:
    ca = getattr(request.app.state, "fleet_ca", None)
    return ca if isinstance(ca, FleetCA) else FleetCA()


def _error(status: int, exc: EdgeOpsError) -> JSONResponse:
    return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=status)


async def _json_body(request: Request, ca: FleetCA) -> dict[str, Any]:
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > ca.limits.max_request_bytes:
            raise BadContentError("request body too large", hint="send one CSR")
    try:
        data = json.loads(body)
    except ValueError:
        raise BadContentError("request body is not JSON") from None
    if not isinstance(data, dict):
        raise BadContentError("request body is not a JSON object")
    return data


def _answer(ca: FleetCA, cert: x509.Certificate) -> JSONResponse:
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    ca_pem = ca.certificate().public_bytes(serialization.Encoding.PEM).decode()
    return JSONResponse({"certificate": pem, "ca": ca_pem, "chain": pem + ca_pem,
                         "not_after": cert.not_valid_after_utc.isoformat(),
                         "serial": format(cert.serial_number, "x")})


def _str_field(data: dict[str, Any], name: str) -> str:
    v = data.get(name)
    if not isinstance(v, str) or not v:
        raise BadContentError(f"'{name}' is missing or not a string")
    return v


async def enroll(request: Request) -> Response:
    ca = _ca(request)
    try:
        data = await _json_body(request, ca)
        token, csr = _str_field(data, "token"), _str_field(data, "csr")
        cert = await asyncio.to_thread(ca.enroll, csr.encode(), token)
    except EnrolmentError as exc:
        # The reason is logged, never the token.
        log.warning("refused an enrolment from %s: %s",
                    request.client.host if request.client else "?", exc.message)
        return _error(403, exc)
    except ConfigError as exc:
        log.error("enrolment unavailable: %s", exc.message)
        return _error(503, exc)
    except BadContentError as exc:
        return _error(400, exc)
    return _answer(ca, cert)


async def renew(request: Request) -> Response:
    ca = _ca(request)
    try:
        data = await _json_body(request, ca)
        csr, current = _str_field(data, "csr"), _str_field(data, "certificate")
        try:
            proof = base64.b64decode(_str_field(data, "proof"), validate=True)
        except (binascii.Error, ValueError):
            raise BadContentError("'proof' is not base64") from None
        cert = await asyncio.to_thread(ca.renew, csr.encode(), current.encode(), proof)
    except EnrolmentError as exc:
        log.warning("refused a renewal from %s: %s",
                    request.client.host if request.client else "?", exc.message)
        return _error(403, exc)
    except ConfigError as exc:
        log.error("renewal unavailable: %s", exc.message)
        return _error(503, exc)
    except BadContentError as exc:
        return _error(400, exc)
    return _answer(ca, cert)


async def crl(request: Request) -> Response:
    ca = _ca(request)
    try:
        current = ca.crl()
    except ConfigError as exc:
        return _error(503, exc)
    if current is None:
        return _error(404, ConfigError("this fleet has no CRL yet",
                                       hint="run `edgeops fleet ca init`"))
    return Response(current.public_bytes(serialization.Encoding.PEM),
                    media_type="application/x-pem-file")


async def ca_certificate(request: Request) -> Response:
    try:
        cert = _ca(request).certificate()
    except ConfigError as exc:
        return _error(503, exc)
    return Response(cert.public_bytes(serialization.Encoding.PEM),
                    media_type="application/x-pem-file")


routes: list[BaseRoute] = [
    Route("/pki/enroll", enroll, methods=["POST"]),
    Route("/pki/renew", renew, methods=["POST"]),
    Route("/pki/crl", crl, methods=["GET"]),
    Route("/pki/ca", ca_certificate, methods=["GET"]),
]

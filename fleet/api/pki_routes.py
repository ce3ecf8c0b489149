"""HTTP endpoints of the fleet PKI: enrolment, renewal and the CRL.

Why it exists: a device can reach the manager's HTTP API before it has a certificate, so
enrolment happens here, authorised by the one-time token rather than an API bearer token (the
device has none). The routes are mounted by the fleet API (``routes``); they find the CA in
``request.app.state.fleet_ca`` (a :class:`fleet.pki.FleetCA`) or, failing that, in
``$EDGEOPS_HOME/ca``. With ``request.app.state.broker_admin`` (a
:class:`fleet.broker_admin.BrokerAdmin`), an enrolled device is also granted its topics on the
broker before its certificate is returned (docs/SECURITY.md, "Broker authorisation").

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
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from edgeops.errors import BadContentError, ConfigError, EdgeOpsError, TransportError
from fleet.certs import EnrolmentError
from fleet.pki import FleetCA

__all__ = ["OPENAPI_PATHS", "routes"]

log = logging.getLogger(__name__)


def _ca(request: Request) -> FleetCA:
    ca = getattr(request.app.state, "fleet_ca", None)
    return ca if isinstance(ca, FleetCA) else FleetCA()


def _error(status: int, exc: EdgeOpsError) -> JSONResponse:
    body = {"error": exc.message}
    if exc.hint:
        body["hint"] = exc.hint
    return JSONResponse(body, status_code=status)


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


_Issue = Callable[[], x509.Certificate]


async def _certificate_route(request: Request, what: str,  # "an enrolment", "a renewal"
                             prepare: Callable[[FleetCA, dict[str, Any]], _Issue]) -> Response:
    """Enrolment and renewal alike: read the JSON body, let ``prepare`` check its fields and
    return the CA call, run that off the event loop, and map the refusals to statuses.

    403 refused by the CA (reason logged, never the token), 503 no CA on this manager, 400 a
    malformed request.
    """
    ca = _ca(request)
    try:
        issue = prepare(ca, await _json_body(request, ca))
        cert = await asyncio.to_thread(issue)
    except EnrolmentError as exc:
        log.warning("refused %s from %s: %s", what,
                    request.client.host if request.client else "?", exc.message)
        return _error(403, exc)
    except (ConfigError, TransportError) as exc:
        log.error("%s unavailable: %s", what.split()[-1], exc.message)
        return _error(503, exc)
    except BadContentError as exc:
        return _error(400, exc)
    return _answer(ca, cert)


def _prepare_enrolment(ca: FleetCA, data: dict[str, Any], admin: Any = None) -> _Issue:
    token, csr = _str_field(data, "token"), _str_field(data, "csr")

    def issue() -> x509.Certificate:
        if admin is not None:   # a certificate without broker permissions would be useless;
            # granting first keeps the token if the broker is down (a grant alone allows
            # nothing: connecting needs the certificate)
            admin.grant_device(ca.token_device(token))
        return ca.enroll(csr.encode(), token)

    return issue


def _prepare_renewal(ca: FleetCA, data: dict[str, Any]) -> _Issue:
    csr, current = _str_field(data, "csr"), _str_field(data, "certificate")
    try:
        proof = base64.b64decode(_str_field(data, "proof"), validate=True)
    except (binascii.Error, ValueError):
        raise BadContentError("'proof' is not base64") from None
    return lambda: ca.renew(csr.encode(), current.encode(), proof)


async def enroll(request: Request) -> Response:
    admin = getattr(request.app.state, "broker_admin", None)
    return await _certificate_route(request, "an enrolment",
                                    lambda ca, data: _prepare_enrolment(ca, data, admin))


async def renew(request: Request) -> Response:
    return await _certificate_route(request, "a renewal", _prepare_renewal)


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


# -- OpenAPI: the routes above as /openapi.json describes them --------------------------------
_ERROR = {"$ref": "#/components/schemas/Error"}
_PEM = {"application/x-pem-file": {"schema": {"type": "string"}}}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


_NO_CA = _err("no usable fleet CA on this manager (none set up, or its key or files are "
              "missing or unreadable; `edgeops fleet ca init` creates one)")
_ISSUED = {"description": "the signed device certificate", "content": {"application/json": {
    "schema": {"type": "object", "required": ["certificate", "ca", "chain", "not_after", "serial"],
               "properties": {"certificate": {"type": "string"}, "ca": {"type": "string"},
                              "chain": {"type": "string"},
                              "not_after": {"type": "string", "format": "date-time"},
                              "serial": {"type": "string"}}}}}}


def _body(*fields: tuple[str, str]) -> dict[str, Any]:
    """A JSON object body of required non-empty strings: (name, description) each."""
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": [k for k, _ in fields],
        "properties": {k: {"type": "string", "minLength": 1, "description": d}
                       for k, d in fields}}}}}


OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/pki/enroll": {"post": {
        "summary": "Enrol a device: sign its CSR, authorised by a one-time token",
        "operationId": "post_pki_enroll", "tags": ["pki"],
        "description": "Unauthenticated: the one-time token is the authorisation.",
        "requestBody": _body(("token", "one-time enrolment token"),
                             ("csr", "PEM certificate signing request")),
        "responses": {"200": _ISSUED, "400": _err("malformed request"),
                      "403": _err("refused: bad or used token, bad CSR"), "503": _NO_CA}}},
    "/pki/renew": {"post": {
        "summary": "Renew a device certificate with a proof of the current key",
        "operationId": "post_pki_renew", "tags": ["pki"],
        "description": "Unauthenticated: the proof (signature over the CSR by the current "
                       "key) is the authorisation.",
        "requestBody": _body(("csr", "PEM certificate signing request"),
                             ("certificate", "the current PEM certificate"),
                             ("proof", "base64 signature over the CSR by the current key")),
        "responses": {"200": _ISSUED, "400": _err("malformed request"),
                      "403": _err("refused: unknown, revoked or expired certificate, bad "
                                  "proof"), "503": _NO_CA}}},
    "/pki/crl": {"get": {
        "summary": "The current certificate revocation list (PEM)",
        "operationId": "get_pki_crl", "tags": ["pki"],
        "responses": {"200": {"description": "the CRL", "content": _PEM},
                      "404": _err("no CRL yet (or no CA)"),
                      "503": _err("the CRL file is corrupt (`edgeops fleet ca crl` re-signs "
                                  "it)")}}},
    "/pki/ca": {"get": {
        "summary": "The fleet CA certificate (PEM)",
        "operationId": "get_pki_ca", "tags": ["pki"],
        "responses": {"200": {"description": "the CA certificate", "content": _PEM},
                      "503": _NO_CA}}},
}

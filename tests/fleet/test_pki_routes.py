"""The PKI routes' shared error mapping (400 / 403 / 503) and their OpenAPI description.

Enrolment and renewal go through one handler; each refusal class is driven here through both
routes against a real CA on disk (no CA, a CA whose key is gone, bad bodies, bad tokens).
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from fleet.api.app import openapi_document
from fleet.api.pki_routes import OPENAPI_PATHS, routes
from fleet.certs import generate_key, make_csr
from fleet.pki import FleetCA


@dataclass
class _Response:
    status_code: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Client:
    """Calls the real Starlette app in process over ASGI (one request, one event loop)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def _call(self, method: str, path: str, body: bytes) -> _Response:
        sent: list[dict[str, Any]] = []
        chunks = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "client": ("127.0.0.1", 9),
                 "server": ("127.0.0.1", 80),
                 "headers": [(b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        asyncio.run(self.app(scope, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        return _Response(int(start["status"]), b"".join(
            m.get("body", b"") for m in sent if m["type"] == "http.response.body"))

    def post(self, path: str, content: bytes | None = None, body: Any = None) -> _Response:
        return self._call("POST", path, content if content is not None
                          else json.dumps(body).encode())

    def get(self, path: str) -> _Response:
        return self._call("GET", path, b"")


def _client(ca: FleetCA) -> _Client:
    app = Starlette(routes=routes)
    app.state.fleet_ca = ca
    return _Client(app)


@pytest.fixture
def ca(tmp_path: Path) -> FleetCA:
    c = FleetCA(tmp_path / "ca")
    c.init()
    return c


def _csr(identity: str = "cam-001") -> str:
    return make_csr(generate_key(), identity).decode()


def _foreign_certificate(tmp_path: Path) -> str:
    other = FleetCA(tmp_path / "other-ca")
    other.init()
    _key, cert = other.issue_with_key("cam-001", tmp_path, kind="device", basename="dev")
    return cert.read_text()


def _error_body(r: Any) -> dict[str, Any]:
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"]
    assert set(body) <= {"error", "hint"}
    assert isinstance(body.get("hint", ""), str)      # omitted rather than null
    return dict(body)


@pytest.mark.parametrize("path", ["/pki/enroll", "/pki/renew"])
@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"{}", "missing or not a string"),
    (b'{"token": 5, "csr": 5, "certificate": 5, "proof": 5}', "missing or not a string"),
])
def test_malformed_requests_are_400_on_both_routes(ca: FleetCA, path: str, body: bytes,
                                                    message: str) -> None:
    r = _client(ca).post(path, content=body)
    assert r.status_code == 400
    assert message in _error_body(r)["error"]


@pytest.mark.parametrize("path", ["/pki/enroll", "/pki/renew"])
def test_oversized_body_is_400(ca: FleetCA, path: str) -> None:
    r = _client(ca).post(path, content=b" " * (ca.limits.max_request_bytes + 10))
    assert r.status_code == 400 and "too large" in _error_body(r)["error"]


def test_renewal_proof_that_is_not_base64_is_400(ca: FleetCA, tmp_path: Path) -> None:
    r = _client(ca).post("/pki/renew", body={"csr": _csr(), "proof": "%%%",
                                             "certificate": _foreign_certificate(tmp_path)})
    assert r.status_code == 400 and "'proof' is not base64" in _error_body(r)["error"]


def test_refusals_are_403_on_both_routes(ca: FleetCA, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    c = _client(ca)
    caplog.set_level("WARNING", logger="fleet.api.pki_routes")
    r = c.post("/pki/enroll", body={"token": "not-a-token", "csr": _csr()})
    assert r.status_code == 403
    assert _error_body(r)["hint"]
    r = c.post("/pki/renew", body={"csr": _csr(), "certificate": _foreign_certificate(tmp_path),
                                   "proof": base64.b64encode(b"sig").decode()})
    assert r.status_code == 403
    _error_body(r)
    logged = caplog.text
    assert "refused an enrolment from 127.0.0.1" in logged and "refused a renewal" in logged
    assert "not-a-token" not in logged


def test_renewal_without_a_ca_is_503(tmp_path: Path) -> None:
    r = _client(FleetCA(tmp_path / "no-ca")).post(
        "/pki/renew", body={"csr": _csr(), "certificate": _foreign_certificate(tmp_path),
                            "proof": base64.b64encode(b"sig").decode()})
    assert r.status_code == 503
    assert "no fleet CA" in _error_body(r)["error"]


def test_enrolment_with_the_ca_key_gone_is_503(ca: FleetCA) -> None:
    token = ca.create_token("cam-001")
    ca.key_path.unlink()
    r = _client(ca).post("/pki/enroll", body={"token": token, "csr": _csr()})
    assert r.status_code == 503
    assert "no fleet CA key" in _error_body(r)["error"]


def test_ca_certificate_and_crl_without_a_ca(tmp_path: Path) -> None:
    c = _client(FleetCA(tmp_path / "no-ca"))
    r = c.get("/pki/ca")
    assert r.status_code == 503 and "no fleet CA" in _error_body(r)["error"]
    r = c.get("/pki/crl")
    assert r.status_code == 404 and "no CRL yet" in _error_body(r)["error"]


def test_corrupt_crl_is_503(ca: FleetCA) -> None:
    ca.crl_path.write_text("not a CRL")
    r = _client(ca).get("/pki/crl")
    assert r.status_code == 503 and "corrupt" in _error_body(r)["error"]


def test_openapi_documents_every_pki_route_with_its_503() -> None:
    doc = openapi_document()
    mounted = {(m.lower(), r.path) for r in routes for m in (r.methods or ()) if m != "HEAD"}
    documented = {(m, p) for p, ops in doc["paths"].items() if p.startswith("/pki/")
                  for m in ops}
    assert documented == mounted
    for path, ops in OPENAPI_PATHS.items():
        for op in ops.values():
            assert {"200", "503"} <= set(op["responses"]), path
            assert op["responses"]["503"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}
            assert "security" not in op            # unauthenticated, like the routes

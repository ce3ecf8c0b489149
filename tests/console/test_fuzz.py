"""Schemathesis fuzzes every route of ``/openapi.json`` against the real app: never a 5xx.

The app is the one ``edgeops fleet serve`` builds (FleetServer, SQLite, real keys), seeded with
the simulated fleet, called in process over ASGI. Requests carry an admin token so that the
fuzzing gets past authentication into the handlers. The console's own routes must also answer
with the schema they document. Examples per operation are bounded to keep the run short.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeops.keys import KeyStore
from fleet.server import FleetServer, ServeOptions
from tests.console.fleet_seed import seed_fleet

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

_ADMIN: dict[str, str] = {}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, console_keys: KeyStore,
                console_bundles: dict[str, Path]) -> Iterator[FleetServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    server = FleetServer(ServeOptions(db=f"sqlite:///{tmp / 'fleet.db'}", data=tmp / "data",
                                      keys_home=console_keys.home))
    seed_fleet(server.services, console_keys, console_bundles, n_devices=40, charted=2,
               points=20)
    _ADMIN["token"] = server.admin_token or (tmp / "data" / "admin.token").read_text().strip()
    yield server
    server.stop()


@pytest.mark.slow           # a fuzzer: its cost is in the body, which no fixture shows
def test_no_route_answers_5xx(fuzz_server: FleetServer) -> None:
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_server.app)
    headers = {"Authorization": f"Bearer {_ADMIN['token']}"}
    seen: list[str] = []
    statuses: dict[int, int] = {}
    pki: dict[str, set[int]] = defaultdict(set)
    for result in schema.get_all_operations():
        op = result.ok()
        seen.append(f"{op.method.upper()} {op.path}")

        @given(case=op.as_strategy())
        @settings(max_examples=6, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            response = case.call(headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            checked = [checks.not_a_server_error]
            if case.path.startswith("/api/v1/console") or case.path == "/metrics":
                checked.append(checks.status_code_conformance)
                if response.status_code < 300:
                    checked.append(checks.response_schema_conformance)
            if case.path.startswith("/pki/"):
                pki[f"{case.method} {case.path}"].add(response.status_code)
                # no CA on this manager: 503 is the documented answer, so it must conform
                # (status and body) instead of counting as a server error
                checked = [checks.status_code_conformance, checks.response_schema_conformance]
                if response.status_code != 503:
                    checked.append(checks.not_a_server_error)
            case.validate_response(response, checks=checked)

        fuzz()
    # every route the app serves under the API is in the document that was fuzzed
    assert "GET /api/v1/console/overview" in seen and "GET /metrics" in seen
    assert len(seen) >= 30, seen
    # the PKI routes are documented and fuzzed; this manager has no CA, so the CA certificate
    # is the documented 503 (checked above against its documented body)
    assert {"POST /pki/enroll", "POST /pki/renew", "GET /pki/crl", "GET /pki/ca"} <= set(seen)
    assert pki["GET /pki/ca"] == {503}, pki
    assert all(s < 500 or s == 503 for got in pki.values() for s in got), pki
    # the fuzzing reached handlers (2xx) and bad input was refused (4xx)
    assert sum(n for c, n in statuses.items() if c < 300) >= 20, statuses
    assert sum(n for c, n in statuses.items() if 400 <= c < 500) >= 20, statuses

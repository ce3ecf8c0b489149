"""upload_blessing against a fleet manager on loopback.

The manager here is ``FakeFleet``: a real HTTP server on 127.0.0.1 that answers the way
fleet/api does (``{"error", "hint"}`` bodies, status codes), recording what it received. It is
a fake because this suite must be testable without the fleet package's database; the real
endpoint validates the same report with :class:`edgeops.blessing.HardwareReport`.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edgeops.blessing import InvalidReportError
from edgeops.errors import BadContentError, ConfigError, TransportError, UsageError
from edgeops.keys import KeyStore
from fleet.bless import BlessingRejectedError, blessing_url, upload_blessing
from tests.hardware_tests.bundles import build_bundle
from tests.hardware_tests.conftest import SuiteRun

TOKEN = "op-token-123"


@dataclass
class FakeFleet:
    """A loopback HTTP server standing in for the manager's blessings endpoint."""

    status: int = 201
    answer: dict[str, Any] = field(default_factory=lambda: {"passed": True})
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def fleet() -> Iterator[FakeFleet]:
    state = FakeFleet()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.append((self.path, dict(self.headers), body))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                code, payload = 401, {"error": "invalid token", "hint": ""}
            else:
                code, payload = state.status, state.answer
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    # shutdown() waits for the loop's next poll: 0.5 s by default, in every test's teardown
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def report_file(good_run: SuiteRun, tmp_path: Path) -> Path:
    assert good_run.returncode == 0, good_run.output
    path = tmp_path / "report.json"
    path.write_bytes(good_run.report_path.read_bytes())
    return path


def test_passing_report_is_uploaded(fleet: FakeFleet, good_bundle: Path,
                                    report_file: Path) -> None:
    fleet.answer = {"name": "mlp", "version": "1.0.0", "hardware": "x86_64", "passed": True}
    answer = upload_blessing(fleet.url + "/", TOKEN, good_bundle, report_file)
    assert answer == fleet.answer
    (path, headers, body), = fleet.received
    assert path == "/api/v1/bundles/mlp/1.0.0/blessings"
    assert headers["Content-Type"] == "application/json"
    sent = json.loads(body)
    assert sent == json.loads(report_file.read_text())
    assert (sent["hardware"], sent["passed"]) == ("x86_64", True)


def test_failing_report_is_refused_before_upload(fleet: FakeFleet, good_bundle: Path,
                                                 report_file: Path) -> None:
    d = json.loads(report_file.read_text())
    d["checks"][2].update(outcome="failed", message="output 'y' differs from golden")
    d.pop("passed")
    report_file.write_text(json.dumps(d))
    with pytest.raises(BadContentError, match="does not pass on x86_64: golden failed"):
        upload_blessing(fleet.url, TOKEN, good_bundle, report_file)
    assert fleet.received == []


def test_report_of_another_bundle_is_refused(fleet: FakeFleet, tmp_path: Path,
                                            store: KeyStore, report_file: Path) -> None:
    other_version = build_bundle(tmp_path / "v", store, version="1.0.1")
    with pytest.raises(BadContentError, match=r"report is for mlp 1.0.0, not mlp 1.0.1"):
        upload_blessing(fleet.url, TOKEN, other_version, report_file)
    rebuilt = build_bundle(tmp_path / "r", store, metrics={"latency_budget_ms": 9.0})
    with pytest.raises(BadContentError, match="another build of mlp 1.0.0"):
        upload_blessing(fleet.url, TOKEN, rebuilt, report_file)
    assert fleet.received == []


def test_report_with_wrong_hardware_class_is_refused(fleet: FakeFleet, good_bundle: Path,
                                                     report_file: Path) -> None:
    d = json.loads(report_file.read_text())
    d["hardware"] = "cuda"
    report_file.write_text(json.dumps(d))
    with pytest.raises(BadContentError, match="names hardware class 'cuda'"):
        upload_blessing(fleet.url, TOKEN, good_bundle, report_file)


@pytest.mark.parametrize(("status", "error", "words"), [
    (404, BlessingRejectedError, r"HTTP 404\): no bundle mlp@1.0.0"),
    (422, BlessingRejectedError, r"HTTP 422\): no bundle mlp@1.0.0"),
    (503, TransportError, r"fleet manager failed \(HTTP 503\)"),
])
def test_manager_refusals_map_to_the_error_tree(fleet: FakeFleet, good_bundle: Path,
                                                report_file: Path, status: int,
                                                error: type[Exception], words: str) -> None:
    fleet.status, fleet.answer = status, {"error": "no bundle mlp@1.0.0", "hint": "publish it"}
    with pytest.raises(error, match=words) as info:
        upload_blessing(fleet.url, TOKEN, good_bundle, report_file)
    if status < 500:
        assert getattr(info.value, "hint", None) == "publish it"


def test_bad_token_is_a_config_error(fleet: FakeFleet, good_bundle: Path,
                                     report_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"HTTP 401\): invalid token"):
        upload_blessing(fleet.url, "wrong", good_bundle, report_file)
    with pytest.raises(ConfigError, match="no fleet API token"):
        upload_blessing(fleet.url, "", good_bundle, report_file)


def test_unreachable_manager_is_a_transport_error(good_bundle: Path, report_file: Path) -> None:
    with socket.socket() as s:                      # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransportError, match="cannot reach the fleet manager"):
        upload_blessing(f"http://127.0.0.1:{port}", TOKEN, good_bundle, report_file)


def test_non_json_answer_is_a_transport_error(fleet: FakeFleet, good_bundle: Path,
                                              report_file: Path) -> None:
    fleet.answer = ["not", "an", "object"]  # type: ignore[assignment]
    with pytest.raises(TransportError, match="not an object"):
        upload_blessing(fleet.url, TOKEN, good_bundle, report_file)


def test_bad_inputs(good_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not an http"):
        blessing_url("ftp://x", "a", "1.0.0")
    with pytest.raises(UsageError, match="does not exist"):
        upload_blessing("http://127.0.0.1:9", TOKEN, good_bundle, tmp_path / "absent.json")
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    with pytest.raises(InvalidReportError, match="not valid JSON"):
        upload_blessing("http://127.0.0.1:9", TOKEN, good_bundle, junk)
    assert blessing_url("https://m:8443/", "a b", "1.0.0") == (
        "https://m:8443/api/v1/bundles/a%20b/1.0.0/blessings")

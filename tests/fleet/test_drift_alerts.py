"""Drift monitors and webhooks: transitions announced once, CloudEvents signed with HMAC, retried
with backoff, recorded per attempt, kept across a restart. Deliveries go to a REAL local HTTP
receiver (http.server on a free loopback port); stores are SQLite and PostgreSQL (``store``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeops.drift.sketch_codec import PACKED_FIELD
from edgeops.errors import UsageError
from edgeops.keys import KeyStore
from fleet.api import openapi_document
from fleet.client import FleetClient
from fleet.drift.alerts import DriftAlerts, alert_store, monitor_view, parse_monitor
from fleet.drift.intake import SketchIntake
from fleet.drift.monitor import MonitorPolicy
from fleet.drift.webhook_sender import WebhookSender
from fleet.drift.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    TYPE_DETECTED,
    TYPE_RESOLVED,
    TYPE_RETRAIN,
    RetryPolicy,
    sign,
    verify,
)
from fleet.errors import ConflictError
from fleet.ingest import Ingest
from fleet.store import Store, open_store
from tests.fleet.live import LiveFleet, live_fleet, run_cli, wait_until
from tests.fleet.test_drift import NOW, REF, _enrol, _publish, _send, _sketch

SECRET = "s3cret-for-tests-0123456789"


class Receiver:
    """A real HTTP endpoint: answers the scripted statuses in turn (then the last), keeps
    every request's headers and body."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append((dict(self.headers.items()), body))
                status = outer.statuses.pop(0) if len(outer.statuses) > 1 else outer.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([200])
    yield r
    r.close()


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _drift(store: Store, scale: float = 1.6, windows: int = 3, first: int = 0,
           seq0: int = 0) -> None:
    """Sketches of the two Lyon cameras; ``scale`` > 1: their inputs' spread grew."""
    ing = Ingest(store, sketches=SketchIntake(store, clock=lambda: NOW))
    rng = np.random.default_rng(9 + first)
    seq = seq0
    for w in range(first, first + windows):
        end = (int(NOW // REF.window_s) - 6 + w) * REF.window_s + 1
        for dev in ("cam-1", "cam-2"):
            seq += 1
            _send(ing, dev, [_sketch(dev, end, rng.normal(size=(150, 2)) * scale)], seq=seq)
    ing.flush()


def _monitor(store: Store, url: str, *, retrain: bool = False, secret: str | None = SECRET,
             name: str = "lyon") -> None:
    hook: dict[str, Any] = {"url": url} | ({"secret": secret} if secret else {})
    rec, _ = parse_monitor({"name": name, "cohort": "city=lyon", "retrain": retrain,
                            "webhooks": [hook]}, now=NOW, created_by="test")
    alert_store(store).add_monitor(rec)


@pytest.fixture
def fleet(store: Store) -> Store:
    _enrol(store)
    _publish(store)
    return store


def _sender(store: Store, clock: Clock, **policy: Any) -> WebhookSender:
    return WebhookSender(alert_store(store), clock=clock, rand=lambda: 0.5,
                         policy=RetryPolicy(**({"base_s": 2.0, "timeout_s": 5.0} | policy)))


def test_alarm_delivers_signed_cloudevents_and_retrain(fleet: Store,
                                                       receiver: Receiver) -> None:
    _monitor(fleet, receiver.url, retrain=True)
    _drift(fleet)
    assert DriftAlerts(fleet, clock=lambda: NOW).evaluate() == 2     # data and prediction
    clock = Clock()
    assert _sender(fleet, clock).run_once() == 4                     # 2 detected + 2 retrain
    assert len(receiver.requests) == 4
    for headers, body in receiver.requests:
        assert headers["Content-Type"].startswith("application/cloudevents+json")
        assert verify(SECRET, body, headers, now=NOW) is None
        assert verify("another-secret-0123456789", body, headers, now=NOW) is not None
        assert verify(SECRET, body + b" ", headers, now=NOW) == "signature does not match"
        assert verify(SECRET, body, headers, now=NOW + 3600) is not None        # replayed
        ts = int(headers[TIMESTAMP_HEADER])
        assert headers[SIGNATURE_HEADER] == sign(SECRET, ts, body)
    events = receiver.events()
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        assert e["specversion"] == "1.0" and e["datacontenttype"] == "application/json"
        assert e["source"] == "/edgeops/fleet/monitors/lyon" and e["time"].endswith("Z")
        by_type.setdefault(e["type"], []).append(e)
    detected = {e["data"]["side"]: e for e in by_type[TYPE_DETECTED]}
    assert set(detected) == {"data", "prediction"}
    d = detected["data"]
    assert d["subject"] == "vc@1.0.0/data" and d["data"]["in_alarm"] is True
    assert d["data"]["cohort"] == "city=lyon" and d["data"]["devices"] == 2
    assert "input:x[0]" in [f["feature"] for f in d["data"]["features"]]
    retrain = {e["data"]["side"]: e for e in by_type[TYPE_RETRAIN]}
    r = retrain["data"]["data"]
    assert r["model"] == "vc" and r["bundle_version"] == "1.0.0" and r["capture_id"] is None
    assert "input:x[0]" in r["drifting_features"]
    assert r["window"]["start"] < r["window"]["end"]
    assert r["detected_event"] == d["id"]
    log = alert_store(fleet).list_deliveries(monitor="lyon")
    assert {x.state for x in log} == {"delivered"} and all(x.attempts == 1 for x in log)
    assert all(x.log[0].status_code == 200 and x.log[0].error is None for x in log)


def test_one_transition_is_announced_once(fleet: Store, receiver: Receiver) -> None:
    _monitor(fleet, receiver.url)
    _drift(fleet)
    first, second = DriftAlerts(fleet, clock=lambda: NOW), DriftAlerts(fleet, clock=lambda: NOW)
    assert first.evaluate() == 2
    assert first.evaluate() == 0 and second.evaluate() == 0    # a second manager, same store
    clock = Clock()
    sender = _sender(fleet, clock)
    assert sender.run_once() == 2 and sender.run_once() == 0
    assert len(receiver.requests) == 2
    (alarm, *_) = alert_store(fleet).alarm_states("lyon")
    assert alarm.in_alarm and alarm.status == "alarm" and alarm.drifting_windows == 3
    assert len(alert_store(fleet).alarm_history("lyon")) == 2


def test_recovery_sends_resolved(fleet: Store, receiver: Receiver) -> None:
    _monitor(fleet, receiver.url, retrain=True)
    _drift(fleet)
    alerts = DriftAlerts(fleet, clock=lambda: NOW)
    assert alerts.evaluate() == 2
    _drift(fleet, scale=1.0, windows=2, first=3, seq0=100)        # back to the reference
    assert alerts.evaluate() == 2
    _sender(fleet, Clock()).run_once()
    types = sorted(e["type"] for e in receiver.events())
    assert types == [TYPE_DETECTED] * 2 + [TYPE_RESOLVED] * 2 + [TYPE_RETRAIN] * 2
    hist = alert_store(fleet).alarm_history("lyon")
    assert [h.in_alarm for h in hist] == [False, False, True, True]      # newest first


def test_retries_after_500s_then_succeeds(fleet: Store) -> None:
    r = Receiver([500, 502, 200])
    try:
        _monitor(fleet, r.url)
        _drift(fleet, windows=3)
        DriftAlerts(fleet, clock=lambda: NOW).evaluate()
        clock = Clock()
        sender = _sender(fleet, clock, max_attempts=5)
        assert sender.run_once() == 2                    # both sides' events: 500 and 502
        assert sender.run_once() == 0                    # not due before the backoff
        clock.t += 1.4                                   # attempt 1 waits 1.5 s (2 s, jitter .5)
        assert sender.run_once() == 0
        clock.t += 0.2
        assert sender.run_once() == 2                    # 200 for the first, 200 (last) after
        log = alert_store(fleet).list_deliveries(monitor="lyon")
        assert {x.state for x in log} == {"delivered"}
        codes = sorted(tuple(a.status_code for a in x.log) for x in log)
        assert codes == [(500, 200), (502, 200)]
        assert all(x.log[1].at - x.log[0].at == pytest.approx(1.6) for x in log)
        ids = {json.loads(b)["id"] for _, b in r.requests}
        assert len(ids) == 2                             # a retry re-sends the same event id
    finally:
        r.close()


def test_gives_up_after_max_attempts_and_on_a_4xx(fleet: Store) -> None:
    r = Receiver([503])
    try:
        _monitor(fleet, r.url)
        _drift(fleet)
        DriftAlerts(fleet, clock=lambda: NOW).evaluate()
        clock = Clock()
        sender = _sender(fleet, clock, max_attempts=3)
        for _ in range(6):
            sender.run_once()
            clock.t += 100.0
        log = alert_store(fleet).list_deliveries(monitor="lyon")
        assert {x.state for x in log} == {"failed"} and {x.attempts for x in log} == {3}
        assert len(r.requests) == 6
        assert alert_store(fleet).list_deliveries(state="pending") == []
    finally:
        r.close()
    gone = Receiver([410])
    try:
        _monitor(fleet, gone.url, name="other")
        DriftAlerts(fleet, clock=lambda: NOW).evaluate()
        _sender(fleet, clock).run_once()
        log = alert_store(fleet).list_deliveries(monitor="other")
        assert {(x.state, x.attempts) for x in log} == {("failed", 1)}
    finally:
        gone.close()


def test_unreachable_receiver_is_recorded_as_an_error(fleet: Store) -> None:
    r = Receiver([200])
    url = r.url
    r.close()                                            # nothing listens there any more
    _monitor(fleet, url)
    _drift(fleet)
    DriftAlerts(fleet, clock=lambda: NOW).evaluate()
    _sender(fleet, Clock()).run_once()
    (x, *_) = alert_store(fleet).list_deliveries(monitor="lyon")
    assert x.state == "pending" and x.log[0].status_code is None
    assert x.log[0].error and "refused" in x.log[0].error.lower()


def test_pending_deliveries_survive_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    s = open_store(url, tmp_path / "data")
    _enrol(s)
    _publish(s)
    _monitor(s, receiver.url)
    _drift(s)
    DriftAlerts(s, clock=lambda: NOW).evaluate()
    clock = Clock()
    claimed = alert_store(s).claim_deliveries(clock(), 60.0, 1)   # sender dies mid-attempt
    assert len(claimed) == 1
    s.close()
    s2 = open_store(url, tmp_path / "data")                       # the manager restarts
    try:
        sender = _sender(s2, clock)
        assert sender.run_once() == 1                             # the unclaimed one
        clock.t += 61.0                                           # the dead claim's lease ends
        assert sender.run_once() == 1
        assert {x.state for x in alert_store(s2).list_deliveries()} == {"delivered"}
        assert len(receiver.requests) == 2
        assert DriftAlerts(s2, clock=lambda: NOW).evaluate() == 0  # state survived too
    finally:
        s2.close()


@pytest.mark.parametrize(("hook", "words"), [
    ({"url": "ftp://example.com/x"}, "not an http(s) URL"),
    ({"url": "http://"}, "not an http(s) URL"),
    ({"url": "https://user:pw@example.com/"}, "credentials"),
    ({"url": "https://exa mple.com/"}, "spaces"),
    ({"url": "https://example.com/", "secret": "short"}, "16-256 printable"),
    ({"url": "https://example.com/", "secret": "has spaces in the secret"}, "16-256 printable"),
    ({"url": 5}, "non-empty string"),
    ({"url": "https://example.com/", "extra": 1}, "secret optional"),
])
def test_bad_webhook_is_refused_at_creation(hook: dict[str, Any], words: str) -> None:
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
        parse_monitor({"name": "m", "cohort": "city=lyon", "webhooks": [hook]}, now=NOW,
                      created_by=None)
    assert "\n" not in e.value.message


@pytest.mark.parametrize(("body", "words"), [
    ({"name": "Bad Name"}, "monitor name"),
    ({"name": "m", "cohort": "city"}, "key=value"),
    ({"name": "m", "alpha": 2}, "alpha"),
    ({"name": "m", "alpha": True}, "alpha must be a number"),
    ({"name": "m", "correction": "holm"}, "correction"),
    ({"name": "m", "persistence": 0}, "persistence"),
    ({"name": "m", "retrain": "yes"}, "retrain"),
    ({"name": "m", "colour": "red"}, "unknown monitor field"),
    ([], "JSON object"),
])
def test_bad_monitor_is_refused(body: Any, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_monitor(body, now=NOW, created_by=None)


def test_monitor_crud_and_view_hides_secrets(fleet: Store) -> None:
    rec, generated = parse_monitor({"name": "m", "webhooks": [{"url": "https://e.example/h"}]},
                                   now=NOW, created_by="ops")
    (wid,) = generated
    assert len(generated[wid]) >= 32
    a = alert_store(fleet)
    a.add_monitor(rec)
    with pytest.raises(ConflictError):
        a.add_monitor(rec)
    view = monitor_view(a.list_monitors()[0])
    assert view["cohort"] == "all" and view["policy"]["alpha"] == MonitorPolicy().alpha
    assert "secret" not in json.dumps(view) and generated[wid] not in json.dumps(view)
    assert a.remove_monitor("m") and not a.remove_monitor("m")
    assert a.list_monitors() == []


# -- HTTP, CLI and the manager's background threads -----------------------------------------
@pytest.fixture
def live(keystore: KeyStore, tmp_path: Path) -> Iterator[LiveFleet]:
    with live_fleet(keystore, tmp_path) as lf:
        yield lf


def _live_drift(store: Store) -> None:
    """Three drifting windows of the Lyon cameras ending now (the manager's real clock)."""
    ing = Ingest(store, sketches=SketchIntake(store))
    now = time.time()
    rng = np.random.default_rng(3)
    seq = 0
    for w in range(3):
        end = min((int(now // REF.window_s) - 2 + w) * REF.window_s + 1, now)
        for dev in ("cam-1", "cam-2"):
            seq += 1
            _send(ing, dev, [_sketch(dev, end, rng.normal(size=(150, 2)) * 2)], seq=seq)
    ing.flush()


def test_cli_and_api_manage_monitors_and_the_manager_delivers(
        live: LiveFleet, receiver: Receiver, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    store = live.server.store
    _enrol(store)
    _publish(store)
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(SECRET + "\n")
    base = ["--fleet", live.url, "--token", live.admin]
    code, out, err = run_cli(capsys, "fleet", "monitor", "add", "lyon", "--cohort", "city=lyon",
                             "--webhook", receiver.url, "--secret-file", str(secret_file),
                             "--retrain", *base)
    assert code == 0, err
    assert "monitor lyon on cohort city=lyon: 1 webhook(s), retrain events" in out
    assert SECRET not in out                                  # given, so not echoed
    code, out, err = run_cli(capsys, "fleet", "monitor", "add", "gen", "--webhook",
                             "https://hooks.example.com/x", *base)
    assert code == 0 and "secret (shown once):" in out
    code, out, err = run_cli(capsys, "fleet", "monitor", "add", "bad", "--webhook",
                             "ftp://hooks.example.com/x", *base)
    assert code != 0 and "not an http(s) URL" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2                 # the line and its hint
    (tmp_path / "short").write_text("short")
    code, out, err = run_cli(capsys, "fleet", "monitor", "add", "bad", "--webhook",
                             receiver.url, "--secret-file", str(tmp_path / "short"), *base)
    assert code != 0 and "16-256 printable" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "fleet", "monitor", "list", "--json", *base)
    listed = json.loads(out)["items"]
    assert [m["name"] for m in listed] == ["gen", "lyon"] and SECRET not in out

    _live_drift(store)
    live.server.alerts.run_now()                   # the background loop would, within 60 s
    wait_until("4 deliveries", lambda: len(receiver.requests) >= 4, 30)
    assert all(verify(SECRET, b, h, now=time.time()) is None for h, b in receiver.requests)

    c = FleetClient(live.url, live.admin)
    got = c.request("GET", "/api/v1/drift/monitors/lyon")
    assert {(a["side"], a["in_alarm"]) for a in got["alarms"]} == {("data", True),
                                                                    ("prediction", True)}
    wait_until("delivered", lambda: all(
        d["state"] == "delivered" for d in c.request(
            "GET", "/api/v1/drift/deliveries", query={"monitor": "lyon"})["items"]), 30)
    code, out, err = run_cli(capsys, "fleet", "monitor", "deliveries", "--monitor", "lyon",
                             *base)
    assert code == 0 and out.count("delivered") == 4 and TYPE_RETRAIN in out
    assert "#1 " in out and " 200" in out
    code, out, err = run_cli(capsys, "fleet", "monitor", "alarms", *base)
    assert code == 0 and "ALARM" in out and "alarm started" in out
    with pytest.raises(UsageError, match="state="):
        c.request("GET", "/api/v1/drift/deliveries", query={"state": "lost"})
    paths = openapi_document()["paths"]
    assert {"/api/v1/drift/monitors", "/api/v1/drift/monitors/{name}",
            "/api/v1/drift/deliveries", "/api/v1/drift/alarms"} <= set(paths)
    code, out, err = run_cli(capsys, "fleet", "monitor", "rm", "lyon", *base)
    assert code == 0 and "removed monitor lyon" in out
    code, out, err = run_cli(capsys, "fleet", "monitor", "rm", "lyon", *base)
    assert code != 0 and "no drift monitor 'lyon'" in err
    assert c.request("GET", "/api/v1/drift/deliveries", query={"monitor": "lyon"}) == {
        "items": []}


# -- /metrics --------------------------------------------------------------------------------
def test_metrics_report_alarm_state_statistics_and_refusals(fleet: Store,
                                                            receiver: Receiver) -> None:
    from fleet.drift.metrics import MAX_FEATURES, drift_families
    from fleet.metrics import render
    from tests.console.test_metrics import parse

    _monitor(fleet, receiver.url)
    _drift(fleet)
    DriftAlerts(fleet, clock=lambda: NOW).evaluate()
    ing = Ingest(fleet, sketches=SketchIntake(fleet, clock=lambda: NOW))
    bad = _sketch("cam-1", NOW - 10, np.zeros((10, 2))) | {"counts": {"input:nope": [1]}}
    packed = {k: v for k, v in bad.items() if k != "counts"} | {PACKED_FIELD: "not base64!"}
    _send(ing, "cam-1", [bad, bad | {"device_id": "cam-2"}, packed], seq=999)
    ing.flush()
    samples = parse(render(drift_families(fleet, lambda: ing.stats.counts)))
    got = {(n, tuple(sorted(lab.items()))): v for n, lab, v in samples}
    key = (("bundle", "vc@1.0.0"), ("monitor", "lyon"), ("side", "data"))
    assert got[("edgeops_drift_alarm", key)] == 1
    assert got[("edgeops_drift_drifting_windows", key)] == 3
    assert got[("edgeops_drift_evaluated_timestamp_seconds", key)] == NOW
    fkey = (*key[:2], ("feature", "input:x[0]"), key[2])
    fkey = tuple(sorted(fkey))
    assert got[("edgeops_drift_feature_drift", fkey)] == 1
    assert got[("edgeops_drift_feature_p_adjusted", fkey)] < 0.01
    assert got[("edgeops_drift_feature_psi", fkey)] > 0.1
    assert 0 < got[("edgeops_drift_feature_js_distance", fkey)] <= 1
    refused = {dict(lab)["reason"]: v for n, lab, v in samples
               if n == "edgeops_drift_sketches_refused_total"}
    assert refused["unknown-feature"] == 1 and refused["device-mismatch"] == 1
    assert refused["bad-encoding"] == 1                            # packed counts, undecodable
    assert refused["stale-window"] == 0 and len(refused) == 10    # every reason, bounded
    per_side = [s for s in samples if s[0] == "edgeops_drift_feature_drift"]
    assert len(per_side) <= 2 * MAX_FEATURES
    # without an alert store or ingest counters: the families are there, empty or zero
    empty = parse(render(drift_families(object(), None)))
    assert {n for n, _, _ in empty} == {"edgeops_drift_sketches_refused_total"}


def test_manager_metrics_endpoint_has_drift_families(live: LiveFleet,
                                                     receiver: Receiver) -> None:
    store = live.server.store
    _enrol(store)
    _publish(store)
    c = FleetClient(live.url, live.admin)
    c.request("POST", "/api/v1/drift/monitors",
              body={"name": "lyon", "cohort": "city=lyon",
                    "webhooks": [{"url": receiver.url, "secret": SECRET}]})
    _live_drift(store)
    live.server.alerts.alerts.evaluate()
    live.server.services.ingest_counts = lambda: {"drift_sketch:refused:bins-mismatch": 4}
    text = c.request("GET", "/metrics", raw=True).decode()
    assert 'edgeops_drift_alarm{bundle="vc@1.0.0",monitor="lyon",side="data"} 1' in text
    assert 'edgeops_drift_sketches_refused_total{reason="bins-mismatch"} 4' in text
    assert "# TYPE edgeops_devices gauge" in text                 # the rest is still there


def test_the_receiver_in_the_docs_verifies_a_real_delivery(
        fleet: Store, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "DRIFT.md").read_text()
    snippet = text.split("A receiver (standard library only")[1].split("```python\n")[1]
    snippet = snippet.split("```")[0]
    scope: dict[str, Any] = {}
    exec(compile(snippet, "docs/DRIFT.md", "exec"), scope)  # noqa: S102 - our own docs
    _monitor(fleet, receiver.url)
    _drift(fleet)
    DriftAlerts(fleet, clock=lambda: NOW).evaluate()
    _sender(fleet, Clock()).run_once()
    monkeypatch.setattr(time, "time", lambda: NOW + 5)      # the receiver's clock, 5 s later
    headers, body = receiver.requests[0]
    assert scope["verify"](SECRET.encode(), body, headers)
    assert not scope["verify"](SECRET.encode(), body.replace(b"lyon", b"paris"), headers)
    assert not scope["verify"](b"wrong-secret-0123456789", body, headers)
    old = headers | {TIMESTAMP_HEADER: str(int(NOW) - 600)}
    assert not scope["verify"](SECRET.encode(), body, old)


def test_the_store_decides_transitions_on_its_own_state(fleet: Store) -> None:
    from fleet.store._drift_alerts import AlarmState, OutgoingEvent

    _monitor(fleet, "https://hooks.example.com/x")
    a = alert_store(fleet)

    def state(in_alarm: bool | None, t: float) -> AlarmState:
        return AlarmState("lyon", "vc@1.0.0", "data", in_alarm, t, "x", 0, [], t)

    def ev(i: str) -> list[OutgoingEvent]:
        return [OutgoingEvent(i, TYPE_DETECTED, b"{}")]

    assert a.update_alarm(state(None, 1.0), ev("e0"), {}) is False      # first: not in alarm
    assert a.update_alarm(state(True, 2.0), ev("e1"), {}) is True
    assert a.update_alarm(state(True, 3.0), ev("e2"), {}) is False      # a second announcer
    assert a.update_alarm(state(None, 4.0), ev("e3"), {}) is False      # "keep": no flip
    (now,) = a.alarm_states("lyon")
    assert now.in_alarm and now.since == 2.0 and now.evaluated_at == 4.0
    assert a.update_alarm(state(False, 5.0), ev("e4"), {}) is True
    assert [d.event_id for d in a.list_deliveries("lyon")] == ["e4", "e1"]
    with pytest.raises(UsageError, match="side"):
        a.update_alarm(AlarmState("lyon", "b", "both", True, 1, "x", 0, [], 1), [], {})
    assert a.update_alarm(AlarmState("gone", "b", "data", True, 1, "x", 0, [], 1), ev("e5"),
                          {}) is False                                   # removed monitor


def test_a_restarted_manager_finishes_pending_deliveries(keystore: KeyStore,
                                                         tmp_path: Path) -> None:
    r = Receiver([503, 200])
    try:
        with live_fleet(keystore, tmp_path) as first:
            store = first.server.store
            _enrol(store)
            _publish(store)
            FleetClient(first.url, first.admin).request(
                "POST", "/api/v1/drift/monitors",
                body={"name": "lyon", "cohort": "city=lyon",
                      "webhooks": [{"url": r.url, "secret": SECRET}]})
            _live_drift(store)
            first.server.alerts.run_now()
            wait_until("a first attempt", lambda: any(
                d.attempts for d in alert_store(first.server.store).list_deliveries()), 30)
        # the manager is gone with at least one delivery pending (503, retried in 5-10 s)
        with live_fleet(keystore, tmp_path) as second:
            pending = alert_store(second.server.store).list_deliveries(state="pending")
            assert pending, "nothing was left pending by the first manager"
            wait_until("delivered by the restarted manager", lambda: all(
                d.state == "delivered"
                for d in alert_store(second.server.store).list_deliveries()), 60)
            log = alert_store(second.server.store).list_deliveries()
            assert any([a.status_code for a in d.log] == [503, 200] for d in log)
            assert len({json.loads(b)["id"] for _, b in r.requests}) == 2    # one per side
    finally:
        r.close()


def test_the_retrain_event_suggests_an_open_capture_on_the_cohort(fleet: Store,
                                                                  receiver: Receiver) -> None:
    from fleet.store._captures import CaptureRecord

    def capture(cid: str, selector: str, status: str = "open", until: float = NOW + 3600,
                created: float = NOW - 60) -> CaptureRecord:
        return CaptureRecord(cid, selector, 0.1, 1 << 20, 1 << 20, 1 << 16, until, status,
                             ("cam-1",), created)

    fleet.create_capture(capture("c-other", "city=paris"))                  # type: ignore[attr-defined]
    fleet.create_capture(capture("c-gone", "city=lyon", until=NOW - 1))     # type: ignore[attr-defined]
    fleet.create_capture(capture("c-lyon", "city=lyon", created=NOW - 30))  # type: ignore[attr-defined]
    _monitor(fleet, receiver.url, retrain=True)
    _drift(fleet)
    DriftAlerts(fleet, clock=lambda: NOW).evaluate()
    _sender(fleet, Clock()).run_once()
    retrain = [e for e in receiver.events() if e["type"] == TYPE_RETRAIN]
    assert retrain and {e["data"]["capture_id"] for e in retrain} == {"c-lyon"}

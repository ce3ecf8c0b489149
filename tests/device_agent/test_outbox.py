"""The agent's end-to-end outbox, without a network: a fake publish and a hand-driven clock."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from device_agent.outbox import AckSettings, Outbox, StateOutbox
from device_agent.telemetry import DurableQueue
from edgeops.protocol import Ack, MessageError, StateReport, topics

DEV = "cam-1"


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def parts(tmp_path: Path) -> tuple[Outbox, list[tuple[str, bytes]], _Clock, list[int]]:
    sent: list[tuple[str, bytes]] = []
    clock, gen = _Clock(), [1]
    state_q = StateOutbox(tmp_path / "s.db", 100, tmp_path / "last.json")
    tel_q = DurableQueue(tmp_path / "t.db", 100)
    box = Outbox(DEV, state_q, tel_q, lambda t, b: sent.append((t, b)), lambda: gen[0],
                 settings=AckSettings(timeout_s=1.0, max_timeout_s=4.0, jitter=0.0),
                 rng=random.Random(1), clock=clock)
    return box, sent, clock, gen


def _state(seq: int, dep: str | None = None, phase: str | None = None) -> bytes:
    from edgeops.protocol import DevicePhase

    return StateReport(DEV, seq, 1.0, DevicePhase(phase) if phase else None, dep, None, None,
                       None, {}).to_bytes()


def test_state_waits_for_the_ack_and_resends_with_backoff(parts: tuple) -> None:
    box, sent, clock, _gen = parts
    box.state_q.push(_state(1))
    box.state_q.push(_state(2))
    box.pump()
    assert [json.loads(b)["seq"] for t, b in sent if t.endswith("/state")] == [1]
    clock.t = 0.9
    box.pump()
    assert len(sent) == 1                        # not due yet
    for due in (1.0, 3.0, 7.0, 11.0):            # 1, 2, 4, then the 4 s ceiling
        clock.t = due
        box.pump()
    assert [json.loads(b)["seq"] for _, b in sent] == [1, 1, 1, 1, 1]
    box.on_ack(Ack("someone-else", state=5))     # not ours: ignored
    assert len(box.state_q) == 2
    box.on_ack(Ack(DEV, state=1))
    box.pump()
    assert len(box.state_q) == 1
    assert json.loads(sent[-1][1])["seq"] == 2   # the next one only after the ack


def test_reconnect_resends_at_once(parts: tuple) -> None:
    box, sent, _clock, gen = parts
    box.state_q.push(_state(1))
    box.pump()
    gen[0] = 2
    box.pump()
    assert len(sent) == 2 and box.resent == 1


def test_telemetry_batch_keeps_seq_and_records_across_a_restart(
        parts: tuple, tmp_path: Path) -> None:
    box, sent, clock, gen = parts
    box.telemetry_q.push_many([b'{"kind":"heartbeat","ts":1}', b'{"kind":"heartbeat","ts":2}'])
    box.pump()
    first = json.loads(sent[-1][1])
    box.telemetry_q.push(b'{"kind":"heartbeat","ts":3}')     # arrives after the send
    # the agent restarts: a new outbox over the same queue files sends the same batch
    box2 = Outbox(DEV, box.state_q, box.telemetry_q, lambda t, b: sent.append((t, b)),
                  lambda: gen[0], rng=random.Random(2), clock=clock)
    box2.pump()
    again = json.loads(sent[-1][1])
    assert (again["seq"], again["records"]) == (first["seq"], first["records"])
    box2.on_ack(Ack(DEV, telemetry=first["seq"] - 1))          # an older batch: not this one
    assert len(box2.telemetry_q) == 3
    box2.on_ack(Ack(DEV, telemetry=first["seq"]))
    assert len(box2.telemetry_q) == 1 and box2.telemetry_q.pinned_batch() is None
    box2.pump()
    nxt = json.loads(sent[-1][1])
    assert nxt["seq"] == first["seq"] + 1 and [r["ts"] for r in nxt["records"]] == [3]


def test_state_outbox_remembers_the_last_deployment_report(tmp_path: Path) -> None:
    q = StateOutbox(tmp_path / "s.db", 10, tmp_path / "last.json")
    assert q.last_report() is None
    q.push(_state(1, "d-1", "healthy"))
    q.push(_state(2))                        # no deployment: not remembered
    last = q.last_report()
    assert last is not None and (last["deployment_id"], last["phase"]) == ("d-1", "healthy")


def test_ack_round_trip_and_merge() -> None:
    a = Ack(DEV, state=3, fetch=("a" * 64,))
    b = Ack(DEV, state=2, telemetry=7, fetch=("b" * 64,))
    m = a.merge(b)
    assert (m.state, m.telemetry, m.fetch) == (3, 7, ("a" * 64, "b" * 64))
    assert Ack.from_bytes(m.to_bytes()) == m
    assert topics.device_topic(DEV, "ack").endswith("/cam-1/ack")
    with pytest.raises(MessageError):
        Ack.from_bytes(b'{"v":1,"type":"state","device_id":"x"}')
    with pytest.raises(MessageError):
        Ack.from_bytes(b'{"v":1,"type":"ack","device_id":"x","state":"1"}')
    with pytest.raises(MessageError):
        Ack.from_bytes(b'{"v":1,"type":"ack","device_id":"x","fetch":["short"]}')


class _Link:
    """A MessageLink that records fetch requests and delivers nothing (a dead manager)."""

    generation = 1

    def __init__(self) -> None:
        self.fetches: list[bytes] = []

    def subscribe(self, topic_filter: str) -> None:
        pass

    def unsubscribe(self, topic_filter: str) -> None:
        pass

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> object:
        if topic.endswith("/fetch"):
            self.fetches.append(payload)
        return None


def test_unacknowledged_fetch_is_sent_again_before_the_idle_timeout(tmp_path: Path) -> None:
    import threading
    import time

    from device_agent.tuf_client import DownloadLimits, MqttTufTransport

    link = _Link()
    limits = DownloadLimits(idle_timeout_s=60.0, fetch_ack_timeout_s=0.2, fetch_ack_max_s=0.4)
    tr = MqttTufTransport(link, DEV, tmp_path / "dl", limits)
    stop = threading.Event()

    def check() -> None:
        if stop.is_set():
            raise RuntimeError("stopped")

    tr.check = check
    sha = "cd" * 32
    def run() -> None:
        try:
            next(tr.download(sha), None)
        except RuntimeError:
            pass                            # stopped by the test

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while len(link.fetches) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(link.fetches) >= 3       # re-sent well before the 60 s idle timeout
        tr.on_ack((sha,))                   # a manager took it: no more re-sends
        time.sleep(0.3)
        n = len(link.fetches)
        time.sleep(1.0)
        assert len(link.fetches) == n
    finally:
        stop.set()
        t.join(5)

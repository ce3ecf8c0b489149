"""``Agent.stop()`` in the middle of a download: nothing escapes, the disk stays consistent.

Before the fix, ``stop`` closed the state outbox while the worker was still inside the download;
the worker then reported "cancelled" into a closed SQLite connection and died with
``sqlite3.ProgrammingError``. Now the threads stop first and whoever finishes last closes the
queues, the abandoned deployment is neither failed nor marked handled, and the retained
``desired`` command resumes it after the restart. Real broker, real TUF repository and keys,
real agent; the fake manager plays the fleet.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from device_agent.daemon import Agent
from device_agent.slots import SlotStore
from edgeops.protocol import StateReport
from tests.device_agent.net.agents import FleetRepo, agent_config, new_agent
from tests.device_agent.net.fake_manager import FakeManager
from tests.mosquitto import MosquittoBroker

pytestmark = pytest.mark.slow

DEV = "cam-17"
TERMINAL = {"healthy", "failed", "rolled-back"}


@pytest.fixture
def escaped(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """Exceptions that ended any thread during the test (threading.excepthook)."""
    seen: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def _outbox(data_dir: Path) -> list[StateReport]:
    """The state reports still queued on disk (each must parse)."""
    db = sqlite3.connect(str(data_dir / "state_outbox.db"))
    try:
        rows = db.execute("SELECT body FROM q ORDER BY id").fetchall()
    finally:
        db.close()
    return [StateReport.from_dict(json.loads(body)) for (body,) in rows]


def _deploy_desired(mgr: FakeManager) -> None:
    mgr.command(DEV, "deploy", {"deployment_id": "d1", "name": "classifier",
                                "version": "1.0.0", "target": "x86-cpu"}, channel="desired")


def _stop_mid_download(agent: Agent, mgr: FakeManager, timeout_s: float) -> None:
    mgr.answer = False                       # the download hangs waiting for chunks
    _deploy_desired(mgr)
    mgr.wait(lambda: mgr.fetches)            # the worker is inside the download now
    agent.stop(timeout_s=timeout_s)
    assert agent.closed.wait(10), "the worker never finished and closed the agent"


@pytest.mark.parametrize("timeout_s", [0.0, 5.0], ids=["stop-returns-first", "stop-waits"])
def test_stop_mid_download_then_restart_resumes(
        tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker, mgr: FakeManager,
        escaped: list[BaseException | None], caplog: pytest.LogCaptureFixture,
        timeout_s: float) -> None:
    cfg = agent_config(fr, tmp_path, DEV, broker.url)
    a = new_agent(cfg)
    a.start()
    assert a.conn.wait_connected(10)
    with caplog.at_level(logging.INFO, logger="device_agent"):
        _stop_mid_download(a, mgr, timeout_s)

    assert escaped == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("interrupted by stop" in r.getMessage() for r in caplog.records)
    # on disk: the outbox is readable, its seqs continue what was sent, nothing says "failed"
    queued = _outbox(cfg.data_dir)
    sent = [s["seq"] for s in mgr.states]
    net = json.loads((cfg.data_dir / "net_state.json").read_bytes())
    # every report is sent or still queued (both when its PUBACK was not in yet: at least
    # once, the manager drops repeats by seq), in order, and the persisted seq is the last
    assert sent == sorted(set(sent)) and [r.seq for r in queued] == sorted({r.seq for r in queued})
    assert set(sent) | {r.seq for r in queued} == set(range(1, net["state_seq"] + 1))
    phases = [s["phase"] for s in mgr.states] + [r.phase.value if r.phase else None
                                                 for r in queued]
    assert "downloading" in phases and not TERMINAL & set(phases)
    assert net["command_seq"] == 0            # not handled: the restart must run it again
    assert SlotStore(cfg.slots_dir).active() is None

    mgr.answer = True
    b = new_agent(cfg)
    b.start()
    try:
        final: dict[str, Any] = mgr.wait(lambda: next(
            (s for s in mgr.states if s["deployment_id"] == "d1" and s["phase"] in TERMINAL),
            None), 60)
        assert final["phase"] == "healthy" and final["active"]["version"] == "1.0.0"
        # nothing lost across the restart, and first seen in order (repeats are resends of
        # reports whose PUBACK the stop cut off)
        firsts = list(dict.fromkeys(s["seq"] for s in mgr.states))
        assert firsts == list(range(1, firsts[-1] + 1))
    finally:
        assert b.stop()
    assert escaped == []


def test_stop_twice_and_stop_after_close_are_harmless(
        tmp_path: Path, fr: FleetRepo, broker: MosquittoBroker, mgr: FakeManager,
        escaped: list[BaseException | None]) -> None:
    a = new_agent(agent_config(fr, tmp_path, DEV, broker.url))
    a.start()
    assert a.conn.wait_connected(10)
    assert a.stop() is True and a.closed.is_set()
    assert a.stop() is True
    assert escaped == []

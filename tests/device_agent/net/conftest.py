"""Fixtures for the agent networking tests: a real mosquitto per test on a free port, and the
daemon rig: a fleet with keys, a TUF repository and bundles (``fr``, one per test module) and the
fake manager serving it over that broker (``mgr``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.device_agent.net.agents import FleetRepo, make_fleet_repo
from tests.device_agent.net.fake_manager import FakeManager
from tests.device_agent.net.observer import Observer
from tests.mosquitto import MosquittoBroker, start_or_skip


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = start_or_skip(MosquittoBroker.untuned(tmp_path / "broker"))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def observer(broker: MosquittoBroker) -> Iterator[Observer]:
    o = Observer(broker.port)
    try:
        yield o
    finally:
        o.close()


@pytest.fixture(scope="module")
def fr(tmp_path_factory: pytest.TempPathFactory) -> FleetRepo:
    """Keys, TUF repository and the published test bundles (see ``make_fleet_repo``)."""
    return make_fleet_repo(tmp_path_factory.mktemp("fleet"))


@pytest.fixture
def mgr(broker: MosquittoBroker, fr: FleetRepo) -> Iterator[FakeManager]:
    """The fleet side: retained TUF metadata published, chunks of 256 bytes, signed commands."""
    m = FakeManager(broker.port, fr.repo, fr.fleet.manager, chunk_bytes=256)
    m.publish_metadata()
    yield m
    m.close()

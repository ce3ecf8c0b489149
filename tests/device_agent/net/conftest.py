"""Fixtures for the agent networking tests: a real mosquitto per test on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.device_agent.net.broker import MosquittoBroker
from tests.device_agent.net.observer import Observer


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(tmp_path / "broker").start()
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

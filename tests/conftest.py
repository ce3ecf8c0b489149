"""Suite-wide fixtures: real services (tests/services.py, tests/mosquitto.py) and an isolated
EDGEOPS_HOME."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mosquitto import MosquittoBroker, start_or_skip
from tests.services import postgres_database


@pytest.fixture()
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private Mosquitto on a free loopback port, anonymous, tuned for throughput."""
    broker = start_or_skip(MosquittoBroker(workdir=tmp_path / "broker"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A temporary PostgreSQL database (fails instead of skipping under EDGEOPS_REQUIRE_SERVICES)."""
    with postgres_database() as url:
        yield url


@pytest.fixture()
def edgeops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "edgeops-home"
    monkeypatch.setenv("EDGEOPS_HOME", str(home))
    return home

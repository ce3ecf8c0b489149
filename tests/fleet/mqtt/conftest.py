"""Fixtures for the manager's MQTT side: a real Mosquitto per test.

The broker comes from :mod:`tests.mosquitto` (shared by the whole suite). The
``store`` fixture (SQLite and PostgreSQL) and PostgreSQL helpers come from tests/fleet/. A test
that needs a service skips when it is missing, except under EDGEOPS_REQUIRE_SERVICES=1 (CI),
where it fails.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fleet.store import Device, Store
from tests.mosquitto import MosquittoBroker, start_or_skip


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    b = start_or_skip(MosquittoBroker())
    try:
        yield b
    finally:
        b.stop()


def enroll(store: Store, *ids: str, target: str = "x86-cpu", device_class: str = "camera"
           ) -> None:
    for i in ids:
        store.upsert_device(Device(i, device_class, target, {"city": "lyon"}, enrolled_at=1.0))

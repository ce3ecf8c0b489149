"""Fixtures for the manager's MQTT side: a real Mosquitto per test.

The broker comes from :mod:`tests.mosquitto` (shared by the whole suite). The
``store`` fixture (SQLite and PostgreSQL) and PostgreSQL helpers come from tests/fleet/. A test
that needs a service skips when it is missing, except under EDGEOPS_REQUIRE_SERVICES=1 (CI),
where it fails.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterable, Iterator

import pytest

from fleet.mqtt import Inbound, MqttConnection
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


def receive(conn: MqttConnection, n: int, timeout_s: float = 15.0) -> list[Inbound]:
    """Up to ``n`` messages from ``conn``'s inbound queue, waiting at most ``timeout_s``."""
    got: list[Inbound] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            got.append(conn.inbound.get(timeout=0.1))
    return got


class Acks:
    """The message ids the broker acknowledged: pass as ``on_published``, then wait on it."""

    def __init__(self) -> None:
        self.mids: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, mid: int) -> None:
        with self._lock:
            self.mids.add(mid)

    def missing(self, mids: Iterable[int], timeout_s: float) -> set[int]:
        """Of ``mids``, those still unacknowledged after waiting up to ``timeout_s``."""
        want = set(mids)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                left = want - self.mids
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.02)

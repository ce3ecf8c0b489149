"""Fixtures for the simulator tests: real keys and bundles (as tests/fleet), a real broker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeops.keys import KeyStore
from fleet.embedded_broker import EmbeddedBroker, find_mosquitto
from tests.edgeops.bundles import make_bundle, make_keystore


@pytest.fixture(scope="session")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("edgeops-home"))


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, keystore: KeyStore) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bundles")
    return {"1.0.0": make_bundle(d, keystore, version="1.0.0")}


@pytest.fixture
def mosquitto() -> Iterator[EmbeddedBroker]:
    """A real mosquitto on a free loopback port (the manager worker needs MQTT 5)."""
    if find_mosquitto() is None:
        if os.environ.get("EDGEOPS_REQUIRE_SERVICES") == "1":
            pytest.fail("mosquitto is not installed")
        pytest.skip("mosquitto is not installed")
    with EmbeddedBroker("mosquitto") as b:
        yield b

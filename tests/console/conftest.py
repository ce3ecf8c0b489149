"""Console fixtures: real keys and bundles, a real manager under uvicorn with a seeded fleet."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeops.keys import KeyStore
from fleet.api.auth import create_token
from tests.console.fleet_seed import SeededFleet, seed_fleet
from tests.edgeops.bundles import make_bundle, make_keystore
from tests.fleet.live import LiveFleet, live_fleet


@pytest.fixture(scope="session")
def console_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("console-keys"))


@pytest.fixture(scope="session")
def console_bundles(tmp_path_factory: pytest.TempPathFactory,
                    console_keys: KeyStore) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("console-bundles")
    return {"1.0.0": make_bundle(d, console_keys, version="1.0.0"),
            "1.1.0": make_bundle(d, console_keys, version="1.1.0", seed=1)}


@dataclass
class ConsoleFleet:
    live: LiveFleet
    seeded: SeededFleet
    viewer: str
    operator: str

    @property
    def url(self) -> str:
        return self.live.url


@pytest.fixture
def console_fleet(console_keys: KeyStore, console_bundles: dict[str, Path],
                  tmp_path: Path) -> Iterator[ConsoleFleet]:
    """A manager on loopback with 60 simulated devices, two deployments and telemetry."""
    with live_fleet(console_keys, tmp_path, tick_s=0.2) as lf:
        svc = lf.server.services
        seeded = seed_fleet(svc, console_keys, console_bundles)
        viewer, _ = create_token(svc.store, "viewer", "wall-screen")
        operator, _ = create_token(svc.store, "operator", "night-shift")
        yield ConsoleFleet(lf, seeded, viewer, operator)

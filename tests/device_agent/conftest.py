"""Fixtures for the agent-core tests: one real fleet key set per session, bundles per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.device_agent.bundles import Fleet, make_fleet


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return make_fleet(tmp_path_factory.mktemp("fleet-home"))


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")

"""Fixtures of the attack suite and its summary table (attack, expected, observed).

Each attack test calls ``attack(name, expected, observed)`` after it has *asserted* the
observation; the table printed at the end of the run is the evidence the issue asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet.pki import MANAGER_IDENTITY, FleetCA
from tests.security._services import Identity, SecureBroker

_RESULTS: list[tuple[str, str, str, str]] = []


@pytest.fixture
def attack(request: pytest.FixtureRequest) -> Callable[[str, str, str], None]:
    def record(name: str, expected: str, observed: str) -> None:
        _RESULTS.append((name, expected, observed, request.node.nodeid.split("::")[-1]))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RESULTS:
        return
    rows = [("attack", "expected", "observed")] + [(a, e, o) for a, e, o, _ in _RESULTS]
    widths = [min(max(len(r[i]) for r in rows), 60) for i in range(3)]
    tr = terminalreporter
    tr.section("attack suite summary")
    for i, row in enumerate(rows):
        tr.write_line("  ".join(c[:60].ljust(w) for c, w in zip(row, widths, strict=True)))
        if i == 0:
            tr.write_line("  ".join("-" * w for w in widths))


@pytest.fixture(scope="module")
def fleet_ca(tmp_path_factory: pytest.TempPathFactory) -> FleetCA:
    ca = FleetCA(tmp_path_factory.mktemp("ca") / "ca")
    ca.init()
    return ca


@pytest.fixture(scope="module")
def identities(fleet_ca: FleetCA, tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, tuple[Path, Path]]:
    """Manager and two devices, keys made locally (the CSR path is tested in test_enrolment)."""
    base = tmp_path_factory.mktemp("ids")
    out = {"manager": fleet_ca.issue_with_key(MANAGER_IDENTITY, base / "manager", kind="manager")}
    for dev in ("cam-1", "cam-2"):
        out[dev] = fleet_ca.issue_with_key(dev, base / dev, kind="device", basename="device")
    return out


@pytest.fixture(scope="module")
def secure_broker(fleet_ca: FleetCA, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[SecureBroker]:
    broker = SecureBroker(fleet_ca, tmp_path_factory.mktemp("broker"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def ident(secure_broker: SecureBroker, identities: dict[str, tuple[Path, Path]]
          ) -> Callable[[str], Identity]:
    """Identities on the generated broker: the manager on its listener (certificate and
    password), devices on theirs, granted on the broker as enrolment does."""
    secure_broker.grant(*(n for n in identities if n != "manager"))

    def make(name: str) -> Identity:
        key, cert = identities[name]
        if name == "manager":
            return secure_broker.manager_identity(cert, key)
        return secure_broker.identity(name, cert, key)

    return make

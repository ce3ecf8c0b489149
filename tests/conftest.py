"""Suite-wide fixtures: real services (tests/services.py, tests/mosquitto.py), an isolated
EDGEOPS_HOME, expensive shared artifacts built once per session, and the test tiers: every
test's markers set from what it uses (tests/tiers.py), never by hand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.mosquitto import MosquittoBroker, start_or_skip
from tests.services import postgres_database
from tests.tiers import markers_for, xdist_group_for

if TYPE_CHECKING:
    from edgeops.examples import ExampleModel


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


@pytest.fixture(scope="session")
def example_model(tmp_path_factory: pytest.TempPathFactory) -> ExampleModel:
    """The demo's vehicle classifier, really trained, once per session."""
    from edgeops.examples import make_vehicle_classifier

    return make_vehicle_classifier(tmp_path_factory.mktemp("example"))


@pytest.fixture(scope="session")
def broken_example_model(tmp_path_factory: pytest.TempPathFactory) -> ExampleModel:
    """The demo's broken classifier (really trained, first layer corrupted to Inf), trained
    once per session: training is the expensive part of the tests that use it."""
    from edgeops.examples import make_vehicle_classifier

    return make_vehicle_classifier(tmp_path_factory.mktemp("broken-example"), broken=True)


# -- tiers: markers from what a test uses (tests/tiers.py) ----------------------------------
@pytest.hookimpl(tryfirst=True)   # before xdist's own hook reads xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        funcs = [d[-1].func for d in defs
                 if d and getattr(d[-1].func, "__module__", "").startswith("tests")]
        have = {m.name for m in item.iter_markers()}
        for name in markers_for(getattr(item, "function", None),
                                getattr(item, "fixturenames", ()), funcs) - have:
            item.add_marker(getattr(pytest.mark, name))
        group = xdist_group_for(getattr(item, "fixturenames", ()))
        if group and "xdist_group" not in have:
            item.add_marker(pytest.mark.xdist_group(group))
        if getattr(config.option, "loadgroup", False):      # an xdist worker, --dist loadgroup
            _group_suffix(item)


def _group_suffix(item: pytest.Item) -> None:
    """What xdist's worker does for ``--dist loadgroup`` (``nodeid@group``, the scheduler's only
    view of a group), on pytest 9.2's structured ids: xdist 3.8 still assigns the legacy
    ``_nodeid``, which pytest 9.2 no longer reads, so every group was silently ignored and
    each worker built every session fixture again (pytest-dev/pytest-xdist#1386, open; its fix
    #1388 does this). Drop once xdist sets the id itself."""
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")})
    if not names or "@" in item.nodeid.rpartition("::")[2]:
        return
    from _pytest.nodeid import NodeId

    if isinstance(getattr(item, "_id", None), NodeId):
        item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")

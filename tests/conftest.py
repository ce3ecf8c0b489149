"""Suite-wide fixtures: real services (tests/services.py, tests/mosquitto.py), an isolated
EDGEOPS_HOME, expensive shared artifacts built once per session, and the test tiers: every
test's markers set from what it uses (tests/tiers.py), never by hand."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.mosquitto import MosquittoBroker, start_or_skip
from tests.services import postgres_database
from tests.tiers import markers_for, xdist_group_for

if TYPE_CHECKING:
    from edgeops.examples import ExampleModel


# -- the user's ~/.edgeops stays out of the suite ----------------------------------------
# Builds write perf decisions and layer-speed tables under $EDGEOPS_HOME/cache/perf. Shared
# (the real ~/.edgeops, or one home for every xdist worker), a concurrent build of the same
# model rewrote a cached decision between two builds of one test; and a run must not change
# what the user's own builds read. Each session (each xdist worker) gets its own home; a test
# that needs another sets it (edgeops_home, keys_home); cache hits within a worker stay.
_REAL_HOME = os.path.join(os.path.expanduser("~"), ".edgeops")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_escaped: list[str] = []       # writes into the real home this process saw, for the test


@pytest.fixture(scope="session", autouse=True)
def _session_edgeops_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("edgeops-home-session")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEOPS_HOME", str(home))
        yield home


def _in_real_home(path: object) -> bool:
    if isinstance(path, int):                      # a file descriptor: opened elsewhere
        return False
    try:
        full = os.path.abspath(os.fsdecode(path))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return full == _REAL_HOME or full.startswith(_REAL_HOME + os.sep)


def _write_into_real_home(event: str, args: tuple[object, ...]) -> str | None:
    """The path in the user's ~/.edgeops that audit ``event`` writes, else None (pure)."""
    if event == "open":                            # (path, mode, flags): builtin and os.open
        path, _, flags = args
        wrote = isinstance(flags, int) and flags & _WRITE_FLAGS
        return str(path) if wrote and _in_real_home(path) else None
    if event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.chmod"):
        return str(args[0]) if _in_real_home(args[0]) else None
    if event == "os.rename":                       # os.rename and os.replace: (src, dst, ...)
        return next((str(a) for a in args[:2] if _in_real_home(a)), None)
    return None


def _guard(event: str, args: tuple[object, ...]) -> None:
    """Audit hook (sys.addaudithook): refuse, and remember, a write into ~/.edgeops; an
    EDGEOPS_HOME a test forgot to set shows as its failure, never as the user's cache."""
    if event[0] not in "o":                       # cheap: every hook call passes here
        return
    path = _write_into_real_home(event, args)
    if path is not None:
        _escaped.append(path)
        raise PermissionError(f"tests may not write the user's {_REAL_HOME}: {path}")


def pytest_configure(config: pytest.Config) -> None:
    sys.addaudithook(_guard)                       # per process: each xdist worker too


def pytest_runtest_teardown(item: pytest.Item) -> None:
    if _escaped:
        paths = sorted(set(_escaped))
        _escaped.clear()
        pytest.fail(f"wrote into the user's {_REAL_HOME} (set EDGEOPS_HOME): "
                    f"{', '.join(paths[:5])}", pytrace=False)


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

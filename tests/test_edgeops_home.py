"""The suite never writes the user's ~/.edgeops (tests/conftest.py): each session (each xdist
worker) has its own EDGEOPS_HOME, and a write into ~/.edgeops is refused and fails the test
that made it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import conftest
from tests.conftest import _REAL_HOME, _write_into_real_home


def test_builds_cache_under_the_sessions_home_not_the_users(
        _session_edgeops_home: Path) -> None:
    from converters.tflite._fusion_perf import _cache_path
    from edgeops.config import edgeops_home

    assert os.environ["EDGEOPS_HOME"] == str(_session_edgeops_home)
    assert edgeops_home() == _session_edgeops_home != Path(_REAL_HOME)
    cache = _cache_path(1)                       # where a build's perf decision would land
    assert cache.is_relative_to(_session_edgeops_home), cache


def test_each_xdist_worker_has_its_own_home(_session_edgeops_home: Path) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    # tmp_path_factory's base directory is per worker (popen-gw0, ...) under xdist
    assert worker is None or worker in str(_session_edgeops_home), _session_edgeops_home


@pytest.mark.parametrize(("event", "args", "hit"), [
    ("open", (f"{_REAL_HOME}/cache/perf/x.json", "w", os.O_WRONLY | os.O_CREAT), True),
    ("open", (f"{_REAL_HOME}/cache/perf/.tmp", None, os.O_RDWR | os.O_EXCL), True),   # mkstemp
    ("open", (f"{_REAL_HOME}/keys/root.pem", "r", os.O_RDONLY), False),    # reading is fine
    ("open", (7, "w", os.O_WRONLY), False),                                # a descriptor
    ("os.mkdir", (_REAL_HOME, 0o777, -1), True),
    ("os.rename", ("/tmp/a", f"{_REAL_HOME}/cache/perf/x.json", -1, -1), True),  # os.replace
    ("os.remove", (f"{_REAL_HOME}/cache/perf/x.json", -1), True),
    ("open", (f"{_REAL_HOME}-other/x", "w", os.O_WRONLY), False),          # a sibling
    ("open", ("/tmp/x", "w", os.O_WRONLY), False),
])
def test_the_guard_sees_writes_into_the_real_home_only(event: str, args: tuple[object, ...],
                                                        hit: bool) -> None:
    assert (_write_into_real_home(event, args) is not None) is hit


def test_a_write_into_the_real_home_is_refused_and_remembered() -> None:
    target = Path(_REAL_HOME) / "cache" / "perf" / "written-by-a-test.json"
    try:
        with pytest.raises(PermissionError, match="tests may not write"):
            target.write_text("{}")
        assert conftest._escaped == [str(target)]
    finally:
        conftest._escaped.clear()                  # this test's own write: not a failure

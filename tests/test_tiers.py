"""The tier rule (tests/tiers.py): markers follow what the code uses, not what it imports."""

from __future__ import annotations

import subprocess
import sys

from tests.mosquitto import MosquittoBroker, running_broker
from tests.tiers import markers_for, xdist_group_for


def _spawns() -> None:
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def _calls_a_helper_that_spawns() -> None:
    _spawns()


def _starts_a_broker() -> None:
    with running_broker() as b:
        assert b.port


def _only_annotates(b: MosquittoBroker) -> int:
    return b.port


def _pure() -> int:
    return sum(range(3))


def _f(name: str):  # type: ignore[no-untyped-def]
    """A helper above by name: a test that named it directly would itself be marked by it."""
    return globals()[name]


def test_a_child_process_in_the_test_or_a_same_module_helper_is_subprocess() -> None:
    assert markers_for(_f("_spawns"), (), ()) == {"subprocess"}
    assert markers_for(_f("_calls_a_helper_that_spawns"), (), ()) == {"subprocess"}


def test_a_broker_started_in_a_fixture_marks_the_test() -> None:
    assert markers_for(_pure, ("broker",), (_f("_starts_a_broker"),)) == {"broker"}


def test_an_annotation_or_pure_code_marks_nothing() -> None:
    assert markers_for(_f("_only_annotates"), (), ()) == set()
    assert markers_for(_pure, ("tmp_path", "monkeypatch"), ()) == set()


def _trains() -> None:
    from edgeops.examples import make_vehicle_classifier

    make_vehicle_classifier  # noqa: B018 - named, not called: the rule reads names


def test_an_expensive_call_is_slow_wherever_it_is_imported() -> None:
    assert markers_for(_f("_trains"), (), ()) == {"slow"}


def test_expensive_fixtures_make_slow_tests_grouped_on_one_worker() -> None:
    assert markers_for(_pure, ("demo_run",), ()) == {"slow", "mlflow"}
    assert "postgres" in markers_for(_pure, ("pg_database",), ())
    assert xdist_group_for(("tmp_path", "good_run")) == "hw-suite-good-run"
    assert xdist_group_for(("tmp_path",)) is None

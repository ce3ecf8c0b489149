"""Test tiers: the markers a test gets from what it uses, so they cannot drift.

``tests/conftest.py`` calls :func:`markers_for` on every collected test. A test is in a tier
(``broker``, ``postgres``, ``mlflow``, ``browser``, ``subprocess``) when its own code, the code
of the fixtures it uses (``item.fixturenames`` is already the transitive closure) or the helper
functions those call in the same module name one of the things that start that service. Names
are read from the compiled code (``co_names``), so an import used only for a type annotation does
not count, and nothing is executed. ``slow`` comes from fixtures known to be expensive and from
calls known to be expensive (``SLOW_CALLS``: training the example model, the real-model zoo),
and hand-set marks on tests whose cost nothing else shows (a fuzzer, a large build in the body).

``make test-fast`` deselects every tier: what is left runs in-process, without services.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["FIXTURE_MARKS", "SERVICE_NAMES", "SLOW_CALLS", "SLOW_FIXTURES", "TIERS",
           "XDIST_GROUPS", "markers_for", "xdist_group_for"]

# What a test's code names when it starts each service (the starters in tests/ and product code).
SERVICE_NAMES: dict[str, frozenset[str]] = {
    "broker": frozenset({"MosquittoBroker", "running_broker", "start_or_skip", "EmbeddedBroker",
                         "SecureBroker", "AmqttBroker",
                         "_Stack"}),         # the demo's broker, manager and fleet, in-process
    "postgres": frozenset({"postgres_database", "temporary_database", "pg_database"}),
    "mlflow": frozenset({"LocalMlflowServer"}),
    "browser": frozenset({"sync_playwright"}),
    "subprocess": frozenset({"subprocess", "Popen", "Zygote"}),   # Zygote: forked kill-test children
}

# Fixtures whose service runs out of sight (inside a child process), so no name shows it.
FIXTURE_MARKS: dict[str, frozenset[str]] = {
    "demo_run": frozenset({"mlflow"}),         # `edgeops demo --mlflow` starts its own server
}

# Session or module fixtures whose first use costs seconds (a trained model, a suite run).
SLOW_FIXTURES = frozenset({"good_run", "demo_run", "example_model", "broken_example_model",
                           "exported", "mlflow_server"})

# Functions whose call costs seconds: training the example model, fetching (PyPI, on first
# use) and loading the real-model zoo.
SLOW_CALLS = frozenset({"edgeops.examples.make_vehicle_classifier", "tests.realzoo.model_path",
                        "tests.realzoo_made.prequantised", "tests.realzoo_made.vad_16k",
                        "tests.realzoo_made.nucleus_seg"})

# Session fixtures worth computing once: under ``pytest -n N --dist loadgroup`` every test
# using one goes to the same worker (xdist would otherwise build it once per worker).
XDIST_GROUPS: dict[str, str] = {
    "demo_run": "demo",
    "good_run": "hw-suite-good-run",
    "built_bundle": "hw-suite-built-bundle",
    "example_model": "example-model",
    "broken_example_model": "example-model",
    "exported": "skl2onnx-exports",          # tests/converters/test_exporters.py
    "mlflow_server": "mlflow-server",        # tests/registry: `mlflow server` starts in ~20 s
}

TIERS = ("broker", "postgres", "mlflow", "browser", "subprocess", "slow")


def _code_names(code: types.CodeType, seen: set[types.CodeType]) -> Iterable[str]:
    """Global and attribute names used by ``code`` and the functions nested in it."""
    if code in seen:
        return
    seen.add(code)
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const, seen)


def _names_used(func: Callable[..., Any], depth: int = 3) -> set[str]:
    """Names ``func`` uses, following calls into functions of its own module ``depth`` deep.

    Besides bare names, every name that resolves to a function in the caller's module globals
    is also given as ``module.qualname``, so a rule can name one function exactly."""
    names: set[str] = set()
    seen: set[types.CodeType] = set()
    todo: list[tuple[Any, int]] = [(func, 0)]
    while todo:
        f, level = todo.pop()
        f = getattr(f, "__wrapped__", f)
        code = getattr(f, "__code__", None)
        if code is None or code in seen:
            continue
        found = set(_code_names(code, seen))
        names |= found
        module_globals = getattr(f, "__globals__", {})
        for name in found:
            target = module_globals.get(name)
            if isinstance(target, types.FunctionType):
                names.add(f"{target.__module__}.{target.__qualname__}")
            if level >= depth:
                continue
            if isinstance(target, types.FunctionType) and target.__module__ == f.__module__:
                todo.append((target, level + 1))
            elif isinstance(target, type) and target.__module__ == f.__module__:
                todo.extend((m, level + 1) for m in vars(target).values()
                            if isinstance(m, types.FunctionType))
    return names


_CACHE: dict[Any, set[str]] = {}


def _cached_names(func: Callable[..., Any]) -> set[str]:
    key = getattr(func, "__code__", func)
    if key not in _CACHE:
        _CACHE[key] = _names_used(func)
    return _CACHE[key]


def markers_for(function: Callable[..., Any] | None, fixturenames: Iterable[str],
                fixture_funcs: Iterable[Callable[..., Any]]) -> set[str]:
    """The tier markers for one test: its function, its fixtures' names and their functions."""
    names: set[str] = set()
    if function is not None:
        names |= _cached_names(function)
    for f in fixture_funcs:
        names |= _cached_names(f)
    fixtures = set(fixturenames)
    marks = {tier for tier, starters in SERVICE_NAMES.items() if names & starters}
    if fixtures & SERVICE_NAMES["postgres"]:
        marks.add("postgres")
    if fixtures & SLOW_FIXTURES or names & SLOW_CALLS or any(
            {mod, fn} <= names for mod, _, fn in (q.rpartition(".") for q in SLOW_CALLS)):
        marks.add("slow")       # called through a module global, or imported in the body
    for name in fixtures & FIXTURE_MARKS.keys():
        marks |= FIXTURE_MARKS[name]
    return marks


def xdist_group_for(fixturenames: Iterable[str]) -> str | None:
    """The xdist group of a test that uses an expensive session fixture (first one wins)."""
    for name in fixturenames:
        if name in XDIST_GROUPS:
            return XDIST_GROUPS[name]
    return None

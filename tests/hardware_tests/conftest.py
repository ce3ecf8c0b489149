"""Fixtures for testing the hardware suite: a real key store, real bundles, a suite runner.

What is tested is what a person or ``edgeops fleet bless`` gets from ``pytest hardware_tests
--bundle FILE ...``: the exit code, the one-line messages, the JUnit XML and the JSON/Markdown
report. The suite's own work on a test bundle takes a fraction of a second; a child process
costs seconds of interpreter start and imports, so ``run_suite`` runs it in this process
(``pytest.main`` on the suite's directory with the device's arguments, streams and environment
isolated as in tests/clirun.py). Run as a device runs it, in a child process: ``good_run`` (the
``pytest hardware_tests`` entry point, session-scoped), ``run_suite(..., module=True)`` (the
``python -m hardware_tests`` entry point) and ``run_suite(..., process=True)`` where the figure
is per process (peak memory grows from a fresh process's baseline). The children start without
this checkout's dev plugins (hypothesis, schemathesis, xdist; ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``),
as on a device, where only the suite's own dependencies are installed: importing them was most
of each child's start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import hardware_tests
from edgeops.keys import KeyStore
from tests.hardware_tests.bundles import build_bundle, make_keystore

SUITE_DIR = Path(hardware_tests.__file__).parent
FAST = ["--latency-runs", "20", "--stability-runs", "40"]


@dataclass
class SuiteRun:
    """One run of the hardware suite and everything it left behind."""

    returncode: int
    output: str
    report_path: Path
    junit_path: Path

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.report_path.read_text())
        return data

    @property
    def markdown(self) -> str:
        return self.report_path.with_suffix(".md").read_text()

    def junit_cases(self) -> dict[str, ET.Element]:
        root = ET.parse(self.junit_path).getroot()  # noqa: S314 - pytest wrote it in this test
        return {c.attrib["name"]: c for c in root.iter("testcase")}

    def check(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = next(c for c in self.report["checks"] if c["name"] == name)
        return found


# Variables that would change what the suite tests, or how pytest runs, if inherited.
_INHERITED = ("EDGEOPS_BUNDLE", "EDGEOPS_TARGET", "PYTEST_ADDOPTS")


def suite_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"    # a device has none of the dev plugins ...
    env["PYTEST_PLUGINS"] = "pytest_timeout"        # ... and this checkout's ini names `timeout`
    return env


def _in_process(args: list[str], cwd: Path) -> tuple[int, str]:
    """``pytest.main(args)`` here: exit code and stdout + stderr.

    The inner run must not touch the outer test's alarm (``-p no:timeout``: pytest-timeout's
    signal timer is per process); its own pytest state lives in its own ``Config``."""
    from tests.clirun import run_main

    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(_INHERITED)}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        res = run_main(pytest.main, [*args, "-p", "no:timeout",   # so its ini key is unknown
                                     "-W", "ignore:Unknown config option"], env=env)
    return res.returncode, res.stdout + res.stderr


@pytest.fixture
def run_suite(tmp_path: Path) -> Callable[..., SuiteRun]:
    """The suite on ``bundle`` with ``args``: in this process, or (``process``, ``module``) in a
    child process, through ``pytest`` or (``module``) ``python -m hardware_tests``."""
    counter = iter(range(1000))

    def run(bundle: Path | None, *args: str, module: bool = False,
            process: bool = False) -> SuiteRun:
        n = next(counter)
        report, junit = tmp_path / f"report{n}.json", tmp_path / f"junit{n}.xml"
        tail = ["-q", "--report", str(report), f"--junitxml={junit}", *FAST, *args]
        if bundle is not None:
            tail += ["--bundle", str(bundle)]
        if not (module or process):
            code, output = _in_process([str(SUITE_DIR), "-p", "no:cacheprovider", *tail],
                                       tmp_path)
            return SuiteRun(code, output, report, junit)
        head = ([sys.executable, "-m", "hardware_tests"] if module
                else [sys.executable, "-m", "pytest", str(SUITE_DIR), "-p", "no:cacheprovider"])
        proc = subprocess.run([*head, *tail], capture_output=True, text=True, timeout=240,
                              cwd=tmp_path, env=suite_env(), check=False)
        return SuiteRun(proc.returncode, proc.stdout + proc.stderr, report, junit)

    return run


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="session")
def good_bundle(tmp_path_factory: pytest.TempPathFactory, store: KeyStore) -> Path:
    return build_bundle(tmp_path_factory.mktemp("good"), store)


@pytest.fixture(scope="session")
def good_run(tmp_path_factory: pytest.TempPathFactory, good_bundle: Path, store: KeyStore
             ) -> SuiteRun:
    """The suite on a good bundle, signature checked with the real targets key."""
    tmp = tmp_path_factory.mktemp("goodrun")
    report, junit = tmp / "report.json", tmp / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", str(SUITE_DIR), "-p", "no:cacheprovider", "-q",
           "--bundle", str(good_bundle), "--report", str(report), f"--junitxml={junit}",
           "--key", str(store.dir / "targets.pub.json"), *FAST]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp, env=suite_env(),
                          check=False)
    return SuiteRun(proc.returncode, proc.stdout + proc.stderr, report, junit)

"""Fixtures for testing the hardware suite: a real key store, real bundles, a suite runner.

The suite is run the way a device runs it, in a subprocess (``python -m pytest hardware_tests
--bundle FILE ...``), so what is tested is the exit code, the one-line messages, the JUnit XML
and the JSON/Markdown report a person or ``edgeops fleet bless`` would get.
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


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EDGEOPS_BUNDLE", "EDGEOPS_TARGET", "PYTEST_ADDOPTS"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture
def run_suite(tmp_path: Path) -> Callable[..., SuiteRun]:
    counter = iter(range(1000))

    def run(bundle: Path | None, *args: str, module: bool = False) -> SuiteRun:
        n = next(counter)
        report, junit = tmp_path / f"report{n}.json", tmp_path / f"junit{n}.xml"
        head = ([sys.executable, "-m", "hardware_tests"] if module
                else [sys.executable, "-m", "pytest", str(SUITE_DIR), "-p", "no:cacheprovider"])
        cmd = [*head, "-q", "--report", str(report), f"--junitxml={junit}", *FAST, *args]
        if bundle is not None:
            cmd += ["--bundle", str(bundle)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                              env=_env(), check=False)
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
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp, env=_env(),
                          check=False)
    return SuiteRun(proc.returncode, proc.stdout + proc.stderr, report, junit)

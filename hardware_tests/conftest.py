"""The pytest plugin of the hardware suite: options, fixtures, markers and the report.

``pytest hardware_tests --bundle FILE [--target PROFILE]`` loads this file first (it sits in
the directory named on the command line), so the options exist before collection. The fixtures
turn every bad input into a one-line failure (``pytrace=False``); hardware this machine lacks
becomes a skip that names it. At the end, the verdicts and figures become the
:class:`~edgeops.blessing.HardwareReport` (``--report``/``--report-md``) and JUnit
properties (``--junitxml``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgeops.blessing import CheckResult, HardwareReport, write_report
from edgeops.bundle import ArtifactEntry
from edgeops.errors import EdgeOpsError
from hardware_tests.machine import machine_info, thermal_state
from hardware_tests.runtime import HardwareMissing, LoadedModel, load_model, runtime_versions
from hardware_tests.settings import HardwareSettings
from hardware_tests.suite import (
    Golden,
    RssTracker,
    SuiteContext,
    open_suite,
    output_names,
    synthetic_inputs,
)

T = TypeVar("T")
_HERE = Path(__file__).parent
_CTX = pytest.StashKey[SuiteContext]()
_RESULTS = pytest.StashKey[dict[str, CheckResult]]()
_THERMAL = pytest.StashKey[dict[str, Any]]()
_RECORD = pytest.StashKey["CheckRecord"]()
_NPU_CLASSES = frozenset({"qnn", "edgetpu", "ethos-u"})
_MARKERS = (
    "hardware: runs on the real target hardware",
    "gpu: needs an NVIDIA GPU with onnxruntime-gpu",
    "npu: needs an NPU delegate (QNN, Edge TPU, Ethos-U)",
)


@dataclass
class CheckRecord:
    """What a check reports beside pass/fail: its figures, and whether it had anything to test."""

    figures: dict[str, Any] = field(default_factory=dict)
    applicable: bool = True
    message: str = ""

    def not_applicable(self, message: str) -> None:
        """Nothing in the manifest to compare with: skip, and say so in the report."""
        self.applicable = False
        self.message = message
        pytest.skip(message)


# -- options ---------------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("edgeops-hardware", "edgeops hardware suite")
    env = os.environ.get
    g.addoption("--bundle", dest="hw_bundle", default=env("EDGEOPS_BUNDLE"),
                help="the .edgebundle to test (env EDGEOPS_BUNDLE)")
    g.addoption("--target", dest="hw_target", default=env("EDGEOPS_TARGET"),
                help="target profile to test; default: the one matching this machine")
    g.addoption("--provider", dest="hw_provider", default=None,
                help="execution provider that must run the model (default: the manifest's first)")
    g.addoption("--key", dest="hw_key", default=env("EDGEOPS_TARGETS_KEY"),
                help="targets public key (JSON) to check the bundle signature with")
    g.addoption("--report", dest="hw_report", default=None,
                help="write the JSON hardware report here (what `edgeops fleet bless` uploads)")
    g.addoption("--report-md", dest="hw_report_md", default=None,
                help="write the Markdown report here (default: --report with .md)")
    d = HardwareSettings()
    g.addoption("--latency-margin", dest="hw_latency_margin", type=float,
                default=d.latency_margin_ratio, help="allowed ratio over the manifest latency")
    g.addoption("--latency-slack-ms", dest="hw_latency_slack", type=float,
                default=d.latency_slack_ms, help="absolute latency slack on top of the margin")
    g.addoption("--memory-margin", dest="hw_memory_margin", type=float,
                default=d.memory_margin_ratio, help="allowed ratio over the manifest memory")
    g.addoption("--latency-runs", dest="hw_latency_runs", type=int, default=d.latency_runs)
    g.addoption("--stability-runs", dest="hw_stability_runs", type=int,
                default=d.stability_runs)
    g.addoption("--max-rss-growth-mib", dest="hw_max_rss_growth", type=float,
                default=d.max_rss_growth_mib)
    g.addoption("--threads", dest="hw_threads", type=int, default=None,
                help="intra-op threads (default: the manifest's latency figure's, else 1)")


def _suite_requested(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(str(arg).split("::")[0]).resolve()
        if path == _HERE or _HERE in path.parents:
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    for line in _MARKERS:
        config.addinivalue_line("markers", line)
    bundle = config.getoption("hw_bundle", default=None)
    if not bundle:
        if _suite_requested(config):
            raise pytest.UsageError("hardware_tests needs --bundle FILE (or EDGEOPS_BUNDLE): "
                                    "the bundle to test on this device")
        return
    try:
        settings = HardwareSettings(
            latency_margin_ratio=config.getoption("hw_latency_margin"),
            latency_slack_ms=config.getoption("hw_latency_slack"),
            memory_margin_ratio=config.getoption("hw_memory_margin"),
            latency_runs=config.getoption("hw_latency_runs"),
            stability_runs=config.getoption("hw_stability_runs"),
            max_rss_growth_mib=config.getoption("hw_max_rss_growth"),
            threads=config.getoption("hw_threads"))
    except ValueError as exc:
        raise pytest.UsageError(f"hardware_tests: {exc}") from None
    key = config.getoption("hw_key")
    ctx = open_suite(Path(bundle), settings, target=config.getoption("hw_target"),
                     provider=config.getoption("hw_provider"),
                     trusted_key=Path(key) if key else None)
    if ctx.target is not None:
        from edgeops.targets import PROFILES

        if ctx.target not in PROFILES:
            raise pytest.UsageError(f"hardware_tests: unknown target '{ctx.target}' (known: "
                                    f"{', '.join(sorted(PROFILES))})")
    config.stash[_CTX] = ctx
    config.stash[_RESULTS] = {}
    config.stash[_THERMAL] = {"before": thermal_state()}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # Collected by a run that did not ask for the suite (`pytest .`): stay out of it.
    if _CTX not in config.stash and (collection_path == _HERE or _HERE in collection_path.parents):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ctx = config.stash.get(_CTX, None)
    hardware = ctx.hardware if ctx is not None else ""
    for item in items:
        if _HERE not in Path(str(item.path)).parents:
            continue
        item.add_marker(pytest.mark.hardware)
        if hardware == "cuda":
            item.add_marker(pytest.mark.gpu)
        elif hardware in _NPU_CLASSES:
            item.add_marker(pytest.mark.npu)


# -- fixtures --------------------------------------------------------------------------------

def attempt(fn: Callable[[], T]) -> T:
    """``fn()``, or one failed line with its diagnostics when it raises an EdgeOpsError.

    The failure is raised after the ``except`` block has ended, so pytest shows the message
    alone rather than a chain of exceptions.
    """
    try:
        return fn()
    except EdgeOpsError as exc:
        problem = exc
    pytest.fail(problem.diagnostics(), pytrace=False)


@pytest.fixture(scope="session")
def hw(pytestconfig: pytest.Config, record_testsuite_property: Any) -> SuiteContext:
    """The bundle under test; a bundle that cannot be opened fails every check, in one line."""
    ctx = pytestconfig.stash[_CTX]
    record_testsuite_property("bundle_path", str(ctx.bundle_path))
    m = attempt(ctx.require_bundle).manifest
    for key, value in (("bundle", m.name), ("version", m.version),
                       ("manifest_sha256", ctx.manifest_sha256), ("target", ctx.target),
                       ("hardware", ctx.hardware)):
        record_testsuite_property(key, str(value))
    return ctx


@pytest.fixture(scope="session")
def artifact(hw: SuiteContext) -> ArtifactEntry:
    return attempt(hw.artifact)


@pytest.fixture(scope="session")
def artifact_file(hw: SuiteContext, artifact: ArtifactEntry,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("artifact")
    return attempt(lambda: hw.extract_artifact(directory))


@pytest.fixture(scope="session")
def golden(hw: SuiteContext, artifact: ArtifactEntry) -> Golden:
    return attempt(hw.golden)


@pytest.fixture(scope="session")
def rss() -> RssTracker:
    """Baseline taken before the model loads, so growth is the model's own."""
    return RssTracker()


@pytest.fixture(scope="session")
def loaded(hw: SuiteContext, artifact: ArtifactEntry, artifact_file: Path, rss: RssTracker
           ) -> tuple[LoadedModel, float]:
    """The model in its intended runtime and provider, and the load time in seconds."""
    threads = hw.settings.threads or int(_manifest_threads(artifact))
    start = time.perf_counter()
    missing = ""
    try:
        model = attempt(lambda: load_model(artifact_file, artifact, output_names(hw),
                                           threads=threads, provider=hw.provider))
    except HardwareMissing as exc:
        missing = str(exc)
    if missing:
        pytest.skip(f"hardware missing: {missing}")
    seconds = time.perf_counter() - start
    rss.sample()
    return model, seconds


@pytest.fixture(scope="session")
def model(loaded: tuple[LoadedModel, float]) -> LoadedModel:
    return loaded[0]


@pytest.fixture(scope="session")
def timing_inputs(hw: SuiteContext, artifact: ArtifactEntry) -> dict[str, Any]:
    """The first golden sample (a batch of one, as the build machine timed it), else synthetic
    inputs of the declared shapes."""
    try:
        return hw.golden().sample(0)
    except EdgeOpsError:
        return synthetic_inputs(hw.require_bundle().manifest.inputs)


@pytest.fixture
def check(request: pytest.FixtureRequest) -> CheckRecord:
    record = CheckRecord()
    request.node.stash[_RECORD] = record
    return record


def _manifest_threads(artifact: Any) -> float:
    from hardware_tests.checks import THREAD_KEYS, resolve_figure

    return resolve_figure(artifact.metrics, THREAD_KEYS) or 1


# -- results -----------------------------------------------------------------------------------

def _check_name(item: pytest.Item) -> str:
    return item.name.removeprefix("test_").split("[")[0]


def _message(report: pytest.TestReport) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple):                       # skip: (path, line, "Skipped: reason")
        return str(lr[2]).removeprefix("Skipped: ")
    crash = getattr(lr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).strip().removeprefix("Failed: ")
    text = str(lr or "").strip()
    return text.splitlines()[-1] if text else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _record(item, report)
    return report


def _record(item: pytest.Item, report: pytest.TestReport) -> None:
    results = item.config.stash.get(_RESULTS, None)
    if results is None or _HERE not in Path(str(item.path)).parents:
        return
    record = item.stash.get(_RECORD, CheckRecord())
    name = _check_name(item)
    previous = results.get(name)
    if report.when == "call" or report.outcome != "passed":
        if previous is not None and previous.outcome != "passed" and report.when == "teardown":
            return
        message = record.message if report.skipped and record.message else _message(report)
        if report.passed:
            message = record.message or "ok"
        results[name] = CheckResult(name=name, outcome=report.outcome, message=message,
                                    figures=dict(record.figures), applicable=record.applicable,
                                    duration_s=report.duration)
        # JUnit XML takes properties from the teardown report, which copies the item's.
        for key, value in record.figures.items():
            item.user_properties.append((f"{name}.{key}", str(value)))
        item.user_properties.append((f"{name}.verdict", results[name].label))


def build_report(config: pytest.Config) -> HardwareReport | None:
    """The report of this session, or ``None`` when the bundle could not even be opened."""
    ctx = config.stash.get(_CTX, None)
    if ctx is None or ctx.bundle is None or ctx.target is None:
        return None
    m = ctx.bundle.manifest
    results = config.stash[_RESULTS]
    settings = {**ctx.settings.to_dict(), "provider": ctx.provider,
                "signature_key": str(ctx.trusted_key) if ctx.trusted_key else None}
    return HardwareReport(
        bundle=m.name, version=m.version, manifest_sha256=ctx.manifest_sha256,
        target=ctx.target, hardware=ctx.hardware, checks=tuple(results.values()),
        machine=machine_info(), thermal=config.stash[_THERMAL], runtime=runtime_versions(),
        settings=settings, created=datetime.now(UTC).isoformat(timespec="seconds"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _CTX not in config.stash:
        return
    config.stash[_THERMAL]["after"] = thermal_state()
    json_path = config.getoption("hw_report")
    md_path = config.getoption("hw_report_md") or (
        str(Path(json_path).with_suffix(".md")) if json_path else None)
    report = build_report(config)
    if report is None:
        return
    write_report(report, Path(json_path) if json_path else None,
                 Path(md_path) if md_path else None)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config
                            ) -> None:
    ctx = config.stash.get(_CTX, None)
    if ctx is None:
        return
    report = build_report(config)
    tr = terminalreporter
    tr.section("edgeops hardware report")
    if report is None:
        problem = ctx.problem.diagnostics() if ctx.problem else "no target for this machine"
        tr.write_line(f"no report: {problem}")
        return
    tr.write_line(f"{report.bundle} {report.version} on {report.target} "
                  f"(hardware class {report.hardware}): "
                  f"{'PASSED' if report.passed else 'FAILED'}")
    for c in report.checks:
        tr.write_line(f"  {c.name:<10} {c.label:<15} {c.message}")
    for p in report.problems():
        if not any(p.startswith(f"{c.name} ") for c in report.checks):
            tr.write_line(f"  {p}")

"""The hardware report model: round trips, the one "passed" rule, and rejected files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeops.blessing import (
    REQUIRED_CHECKS,
    CheckResult,
    HardwareReport,
    InvalidReportError,
    render_markdown,
    write_report,
)

SHA = "ab" * 32
SCALARS = st.one_of(st.integers(-10**6, 10**6), st.text(max_size=20), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False, width=32))
FIGURES = st.dictionaries(st.text(min_size=1, max_size=10), SCALARS, max_size=4)
CHECK = st.builds(CheckResult, name=st.sampled_from((*REQUIRED_CHECKS, "extra")),
                  outcome=st.sampled_from(("passed", "failed", "skipped")),
                  message=st.text(max_size=40), figures=FIGURES, applicable=st.booleans(),
                  duration_s=st.floats(0, 100).map(lambda x: round(x, 4)))


def _report(*checks: CheckResult) -> HardwareReport:
    return HardwareReport(bundle="mlp", version="1.0.0", manifest_sha256=SHA, target="x86-cpu",
                          hardware="x86_64", checks=checks, created="2026-11-27T00:00:00+00:00")


def _all_passed(**override: CheckResult) -> HardwareReport:
    return _report(*(override.get(n, CheckResult(n, "passed", "ok")) for n in REQUIRED_CHECKS))


@settings(max_examples=60, deadline=None)
@given(checks=st.lists(CHECK, max_size=8))
def test_round_trip(checks: list[CheckResult]) -> None:
    report = _report(*checks)
    again = HardwareReport.from_bytes(report.to_bytes())
    assert again == report
    assert again.passed == report.passed


def test_all_required_checks_passing_blesses() -> None:
    assert _all_passed().passed


@pytest.mark.parametrize(("override", "reason"), [
    (CheckResult("golden", "failed", "differs"), "golden failed: differs"),
    (CheckResult("load", "skipped", "hardware missing: CUDA"), "load did not run"),
    (CheckResult("golden", "skipped", "n/a", applicable=False), "golden did not run"),
    (CheckResult("latency", "skipped", "runtime absent"), "latency did not run"),
])
def test_failures_and_skips_do_not_bless(override: CheckResult, reason: str) -> None:
    report = _all_passed(**{override.name: override})
    assert not report.passed
    assert any(p.startswith(reason) for p in report.problems())


def test_latency_and_memory_without_figures_still_bless_and_say_so() -> None:
    na = {n: CheckResult(n, "skipped", "no budget in manifest", applicable=False)
          for n in ("latency", "memory")}
    report = _all_passed(**na)
    assert report.passed
    assert "| latency | not applicable | no budget in manifest |" in render_markdown(report)


def test_missing_check_does_not_bless() -> None:
    report = _report(*(CheckResult(n, "passed") for n in REQUIRED_CHECKS if n != "stability"))
    assert "stability is missing from the report" in report.problems()


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda d: d.update(schema="other/v9"), "schema"),
    (lambda d: d.update(manifest_sha256="xyz"), "not a SHA-256 digest"),
    (lambda d: d.pop("target"), "missing field 'target'"),
    (lambda d: d["checks"].append("nope"), r"checks\[6\] is not an object"),
    (lambda d: d["checks"][0].update(outcome="great"), "unknown outcome 'great'"),
    (lambda d: d.update(passed=True), "claims passed=True"),
    (lambda d: d.update(machine=[1]), "machine is not an object"),
])
def test_malformed_or_tampered_reports_are_rejected(mutate: object, words: str) -> None:
    d = _all_passed(golden=CheckResult("golden", "failed", "x")).to_dict()
    assert callable(mutate)
    mutate(d)
    with pytest.raises(InvalidReportError, match=words):
        HardwareReport.from_bytes(json.dumps(d).encode())


def test_not_json_is_rejected() -> None:
    with pytest.raises(InvalidReportError, match="not valid JSON"):
        HardwareReport.from_bytes(b"\xff{")
    with pytest.raises(InvalidReportError, match="not a JSON object"):
        HardwareReport.from_bytes(b"[1]")


def test_non_finite_figures_become_strings_and_files_are_written(tmp_path: Path) -> None:
    report = _all_passed(golden=CheckResult("golden", "passed", "a|b",
                                            figures={"snr_db": float("inf")}))
    write_report(report, tmp_path / "r.json", tmp_path / "r.md")
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["checks"][2]["figures"]["snr_db"] == "inf"
    assert HardwareReport.from_dict(d).passed
    assert "a\\|b" in (tmp_path / "r.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]   # no temp files


def test_markdown_device_state_lists_each_gpu_in_plain_numbers() -> None:
    from dataclasses import replace

    gpu = {"name": "NVIDIA H200", "temperature.gpu": 42.0, "clocks.sm": 1980.0,
           "clocks.max.sm": 1980.0, "power.draw": 129.6, "memory.used": 0.0,
           "memory.total": 143771.0}
    report = replace(_all_passed(), thermal={"before": {"cpu_percent": 1.0, "gpus": [gpu]},
                                             "after": {"cpu_percent": 2.0}})
    md = render_markdown(report)
    assert "  - GPU NVIDIA H200: 42 °C, SM 1980/1980 MHz, 130 W, memory 0/143771 MiB" in md
    assert md.count("GPU NVIDIA") == 1                   # "after" had no GPU reading

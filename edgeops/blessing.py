"""The hardware report: what ran on which device, each check's verdict and figures.

It is the blessing contract between two parts that may not import each other: the hardware
tests write it, the fleet validates it and stores it as the blessing of a hardware class.

One typed model with a JSON form (what ``edgeops fleet bless`` uploads and the fleet stores as
the blessing of a hardware class) and a Markdown rendering for people. JUnit XML comes from
pytest itself (``--junitxml``), with the same figures attached as test properties. Parsing
validates, so a report in hand is well-formed; whether it *passed* is one rule,
:attr:`HardwareReport.passed`, shared by the suite, the uploader and the fleet.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeops.bundle import canonical_json
from edgeops.errors import BadContentError
from edgeops.fsutil import atomic_write

__all__ = [
    "OUTCOMES",
    "REPORT_SCHEMA",
    "REQUIRED_CHECKS",
    "CheckResult",
    "HardwareReport",
    "InvalidReportError",
    "json_safe",
    "render_markdown",
    "write_report",
]

REPORT_SCHEMA = "edgeops.hardware-report/v1"
OUTCOMES = ("passed", "failed", "skipped")
# A report blesses a hardware class only if all of these ran and passed. Latency and memory
# may instead be "not applicable" (the manifest has no figure), which the report states.
REQUIRED_CHECKS = ("integrity", "load", "golden", "latency", "memory", "stability")
_MAY_BE_NOT_APPLICABLE = frozenset({"latency", "memory"})


class InvalidReportError(BadContentError):
    """A hardware report file is malformed or is not an edgeops hardware report."""

    default_hint = "use the JSON file written by `pytest hardware_tests --report FILE`"


def json_safe(value: Any) -> Any:
    """Figures as plain JSON: numpy scalars to Python, inf/nan to strings (JSON has neither)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _need(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise InvalidReportError(f"hardware report {where}is missing field '{key}'")
    value = d[key]
    if not isinstance(value, kind) or (kind is str and not value and key != "message"):
        raise InvalidReportError(f"hardware report {where}{key} has the wrong type or is empty")
    return value


@dataclass(frozen=True)
class CheckResult:
    """One check of the suite on this device."""

    name: str
    outcome: str                                  # passed | failed | skipped
    message: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    applicable: bool = True                       # False: nothing in the manifest to compare
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise InvalidReportError(f"check '{self.name}' has unknown outcome '{self.outcome}'")

    @property
    def label(self) -> str:
        if self.outcome == "skipped" and not self.applicable:
            return "not applicable"
        return self.outcome

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "outcome": self.outcome, "message": self.message,
                "figures": json_safe(self.figures), "applicable": self.applicable,
                "duration_s": round(self.duration_s, 4)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> CheckResult:
        figures = d.get("figures", {})
        if not isinstance(figures, dict):
            raise InvalidReportError(f"hardware report {where}figures is not an object")
        applicable = d.get("applicable", True)
        duration = d.get("duration_s", 0.0)
        if not isinstance(applicable, bool) or not isinstance(duration, int | float):
            raise InvalidReportError(f"hardware report {where} has a malformed field")
        return cls(name=_need(d, "name", str, where), outcome=_need(d, "outcome", str, where),
                    message=_need(d, "message", str, where), figures=figures,
                    applicable=applicable, duration_s=float(duration))


@dataclass(frozen=True)
class HardwareReport:
    """The result of running the suite on one device for one artifact of one bundle."""

    bundle: str
    version: str
    manifest_sha256: str
    target: str
    hardware: str                                  # hardware class (TargetProfile.hardware)
    checks: tuple[CheckResult, ...]
    machine: dict[str, Any] = field(default_factory=dict)
    thermal: dict[str, Any] = field(default_factory=dict)   # "before" and "after" the checks
    runtime: dict[str, str] = field(default_factory=dict)   # package versions
    settings: dict[str, Any] = field(default_factory=dict)  # margins and run counts used
    created: str = ""
    errors: tuple[str, ...] = ()                   # problems outside any check (bad --bundle)

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def problems(self) -> list[str]:
        """Why this report does not bless its hardware class (empty: it does)."""
        out = list(self.errors)
        for c in self.checks:
            if c.outcome == "failed":
                out.append(f"{c.name} failed: {c.message}")
            elif c.outcome == "skipped" and (c.applicable or c.name not in _MAY_BE_NOT_APPLICABLE):
                out.append(f"{c.name} did not run: {c.message}")
        for name in REQUIRED_CHECKS:
            if self.check(name) is None:
                out.append(f"{name} is missing from the report")
        return out

    @property
    def passed(self) -> bool:
        return not self.problems()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA, "bundle": self.bundle, "version": self.version,
            "manifest_sha256": self.manifest_sha256, "target": self.target,
            "hardware": self.hardware, "passed": self.passed, "created": self.created,
            "checks": [c.to_dict() for c in self.checks], "errors": list(self.errors),
            "machine": json_safe(self.machine), "thermal": json_safe(self.thermal),
            "runtime": self.runtime, "settings": json_safe(self.settings),
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> HardwareReport:
        try:
            d = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidReportError(f"hardware report is not valid JSON: {exc}") from None
        if not isinstance(d, dict):
            raise InvalidReportError("hardware report is not a JSON object")
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HardwareReport:
        schema = d.get("schema")
        if schema != REPORT_SCHEMA:
            raise InvalidReportError(f"hardware report schema {schema!r} is not {REPORT_SCHEMA}")
        checks = _need(d, "checks", list, "")
        errors = d.get("errors", [])
        if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
            raise InvalidReportError("hardware report errors must be a list of strings")
        sections = {}
        for key in ("machine", "thermal", "runtime", "settings"):
            value = d.get(key, {})
            if not isinstance(value, dict):
                raise InvalidReportError(f"hardware report {key} is not an object")
            sections[key] = value
        sha = _need(d, "manifest_sha256", str, "")
        if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
            raise InvalidReportError("hardware report manifest_sha256 is not a SHA-256 digest")
        report = cls(
            bundle=_need(d, "bundle", str, ""), version=_need(d, "version", str, ""),
            manifest_sha256=sha, target=_need(d, "target", str, ""),
            hardware=_need(d, "hardware", str, ""),
            checks=tuple(CheckResult.from_dict(c, f"checks[{i}].") if isinstance(c, dict)
                         else _bad(f"hardware report checks[{i}] is not an object")
                         for i, c in enumerate(checks)),
            created=str(d.get("created") or ""),
            errors=tuple(errors), **sections)
        claimed = d.get("passed")
        if claimed is not None and claimed != report.passed:
            raise InvalidReportError(
                f"hardware report claims passed={claimed} but its checks say {report.passed}")
        return report


def _bad(message: str) -> CheckResult:
    raise InvalidReportError(message)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def render_markdown(report: HardwareReport) -> str:
    """A page a person can read: verdict, checks, figures, device state."""
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [
        f"# Hardware report: {report.bundle} {report.version} on {report.target}",
        "",
        f"**{verdict}** for hardware class `{report.hardware}`",
        "",
        f"- manifest sha256: `{report.manifest_sha256}`",
        f"- created: {report.created}",
        f"- device: {report.machine.get('cpu_model', '?')} ({report.machine.get('machine', '?')},"
        f" {report.machine.get('cpu_count_logical', '?')} logical CPUs), "
        f"{report.machine.get('platform', '?')}",
        "- runtime: " + ", ".join(f"{k} {v}" for k, v in sorted(report.runtime.items())),
        "- settings: " + ", ".join(f"{k}={v}" for k, v in sorted(report.settings.items())),
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    for c in report.checks:
        detail = c.message.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {c.name} | {c.label} | {detail} |")
    problems = report.problems()
    if problems:
        lines += ["", "## Why it does not bless", ""] + [f"- {p}" for p in problems]
    lines += ["", "## Figures", ""]
    for c in report.checks:
        if c.figures:
            lines.append(f"- **{c.name}**: " + "; ".join(f"{k}: {_fmt(v)}"
                                                         for k, v in c.figures.items()))
    lines += ["", "## Device state", ""]
    for when in ("before", "after"):
        state = report.thermal.get(when)
        if isinstance(state, dict):
            temps = state.get("temperatures_c") or {}
            hot = max(temps.values()) if temps else None
            lines.append(f"- {when}: cpu {state.get('cpu_percent', '?')} %, load "
                         f"{state.get('load_avg', '?')}, max temperature "
                         f"{f'{hot:.1f} °C' if hot is not None else 'not readable'}")
            for gpu in state.get("gpus") or []:
                g = {k: f"{v:.0f}" if isinstance(v := gpu.get(k, "?"), float) else str(v)
                     for k in ("temperature.gpu", "clocks.sm", "clocks.max.sm", "power.draw",
                               "memory.used", "memory.total")}
                lines.append(f"  - GPU {gpu.get('name', '?')}: {g['temperature.gpu']} °C, SM "
                             f"{g['clocks.sm']}/{g['clocks.max.sm']} MHz, {g['power.draw']} W, "
                             f"memory {g['memory.used']}/{g['memory.total']} MiB")
    return "\n".join(lines) + "\n"


def write_report(report: HardwareReport, json_path: Path | None,
                 markdown_path: Path | None) -> None:
    """Write the JSON and/or Markdown forms atomically (a crash leaves no half file)."""
    if json_path is not None:
        atomic_write(Path(json_path), json.dumps(report.to_dict(), indent=2, sort_keys=True,
                                                 allow_nan=False).encode() + b"\n")
    if markdown_path is not None:
        atomic_write(Path(markdown_path), render_markdown(report).encode("utf-8"))

"""Upload a passing hardware report to the fleet manager as the blessing of a hardware class.

``edgeops fleet bless BUNDLE --report FILE`` (fleet/cli/bundles.py) calls :func:`upload_blessing`
with the report the hardware suite wrote (:class:`edgeops.blessing.HardwareReport`, the contract
the two parts share). Before a
byte leaves this machine the report is checked against the bundle: it must be a valid hardware
report, it must pass, and its name, version and manifest digest must be this bundle's, so a
report for another build can never bless this one. The fleet then stores it and, with
``--require-blessing``, refuses to deploy to a hardware class that has none.

Wire contract: ``POST {fleet}/api/v1/bundles/{name}/{version}/blessings`` with
``Authorization: Bearer <token>`` and the report's JSON (:meth:`HardwareReport.to_dict`) as
the body; any 2xx answer with a JSON object is success.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.blessing import HardwareReport, InvalidReportError
from edgeops.bundle import read_bundle
from edgeops.errors import BadContentError, ConfigError, TransportError, UsageError
from edgeops.targets import hardware_class

__all__ = [
    "BlessLimits",
    "BlessingRejectedError",
    "blessing_url",
    "check_report_for_bundle",
    "upload_blessing",
]


@dataclass(frozen=True)
class BlessLimits:
    """Bounds of one upload. Units are in the names."""

    timeout_s: float = 30.0
    max_report_bytes: int = 4 * 1024**2
    max_response_bytes: int = 1024**2


class BlessingRejectedError(BadContentError):
    """The fleet manager refused the blessing (unknown bundle, digest mismatch, failing report)."""

    default_hint = "run the hardware suite again on the device for this exact bundle"


def blessing_url(fleet_url: str, name: str, version: str) -> str:
    """The blessings endpoint of one bundle version on ``fleet_url``."""
    parsed = urllib.parse.urlsplit(fleet_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"fleet URL '{fleet_url}' is not an http(s) URL",
                         hint="pass --fleet https://manager.example:8443 (or EDGEOPS_FLEET_URL)")
    base = fleet_url.rstrip("/")
    quote = urllib.parse.quote
    return f"{base}/api/v1/bundles/{quote(name, safe='')}/{quote(version, safe='')}/blessings"


def _read_report(report_path: Path, limits: BlessLimits) -> HardwareReport:
    try:
        size = report_path.stat().st_size
        if size > limits.max_report_bytes:
            raise InvalidReportError(f"{report_path} is {size} bytes, over the "
                                     f"{limits.max_report_bytes} limit")
        data = report_path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"report {report_path} does not exist",
                         hint="pass the JSON written by `pytest hardware_tests --report FILE`"
                         ) from None
    except OSError as exc:
        raise UsageError(f"cannot read report {report_path}: {exc.strerror}") from None
    return HardwareReport.from_bytes(data)


def check_report_for_bundle(report: HardwareReport, bundle_path: Path) -> None:
    """Raise unless ``report`` passed and describes exactly the bundle at ``bundle_path``."""
    import hashlib

    bundle = read_bundle(bundle_path)
    m = bundle.manifest
    sha = hashlib.sha256(bundle.manifest_bytes).hexdigest()
    if (report.bundle, report.version) != (m.name, m.version):
        raise BadContentError(
            f"report is for {report.bundle} {report.version}, not {m.name} {m.version}",
            hint="pass the report the hardware suite wrote for this bundle")
    if report.manifest_sha256 != sha:
        raise BadContentError(
            f"report is for another build of {m.name} {m.version} (manifest sha256 "
            f"{report.manifest_sha256[:12]}…, this bundle's is {sha[:12]}…)",
            hint="run the hardware suite on this exact bundle file")
    if m.artifact_for(report.target) is None:
        raise BadContentError(f"report tested target {report.target}, which this bundle lacks")
    expected = hardware_class(report.target) or f"unknown:{report.target}"
    if report.hardware != expected:
        raise BadContentError(f"report names hardware class {report.hardware!r} but target "
                              f"{report.target} belongs to {expected!r}")
    if not report.passed:
        problems = report.problems()
        raise BadContentError(
            f"report does not pass on {report.hardware}: {problems[0]}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint="fix the failures and run the hardware suite again; only passing reports bless")


def _server_message(body: bytes) -> tuple[str, str | None]:
    """The manager's ``{"error", "hint"}`` answer (fleet/api/app.py), or the raw text."""
    try:
        d = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return body.decode("utf-8", "replace").strip()[:200], None
    if isinstance(d, dict):
        hint = d.get("hint") if isinstance(d.get("hint"), str) and d.get("hint") else None
        for key in ("error", "message", "detail"):
            if isinstance(d.get(key), str):
                return str(d[key]), hint
    return str(d)[:200], None


def upload_blessing(fleet_url: str, token: str, bundle_path: Path, report_path: Path, *,
                    ca_file: Path | None = None, limits: BlessLimits = BlessLimits()
                    ) -> dict[str, Any]:
    """Check the report against the bundle, then POST it; returns the manager's JSON answer."""
    if not token:
        raise ConfigError("no fleet API token given",
                          hint="pass --token or set EDGEOPS_TOKEN (see `edgeops fleet token`)")
    report = _read_report(Path(report_path), limits)
    check_report_for_bundle(report, Path(bundle_path))
    url = blessing_url(fleet_url, report.bundle, report.version)
    body = json.dumps(report.to_dict(), sort_keys=True, allow_nan=False).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={  # noqa: S310 - http(s) only, checked by blessing_url
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
        "Accept": "application/json"})
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=limits.timeout_s,  # noqa: S310 - as above
                                    context=context) as resp:
            answer = resp.read(limits.max_response_bytes + 1)
    except urllib.error.HTTPError as exc:
        message, hint = _server_message(exc.read(limits.max_response_bytes))
        where = f"fleet manager refused the blessing (HTTP {exc.code}): {message}"
        if exc.code in (401, 403):
            raise ConfigError(where, hint="check the API token (EDGEOPS_TOKEN) and its role"
                              ) from None
        if 400 <= exc.code < 500:
            raise BlessingRejectedError(where, hint=hint) from None
        raise TransportError(f"fleet manager failed (HTTP {exc.code}): {message}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransportError(f"cannot reach the fleet manager at {fleet_url}: {reason}") from None
    if len(answer) > limits.max_response_bytes:
        raise TransportError("fleet manager's answer is over the size limit")
    try:
        result = json.loads(answer.decode("utf-8")) if answer.strip() else {}
    except (UnicodeDecodeError, ValueError):
        raise TransportError("fleet manager answered with something that is not JSON") from None
    if not isinstance(result, dict):
        raise TransportError("fleet manager answered with JSON that is not an object")
    return result

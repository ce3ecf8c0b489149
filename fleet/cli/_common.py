"""What every ``edgeops fleet`` command that talks to a manager shares: ``--fleet``/``--token``,
the API client, durations like ``30s`` or ``2h``, sizes like ``512K`` or ``20M``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import click

from edgeops.errors import UsageError

__all__ = ["api_client", "fleet_options", "parse_bytes", "parse_duration"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^(\d+)\s*([kmg]i?b?)?$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise UsageError(f"duration {text!r} is not like 30s, 5m, 2h or 3d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_bytes(text: str) -> int:
    """``65536``, ``512K``, ``20M``, ``1GiB``: bytes, the suffixes powers of 1024."""
    m = _SIZE.match(text.strip())
    if not m:
        raise UsageError(f"{text!r} is not a size", hint="e.g. 65536, 512K, 20M or 1G")
    unit = (m.group(2) or " ")[0].lower()
    return int(m.group(1)) * {"k": 1024, "m": 1024**2, "g": 1024**3}.get(unit, 1)


def fleet_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--token", envvar="EDGEOPS_TOKEN", show_envvar=True,
                     help="API token (Bearer).")(f)
    return click.option("--fleet", "fleet_url", envvar="EDGEOPS_FLEET", show_envvar=True,
                        default="http://127.0.0.1:8080", show_default=True,
                        help="Fleet manager URL.")(f)


def drift_policy_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """A drift test's policy (``fleet drift``, ``fleet monitor add``). The defaults are
    fleet.drift.monitor.MonitorPolicy's, stated here so the CLI does not import numpy
    (tests/fleet/test_drift.py::test_cli_defaults_are_the_monitor_policys keeps them equal)."""
    for option in reversed((
            click.option("--alpha", type=float, default=0.0003, show_default=True,
                         help="Per-window error rate per side after correction (0.01 with "
                              "--persistence 2: the slower policy)."),
            click.option("--correction", type=click.Choice(["bh", "bonferroni"]), default="bh",
                         show_default=True),
            click.option("--test", "test_name", type=click.Choice(["chi2", "g"]),
                         default="chi2", show_default=True),
            click.option("--persistence", type=int, default=1, show_default=True,
                         help="Consecutive drifting windows before an alarm."),
            click.option("--min-samples", type=int, default=200, show_default=True,
                         help="Live samples per feature before any verdict."))):
        f = option(f)
    return f


def api_client(fleet_url: str, token: str | None) -> Any:
    from fleet.client import FleetClient

    return FleetClient(fleet_url, token)


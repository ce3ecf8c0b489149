"""``edgeops fleet telemetry`` and ``drift``: what the devices report, raw or aggregated.
"""

from __future__ import annotations

import json
import time

import click

from edgeops.cli.common import emit, json_option
from fleet.cli._common import api_client, drift_policy_options, fleet_options, parse_duration

__all__ = ["drift", "telemetry"]


@click.command()
@click.option("--device", "device_id", default=None, help="One device's records.")
@click.option("--deployment", default=None, help="Aggregate over a deployment.")
@click.option("--tag", "tags", multiple=True, help="Aggregate over devices with key=value.")
@click.option("--class", "device_class", default=None, help="Aggregate over a device class.")
@click.option("--kind", default=None, help="Record kind (heartbeat, system, inference, drift).")
@click.option("--since", default=None, help="Only the last DURATION (e.g. 1h).")
@click.option("--limit", type=int, default=50, show_default=True)
@fleet_options
@json_option
def telemetry(device_id: str | None, deployment: str | None, tags: tuple[str, ...],
              device_class: str | None, kind: str | None, since: str | None, limit: int,
              fleet_url: str, token: str | None, as_json: bool) -> None:
    """Query telemetry: one device's records, or aggregates per deployment or group.

    \b
    Example:
      edgeops fleet telemetry --device cam-17 --kind inference --since 1h
      edgeops fleet telemetry --deployment d-1a2b3c4d5e
    """
    c = api_client(fleet_url, token)
    since_ts = time.time() - parse_duration(since) if since else None
    if device_id:
        out = c.telemetry(device_id, kind=kind, since=since_ts, limit=limit)
        emit(as_json, out, lambda: "\n".join(json.dumps(r, sort_keys=True)
                                             for r in out["items"]))
        return
    agg = c.aggregate(deployment=deployment, tag=list(tags) or None,
                      **{"class": device_class}, since=since_ts)
    emit(as_json, agg, lambda: "\n".join(f"{k:<20} {v}" for k, v in sorted(agg.items())))


@click.command()
@click.option("--cohort", "cohorts", multiple=True,
              help="Tag selector merged as one group (repeatable), e.g. city=lyon.")
@click.option("--deployment", default=None, help="Merge the devices of this deployment.")
@click.option("--device", "device_id", default=None, help="Only this device.")
@drift_policy_options
@fleet_options
@json_option
def drift(cohorts: tuple[str, ...], deployment: str | None, device_id: str | None, alpha: float,
          correction: str, test_name: str, persistence: int, min_samples: int, fleet_url: str,
          token: str | None, as_json: bool) -> None:
    """Data and prediction drift per device, cohort and deployment (docs/DRIFT.md).

    \b
    Example:
      edgeops fleet drift --cohort city=lyon --cohort class=camera
      edgeops fleet drift --deployment d-1a2b3c4d5e --correction bonferroni --json
    """
    from fleet.drift.report import render

    out = api_client(fleet_url, token).drift(
        cohort=list(cohorts) or None, deployment=deployment, device=device_id, alpha=alpha,
        correction=correction, test=test_name, persistence=persistence, min_samples=min_samples)
    emit(as_json, out, lambda: render(out))

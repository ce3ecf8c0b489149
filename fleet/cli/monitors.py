"""``edgeops fleet monitor``: stored drift monitors, their alarms and webhook deliveries.

A thin shell over ``/api/v1/drift/monitors``, ``/alarms`` and ``/deliveries``
(fleet/api/alert_routes.py); validation happens on the manager, so the CLI and the API refuse
the same things with the same line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from edgeops.cli.common import emit, json_option
from edgeops.errors import UsageError
from fleet.cli._common import api_client as _client
from fleet.cli._common import drift_policy_options, parse_bytes
from fleet.cli._common import fleet_options as _fleet_options

__all__ = ["monitor"]


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


@click.group()
def monitor() -> None:
    """Stored drift monitors: alarms delivered to webhooks (docs/DRIFT.md).

    \b
    Example:
      edgeops fleet monitor add lyon-cams --cohort city=lyon,class=camera \\
          --webhook https://hooks.example.com/edgeops --secret-file hook.secret --retrain
      edgeops fleet monitor list
      edgeops fleet monitor deliveries --monitor lyon-cams
    """


@monitor.command("add")
@click.argument("name")
@click.option("--cohort", default="all", show_default=True,
              help="Tag selector of the devices watched together (city=lyon,class=camera).")
@click.option("--webhook", "webhooks", multiple=True,
              help="http(s) URL that receives the CloudEvents, repeatable (at most 5).")
@click.option("--secret-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="HMAC secret for every --webhook (16-256 printable characters); left out: "
                   "the manager generates one per webhook and shows it once.")
@click.option("--retrain", is_flag=True,
              help="Also send io.edgeops.model.retrain when an alarm starts.")
@click.option("--capture-on-drift", is_flag=True,
              help="When an alarm starts, open a bounded data capture on the cohort (signed "
                   "capture commands; once per alarm; its id goes in the retrain event).")
@click.option("--capture-sample-rate", type=float, default=None,
              help="Share of requests captured, in (0, 1] (default 0.05).")
@click.option("--capture-max-bytes-per-device", default=None,
              help="Bytes per device over the capture, e.g. 64M (default 64M).")
@click.option("--capture-max-bytes-per-day", default=None,
              help="Bytes per device per UTC day, e.g. 16M (default 16M).")
@click.option("--capture-hours", type=float, default=None,
              help="How long the capture stays open, in hours (default 24, at most 720).")
@drift_policy_options
@_fleet_options
@json_option
def add(name: str, cohort: str, webhooks: tuple[str, ...], secret_file: Path | None,
        retrain: bool, capture_on_drift: bool, capture_sample_rate: float | None,
        capture_max_bytes_per_device: str | None, capture_max_bytes_per_day: str | None,
        capture_hours: float | None, alpha: float, correction: str, test_name: str, persistence: int,
        min_samples: int, fleet_url: str, token: str | None, as_json: bool) -> None:
    """Create a monitor (secrets never go on the command line: use --secret-file).

    \b
    Example:
      edgeops fleet monitor add lyon-cams --cohort city=lyon,class=camera \\
          --webhook https://hooks.example.com/edgeops --secret-file hook.secret --retrain
      edgeops fleet monitor add lyon-cams --cohort city=lyon --retrain --capture-on-drift \\
          --capture-sample-rate 0.05 --capture-max-bytes-per-device 64M \\
          --capture-max-bytes-per-day 16M --capture-hours 24
    """
    capture = _capture_body(capture_on_drift, capture_sample_rate,
                            capture_max_bytes_per_device, capture_max_bytes_per_day,
                            capture_hours)
    secret = None
    if secret_file is not None:
        try:
            secret = secret_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --secret-file {secret_file}: {exc}") from None
    hooks = [{"url": u} | ({"secret": secret} if secret is not None else {}) for u in webhooks]
    body = {"name": name, "cohort": cohort, "webhooks": hooks, "retrain": retrain,
            "alpha": alpha, "correction": correction, "test": test_name,
            "persistence": persistence, "min_samples": min_samples}
    if capture is not None:
        body["capture_on_drift"] = capture
    out = _client(fleet_url, token).request("POST", "/api/v1/drift/monitors", body=body)

    def text() -> str:
        m = out["monitor"]
        lines = [f"monitor {m['name']} on cohort {m['cohort']}: "
                 f"{len(m['webhooks'])} webhook(s){', retrain events' if m['retrain'] else ''}"
                 f"{', capture on drift' if m.get('capture_on_drift') else ''}"]
        for w in m["webhooks"]:
            s = out["secrets"].get(w["id"])
            lines.append(f"  {w['id']}  {w['url']}" + (f"\n    secret (shown once): {s}"
                                                        if s else ""))
        return "\n".join(lines)

    emit(as_json, out, text)


def _capture_body(on: bool, rate: float | None, per_device: str | None,
                  per_day: str | None, hours: float | None) -> dict[str, Any] | None:
    """The API's capture_on_drift object; sizes take K/M/G; the manager checks the bounds."""
    given = {"sample_rate": rate, "max_bytes_per_device": per_device,
             "max_bytes_per_day": per_day, "hours": hours}
    if not on:
        if any(v is not None for v in given.values()):
            raise UsageError("--capture-* bounds need --capture-on-drift",
                             hint="add --capture-on-drift, or leave the --capture-* options out")
        return None
    out: dict[str, Any] = {}
    for key, v in given.items():
        if v is not None:
            out[key] = parse_bytes(v) if isinstance(v, str) else v
    return out


@monitor.command("list")
@_fleet_options
@json_option
def list_(fleet_url: str, token: str | None, as_json: bool) -> None:
    """Monitors with their cohort, policy and webhooks.

    \b
    Example:
      edgeops fleet monitor list --json
    """
    out = _client(fleet_url, token).request("GET", "/api/v1/drift/monitors")

    def text() -> str:
        if not out["items"]:
            return "no drift monitors (edgeops fleet monitor add NAME --cohort ... --webhook ...)"
        return "\n".join(
            f"{m['name']:<20} cohort={m['cohort']:<28} alpha={m['policy']['alpha']} "
            f"({m['policy']['correction']}) persistence={m['policy']['persistence']} "
            f"webhooks={len(m['webhooks'])}{' retrain' if m['retrain'] else ''}"
            for m in out["items"])

    emit(as_json, out, text)


@monitor.command("rm")
@click.argument("name")
@_fleet_options
@json_option
def rm(name: str, fleet_url: str, token: str | None, as_json: bool) -> None:
    """Remove a monitor with its webhooks, alarms and delivery log.

    \b
    Example:
      edgeops fleet monitor rm lyon-cams
    """
    from urllib.parse import quote

    out = _client(fleet_url, token).request("DELETE",
                                            f"/api/v1/drift/monitors/{quote(name, safe='')}")
    emit(as_json, out, f"removed monitor {name}")


@monitor.command("alarms")
@click.option("--monitor", "monitor_name", default=None, help="Only this monitor.")
@click.option("--limit", type=int, default=20, show_default=True, help="History rows.")
@_fleet_options
@json_option
def alarms(monitor_name: str | None, limit: int, fleet_url: str, token: str | None,
           as_json: bool) -> None:
    """Current alarm state per monitor, bundle and side, then alarm starts and ends.

    \b
    Example:
      edgeops fleet monitor alarms --monitor lyon-cams
    """
    out = _client(fleet_url, token).request("GET", "/api/v1/drift/alarms",
                                            query={"monitor": monitor_name, "limit": limit})

    def text() -> str:
        lines = [f"{a['monitor']:<20} {a['bundle']:<24} {a['side']:<10} "
                 f"{'ALARM' if a['in_alarm'] else 'ok':<5} status={a['status']} "
                 f"since {_when(a['since'])}" for a in out["current"]] or ["no alarm state yet"]
        lines += [f"  {_when(e['at'])}  {e['monitor']} {e['bundle']} {e['side']}: "
                  f"{'alarm started' if e['in_alarm'] else 'alarm ended'}"
                  for e in out["history"]]
        return "\n".join(lines)

    emit(as_json, out, text)


@monitor.command("deliveries")
@click.option("--monitor", "monitor_name", default=None, help="Only this monitor.")
@click.option("--state", type=click.Choice(["pending", "delivered", "failed"]), default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@_fleet_options
@json_option
def deliveries(monitor_name: str | None, state: str | None, limit: int, fleet_url: str,
               token: str | None, as_json: bool) -> None:
    """Webhook deliveries with every attempt (status code or error, time).

    \b
    Example:
      edgeops fleet monitor deliveries --monitor lyon-cams --state failed
    """
    out = _client(fleet_url, token).request(
        "GET", "/api/v1/drift/deliveries",
        query={"monitor": monitor_name, "state": state, "limit": limit})

    def text() -> str:
        lines = []
        for d in out["items"]:
            lines.append(f"{d['id']:>6} {d['state']:<9} {d['type']:<26} {d['monitor']} -> "
                         f"{d['url']} ({d['attempts']} attempt(s))")
            lines += [f"         #{a['attempt']} {_when(a['at'])} "
                      f"{a['status_code'] if a['status_code'] is not None else a['error']}"
                      for a in d["log"]]
        return "\n".join(lines) or "no deliveries"

    emit(as_json, out, text)

"""``edgeops fleet deploy``, ``deployments``, ``status`` and the actions on a deployment
(``pause``, ``resume``, ``cancel``, ``rollback``).
"""

from __future__ import annotations

import time
from typing import Any

import click

from edgeops.cli.common import emit, json_option, progress_printer
from edgeops.errors import UsageError
from fleet.cli._common import api_client, fleet_options, parse_duration

__all__ = ["ACTIONS", "deploy", "deployments", "status"]


@click.command()
@click.argument("bundle")
@click.option("--select", "selector", default="all", show_default=True,
              help="Selector, e.g. 'city=lyon,district=4|5,class=camera'.")
@click.option("--phases", default="100%", show_default=True,
              help="Cumulative phases: 1%,10%,50%,100% or counts 5,50,all.")
@click.option("--max-per-minute", type=int, default=None, help="Devices notified per minute.")
@click.option("--bake", default="0s", show_default=True, help="Wait after each phase (e.g. 10m).")
@click.option("--timeout", "device_timeout", default="24h", show_default=True,
              help="Per-device time to finish before it counts as timed-out.")
@click.option("--abort-failure-pct", type=float, default=20.0, show_default=True)
@click.option("--abort-min-sample", type=int, default=5, show_default=True)
@click.option("--abort-max-failures", type=int, default=None)
@click.option("--max-error-rate", type=float, default=None,
              help="Abort if inference errors/inferences exceed this (0-1).")
@click.option("--max-latency-factor", type=float, default=None,
              help="Abort if fleet p95 exceeds this × the bundle's own p95.")
@click.option("--auto-rollback", is_flag=True, default=None,
              help="On abort, roll back devices that activated the bundle (cancel the rest).")
@click.option("--allow-downgrade", is_flag=True, default=None,
              help="An operator rollback: devices running a newer version of this model may go "
                   "back to it (never below its release floor).")
@fleet_options
@json_option
def deploy(bundle: str, selector: str, phases: str, max_per_minute: int | None, bake: str,
           device_timeout: str, abort_failure_pct: float, abort_min_sample: int,
           abort_max_failures: int | None, max_error_rate: float | None,
           max_latency_factor: float | None, auto_rollback: bool | None,
           allow_downgrade: bool | None, fleet_url: str, token: str | None,
           as_json: bool) -> None:
    """Start a staged deployment of NAME@VERSION (or NAME@ALIAS) to the selected devices.

    \b
    Example:
      edgeops fleet deploy vehicle-classifier@champion --phases 5%,100%
      edgeops fleet deploy vehicle-classifier@2.1.0 --select 'class=camera,district=4' \\
          --phases 1%,10%,50%,100% --max-per-minute 50 --bake 10m --abort-failure-pct 5 \\
          --auto-rollback
    """
    from fleet.aliases import check_alias, is_alias
    from fleet.rollout import strategy_from_options

    name, sep, version = bundle.partition("@")
    if not sep or not name or not version:
        raise UsageError(f"bundle {bundle!r} is not NAME@VERSION or NAME@ALIAS",
                         hint="e.g. vehicle-classifier@2.1.0 or vehicle-classifier@champion")
    alias = check_alias(version) if is_alias(version) else None
    strategy = strategy_from_options(
        phases, max_per_minute=max_per_minute, bake_s=parse_duration(bake),
        device_timeout_s=parse_duration(device_timeout), abort_failure_pct=abort_failure_pct,
        abort_min_sample=abort_min_sample, abort_max_failures=abort_max_failures,
        max_error_rate=max_error_rate, max_latency_factor=max_latency_factor,
        auto_rollback=auto_rollback, allow_downgrade=allow_downgrade)
    st = api_client(fleet_url, token).deploy(name, None if alias else version, selector,
                                          strategy.to_dict(), alias=alias)
    emit(as_json, st, lambda: f"deployment {st['id']}: {st['bundle']} to {st['devices']} "
                              f"devices in {st['phases']} phases ({st['status']})")


@click.command()
@click.option("--status", "statuses", multiple=True, help="Only these statuses (repeatable).")
@fleet_options
@json_option
def deployments(statuses: tuple[str, ...], fleet_url: str, token: str | None,
                as_json: bool) -> None:
    """List deployments, newest first.

    \b
    Example:
      edgeops fleet deployments --status running
    """
    out = api_client(fleet_url, token).deployments(list(statuses) or None)

    def text() -> str:
        lines = [f"{'ID':<14} {'BUNDLE':<32} {'STATUS':<12} {'PHASE':<5} COUNTS"]
        for d in out["items"]:
            counts = " ".join(f"{k}={v}" for k, v in sorted(d["counts"].items()))
            lines.append(f"{d['id']:<14} {d['bundle']:<32} {d['status']:<12} "
                         f"{d['phase_index']:<5} {counts}")
        return "\n".join(lines)

    emit(as_json, out, text)


def _status_text(st: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(st["counts"].items()))
    lines = [f"deployment {st['id']}: {st['bundle']} → {st['selector']}",
             f"  status {st['status']}"
             + (f" ({st['reason']})" if st.get("reason") else ""),
             f"  phase {st['phase_index'] + 1} of {st['phases']}, {st['devices']} devices, "
             f"{st['progress']:.0%} activated",
             f"  {counts}"]
    if st.get("waiting_offline"):
        lines.append(f"  {st['waiting_offline']} notified devices are offline (pending, not "
                     "failed, until their timeout)")
    return "\n".join(lines)


@click.command()
@click.argument("deployment_id")
@click.option("--devices", "show_devices", is_flag=True, help="List every device's state.")
@click.option("--watch", is_flag=True, help="Refresh until the deployment finishes.")
@fleet_options
@json_option
def status(deployment_id: str, show_devices: bool, watch: bool, fleet_url: str,
           token: str | None, as_json: bool) -> None:
    """Show a deployment: phase, counts per device state, offline devices.

    \b
    Example:
      edgeops fleet status d-1a2b3c4d5e --devices
    """
    c = api_client(fleet_url, token)
    st = c.deployment(deployment_id)
    show = progress_printer(as_json)
    while watch and st["status"] in ("running", "paused"):
        show(f"{st['status']} phase {st['phase_index'] + 1}/{st['phases']} "
             f"{st['progress']:.0%} activated")
        time.sleep(2)
        st = c.deployment(deployment_id)
    if show_devices:
        st["device_states"] = c.deployment_devices(deployment_id)["items"]

    def text() -> str:
        out = _status_text(st)
        d = st.get("delivery") or {}
        if d.get("devices_reported"):
            out += (f"\n  delivery: {d['devices_by_delta']} of {d['devices_reported']} devices by "
                    f"delta, {d['bytes_fetched']} of {d['bytes_full']} bytes fetched "
                    f"({d['bytes_saved']} saved)")
        for r in st.get("device_states", []):
            out += (f"\n    {r['device_id']:<24} wave {r['wave']} {r['state']:<12}"
                    f" {r['reason'] or ''}")
        return out

    emit(as_json, st, text)


def _action(verb: str, doc: str) -> click.Command:
    @fleet_options
    @json_option
    def act(deployment_id: str, fleet_url: str, token: str | None, as_json: bool) -> None:
        st = api_client(fleet_url, token).act(deployment_id, verb)
        emit(as_json, st, lambda: _status_text(st))

    act.__doc__ = doc
    return click.command(verb)(click.argument("deployment_id")(act))


ACTIONS = [_action(_verb, _doc) for _verb, _doc in (
        ("pause", "Pause a deployment: nobody new is notified.\n\n\b\nExample:\n"
                  "  edgeops fleet pause d-1a2b3c4d5e"),
        ("resume", "Resume a paused deployment.\n\n\b\nExample:\n"
                   "  edgeops fleet resume d-1a2b3c4d5e"),
        ("cancel", "Cancel a deployment; devices still installing are told to stop.\n\n\b\n"
                   "Example:\n  edgeops fleet cancel d-1a2b3c4d5e"),
        ("rollback", "Roll every device this deployment reached back to its previous "
                     "bundle.\n\n\b\nExample:\n  edgeops fleet rollback d-1a2b3c4d5e"))]

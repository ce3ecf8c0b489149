"""``edgeops fleet alias set|list|show``: ``NAME@ALIAS`` names for published versions.
"""

from __future__ import annotations

import time

import click

from edgeops.cli.common import emit, json_option
from edgeops.errors import UsageError
from fleet.cli._common import api_client, fleet_options, parse_duration

__all__ = ["alias"]


def _name_alias(text: str) -> tuple[str, str]:
    from fleet.aliases import check_alias

    name, sep, alias = text.partition("@")
    if not sep or not name or not alias:
        raise UsageError(f"{text!r} is not NAME@ALIAS", hint="e.g. vehicle-classifier@champion")
    return name, check_alias(alias)


@click.group()
def alias() -> None:
    """Name published versions with aliases (NAME@champion), as MLflow names model versions.

    \b
    Example:
      edgeops fleet alias set vehicle-classifier@champion 2.1.0 --rollout --phases 5%,50%,100%
      edgeops fleet deploy vehicle-classifier@champion --select 'city=lyon'
    """


@alias.command("set")
@click.argument("name_alias", metavar="NAME@ALIAS")
@click.argument("version")
@click.option("--rollout", is_flag=True,
              help="Also start a staged rollout of VERSION (same options as `fleet deploy`).")
@click.option("--select", "selector", default="all", show_default=True)
@click.option("--phases", default="100%", show_default=True,
              help="Cumulative phases: 1%,10%,50%,100% or counts 5,50,all.")
@click.option("--max-per-minute", type=int, default=None)
@click.option("--bake", default="0s", show_default=True)
@click.option("--abort-failure-pct", type=float, default=20.0, show_default=True)
@click.option("--auto-rollback", is_flag=True, default=None)
@fleet_options
@json_option
def alias_set(name_alias: str, version: str, rollout: bool, selector: str, phases: str,
              max_per_minute: int | None, bake: str, abort_failure_pct: float,
              auto_rollback: bool | None, fleet_url: str, token: str | None,
              as_json: bool) -> None:
    """Point NAME@ALIAS at a published VERSION; with --rollout, roll VERSION out in phases.

    The move is recorded with the token that made it (`fleet alias show`).

    \b
    Example:
      edgeops fleet alias set vehicle-classifier@champion 2.1.0
      edgeops fleet alias set vehicle-classifier@champion 2.2.0 --rollout --phases 5%,100% \\
          --bake 10m --auto-rollback
    """
    from fleet.rollout import strategy_from_options

    name, al = _name_alias(name_alias)
    plan = None
    if rollout:
        strategy = strategy_from_options(phases, max_per_minute=max_per_minute,
                                         bake_s=parse_duration(bake),
                                         abort_failure_pct=abort_failure_pct,
                                         auto_rollback=auto_rollback)
        plan = {"selector": selector, "strategy": strategy.to_dict()}
    out = api_client(fleet_url, token).set_alias(name, al, version, plan)

    def text() -> str:
        a, dep = out["alias"], out.get("deployment")
        was = f" (was {a['previous']})" if a.get("previous") else ""
        line = f"{a['name']}@{a['alias']} -> {a['version']}{was}"
        if dep:
            line += (f"\ndeployment {dep['id']}: {dep['bundle']} to {dep['devices']} devices in "
                     f"{dep['phases']} phases ({dep['status']})")
        return line

    emit(as_json, out, text)


@alias.command("list")
@click.option("--name", default=None, help="Only this bundle name.")
@fleet_options
@json_option
def alias_list(name: str | None, fleet_url: str, token: str | None, as_json: bool) -> None:
    """List aliases and the versions they name.

    \b
    Example:
      edgeops fleet alias list --name vehicle-classifier
    """
    out = api_client(fleet_url, token).aliases(name)
    emit(as_json, out, lambda: "\n".join(
        f"{a['name']}@{a['alias']} -> {a['version']}  (moved by {a['moved_by'] or '-'})"
        for a in out["items"]))


@alias.command("show")
@click.argument("name_alias", metavar="NAME@ALIAS")
@fleet_options
@json_option
def alias_show(name_alias: str, fleet_url: str, token: str | None, as_json: bool) -> None:
    """One alias and every move of it: when, by whom, from which version, which rollout.

    \b
    Example:
      edgeops fleet alias show vehicle-classifier@champion
    """
    name, al = _name_alias(name_alias)
    out = api_client(fleet_url, token).alias(name, al)
    emit(as_json, out, lambda: "\n".join(
        [f"{out['name']}@{out['alias']} -> {out['version']}"]
        + [f"  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(m['moved_at']))}Z  "
           f"{m['previous'] or '-'} -> {m['version']}  by {m['moved_by'] or '-'}"
           + (f"  deployment {m['deployment_id']}" if m.get("deployment_id") else "")
           for m in out["moves"]]))

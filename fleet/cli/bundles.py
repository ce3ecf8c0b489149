"""``edgeops fleet bundles`` and ``bless``: the published bundles and their hardware
blessings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeops.cli.common import emit, json_option
from fleet.cli._common import api_client, fleet_options

__all__ = ["bless", "bundles"]


@click.command()
@click.option("--name", default=None, help="Only this bundle name.")
@fleet_options
@json_option
def bundles(name: str | None, fleet_url: str, token: str | None, as_json: bool) -> None:
    """List published bundles.

    \b
    Example:
      edgeops fleet bundles --name vehicle-classifier
    """
    out = api_client(fleet_url, token).bundles(name)

    def line(b: dict[str, Any]) -> str:
        aliases = "".join(f"  @{a}" for a in b.get("aliases", []))
        lin = b.get("lineage") or {}
        src = ""
        if lin.get("model_name"):
            src = f"  from {lin['model_name']} v{lin['model_version']}"
        if lin.get("run_id"):
            src += f" (run {lin['run_id'][:12]})"
        return f"{b['name']}@{b['version']}{aliases}  targets: {', '.join(b['targets'])}{src}"

    emit(as_json, out, lambda: "\n".join(line(b) for b in out["items"]))


@click.command()
@click.argument("bundle_path", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--report", "report_path", required=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="The hardware_tests JSON report (hardware-report.json) of a passing run.")
@fleet_options
@json_option
def bless(bundle_path: Path, report_path: Path, fleet_url: str, token: str | None,
          as_json: bool) -> None:
    """Upload a hardware_tests report that blesses a bundle for a hardware class.

    \b
    Example:
      edgeops fleet bless out/vc-2.1.0.edgebundle --report hardware-report.json
    """
    from fleet.bless import upload_blessing

    out = upload_blessing(fleet_url, token or "", bundle_path, report_path)
    emit(as_json, out, lambda: f"blessed {out.get('name')}@{out.get('version')} for "
                               f"{out.get('hardware')} (passed: {out.get('passed')})")

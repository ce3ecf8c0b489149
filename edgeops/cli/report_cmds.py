"""``edgeops report``: a bundle's figures as a pull-request comment, with deltas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgeops.bundle import Manifest, read_bundle
from edgeops.errors import UsageError

__all__ = ["report"]

_path = click.Path(path_type=Path, dir_okay=False)


def _build_report(bundle: Path, given: Path | None) -> dict[str, Any] | None:
    """The build's JSON report: given, or NAME-VERSION.report.json beside the bundle."""
    path = given or bundle.with_name(bundle.name.removesuffix(".edgebundle") + ".report.json")
    if not path.is_file():
        if given is not None:
            raise UsageError(f"--report {given} does not exist")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read build report {path}: {exc}",
                         hint="pass the NAME-VERSION.report.json that `edgeops build` wrote") from None
    if not isinstance(data, dict):
        raise UsageError(f"build report {path} is not a JSON object")
    return data


def _load(bundle: Path, rep: Path | None) -> tuple[Manifest, dict[str, Any] | None]:
    if not bundle.is_file():
        raise UsageError(f"bundle {bundle} does not exist")
    return read_bundle(bundle).manifest, _build_report(bundle, rep)


@click.command("report")
@click.argument("bundle", type=_path)
@click.option("--format", "fmt", type=click.Choice(["github", "json"]), default="github",
              show_default=True, help="github: a pull-request comment (Markdown); json: data.")
@click.option("--against", type=_path, default=None,
              help="A previous bundle to compare with (e.g. the one on main).")
@click.option("--report", "report_path", type=_path, default=None,
              help="BUNDLE's build report (default: NAME-VERSION.report.json beside it).")
@click.option("--against-report", type=_path, default=None,
              help="The --against bundle's build report (default: beside it).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write to this file (atomically) instead of stdout.")
def report(bundle: Path, fmt: str, against: Path | None, report_path: Path | None,
           against_report: Path | None, out: Path | None) -> None:
    """Write a CML-style pull-request comment for BUNDLE: one table per target, deltas
    against a previous bundle.

    \b
    Example:
      edgeops report out/vehicle-classifier-1.1.0.edgebundle --format github \\
          --against main/vehicle-classifier-1.0.0.edgebundle --out comment.md
      gh pr comment "$PR" --body-file comment.md
    """
    from edgeops.fsutil import atomic_write
    from edgeops.pr_report import render_github, report_json

    manifest, rep = _load(bundle, report_path)
    old, old_rep = _load(against, against_report) if against else (None, None)
    if fmt == "json":
        text = json.dumps(report_json(manifest, rep, old, old_rep), indent=2,
                          sort_keys=True) + "\n"
    else:
        text = render_github(manifest, rep, old, old_rep)
    if out is None:
        click.echo(text, nl=False)
    else:
        atomic_write(out, text.encode())
        click.echo(str(out))

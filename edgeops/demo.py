"""``edgeops demo``: the whole story on this machine, with nothing installed beyond the package.

Until the fleet demo lands this shows the toolchain half: train an example model, create keys,
build and sign a bundle, inspect it and verify it offline. Everything happens in a work
directory (default ``./edgeops-demo``) with its own ``EDGEOPS_HOME``, so your keys are untouched.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

__all__ = ["demo"]


def _step(title: str) -> None:
    click.secho(f"\n▶ {title}", bold=True)


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("edgeops-demo"), show_default=True,
              help="Where the demo writes its keys, model and bundle.")
@click.option("--target", "targets", multiple=True, default=("x86-cpu",), show_default=True,
              help="Target profiles to build (repeatable).")
def demo(workdir: Path, targets: tuple[str, ...]) -> None:
    """Build, sign, inspect and verify a bundle of an example model the project trains itself.

    \b
    Example:
      edgeops demo
      edgeops demo --workdir /tmp/demo --target x86-cpu --target tflite-cpu
    """
    from edgeops.cli.main import cli
    from edgeops.examples import make_vehicle_classifier

    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["EDGEOPS_HOME"] = str((workdir / "home").resolve())
    os.environ.setdefault("EDGEOPS_KEY_PASSPHRASE", "edgeops-demo-passphrase")

    _step("Training an example model: vehicle classifier from roadside sensor features")
    example = make_vehicle_classifier(workdir / "model")
    click.echo(f"  {example.model} (held-out accuracy {example.accuracy:.1%})")

    _step("Creating signing keys (offline root/targets, online snapshot/timestamp/manager)")
    if not (workdir / "home" / "keys" / "root.pem").exists():
        cli.main(["keys", "init"], standalone_mode=False)
    else:
        click.echo("  keys already exist, reusing them")

    version = "1.0.0"
    _step(f"Building vehicle-classifier {version} for {', '.join(targets)}")
    args = ["build", str(example.model), "--name", "vehicle-classifier", "--version", version,
            "--calibration", str(example.calibration), "--validation", str(example.validation),
            "--out", str(workdir / "out")]
    for t in targets:
        args += ["--target", t]
    cli.main(args, standalone_mode=False)
    bundle = workdir / "out" / f"vehicle-classifier-{version}.edgebundle"

    _step("Inspecting the bundle")
    cli.main(["bundle", "inspect", str(bundle)], standalone_mode=False)

    _step("Verifying it offline against the trust root")
    cli.main(["bundle", "verify", str(bundle)], standalone_mode=False)

    click.secho(f"\n✔ done in {time.monotonic() - t0:.1f} s — bundle: {bundle}", fg="green")

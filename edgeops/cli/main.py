"""Entry point: the root ``edgeops`` group, lazy subcommands, and error-to-exit-code mapping.

Subcommands load lazily (``module:attribute``) from the package that owns each, so a package's
heavy imports (ONNX Runtime, paho) happen only when its command runs and edgeops, the bottom
layer, never imports the parts above it (docs/ARCHITECTURE.md, "Layers"). A group that fails to
import is an error naming it and the reason, never a command that silently vanishes. Exit
codes: 0 success, 1 the operation failed for a reason the user must act on, 2 usage errors.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from edgeops import __version__
from edgeops.errors import ConfigError, EdgeOpsError

__all__ = ["CommandLoadError", "cli", "main"]

_COMMANDS: dict[str, tuple[str, str]] = {
    "targets": ("converters.cli:targets", "List target profiles and what each produces."),
    "build": ("converters.cli:build", "Convert a model into a signed bundle."),
    "bundle": ("edgeops.cli.bundle_cmds:bundle", "Inspect, verify or unpack a bundle."),
    "report": ("edgeops.cli.report_cmds:report", "Write a pull-request comment for a bundle."),
    "keys": ("edgeops.cli.keys_cmds:keys", "Create, list and rotate signing keys."),
    "publish": ("fleet.cli.release:publish", "Upload a signed bundle to a fleet manager."),
    "sign-targets": ("fleet.cli.release:sign_targets", "Add your targets signature to a targets update."),
    "fleet": ("fleet.cli:fleet", "Run and steer the fleet manager."),
    "agent": ("device_agent.cli:agent", "Run the device agent."),
    "demo": ("edgeops_sim.demo:demo", "Run the whole story on this machine."),
    "sim": ("edgeops_sim.cli:sim", "Simulate a fleet of devices with the real agent code."),
}


# A module of an optional extra that a command group may need: the hint names the extra.
_EXTRAS = {"ai_edge_litert": "tflite", "psycopg": "postgres", "mlflow": "mlflow", "amqtt": "demo"}


class CommandLoadError(ConfigError):
    """A command group of this installation does not import: the install is broken."""

    default_hint = "reinstall edgeops (pip install --force-reinstall edgeops), or rerun with --debug"


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def _load(self, name: str) -> click.Command | None:
        spec = _COMMANDS.get(name)
        if spec is None:
            return None
        module, _, attr = spec[0].partition(":")
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
            extra = _EXTRAS.get((missing or "").partition(".")[0])
            raise CommandLoadError(
                f"the '{name}' command cannot be loaded: {module}:{attr} failed "
                f"({type(exc).__name__}: {exc})",
                hint=f"pip install 'edgeops[{extra}]'" if extra else None) from exc
        if not isinstance(cmd, click.Command):
            raise CommandLoadError(f"the '{name}' command cannot be loaded: {module}:{attr} "
                                   "is not a click command")
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"],
                                               "auto_envvar_prefix": "EDGEOPS"})
@click.version_option(__version__, prog_name="edgeops")
@click.option("--debug", is_flag=True, envvar="EDGEOPS_DEBUG",
              help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Compile trained models for edge hardware and ship them, signed, to fleets.

    \b
    Example:
      edgeops keys init
      edgeops build model.onnx --name vehicle-classifier --version 1.0.0 --target x86-cpu
      edgeops bundle verify out/vehicle-classifier-1.0.0.edgebundle
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> Any:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        return cli.main(args=argv, prog_name="edgeops", standalone_mode=False)
    except EdgeOpsError as exc:
        if debug:
            raise
        click.echo(f"error: {exc.diagnostics()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()

"""The ``edgeops agent`` command group and the ``edgeops-agent`` console script.

A thin shell (click) over :mod:`device_agent.core`: ``run`` starts the daemon (fleet
connection, :mod:`device_agent.daemon`) or, with ``--local-only``, just the local half;
``status`` reports slots, the last install and what is being served; ``install`` installs a
bundle file from local media (offline sites, first boot) through the very same verification,
policy and health-check path as a fleet deployment.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from device_agent.enroll_cli import enroll
from edgeops.cli.common import emit, json_option

__all__ = ["agent", "agent_main"]

_CONFIG_HELP = "The agent config written by `edgeops fleet enroll` (agent.json)."


def _config_option(f: Any) -> Any:
    return click.option("--config", "config_path", required=True, envvar="EDGEOPS_AGENT_CONFIG",
                        type=click.Path(dir_okay=False, path_type=Path),
                        help=_CONFIG_HELP + " [env: EDGEOPS_AGENT_CONFIG]")(f)


@click.group()
def agent() -> None:
    """Run the device agent: verified installs, A/B slots, health checks, local inference.

    \b
    Example:
      edgeops agent run --config /etc/edgeops/agent.json
      edgeops agent status --config /etc/edgeops/agent.json --json
    """


@agent.command()
@_config_option
@click.option("--local-only", is_flag=True, envvar="EDGEOPS_AGENT_LOCAL_ONLY",
              help="Serve the active model locally without connecting to the fleet.")
def run(config_path: Path, local_only: bool) -> None:
    """Run the agent until SIGTERM/SIGINT.

    Connects to the fleet broker (MQTT), installs verified deployments into the inactive slot
    and serves the active model on the local API named in the config.

    \b
    Example:
      edgeops agent run --config /etc/edgeops/agent.json
      edgeops agent run --config agent.json --local-only
    """
    from device_agent.config import AgentConfig

    config = AgentConfig.from_file(config_path)
    if not local_only:
        from device_agent import daemon  # paho, python-tuf: only when connecting

        rc = daemon.run(config)
        if rc:
            sys.exit(int(rc))
        return
    _run_local(config)


def _run_local(config: Any) -> None:
    from device_agent.core import AgentCore

    stop = threading.Event()

    def _stop(_sig: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with AgentCore(config) as core:
        active = core.store.active()
        where = ", ".join(x for x in (config.inference.http,
                                      str(config.inference.socket)
                                      if config.inference.socket else None) if x)
        click.echo(f"agent {config.device_id}: serving "
                   f"{f'{active.name}@{active.version}' if active else 'no model'}"
                   f"{f' on {where}' if where else ''} (local only)", err=True)
        while not stop.wait(30.0):
            core.retry_deferred()


@agent.command()
@_config_option
@json_option
def status(config_path: Path, as_json: bool) -> None:
    """Show the slots, the active model, the last install and the install policy.

    Read-only: safe to run beside a running agent; if one is running with a local API, also
    shows what it is serving.

    \b
    Example:
      edgeops agent status --config /etc/edgeops/agent.json --json
    """
    from device_agent import AGENT_VERSION
    from device_agent.config import AgentConfig
    from device_agent.installer import Installer
    from device_agent.policy import InstallPolicy
    from device_agent.slots import SlotStore

    config = AgentConfig.from_file(config_path)
    store = SlotStore(config.slots_dir)
    policy = InstallPolicy.from_config(config.policy)
    installer = Installer(store, target=config.target, trusted=[], policy=policy,
                          state_file=config.data_dir / "install_state.json")
    staged = installer.staged()
    data: dict[str, Any] = {"device_id": config.device_id, "target": config.target,
                            "agent_version": AGENT_VERSION, **store.status(),
                            "staged": staged.summary() if staged else None,
                            "last_install": installer.last_outcome(),
                            "policy": policy.describe(),
                            "serving": _ask_running_agent(config)}

    def text() -> str:
        a = data["active"]
        lines = [f"device {config.device_id} ({config.target}), agent {AGENT_VERSION}",
                 f"active: {a['name']}@{a['version']} in slot {a['slot']}"
                 f"{' (on trial)' if data['trial'] else ''}" if a else "active: none"]
        for s, info in data["slots"].items():
            lines.append(f"  slot {s}: " + (f"{info['name']}@{info['version']} ({info['role']})"
                                            if info else "empty"))
        serving = data["serving"]
        if serving is not None:
            lines.append(f"serving: {serving['name']}@{serving['version']} "
                         f"({serving['runtime']}) on the local API")
        last = data["last_install"]
        if last:
            lines.append(f"last install: {last['bundle']} {last['phase']}"
                         + (f" — {last['reason']}" if last.get("reason") else ""))
        return "\n".join(lines)

    emit(as_json, data, text)


def _ask_running_agent(config: Any) -> dict[str, Any] | None:
    """What a running agent serves, from its local API; None when none answers (1 s)."""
    inf = config.inference
    if not (inf.socket or inf.http):
        return None
    import json as _json

    from device_agent.local_api import LocalClient
    from edgeops.errors import TransportError

    client = (LocalClient(unix_socket=inf.socket, timeout_s=1.0) if inf.socket
              else LocalClient(http=inf.http_address, timeout_s=1.0))
    try:
        status, body, _ = client.request("GET", "/v1/model")
    except TransportError:
        return None
    finally:
        client.close()
    if status != 200:
        return None
    try:
        model: dict[str, Any] = _json.loads(body)["model"]
    except (ValueError, KeyError, TypeError):
        return None
    return model


@agent.command()
@_config_option
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def install(config_path: Path, bundle: Path, as_json: bool) -> None:
    """Install a signed bundle file from local media (USB, first boot, offline sites).

    Same checks as a fleet deployment: the bundle must be signed by the fleet's targets key,
    match this device's target, pass the install policy and its health check; otherwise the
    current model keeps serving. Exit 1 when it is rejected, rolled back or deferred.

    \b
    Example:
      edgeops agent install --config /etc/edgeops/agent.json classifier-2.1.0.edgebundle
    """
    from device_agent.config import AgentConfig
    from device_agent.core import AgentCore
    from device_agent.installer import InstallRequest
    from edgeops.bundle import read_bundle
    from edgeops.errors import BadContentError
    from edgeops.protocol.messages import DevicePhase

    config = AgentConfig.from_file(config_path)
    b = read_bundle(bundle)
    entry = b.manifest.artifact_for(config.target)
    if entry is None:
        raise BadContentError(f"{bundle.name} has no artifact for this device's target "
                              f"{config.target!r}",
                              hint="build the bundle with --target " + config.target)
    show = (lambda _p, _l, _r: None) if as_json else (
        lambda p, label, reason: click.echo(f"  … {label or bundle.name}: {p.value}"
                                            + (f" ({reason})" if reason else ""), err=True))
    core = AgentCore(config, on_phase=show)
    core.start(serve_api=False)
    try:
        req = InstallRequest(b.manifest_bytes, b.signatures.to_bytes(),
                             b.read_file(entry.file.path),
                             b.read_file(entry.golden.path) if entry.golden else None,
                             deployment_id="local")
        outcome = core.install(req)
    finally:
        core.close()
    emit(as_json, outcome.to_dict(),
         lambda: f"{outcome.bundle}: {outcome.phase.value}"
                 + (f" ({outcome.reason})" if outcome.reason else ""))
    if outcome.phase is not DevicePhase.HEALTHY:
        sys.exit(1)


# device-side enrolment (key made on the device, CSR sent): its own module, no fleet/ imports
agent.add_command(enroll)


def agent_main() -> None:
    """``edgeops-agent``: the same as ``edgeops agent run`` (for systemd units)."""
    from edgeops.cli.main import main

    main(["agent", "run", *sys.argv[1:]])

"""The ``edgeops fleet`` command group, assembled from one module per command group.

``serve`` (:mod:`.serve`), devices (:mod:`.devices`), deployments (:mod:`.deployments`),
telemetry and drift (:mod:`.telemetry`), stored drift monitors (:mod:`.monitors`), bundles and
blessings (:mod:`.bundles`), aliases (:mod:`.aliases`), API tokens (:mod:`.tokens`), data
capture (:mod:`.capture`), the PKI (:mod:`.pki`: ``ca``, ``broker-config``); the
top-level ``edgeops publish`` and ``sign-targets`` are in :mod:`.release`.

A thin shell: ``serve`` wires :mod:`fleet.server`; every other command talks to the HTTP API
through :class:`fleet.client.FleetClient` with ``--fleet URL`` / ``EDGEOPS_FLEET`` and
``--token`` / ``EDGEOPS_TOKEN``. Errors are EdgeOpsError subclasses, which ``edgeops`` prints
as one line with a hint (exit 1; 2 for usage errors).
"""

from __future__ import annotations

import click

from fleet.cli import (
    aliases,
    bundles,
    capture,
    deployments,
    devices,
    monitors,
    pki,
    serve,
    telemetry,
    tokens,
)
from fleet.cli._common import parse_duration
from fleet.cli.release import publish, sign_targets

__all__ = ["fleet", "parse_duration", "publish", "sign_targets"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def fleet() -> None:
    """Run the fleet manager and steer devices, deployments and tokens.

    \b
    Example:
      edgeops fleet serve --db sqlite:///fleet.db --data fleet-data --broker mqtt://127.0.0.1:1883
      export EDGEOPS_TOKEN=$(cat fleet-data/admin.token)
      edgeops fleet enroll cam-17 --class camera --target x86-cpu --tag city=lyon --out cam-17/
      edgeops fleet deploy vehicle-classifier@2.1.0 --select 'city=lyon,district=4' \\
          --phases 1%,10%,50%,100% --bake 10m
      edgeops fleet status d-1a2b3c4d5e
    """



# One module per command group; the order here is the order of `edgeops fleet --help`'s source,
# click lists commands by name.
_COMMANDS: tuple[click.Command, ...] = (
    serve.serve,
    devices.enroll, devices.devices, devices.device,
    deployments.deploy, deployments.deployments, deployments.status, *deployments.ACTIONS,
    telemetry.telemetry, telemetry.drift,
    monitors.monitor,         # stored drift monitors and their webhooks (docs/DRIFT.md)
    bundles.bundles, bundles.bless,
    aliases.alias,
    tokens.token,
    capture.capture,          # data capture (docs/DRIFT.md)
    pki.ca, pki.broker_config,
)
for _cmd in _COMMANDS:
    fleet.add_command(_cmd)

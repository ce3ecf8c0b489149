"""``edgeops agent enroll``: the device-side enrolment command (key made here, CSR sent).

A thin click shell over :mod:`edgeops.enrolment`, kept in the agent package so devices need
nothing from ``fleet/``. The edgeops CLI mounts it under ``edgeops agent``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from edgeops.cli.common import emit, json_option
from edgeops.errors import UsageError

__all__ = ["enroll"]


@click.command("enroll")
@click.option("--fleet", "fleet_url", required=True, envvar="EDGEOPS_FLEET_URL",
              help="Fleet manager URL, e.g. http://manager:8080.")
@click.option("--device-id", default=None,
              help="This device's id, as the token names it (not needed with --renew).")
@click.option("--token", default=None, envvar="EDGEOPS_ENROLL_TOKEN",
              help="One-time enrolment token (prefer the env var: no shell history).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for device.key (0600), device.crt and ca.pem.")
@click.option("--renew", is_flag=True, help="Renew the certificate in --out with its key.")
@json_option
def enroll(fleet_url: str, device_id: str | None, token: str | None, out: Path, renew: bool,
           as_json: bool) -> None:
    """On the device: make a key here, send a CSR, store the certificate (key never leaves).

    \b
    Example:
      EDGEOPS_ENROLL_TOKEN=... edgeops agent enroll --fleet http://mgr:8080 \\
          --device-id cam-17 --out /etc/edgeops
    """
    from edgeops.enrolment import renew_certificate, request_certificate

    if renew:
        files = renew_certificate(fleet_url, out)
    elif not device_id:
        raise UsageError("--device-id is needed to enrol", hint="the id the token was made for")
    else:
        files = request_certificate(fleet_url, token or os.environ.get("EDGEOPS_ENROLL_TOKEN", ""),
                                    out, device_id)
    emit(as_json, {"device_id": files.device_id, "key": str(files.key),
                   "certificate": str(files.cert), "ca": str(files.ca),
                   "not_after": files.not_after.isoformat()},
         f"{files.device_id}: certificate {files.cert} valid until {files.not_after}")

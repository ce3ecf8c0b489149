"""Command line for the fleet PKI: ``edgeops fleet ca ...`` and ``broker-config``.

A thin shell over :mod:`fleet.pki` and :mod:`fleet.broker_config`; the fleet group adds ``ca``
and ``broker-config``. The device-side command is the agent's (``edgeops agent enroll``,
device_agent/enroll_cli.py). Tokens are printed once, on stdout, and never logged.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import click

from edgeops.cli.common import emit, json_option
from edgeops.errors import EdgeOpsError, TransportError, UsageError
from edgeops.protocol.topics import valid_device_id
from fleet.pki import MANAGER_IDENTITY, FleetCA

__all__ = ["broker_config", "ca"]

_CA_DIR = click.option("--ca-dir", type=click.Path(file_okay=False, path_type=Path),
                       envvar="EDGEOPS_CA_DIR", default=None,
                       help="CA directory (default $EDGEOPS_HOME/ca).")


def _parse_duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return int(text[:-1]) * units[text[-1]]
        return int(text)
    except ValueError:
        raise UsageError(f"invalid duration {text!r}", hint="use e.g. 30m, 24h or 7d") from None


@click.group()
def ca() -> None:
    """Manage the fleet's certificate authority (device identities for mutual TLS).

    \b
    Example:
      edgeops fleet ca init
      edgeops fleet ca token cam-17 --ttl 24h
      edgeops fleet ca revoke cam-17
    """


@ca.command("init")
@_CA_DIR
@click.option("--name", default="edgeops fleet CA", show_default=True,
              help="Common name of the CA certificate.")
@click.option("--force", is_flag=True, help="Replace an existing CA (devices must re-enrol).")
@click.option("--crl-url", default=None,
              help="Where the CRL is published (e.g. https://manager/pki/crl); written into "
                   "every certificate (EMQX fetches CRLs from there).")
@json_option
def ca_init(ca_dir: Path | None, name: str, force: bool, crl_url: str | None,
            as_json: bool) -> None:
    """Create the fleet CA (key 0600, certificate, empty CRL).

    \b
    Example:
      edgeops fleet ca init --ca-dir /var/lib/edgeops/ca
    """
    store = FleetCA(ca_dir)
    cert = store.init(name, force=force, crl_url=crl_url)
    emit(as_json, {"ca_dir": str(store.dir), "certificate": str(store.cert_path),
                   "not_after": cert.not_valid_after_utc.isoformat()},
         f"fleet CA created in {store.dir} (certificate {store.cert_path})")


@ca.command("token")
@_CA_DIR
@click.argument("device_id")
@click.option("--ttl", default="24h", show_default=True, help="Token lifetime (30m, 24h, 7d).")
@json_option
def ca_token(ca_dir: Path | None, device_id: str, ttl: str, as_json: bool) -> None:
    """Mint a one-time enrolment token for DEVICE_ID (stored only as a hash).

    \b
    Example:
      edgeops fleet ca token cam-17 --ttl 2h
    """
    seconds = _parse_duration(ttl)
    token = FleetCA(ca_dir).create_token(device_id, seconds)
    emit(as_json, {"device_id": device_id, "token": token, "ttl_s": seconds},
         f"{token}\n(one-time token for {device_id}, valid {ttl}; it is shown only once)")


@ca.command("issue")
@_CA_DIR
@click.argument("identity", required=False)
@click.option("--csr", "csr_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Sign this CSR (a device enrolled out of band).")
@click.option("--manager", is_flag=True,
              help=f"Issue the manager's identity ({MANAGER_IDENTITY}), key made here.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Certificate file (with --csr) or directory (with --manager).")
@json_option
def ca_issue(ca_dir: Path | None, identity: str | None, csr_path: Path | None, manager: bool,
             out: Path, as_json: bool) -> None:
    """Issue a certificate: for a device CSR, or the manager's own client identity.

    \b
    Example:
      edgeops fleet ca issue cam-17 --csr cam-17.csr --out cam-17.crt
      edgeops fleet ca issue --manager --out /etc/edgeops/manager-tls
    """
    store = FleetCA(ca_dir)
    if manager == (csr_path is not None):
        raise UsageError("give exactly one of --csr or --manager")
    if manager:
        key, cert = store.issue_with_key(MANAGER_IDENTITY, out, kind="manager")
        (out / "ca.crt").write_bytes(store.cert_path.read_bytes())
        emit(as_json, {"identity": MANAGER_IDENTITY, "key": str(key), "certificate": str(cert)},
             f"manager identity {MANAGER_IDENTITY}: {cert} (key {key}, mode 0600)")
        return
    if not identity:
        raise UsageError("name the device the CSR is for", hint="edgeops fleet ca issue ID --csr")
    assert csr_path is not None
    from cryptography.hazmat.primitives import serialization

    from edgeops.fsutil import atomic_write

    cert_obj = store.issue(csr_path.read_bytes(), identity)
    atomic_write(out, cert_obj.public_bytes(serialization.Encoding.PEM))
    emit(as_json, {"identity": identity, "certificate": str(out),
                   "serial": format(cert_obj.serial_number, "x"),
                   "not_after": cert_obj.not_valid_after_utc.isoformat()},
         f"issued {identity}: {out}")


@ca.command("revoke")
@_CA_DIR
@click.argument("what")
@click.option("--reason", default=None, help="Free text kept in the CA's records.")
@click.option("--crl-out", type=click.Path(dir_okay=False, path_type=Path), multiple=True,
              help="Also copy the new CRL here (e.g. the broker's crl.pem); repeatable.")
@click.option("--broker", envvar="EDGEOPS_BROKER_ADMIN", default=None,
              help="mqtts://HOST:8884, the broker's manager listener: disconnect the device now "
                   "and take its permissions (dynamic security).")
@click.option("--broker-ca", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              envvar="EDGEOPS_BROKER_CA", default=None, help="CA of the broker's certificate.")
@click.option("--broker-cert", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              envvar="EDGEOPS_BROKER_CERT", default=None, help="The manager's certificate.")
@click.option("--broker-key", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              envvar="EDGEOPS_BROKER_KEY", default=None, help="Private key of --broker-cert.")
@click.option("--broker-password-file", type=click.Path(path_type=Path, dir_okay=False),
              envvar="EDGEOPS_BROKER_PASSWORD_FILE", default=None,
              help="manager.password from `edgeops fleet broker-config`.")
@click.option("--reload-broker", "reload_broker", default=None, metavar="PID|PIDFILE",
              help="After writing --crl-out, send SIGHUP to this broker process (a pid, or a "
                   "pid file such as /run/mosquitto/mosquitto.pid): it re-reads its crlfile "
                   "and refuses the certificate's next handshake. Broker on this host only.")
@json_option
def ca_revoke(ca_dir: Path | None, what: str, reason: str | None, crl_out: tuple[Path, ...],
              broker: str | None, broker_ca: Path | None, broker_cert: Path | None,
              broker_key: Path | None, broker_password_file: Path | None,
              reload_broker: str | None, as_json: bool) -> None:
    """Revoke a device (every certificate of that id) or one serial (0x...).

    With --broker the device's open session is closed at once and it loses every permission
    on the broker; the broker also refuses the certificate once it reloads its crlfile:
    --reload-broker does that here (SIGHUP, no restart), so one command both disconnects the
    device and keeps it from connecting again.

    \b
    Example:
      edgeops fleet ca revoke cam-17 --crl-out /etc/mosquitto/edgeops/crl.pem \\
          --broker mqtts://mqtt.city.example:8884 --broker-password-file manager.password \\
          --reload-broker /run/mosquitto/mosquitto.pid
    """
    from datetime import UTC, datetime

    from edgeops.fsutil import atomic_write

    if reload_broker is not None and not crl_out:
        raise UsageError("--reload-broker needs --crl-out (the broker's crlfile)",
                         hint="add --crl-out PATH, the file the broker's crlfile names")
    reload_pid = _broker_pid(reload_broker) if reload_broker is not None else None
    admin = None
    if broker is not None:
        from fleet.broker_admin import BrokerAdmin, read_password
        from fleet.mqtt import TlsOptions, parse_broker_url

        if broker_password_file is None:
            raise UsageError("--broker needs --broker-password-file",
                             hint="the manager.password written by `edgeops fleet broker-config`")
        parse_broker_url(broker)   # a bad URL fails before anything is revoked
        admin = BrokerAdmin(broker, read_password(broker_password_file),
                            tls=TlsOptions(broker_ca, broker_cert, broker_key))
    store = FleetCA(ca_dir)
    try:
        done = store.revoke(what, reason=reason)
    except UsageError:
        known = [r for r in store.records() if r.identity == what]
        if admin is None or not known or any(r.revoked_at is None for r in known):
            raise
        done = []   # revoked in the CA already: this run brings the broker in line
    for dest in crl_out:
        atomic_write(dest, store.crl_path.read_bytes())
    # a device keeps its broker permissions while it holds another valid certificate
    # (revoking the old serial after a renewal)
    now = datetime.now(UTC)
    still_valid = {r.identity for r in store.records()
                   if r.revoked_at is None and datetime.fromisoformat(r.not_after) > now}
    devices = sorted(d for d in {r.identity for r in done} | {what}
                     if valid_device_id(d) and d not in still_valid
                     and any(r.identity == d for r in store.records()))
    if admin is not None:
        try:
            with admin:
                for device in devices:
                    admin.revoke_device(device)
        except EdgeOpsError as exc:
            raise TransportError(
                f"revoked in the CA ({len(done)} certificate(s), CRL written) but the broker "
                f"was not updated: {exc.message}",
                hint="run the same command again once the broker is reachable; it then only "
                     "updates the broker") from None
    if reload_pid is not None:
        _sighup(reload_pid)
    emit(as_json, {"revoked": [format(r.serial, "x") for r in done], "crl": str(store.crl_path),
                   "broker_revoked": devices if admin is not None else [],
                   "broker_reloaded": reload_pid},
         f"revoked {len(done)} certificate(s) of {what}; CRL: {store.crl_path}"
         + (f"; broker: {', '.join(devices) or 'nothing'} disconnected" if admin else "")
         + (f"; broker (pid {reload_pid}) re-read its CRL" if reload_pid is not None else ""))


def _broker_pid(spec: str) -> int:
    """A pid, or the pid in a pid file, checked before anything is revoked."""
    text = spec
    if not spec.isdigit():
        try:
            text = Path(spec).read_text().strip()
        except OSError as exc:
            raise UsageError(f"--reload-broker: cannot read the pid file {spec} ({exc.strerror})",
                             hint="give the broker's pid, or its pid_file "
                                  "(/run/mosquitto/mosquitto.pid on Debian)") from None
    if not text.isdigit() or int(text) <= 1:
        raise UsageError(f"--reload-broker: {spec!r} holds no process id",
                         hint="give the broker's pid, or the file its pid_file option names")
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise UsageError(f"--reload-broker: no process {pid} is running",
                         hint="is the broker running on this host?") from None
    except PermissionError:
        raise UsageError(f"--reload-broker: not allowed to signal process {pid}",
                         hint="run as the broker's user or root") from None
    return pid


def _sighup(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise TransportError(f"revoked and CRL written, but the broker (pid {pid}) was not "
                             f"reloaded: {exc.strerror}",
                             hint="send it SIGHUP by hand: kill -HUP PID") from None


@ca.command("crl")
@_CA_DIR
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also copy the re-signed CRL here.")
@json_option
def ca_crl(ca_dir: Path | None, out: Path | None, as_json: bool) -> None:
    """Re-sign the CRL (it expires after 7 days: run from cron) and optionally copy it.

    \b
    Example:
      edgeops fleet ca crl --out /etc/mosquitto/edgeops/crl.pem
    """
    from edgeops.fsutil import atomic_write

    store = FleetCA(ca_dir)
    crl = store.refresh_crl()
    if out is not None:
        atomic_write(out, store.crl_path.read_bytes())
    revoked = [format(r.serial_number, "x") for r in crl]
    emit(as_json, {"crl": str(store.crl_path), "revoked": revoked,
                   "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc
                   else None},
         f"CRL {store.crl_path}: {len(revoked)} revoked")


@ca.command("list")
@_CA_DIR
@json_option
def ca_list(ca_dir: Path | None, as_json: bool) -> None:
    """List issued certificates.

    \b
    Example:
      edgeops fleet ca list --json
    """
    from dataclasses import asdict

    records = FleetCA(ca_dir).records()

    def text() -> str:
        rows = [f"{r.serial:x}  {r.kind:8} {r.identity:24} until {r.not_after}"
                + (f"  REVOKED {r.revoked_at}" if r.revoked_at else "") for r in records]
        return "\n".join(rows) or "no certificates issued"

    emit(as_json, [asdict(r) | {"serial": format(r.serial, "x")} for r in records], text)


@click.command("broker-config")
@_CA_DIR
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for mosquitto.conf, the dynamic-security file, manager.password, "
                   "certificates and crl.pem.")
@click.option("--hostname", "hostnames", multiple=True,
              default=("localhost", "127.0.0.1", "::1"), show_default=True,
              help="Broker names for its server certificate; repeatable.")
@click.option("--port", default=8883, show_default=True, type=int,
              help="Device listener (client id = certificate CN).")
@click.option("--manager-port", default=8884, show_default=True, type=int,
              help="Manager listener (certificate + manager.password).")
@click.option("--bind", default=None, help="Address to listen on (default all).")
@click.option("--manager-bind", default=None,
              help="Address of the manager listener (default all; the manager's network).")
@click.option("--user", default="mosquitto", show_default=True,
              help="Account Mosquitto drops to; its key and dynamic-security file are handed "
                   "to it.")
@click.option("--dynsec-plugin", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="mosquitto_dynamic_security.so (default: found where "
                                 "Mosquitto 2 installs it).")
@json_option
def broker_config(ca_dir: Path | None, out: Path, hostnames: tuple[str, ...], port: int,
                  manager_port: int, bind: str | None, manager_bind: str | None, user: str,
                  dynsec_plugin: Path | None, as_json: bool) -> None:
    """Write a Mosquitto configuration: mutual TLS, certificate CN as username and client id,
    dynamic-security authorisation changed live by the manager.

    \b
    Example:
      edgeops fleet broker-config --out /etc/mosquitto/edgeops --hostname mqtt.city.example
      mosquitto -c /etc/mosquitto/edgeops/mosquitto.conf
    """
    from fleet.broker_config import write_broker_config

    files = write_broker_config(FleetCA(ca_dir), out, hostnames=hostnames, port=port,
                                manager_port=manager_port, bind=bind, manager_bind=manager_bind,
                                user=user, plugin=dynsec_plugin)
    emit(as_json, {k: str(v) for k, v in vars(files).items()},
         f"wrote {files.conf} (authorisation {files.dynsec}; manager password "
         f"{files.manager_password}); run: mosquitto -c {files.conf}")

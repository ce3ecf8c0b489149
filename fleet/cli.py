"""The ``edgeops fleet`` command group and the top-level ``edgeops publish``.

A thin shell: ``serve`` wires :mod:`fleet.server`; every other command talks to the HTTP API
through :class:`fleet.client.FleetClient` with ``--fleet URL`` / ``EDGEOPS_FLEET`` and
``--token`` / ``EDGEOPS_TOKEN``. Errors are EdgeOpsError subclasses, which ``edgeops`` prints
as one line with a hint (exit 1; 2 for usage errors).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeops.cli.common import emit, json_option, progress_printer
from edgeops.errors import UsageError
from fleet.capture.cli import capture as _capture_group

__all__ = ["fleet"]  # publish, sign_targets: fleet.release_cli (module __getattr__ below)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise UsageError(f"duration {text!r} is not like 30s, 5m, 2h or 3d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _fleet_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--token", envvar="EDGEOPS_TOKEN", show_envvar=True,
                     help="API token (Bearer).")(f)
    return click.option("--fleet", "fleet_url", envvar="EDGEOPS_FLEET", show_envvar=True,
                        default="http://127.0.0.1:8080", show_default=True,
                        help="Fleet manager URL.")(f)


def _client(fleet_url: str, token: str | None) -> Any:
    from fleet.client import FleetClient

    return FleetClient(fleet_url, token)


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


# -- serve -------------------------------------------------------------------------------------
@fleet.command()
@click.option("--db", default="sqlite:///fleet-data/fleet.db", show_default=True,
              envvar="EDGEOPS_FLEET_DB", help="sqlite:///RELATIVE.db, sqlite:////ABS.db, a path, or "
                   "postgresql://USER@HOST/DB.")
@click.option("--listen", default="127.0.0.1:8080", show_default=True,
              envvar="EDGEOPS_FLEET_LISTEN", help="HOST:PORT of the HTTP API.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("fleet-data"),
              show_default=True, envvar="EDGEOPS_FLEET_DATA",
              help="Directory for artifacts, uploads and admin.token.")
@click.option("--broker", envvar="EDGEOPS_BROKER", default=None,
              help="mqtt://HOST:PORT of the broker (omit to run without MQTT).")
@click.option("--broker-ca", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              envvar="EDGEOPS_BROKER_CA", default=None,
              help="CA certificate that signed the broker's (mqtts://).")
@click.option("--broker-cert", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              envvar="EDGEOPS_BROKER_CERT", default=None,
              help="The manager's client certificate for mutual TLS "
                   "(from `edgeops fleet ca issue --manager`).")
@click.option("--broker-key", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              envvar="EDGEOPS_BROKER_KEY", default=None,
              help="Private key of --broker-cert.")
@click.option("--broker-password-file", type=click.Path(path_type=Path, dir_okay=False),
              envvar="EDGEOPS_BROKER_PASSWORD_FILE", default=None,
              help="manager.password from `edgeops fleet broker-config`: log in on the broker's "
                   "manager listener and grant enrolled devices their topics there.")
@click.option("--keys", "keys_home", type=click.Path(path_type=Path), default=None,
              help="EDGEOPS_HOME holding keys/ and trust/root.json.")
@click.option("--public-url", default=None,
              help="URL devices use to reach this API (default http://LISTEN).")
@click.option("--device-broker", default=None,
              help="Broker URL written into enrolled agents' config (default --broker).")
@click.option("--require-blessing", is_flag=True, envvar="EDGEOPS_REQUIRE_BLESSING",
              help="Refuse deployments to hardware classes without a passing hardware test.")
@click.option("--mlflow-tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="Tag each ended deployment's outcome on the MLflow model version its "
                   "bundle was built from (extra `mlflow`).")
@click.option("--tick", type=float, default=1.0, show_default=True,
              help="Seconds between rollout engine passes.")
def serve(db: str, listen: str, data_dir: Path, broker: str | None, broker_ca: Path | None,
          broker_cert: Path | None, broker_key: Path | None, broker_password_file: Path | None,
          keys_home: Path | None, public_url: str | None, device_broker: str | None,
          require_blessing: bool, mlflow_tracking_uri: str | None, tick: float) -> None:
    """Run the fleet manager: HTTP API, TUF repository, rollout engine, MQTT worker.

    \b
    Example:
      edgeops fleet serve --broker mqtt://127.0.0.1:1883 --db sqlite:///fleet.db \\
          --listen 127.0.0.1:8080 --data fleet-data
      edgeops fleet serve --broker mqtts://broker:8884 --broker-ca broker/ca.pem \\
          --broker-cert manager.crt --broker-key manager.key \\
          --broker-password-file manager.password --device-broker mqtts://broker:8883 \\
          --db postgresql://fleet@db/fleet
    """
    if (broker_cert is None) != (broker_key is None):
        raise UsageError("--broker-cert and --broker-key go together",
                         hint="pass both, from `edgeops fleet ca issue --manager`")
    from fleet.server import FleetServer, ServeOptions, announce

    server = FleetServer(ServeOptions(
        db=db, listen=listen, data=data_dir, broker=broker, broker_ca=broker_ca,
        broker_cert=broker_cert, broker_key=broker_key,
        broker_password_file=broker_password_file, keys_home=keys_home,
        public_url=public_url, device_broker_url=device_broker,
        require_blessing=require_blessing, tick_s=tick,
        mlflow_tracking_uri=mlflow_tracking_uri))
    server.serve(on_ready=announce)


# -- devices -----------------------------------------------------------------------------------
@fleet.command()
@click.argument("device_id")
@click.option("--class", "device_class", required=True,
              type=click.Choice(["sensor", "camera", "vehicle", "gateway"]))
@click.option("--target", required=True, help="Target profile (see `edgeops targets`).")
@click.option("--tag", "tags", multiple=True, help="key=value, repeatable.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Directory for agent.json, root.json and credentials.")
@click.option("--no-certificate", is_flag=True,
              help="With a fleet CA: write the one-time enroll.token instead of a key and "
                   "certificate (the device then runs `edgeops agent enroll` itself).")
@_fleet_options
@json_option
def enroll(device_id: str, device_class: str, target: str, tags: tuple[str, ...], out: Path,
           no_certificate: bool, fleet_url: str, token: str | None, as_json: bool) -> None:
    """Register a device and write its agent configuration into --out.

    \b
    With a fleet CA (`edgeops fleet ca init`), the manager also issues a one-time token and
    this command obtains the device's mutual-TLS key and certificate into --out.

    \b
    Example:
      edgeops fleet enroll cam-17 --class camera --target x86-cpu \\
          --tag city=lyon --tag district=4 --out ./cam-17
      edgeops agent run --config ./cam-17/agent.json
    """
    from fleet.enroll import new_device, write_enrollment

    device = new_device(device_id, device_class, target, list(tags))  # validate locally first
    answer = _client(fleet_url, token).enrol(device.id, device.device_class, device.target,
                                             device.tags)
    extra: dict[str, bytes] = {}
    one_time = answer.get("enrolment_token")
    if one_time and no_certificate:
        extra["enroll.token"] = one_time.encode() + b"\n"
    written = write_enrollment(out, answer["agent_config"], answer["root_json"].encode(), extra)
    if one_time and not no_certificate:
        from device_agent.enroll import request_certificate

        files = request_certificate(fleet_url, one_time, out, device.id)
        written += [files.key, files.cert, files.ca]
    emit(as_json, {"device": answer["device"], "files": [str(p) for p in written]},
         lambda: f"enrolled {device.id} ({device.device_class}, {device.target}); wrote "
                 + ", ".join(str(p) for p in written))


@fleet.command()
@click.option("--class", "device_class", default=None, help="Only this device class.")
@click.option("--target", default=None, help="Only this target profile.")
@click.option("--tag", "tags", multiple=True, help="key=value, repeatable (AND).")
@click.option("--version", default=None, help="Active bundle version or name@version.")
@click.option("--online/--offline", default=None, help="Only online / offline devices.")
@click.option("--search", default=None, help="Substring of the id or a tag value.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--cursor", default=None, help="next_cursor from the previous page.")
@_fleet_options
@json_option
def devices(device_class: str | None, target: str | None, tags: tuple[str, ...],
            version: str | None, online: bool | None, search: str | None, limit: int,
            cursor: str | None, fleet_url: str, token: str | None, as_json: bool) -> None:
    """List devices, filtered and paginated.

    \b
    Example:
      edgeops fleet devices --class camera --tag district=4 --offline
    """
    page = _client(fleet_url, token).devices(
        **{"class": device_class, "target": target, "tag": list(tags) or None,
           "version": version, "online": None if online is None else str(online).lower(),
           "search": search, "limit": limit, "cursor": cursor})

    def text() -> str:
        lines = [f"{'ID':<24} {'CLASS':<8} {'TARGET':<10} {'ONLINE':<6} {'ACTIVE':<28} TAGS"]
        for d in page["items"]:
            tags_s = ",".join(f"{k}={v}" for k, v in sorted(d["tags"].items()))
            lines.append(f"{d['id']:<24} {d['class']:<8} {d['target']:<10} "
                         f"{'yes' if d['online'] else 'no':<6} {d['active_bundle'] or '-':<28} "
                         f"{tags_s}")
        lines.append(f"{len(page['items'])} of {page['total']} devices"
                     + (f" (next: --cursor {page['next_cursor']})" if page["next_cursor"] else ""))
        return "\n".join(lines)

    emit(as_json, page, text)


@fleet.command()
@click.argument("device_id")
@click.option("--telemetry", "kind", default=None, help="Also show telemetry of this kind.")
@_fleet_options
@json_option
def device(device_id: str, kind: str | None, fleet_url: str, token: str | None,
           as_json: bool) -> None:
    """Show one device (and optionally its latest telemetry).

    \b
    Example:
      edgeops fleet device cam-17 --telemetry inference
    """
    c = _client(fleet_url, token)
    d = c.device(device_id)
    if kind:
        d["telemetry"] = c.telemetry(device_id, kind=kind, limit=20)["items"]
    emit(as_json, d, lambda: json.dumps(d, indent=2, sort_keys=True))


# -- deployments ---------------------------------------------------------------------------------
@fleet.command()
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
@_fleet_options
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
    st = _client(fleet_url, token).deploy(name, None if alias else version, selector,
                                          strategy.to_dict(), alias=alias)
    emit(as_json, st, lambda: f"deployment {st['id']}: {st['bundle']} to {st['devices']} "
                              f"devices in {st['phases']} phases ({st['status']})")


@fleet.command()
@click.option("--status", "statuses", multiple=True, help="Only these statuses (repeatable).")
@_fleet_options
@json_option
def deployments(statuses: tuple[str, ...], fleet_url: str, token: str | None,
                as_json: bool) -> None:
    """List deployments, newest first.

    \b
    Example:
      edgeops fleet deployments --status running
    """
    out = _client(fleet_url, token).deployments(list(statuses) or None)

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


@fleet.command()
@click.argument("deployment_id")
@click.option("--devices", "show_devices", is_flag=True, help="List every device's state.")
@click.option("--watch", is_flag=True, help="Refresh until the deployment finishes.")
@_fleet_options
@json_option
def status(deployment_id: str, show_devices: bool, watch: bool, fleet_url: str,
           token: str | None, as_json: bool) -> None:
    """Show a deployment: phase, counts per device state, offline devices.

    \b
    Example:
      edgeops fleet status d-1a2b3c4d5e --devices
    """
    c = _client(fleet_url, token)
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
    @_fleet_options
    @json_option
    def act(deployment_id: str, fleet_url: str, token: str | None, as_json: bool) -> None:
        st = _client(fleet_url, token).act(deployment_id, verb)
        emit(as_json, st, lambda: _status_text(st))

    act.__doc__ = doc
    return click.command(verb)(click.argument("deployment_id")(act))


for _verb, _doc in (
        ("pause", "Pause a deployment: nobody new is notified.\n\n\b\nExample:\n"
                  "  edgeops fleet pause d-1a2b3c4d5e"),
        ("resume", "Resume a paused deployment.\n\n\b\nExample:\n"
                   "  edgeops fleet resume d-1a2b3c4d5e"),
        ("cancel", "Cancel a deployment; devices still installing are told to stop.\n\n\b\n"
                   "Example:\n  edgeops fleet cancel d-1a2b3c4d5e"),
        ("rollback", "Roll every device this deployment reached back to its previous "
                     "bundle.\n\n\b\nExample:\n  edgeops fleet rollback d-1a2b3c4d5e")):
    fleet.add_command(_action(_verb, _doc))


# -- telemetry, bundles, blessings ---------------------------------------------------------------
@fleet.command()
@click.option("--device", "device_id", default=None, help="One device's records.")
@click.option("--deployment", default=None, help="Aggregate over a deployment.")
@click.option("--tag", "tags", multiple=True, help="Aggregate over devices with key=value.")
@click.option("--class", "device_class", default=None, help="Aggregate over a device class.")
@click.option("--kind", default=None, help="Record kind (heartbeat, system, inference, drift).")
@click.option("--since", default=None, help="Only the last DURATION (e.g. 1h).")
@click.option("--limit", type=int, default=50, show_default=True)
@_fleet_options
@json_option
def telemetry(device_id: str | None, deployment: str | None, tags: tuple[str, ...],
              device_class: str | None, kind: str | None, since: str | None, limit: int,
              fleet_url: str, token: str | None, as_json: bool) -> None:
    """Query telemetry: one device's records, or aggregates per deployment or group.

    \b
    Example:
      edgeops fleet telemetry --device cam-17 --kind inference --since 1h
      edgeops fleet telemetry --deployment d-1a2b3c4d5e
    """
    c = _client(fleet_url, token)
    since_ts = time.time() - parse_duration(since) if since else None
    if device_id:
        out = c.telemetry(device_id, kind=kind, since=since_ts, limit=limit)
        emit(as_json, out, lambda: "\n".join(json.dumps(r, sort_keys=True)
                                             for r in out["items"]))
        return
    agg = c.aggregate(deployment=deployment, tag=list(tags) or None,
                      **{"class": device_class}, since=since_ts)
    emit(as_json, agg, lambda: "\n".join(f"{k:<20} {v}" for k, v in sorted(agg.items())))


@fleet.command()
@click.option("--cohort", "cohorts", multiple=True,
              help="Tag selector merged as one group (repeatable), e.g. city=lyon.")
@click.option("--deployment", default=None, help="Merge the devices of this deployment.")
@click.option("--device", "device_id", default=None, help="Only this device.")
@click.option("--alpha", type=float, default=0.01, show_default=True,
              help="Per-window error rate after correction.")
@click.option("--correction", type=click.Choice(["bh", "bonferroni"]), default="bh",
              show_default=True)
@click.option("--test", "test_name", type=click.Choice(["chi2", "g"]), default="chi2",
              show_default=True)
@click.option("--persistence", type=int, default=2, show_default=True,
              help="Consecutive drifting windows before an alarm.")
@click.option("--min-samples", type=int, default=200, show_default=True,
              help="Live samples per feature before any verdict.")
@_fleet_options
@json_option
def drift(cohorts: tuple[str, ...], deployment: str | None, device_id: str | None, alpha: float,
          correction: str, test_name: str, persistence: int, min_samples: int, fleet_url: str,
          token: str | None, as_json: bool) -> None:
    """Data and prediction drift per device, cohort and deployment (docs/DRIFT.md).

    \b
    Example:
      edgeops fleet drift --cohort city=lyon --cohort class=camera
      edgeops fleet drift --deployment d-1a2b3c4d5e --correction bonferroni --json
    """
    from fleet.drift.report import render

    out = _client(fleet_url, token).drift(
        cohort=list(cohorts) or None, deployment=deployment, device=device_id, alpha=alpha,
        correction=correction, test=test_name, persistence=persistence, min_samples=min_samples)
    emit(as_json, out, lambda: render(out))


@fleet.command()
@click.option("--name", default=None, help="Only this bundle name.")
@_fleet_options
@json_option
def bundles(name: str | None, fleet_url: str, token: str | None, as_json: bool) -> None:
    """List published bundles.

    \b
    Example:
      edgeops fleet bundles --name vehicle-classifier
    """
    out = _client(fleet_url, token).bundles(name)

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


@fleet.command()
@click.argument("bundle_path", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--report", "report_path", required=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="The hardware_tests JSON report (hardware-report.json) of a passing run.")
@_fleet_options
@json_option
def bless(bundle_path: Path, report_path: Path, fleet_url: str, token: str | None,
          as_json: bool) -> None:
    """Upload a hardware_tests report that blesses a bundle for a hardware class.

    \b
    Example:
      edgeops fleet bless out/vc-2.1.0.edgebundle --report hardware-report.json
    """
    try:
        from hardware_tests.bless import upload_blessing
    except ImportError:
        raise UsageError("hardware_tests is not installed here",
                         hint="install edgeops with the hardware_tests package") from None
    out = upload_blessing(fleet_url, token or "", bundle_path, report_path)
    emit(as_json, out, lambda: f"blessed {out.get('name')}@{out.get('version')} for "
                               f"{out.get('hardware')} (passed: {out.get('passed')})")


# -- aliases --------------------------------------------------------------------------------------
def _name_alias(text: str) -> tuple[str, str]:
    from fleet.aliases import check_alias

    name, sep, alias = text.partition("@")
    if not sep or not name or not alias:
        raise UsageError(f"{text!r} is not NAME@ALIAS", hint="e.g. vehicle-classifier@champion")
    return name, check_alias(alias)


@fleet.group()
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
@_fleet_options
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
    out = _client(fleet_url, token).set_alias(name, al, version, plan)

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
@_fleet_options
@json_option
def alias_list(name: str | None, fleet_url: str, token: str | None, as_json: bool) -> None:
    """List aliases and the versions they name.

    \b
    Example:
      edgeops fleet alias list --name vehicle-classifier
    """
    out = _client(fleet_url, token).aliases(name)
    emit(as_json, out, lambda: "\n".join(
        f"{a['name']}@{a['alias']} -> {a['version']}  (moved by {a['moved_by'] or '-'})"
        for a in out["items"]))


@alias.command("show")
@click.argument("name_alias", metavar="NAME@ALIAS")
@_fleet_options
@json_option
def alias_show(name_alias: str, fleet_url: str, token: str | None, as_json: bool) -> None:
    """One alias and every move of it: when, by whom, from which version, which rollout.

    \b
    Example:
      edgeops fleet alias show vehicle-classifier@champion
    """
    name, al = _name_alias(name_alias)
    out = _client(fleet_url, token).alias(name, al)
    emit(as_json, out, lambda: "\n".join(
        [f"{out['name']}@{out['alias']} -> {out['version']}"]
        + [f"  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(m['moved_at']))}Z  "
           f"{m['previous'] or '-'} -> {m['version']}  by {m['moved_by'] or '-'}"
           + (f"  deployment {m['deployment_id']}" if m.get("deployment_id") else "")
           for m in out["moves"]]))


# -- tokens ---------------------------------------------------------------------------------------
@fleet.group()
def token() -> None:
    """Create, list and revoke API tokens (admin).

    \b
    Example:
      edgeops fleet token create --role operator --name ci
    """


@token.command("create")
@click.option("--role", required=True,
              type=click.Choice(["viewer", "operator", "publisher", "admin"]))
@click.option("--name", default=None, help="A label for people (shown in listings).")
@_fleet_options
@json_option
def token_create(role: str, name: str | None, fleet_url: str, token: str | None,
                 as_json: bool) -> None:
    """Create a token; the secret is shown once.

    \b
    Example:
      edgeops fleet token create --role publisher --name ml-team
    """
    out = _client(fleet_url, token).create_token(role, name)
    emit(as_json, out, lambda: f"{out['token']}\n(token {out['token_id']}, role {out['role']};"
                               " store it now, it is not shown again)")


@token.command("list")
@_fleet_options
@json_option
def token_list(fleet_url: str, token: str | None, as_json: bool) -> None:
    """List tokens (ids and roles, never secrets).

    \b
    Example:
      edgeops fleet token list
    """
    out = _client(fleet_url, token).tokens()
    emit(as_json, out, lambda: "\n".join(
        f"{t['token_id']}  {t['role']:<9} {t['name']}{'  (revoked)' if t['revoked'] else ''}"
        for t in out["items"]))


@token.command("revoke")
@click.argument("token_id")
@_fleet_options
@json_option
def token_revoke(token_id: str, fleet_url: str, token: str | None, as_json: bool) -> None:
    """Revoke a token by its id.

    \b
    Example:
      edgeops fleet token revoke 3f2a9c0d1e2b4a5c
    """
    out = _client(fleet_url, token).revoke_token(token_id)
    emit(as_json, out, lambda: f"revoked {token_id}")


# -- data capture (issue 18): fleet.capture.cli ------------------------------------------------
fleet.add_command(_capture_group)


# -- PKI hook (fleet.pki_cli, owned by the security work) -----------------------------------------
try:
    from fleet import pki_cli as _pki_cli
except ImportError:  # the PKI commands are optional
    _pki_cli = None  # type: ignore[assignment]
if _pki_cli is not None:
    for _attr in ("ca", "broker_config"):
        _cmd = getattr(_pki_cli, _attr, None)
        if isinstance(_cmd, click.Command):
            fleet.add_command(_cmd)


# -- publish and sign-targets (top level) live in fleet.release_cli ----------------------------
def __getattr__(name: str) -> Any:
    """``from fleet.cli import publish`` keeps working, loaded on demand (fleet.release_cli
    imports this module's helpers, so it cannot be imported from here at load time)."""
    if name in ("publish", "sign_targets"):
        from fleet import release_cli

        return getattr(release_cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""``edgeops fleet enroll``, ``devices``, ``device``: registering and looking at devices.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeops.cli.common import emit, json_option
from fleet.cli._common import api_client, fleet_options

__all__ = ["device", "devices", "enroll"]


@click.command()
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
@fleet_options
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
    answer = api_client(fleet_url, token).enrol(device.id, device.device_class, device.target,
                                             device.tags)
    extra: dict[str, bytes] = {}
    one_time = answer.get("enrolment_token")
    if one_time and no_certificate:
        extra["enroll.token"] = one_time.encode() + b"\n"
    written = write_enrollment(out, answer["agent_config"], answer["root_json"].encode(), extra)
    if one_time and not no_certificate:
        from edgeops.enrolment import request_certificate

        files = request_certificate(fleet_url, one_time, out, device.id)
        written += [files.key, files.cert, files.ca]
    emit(as_json, {"device": answer["device"], "files": [str(p) for p in written]},
         lambda: f"enrolled {device.id} ({device.device_class}, {device.target}); wrote "
                 + ", ".join(str(p) for p in written))


@click.command()
@click.option("--class", "device_class", default=None, help="Only this device class.")
@click.option("--target", default=None, help="Only this target profile.")
@click.option("--tag", "tags", multiple=True, help="key=value, repeatable (AND).")
@click.option("--version", default=None, help="Active bundle version or name@version.")
@click.option("--online/--offline", default=None, help="Only online / offline devices.")
@click.option("--search", default=None, help="Substring of the id or a tag value.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--cursor", default=None, help="next_cursor from the previous page.")
@fleet_options
@json_option
def devices(device_class: str | None, target: str | None, tags: tuple[str, ...],
            version: str | None, online: bool | None, search: str | None, limit: int,
            cursor: str | None, fleet_url: str, token: str | None, as_json: bool) -> None:
    """List devices, filtered and paginated.

    \b
    Example:
      edgeops fleet devices --class camera --tag district=4 --offline
    """
    page = api_client(fleet_url, token).devices(
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


@click.command()
@click.argument("device_id")
@click.option("--telemetry", "kind", default=None, help="Also show telemetry of this kind.")
@fleet_options
@json_option
def device(device_id: str, kind: str | None, fleet_url: str, token: str | None,
           as_json: bool) -> None:
    """Show one device (and optionally its latest telemetry).

    \b
    Example:
      edgeops fleet device cam-17 --telemetry inference
    """
    c = api_client(fleet_url, token)
    d = c.device(device_id)
    if kind:
        d["telemetry"] = c.telemetry(device_id, kind=kind, limit=20)["items"]
    emit(as_json, d, lambda: json.dumps(d, indent=2, sort_keys=True))

"""Enrolment: register a device and produce everything its agent needs to start.

``agent_config`` builds the agent's ``agent.json`` (schema ``edgeops.agent-config/v1``, read
by :class:`device_agent.config.AgentConfig`) from what the manager knows: broker URL, its own
URL, the TUF root and the pinned ``manager`` key that signs commands. ``write_enrollment``
writes the files into a directory atomically (config last, so a half-written directory never
looks complete). Pure apart from that one writer.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.errors import UsageError
from edgeops.fsutil import atomic_write
from edgeops.protocol import topics
from edgeops.targets import PROFILES
from fleet.store import DEVICE_CLASSES, Device

__all__ = ["AGENT_CONFIG_SCHEMA", "TLS_FILES", "EnrolSettings", "agent_config", "new_device",
           "parse_tags", "write_enrollment"]

AGENT_CONFIG_SCHEMA = "edgeops.agent-config/v1"
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_RESERVED_TAGS = ("class", "target", "id", "version")
TLS_FILES = {"ca": "ca.pem", "cert": "device.crt", "key": "device.key"}
"""Mutual-TLS files beside agent.json, as edgeops.enrolment writes them."""


@dataclass(frozen=True)
class EnrolSettings:
    """What the manager hands every enrolled device."""

    broker_url: str
    fleet_url: str | None
    manager_keys: tuple[dict[str, Any], ...]     # securesystemslib dicts with "keyid"
    root_json: bytes
    keepalive_s: int = 30
    telemetry_interval_s: int = 10


def parse_tags(items: Mapping[str, str] | list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["city=lyon", "district=4"]`` or a mapping → validated tags."""
    pairs: list[tuple[str, str]] = []
    if isinstance(items, Mapping):
        pairs = [(str(k), str(v)) for k, v in items.items()]
    else:
        for item in items:
            k, sep, v = str(item).partition("=")
            if not sep:
                raise UsageError(f"tag {item!r} is not key=value", hint="e.g. --tag city=lyon")
            pairs.append((k.strip(), v.strip()))
    tags: dict[str, str] = {}
    for k, v in pairs:
        if not _TAG_KEY.match(k) or k in _RESERVED_TAGS:
            raise UsageError(f"tag key {k!r} is invalid or reserved",
                             hint="letters, digits, '.', '_', '-'; not class/target/id/version")
        if not v or len(v) > 256 or any(c in v for c in "|,*?"):
            raise UsageError(f"tag {k}={v!r} has an empty, over-long or wildcard value")
        tags[k] = v
    return tags


def new_device(device_id: str, device_class: str, target: str,
               tags: Mapping[str, str] | list[str] | tuple[str, ...]) -> Device:
    """Validate enrolment input into a Device record (bad input → UsageError)."""
    if not topics.valid_device_id(device_id):
        raise UsageError(f"device id {device_id!r} is invalid",
                         hint="letters, digits, '.', '_', '-' (no '/', '+', '#'), ≤ 128 chars")
    if device_class not in DEVICE_CLASSES:
        raise UsageError(f"unknown device class {device_class!r}",
                         hint=f"classes: {', '.join(DEVICE_CLASSES)}")
    if target not in PROFILES:
        raise UsageError(f"unknown target {target!r}",
                         hint=f"targets: {', '.join(sorted(PROFILES))} (see `edgeops targets`)")
    return Device(device_id, device_class, target, parse_tags(tags), enrolled_at=time.time())


def agent_config(device: Device, settings: EnrolSettings, *,
                 tls: dict[str, str] | None = None) -> dict[str, Any]:
    """The agent.json document for ``device`` (paths relative to the config's directory)."""
    return {
        "schema": AGENT_CONFIG_SCHEMA,
        "device_id": device.id, "device_class": device.device_class, "target": device.target,
        "tags": dict(device.tags),
        "broker": {"url": settings.broker_url, "keepalive_s": settings.keepalive_s,
                   "tls": tls, "username": None, "password": None},
        "fleet_url": settings.fleet_url,
        "data_dir": "state",
        "trust": {"root": "root.json", "manager_keys": [dict(k) for k in settings.manager_keys]},
        "policy": {"maintenance_windows": [], "driving_signal": None},
        "inference": {"socket": None, "http": None},
        "telemetry": {"interval_s": settings.telemetry_interval_s,
                      "queue_max_records": 100_000},
    }


def write_enrollment(out: Path, config: Mapping[str, Any], root_json: bytes,
                     extra: Mapping[str, bytes] | None = None) -> list[Path]:
    """Write root.json (+ extra credential files) then agent.json into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in sorted((extra or {}).items()):
        if "/" in name or name.startswith("."):
            raise UsageError(f"refusing to write credential file {name!r} outside {out}")
        atomic_write(out / name, data, mode=0o600)
        written.append(out / name)
    atomic_write(out / "root.json", root_json, mode=0o644)
    written.append(out / "root.json")
    atomic_write(out / "agent.json",
                 json.dumps(config, indent=2, sort_keys=True).encode() + b"\n", mode=0o600)
    written.append(out / "agent.json")
    return written

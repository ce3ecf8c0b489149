"""The MQTT topic tree, under one versioned prefix: builders, a parser and a matcher.

Pure functions, no paho: the fleet, the agent, the broker ACL generator and the tests all build
and read topics here so the tree is defined once (docs/PROTOCOL.md documents it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "PREFIX",
    "SHARE_GROUP",
    "DeviceTopic",
    "artifact_chunks",
    "device_topic",
    "matches",
    "parse_device_topic",
    "shared",
    "tuf_metadata",
    "valid_device_id",
]

PREFIX = "edgeops/v1"
SHARE_GROUP = "edgeops-managers"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Device-side channels: who publishes is in docs/PROTOCOL.md.
DEVICE_CHANNELS = ("status", "state", "telemetry", "fetch", "desired", "commands", "ack")


def valid_device_id(device_id: str) -> bool:
    """Device ids are topic-safe: no '/', '+', '#', no leading dot or dash."""
    return bool(_DEVICE_ID.match(device_id))


def device_topic(device_id: str, channel: str) -> str:
    if not valid_device_id(device_id):
        raise ValueError(f"invalid device id {device_id!r}")
    if channel not in DEVICE_CHANNELS:
        raise ValueError(f"unknown device channel {channel!r}")
    return f"{PREFIX}/devices/{device_id}/{channel}"


def artifact_chunks(sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise ValueError(f"invalid artifact digest {sha256!r}")
    return f"{PREFIX}/artifacts/{sha256}/chunks"


def tuf_metadata(filename: str) -> str:
    """Retained TUF metadata, e.g. ``timestamp.json`` or ``3.root.json``."""
    if "/" in filename or not filename.endswith(".json"):
        raise ValueError(f"invalid metadata name {filename!r}")
    return f"{PREFIX}/tuf/metadata/{filename}"


def shared(topic_filter: str, group: str = SHARE_GROUP) -> str:
    """An MQTT 5 shared subscription, so several manager workers split the load."""
    return f"$share/{group}/{topic_filter}"


@dataclass(frozen=True)
class DeviceTopic:
    device_id: str
    channel: str


def parse_device_topic(topic: str) -> DeviceTopic | None:
    """``edgeops/v1/devices/<id>/<channel>`` → parts; anything else → None."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != PREFIX or parts[2] != "devices":
        return None
    if not valid_device_id(parts[3]) or parts[4] not in DEVICE_CHANNELS:
        return None
    return DeviceTopic(parts[3], parts[4])


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching with '+' and '#' (``$share/<group>/`` prefixes are stripped)."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") and f_parts[0] in ("+", "#"):
        return False
    for i, fp in enumerate(f_parts):
        if fp == "#":
            return True
        if i >= len(t_parts):
            return False
        if fp != "+" and fp != t_parts[i]:
            return False
    return len(f_parts) == len(t_parts)

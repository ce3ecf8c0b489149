"""Where edgeops keeps its state and the named limits that bound every input.

Limits are explicit, with units in their names, and enforced where bytes enter (bundle reader,
MQTT handlers, HTTP uploads). Change them through the dataclass, never inline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_LIMITS", "Limits", "edgeops_home"]


def edgeops_home() -> Path:
    """``$EDGEOPS_HOME`` or ``~/.edgeops``: keys and defaults live here."""
    env = os.environ.get("EDGEOPS_HOME")
    return Path(env).expanduser() if env else Path.home() / ".edgeops"


@dataclass(frozen=True)
class Limits:
    """Upper bounds on untrusted input. Units are in the names."""

    max_bundle_bytes: int = 4 * 1024**3
    max_manifest_bytes: int = 16 * 1024**2
    max_bundle_entries: int = 256
    max_artifact_bytes: int = 3 * 1024**3
    max_golden_bytes: int = 8 * 1024**2
    mqtt_chunk_bytes: int = 64 * 1024
    max_mqtt_payload_bytes: int = 256 * 1024
    max_metadata_bytes: int = 4 * 1024**2


DEFAULT_LIMITS = Limits()

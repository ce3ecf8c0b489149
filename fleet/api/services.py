"""What the HTTP handlers work with: the store, repository, engine and enrolment settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.config import DEFAULT_LIMITS, Limits
from fleet.enroll import EnrolSettings
from fleet.repository import Repository
from fleet.rollout import RolloutEngine
from fleet.store import Store

__all__ = ["Services"]


@dataclass
class Services:
    store: Store
    repository: Repository
    engine: RolloutEngine
    enrol: EnrolSettings
    upload_dir: Path
    limits: Limits = DEFAULT_LIMITS
    max_json_bytes: int = 8 * 1024 * 1024
    ca: Any = None          # fleet.pki.FleetCA when the fleet runs its own CA (mTLS)
    # this process's ingest counters (fleet/ingest.py IngestStats.counts) for /metrics; None
    # when the manager runs without an MQTT worker
    ingest_counts: Callable[[], Mapping[str, int]] | None = None

"""Delta updates on the fleet side: which deltas to make at publish, and the bytes they saved.

Why it exists: ``edgeops publish`` signs the targets metadata offline, so the deltas a device
may fetch must be made and pinned there, before upload. Which ones: from the versions of the
same bundle that devices still run (the manager counts them per target), at most ``K`` per
target, most devices first; each only if it is smaller than the artifact. The old artifacts
come from the manager's TUF repository and are checked against the digest the old (signed)
manifest gives before they are diffed.

Split as elsewhere: :func:`plan_bases` and :func:`summarise_deliveries` are pure;
:func:`make_deltas` does the downloading and writing around :mod:`edgeops.delta`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgeops.bundle import Bundle
from edgeops.bundle.manifest import Manifest
from edgeops.delta import DEFAULT_LEVEL, diff_artifacts
from edgeops.delta import delta_target_path as _delta_target_path
from edgeops.errors import EdgeOpsError, VerificationError
from edgeops.protocol.messages import MessageError
from edgeops.protocol.records import DeliveryRecord
from fleet.store.models import stored_record

__all__ = ["DEFAULT_MAX_DELTAS", "DeltaBase", "MadeDelta", "make_deltas", "plan_bases",
           "summarise_deliveries"]

log = logging.getLogger(__name__)

DEFAULT_MAX_DELTAS = 3      # per target: the most common older versions still deployed


@dataclass(frozen=True)
class DeltaBase:
    """An older version of the bundle, still active on ``devices`` devices of ``target``."""

    version: str
    target: str
    devices: int


@dataclass(frozen=True)
class MadeDelta:
    """A delta ready to upload: its TUF path, file, and what it saves."""

    path: str
    file: Path
    size: int
    sha256: str
    base: DeltaBase
    full_bytes: int


class PublishSource(Protocol):
    """What making deltas needs from the manager (``fleet.client.FleetClient`` has it)."""

    def deployed_versions(self, name: str) -> list[dict[str, Any]]: ...
    def target_file(self, path: str, sha256: str) -> bytes: ...
    def bundle_manifest(self, name: str, version: str) -> bytes: ...


def plan_bases(deployed: Iterable[DeltaBase], manifest: Manifest, k: int) -> list[DeltaBase]:
    """At most ``k`` older versions per target of ``manifest``, most devices first. Pure."""
    per_target: dict[str, list[DeltaBase]] = {}
    for b in sorted(deployed, key=lambda b: (-b.devices, b.version, b.target)):
        if b.version == manifest.version or manifest.artifact_for(b.target) is None:
            continue
        chosen = per_target.setdefault(b.target, [])
        if len(chosen) < k and all(c.version != b.version for c in chosen):
            chosen.append(b)
    return [b for t in sorted(per_target) for b in per_target[t]]


def make_deltas(source: PublishSource, bundle: Bundle, workdir: Path, *, k: int,
                level: int = DEFAULT_LEVEL,
                show: Callable[[str], None] = lambda _m: None) -> list[MadeDelta]:
    """Deltas from the deployed older versions to ``bundle``'s artifacts, written in
    ``workdir``; only those smaller than the artifact. Old artifacts that cannot be had are
    skipped (with a line through ``show``): a missing delta only costs bytes."""
    m = bundle.manifest
    if k <= 0:
        return []
    try:
        deployed = [DeltaBase(str(d["version"]), str(d["target"]), int(d["devices"]))
                    for d in source.deployed_versions(m.name)]
    except (EdgeOpsError, KeyError, TypeError, ValueError) as exc:
        show(f"no deltas: the manager cannot say which versions are deployed ({exc})")
        return []
    out: list[MadeDelta] = []
    for base in plan_bases(deployed, m, k):
        entry = m.artifact_for(base.target)
        assert entry is not None
        try:
            old_manifest = Manifest.from_bytes(source.bundle_manifest(m.name, base.version))
            old_entry = old_manifest.artifact_for(base.target)
            if old_entry is None:
                continue
            if old_entry.file.sha256 == entry.file.sha256:
                continue                    # same artifact: nothing to send at all
            old = source.target_file(f"bundles/{m.name}/{base.version}/{old_entry.file.path}",
                                     old_entry.file.sha256)
            if hashlib.sha256(old).hexdigest() != old_entry.file.sha256:
                raise VerificationError(f"{m.name}@{base.version} {base.target} artifact from "
                                        "the manager does not match its manifest")
        except (EdgeOpsError, KeyError, TypeError, ValueError) as exc:  # no delta from it
            show(f"no delta from {base.version} ({base.target}): {exc}")
            continue
        new = bundle.read_file(entry.file.path)
        delta = diff_artifacts(old, new, level=level)
        if not delta.worthwhile:
            show(f"no delta from {base.version} ({base.target}): {delta.size} bytes is not "
                 f"smaller than the {len(new)}-byte artifact")
            continue
        path = _delta_target_path(m.name, m.version, base.target, old_entry.file.sha256,
                                  entry.file.sha256)
        data = delta.to_bytes()
        f = workdir / f"{base.target}-{base.version}.edgedelta"
        f.write_bytes(data)
        out.append(MadeDelta(path, f, len(data), hashlib.sha256(data).hexdigest(), base,
                             len(new)))
        show(f"delta from {base.version} ({base.target}, {base.devices} devices): "
             f"{len(data)} of {len(new)} bytes")
    return out


def summarise_deliveries(rows: Sequence[tuple[str, float, str]],
                         deployment_id: str | None = None) -> dict[str, Any]:
    """A deployment's bytes saved from its devices' ``delivery`` records (last one per device).

    ``rows`` are (device id, ts, stored record JSON) oldest first; a record that does not
    parse (:class:`~edgeops.protocol.records.DeliveryRecord`) is skipped. Pure.
    """
    last: dict[str, DeliveryRecord] = {}
    for device, ts, data in rows:
        try:
            rec = stored_record("delivery", ts, json.loads(data), deployment_id)
        except (ValueError, MessageError):
            continue
        if isinstance(rec, DeliveryRecord):
            last[device] = rec
    fetched = full = by_delta = fell_back = 0
    for rec in last.values():
        fetched += rec.fetched_bytes
        full += rec.full_bytes
        if rec.method == "delta":
            by_delta += 1
        elif rec.reason:
            fell_back += 1
    return {"devices_reported": len(last), "devices_by_delta": by_delta,
            "devices_fell_back_to_full": fell_back, "bytes_fetched": fetched,
            "bytes_full": full, "bytes_saved": full - fetched}

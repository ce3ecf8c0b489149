"""The fleet's TUF repository: offline-signed targets in, online snapshot + timestamp out.

The manager never holds the ``targets`` key. ``edgeops publish`` signs a new ``targets``
version on the ML team's machine (:func:`sign_targets_update`) and uploads it with the bundle;
:meth:`Repository.publish` accepts it only if the bundle verifies against the targets keys in
``root.json`` AND the targets metadata is signed by them, is the next version, and pins every
file of the bundle by length and SHA-256. Then the manager stores the files by digest and
re-signs ``snapshot`` and ``timestamp`` with its online keys. A compromised manager can delay
updates, but cannot make a device install anything the offline key did not sign.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securesystemslib.signer import Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from edgeops.bundle import Bundle, read_bundle
from edgeops.bundle.archive import MANIFEST_NAME, SIGNATURES_NAME
from edgeops.bundle.manifest import parse_version
from edgeops.config import DEFAULT_LIMITS
from edgeops.delta import FileId, read_delta_header
from edgeops.errors import VerificationError
from edgeops.floors import floors_of, raise_floor
from edgeops.fsutil import atomic_open, atomic_write
from edgeops.trust import trusted_targets_keys
from fleet.errors import ConflictError, NotFoundError
from fleet.ports import DeviceChannel
from fleet.store import BundleRecord, RepositoryStore

__all__ = [
    "SNAPSHOT_LIFETIME",
    "TARGETS_LIFETIME",
    "TIMESTAMP_LIFETIME",
    "PublishResult",
    "Repository",
    "bundle_target_paths",
    "sign_targets_update",
    "target_request_digest",
    "targets_update",
]

log = logging.getLogger(__name__)

TARGETS_LIFETIME = timedelta(days=365)
SNAPSHOT_LIFETIME = timedelta(days=7)
TIMESTAMP_LIFETIME = timedelta(days=1)
_SER = JSONSerializer(compact=True)
_META_NAME = re.compile(r"^(?:(\d{1,9})\.)?(root|targets|snapshot|timestamp)\.json$")
_TARGET_NAME = re.compile(r"^([0-9a-f]{64})\.[A-Za-z0-9._-]+$")
_DELTA_PATH = re.compile(r"^bundles/([^/]+)/([^/]+)/artifacts/([^/]+)/deltas/"
                         r"([0-9a-f]{64})-([0-9a-f]{64})\.edgedelta$")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def bundle_target_paths(bundle: Bundle) -> dict[str, tuple[int, str]]:
    """TUF target path → (length, sha256) for every file of a bundle, as publish adds them."""
    base = f"bundles/{bundle.manifest.name}/{bundle.manifest.version}"
    out = {f"{base}/{MANIFEST_NAME}": (len(bundle.manifest_bytes),
                                       hashlib.sha256(bundle.manifest_bytes).hexdigest())}
    sig = bundle.signatures.to_bytes()
    out[f"{base}/{SIGNATURES_NAME}"] = (len(sig), hashlib.sha256(sig).hexdigest())
    for ref in bundle.manifest.files():
        out[f"{base}/{ref.path}"] = (ref.size, ref.sha256)
    return out


def targets_update(current: bytes | None, bundle: Bundle, root: Metadata[Root], *,
                   floor: str | None = None,
                   deltas: Mapping[str, tuple[int, str]] | None = None) -> Metadata[Targets]:
    """Publisher side: the next ``targets`` version, adding the bundle's files (and the deltas
    to its artifacts, TUF path -> (length, sha256)), still unsigned.

    ``floor`` raises the release floor of the bundle's model (:mod:`edgeops.floors`); the floors
    of the current version are carried over, so they only ever go up.
    """
    if current is None:
        md = Metadata(Targets(version=1, expires=_now() + TARGETS_LIFETIME))
    else:
        md = _parse(current, Targets, "targets")
        _verify_role(root, "targets", md)
        md.signed.version += 1
        md.signed.expires = _now() + TARGETS_LIFETIME
    for path, (length, sha) in {**bundle_target_paths(bundle), **(deltas or {})}.items():
        md.signed.targets[path] = TargetFile(length, {"sha256": sha}, path)
    if floor is not None:
        raise_floor(md.signed, bundle.manifest.name, floor)
    md.signatures.clear()
    return md


def sign_targets_update(current: bytes | None, bundle: Bundle, root: Metadata[Root],
                        signer: Signer | Sequence[Signer],
                        deltas: Mapping[str, tuple[int, str]] | None = None, *,
                        floor: str | None = None) -> bytes:
    """Publisher side: the next ``targets`` version, adding the bundle's files and ``deltas``,
    signed offline by ``signer`` (one, or every targets key this machine holds)."""
    md = targets_update(current, bundle, root, floor=floor, deltas=deltas)
    for s in ([signer] if isinstance(signer, Signer) else signer):
        md.sign(s, append=True)
    return md.to_bytes(_SER)


def _check_deltas(bundle: Bundle, deltas: Mapping[str, Path]) -> dict[str, tuple[int, str]]:
    """TUF path -> (length, sha256) of each delta, after checking it yields this bundle's
    artifact for its target, starts from the digest its name says, and is smaller than the
    artifact (a larger one is never published: devices fetch the artifact instead)."""
    m = bundle.manifest
    out: dict[str, tuple[int, str]] = {}
    for path, src in deltas.items():
        match = _DELTA_PATH.match(path)
        entry = m.artifact_for(match.group(3)) if match else None
        if match is None or (match.group(1), match.group(2)) != (m.name, m.version) \
                or entry is None or match.group(5) != entry.file.sha256:
            raise VerificationError(f"{path} is not a delta path for {m.name}@{m.version}",
                                    hint="let `edgeops publish` name the deltas")
        try:
            header, _ = read_delta_header(src)
        except OSError as exc:
            raise VerificationError(f"delta {path} cannot be read ({exc})") from None
        if header.base.sha256 != match.group(4) or \
                header.to != FileId(entry.file.sha256, entry.file.size):
            raise VerificationError(f"delta {path} does not turn {match.group(4)[:12]} into "
                                    f"the {entry.target} artifact of {m.name}@{m.version}")
        size = src.stat().st_size
        if size >= entry.file.size:
            raise VerificationError(f"delta {path} is not smaller than the artifact",
                                    hint="publish without it: devices fetch the artifact")
        out[path] = (size, _sha256_file(src))
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            h.update(block)
    return h.hexdigest()


def target_request_digest(filename: str) -> str | None:
    """The sha256 in a consistent-snapshot target name ``<sha256>.<basename>``."""
    m = _TARGET_NAME.match(filename)
    return m.group(1) if m else None


def _parse(data: bytes, cls: type, role: str) -> Metadata:  # type: ignore[type-arg]
    try:
        md = Metadata.from_bytes(data)
    except (DeserializationError, ValueError) as exc:
        raise VerificationError(f"{role} metadata is malformed: {exc}") from None
    if not isinstance(md.signed, cls):
        raise VerificationError(f"expected {role} metadata, got {md.signed.type}")
    return md


def _verify_role(root: Metadata[Root], role: str, md: Metadata) -> None:  # type: ignore[type-arg]
    try:
        root.signed.verify_delegate(role, md.signed_bytes, md.signatures)
    except UnsignedMetadataError:
        raise VerificationError(f"{role} metadata is not signed by the {role} key(s) in "
                                "root.json", hint="sign with the fleet's offline targets key "
                                                  "(`edgeops publish` does this)") from None


def _check_floors_kept(previous: Targets, new: Targets) -> None:
    """A targets update may raise release floors, never drop or lower one."""
    before, after = floors_of(previous), floors_of(new)
    for name, floor in before.items():
        now = after.get(name)
        if now is None or parse_version(now) < parse_version(floor):
            raise VerificationError(f"targets update lowers the release floor of {name} "
                                    f"({floor} -> {now or 'none'})",
                                    hint="floors only go up; let `edgeops publish` build the "
                                         "update from the current targets")


@dataclass(frozen=True)
class PublishResult:
    name: str
    version: str
    targets_version: int
    snapshot_version: int
    new: bool
    files: dict[str, tuple[int, str]]


class Repository:
    """The manager's side of TUF: validates uploads, stores blobs, signs freshness metadata."""

    def __init__(self, store: RepositoryStore, root: Metadata[Root], snapshot_signer: Signer,
                 timestamp_signer: Signer, channel: DeviceChannel | None = None,
                 clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self.root = root
        self.snapshot_signer = snapshot_signer
        self.timestamp_signer = timestamp_signer
        self.channel = channel
        self.clock = clock

    # -- roots -------------------------------------------------------------------------------
    def import_roots(self, trust_dir: Path) -> int:
        """Serve every ``N.root.json`` the key store kept, so devices can walk the chain."""
        items = []
        for p in sorted(trust_dir.glob("*.root.json")):
            m = _META_NAME.match(p.name)
            if m and m.group(1):
                items.append((p.name, "root", int(m.group(1)), p.read_bytes()))
        cur = self.root.signed.version
        name = f"{cur}.root.json"
        if not any(i[0] == name for i in items):
            items.append((name, "root", cur, self.root.to_bytes(JSONSerializer(compact=False))))
        self.store.put_metadata(items)
        return len(items)

    def metadata(self, filename: str) -> bytes:
        """``GET /tuf/metadata/<file>``: only TUF names, nothing else from the table."""
        if not _META_NAME.match(filename):
            raise NotFoundError(f"{filename!r} is not a TUF metadata file name")
        if filename == "root.json":
            filename = f"{self.root.signed.version}.root.json"
        data = self.store.get_metadata(filename)
        if data is None:
            raise NotFoundError(f"no metadata {filename}",
                                hint="nothing is published yet, or that version never existed")
        return data

    def current_targets(self) -> bytes | None:
        latest = self.store.latest_metadata("targets")
        return latest[1] if latest else None

    # -- publishing --------------------------------------------------------------------------
    def publish(self, bundle_path: Path, targets_bytes: bytes,
                deltas: Mapping[str, Path] | None = None) -> PublishResult:
        """Accept a bundle + offline-signed targets, or raise without changing anything.

        ``deltas`` (TUF path -> file) are deltas from older artifacts to this bundle's, made by
        the publisher; each must be pinned by the signed targets like the bundle's own files.
        """
        bundle = read_bundle(bundle_path, DEFAULT_LIMITS)
        keys, threshold = trusted_targets_keys(self.root)
        bundle.verify(keys, threshold)  # type: ignore[arg-type]
        if len(targets_bytes) > DEFAULT_LIMITS.max_metadata_bytes:
            raise VerificationError("targets metadata is over the size limit")
        latest = self.store.latest_metadata("targets")
        existing = self.store.get_bundle(bundle.manifest.name, bundle.manifest.version)
        md = _parse(targets_bytes, Targets, "targets")
        if (existing is not None and existing.manifest == bundle.manifest_bytes and latest
                and floors_of(md.signed) == floors_of(_parse(latest[1], Targets,
                                                             "targets").signed)):
            # already published (its files were pinned then; targets only ever grow), and the
            # update raises no floor: nothing to do
            return self._result(bundle, latest[0], new=False)
        _verify_role(self.root, "targets", md)
        targets: Targets = md.signed
        expected = latest[0] + 1 if latest else 1
        if targets.version != expected:
            raise ConflictError(f"targets metadata version {targets.version} is not the next one "
                                f"({expected}); someone published in between",
                                hint="run `edgeops publish` again: it fetches the current "
                                     "targets first")
        if targets.expires <= self.clock():
            raise VerificationError("targets metadata has already expired")
        if latest:
            _check_floors_kept(_parse(latest[1], Targets, "targets").signed, targets)
        files = bundle_target_paths(bundle) | _check_deltas(bundle, deltas or {})
        for path, (length, sha) in files.items():
            tf = targets.targets.get(path)
            if tf is None or tf.length != length or tf.hashes.get("sha256") != sha:
                raise VerificationError(f"targets metadata does not pin {path} as this bundle "
                                        "has it (missing, or length/digest differ)",
                                        hint="let `edgeops publish` build the targets update")
        # content first (by digest, idempotent), then the records that make it visible
        self._store_blob(bundle.manifest_bytes)
        self._store_blob(bundle.signatures.to_bytes())
        for ref in bundle.manifest.files():
            dest = self.store.blob_path(ref.sha256)
            if not dest.is_file():
                bundle.extract_file(ref.path, dest)
            self.store.add_blob(ref.sha256, ref.size)
        for path, src in (deltas or {}).items():
            length, sha = files[path]
            dest = self.store.blob_path(sha)
            if not dest.is_file():
                with open(src, "rb") as f, atomic_open(dest) as out:
                    shutil.copyfileobj(f, out)
            self.store.add_blob(sha, length)
        self.store.put_bundle(BundleRecord(
            bundle.manifest.name, bundle.manifest.version, bundle.manifest_bytes,
            bundle.signatures.to_bytes(), time.time(),
            {p.split("/", 3)[3]: (sha, length) for p, (length, sha) in files.items()}))
        snap_version = self._resign(targets.version, targets_bytes)
        log.info("published %s@%s (targets v%d)", bundle.manifest.name,
                 bundle.manifest.version, targets.version)
        return PublishResult(bundle.manifest.name, bundle.manifest.version, targets.version,
                             snap_version, True, files)

    def _result(self, bundle: Bundle, targets_version: int, new: bool) -> PublishResult:
        snap = self.store.latest_metadata("snapshot")
        return PublishResult(bundle.manifest.name, bundle.manifest.version, targets_version,
                             snap[0] if snap else 0, new, bundle_target_paths(bundle))

    def _store_blob(self, data: bytes) -> None:
        sha = hashlib.sha256(data).hexdigest()
        dest = self.store.blob_path(sha)
        if not dest.is_file():
            atomic_write(dest, data)
        self.store.add_blob(sha, len(data))

    def _resign(self, targets_version: int, targets_bytes: bytes | None) -> int:
        """New snapshot + timestamp over the given targets version, stored in one transaction."""
        now = self.clock()
        prev_snap = self.store.latest_metadata("snapshot")
        prev_ts = self.store.latest_metadata("timestamp")
        snap = Metadata(Snapshot(version=(prev_snap[0] + 1) if prev_snap else 1,
                                 expires=now + SNAPSHOT_LIFETIME,
                                 meta={"targets.json": MetaFile(version=targets_version)}))
        snap.sign(self.snapshot_signer)
        snap_bytes = snap.to_bytes(_SER)
        ts = Metadata(Timestamp(version=(prev_ts[0] + 1) if prev_ts else 1,
                                expires=now + TIMESTAMP_LIFETIME,
                                snapshot_meta=MetaFile(version=snap.signed.version)))
        ts.sign(self.timestamp_signer)
        ts_bytes = ts.to_bytes(_SER)
        items: list[tuple[str, str, int, bytes]] = []
        if targets_bytes is not None:
            items.append((f"{targets_version}.targets.json", "targets", targets_version,
                          targets_bytes))
        items += [(f"{snap.signed.version}.snapshot.json", "snapshot", snap.signed.version,
                   snap_bytes),
                  ("timestamp.json", "timestamp", ts.signed.version, ts_bytes)]
        self.store.put_metadata(items)
        self._announce([(n, d) for n, _, _, d in items])
        return snap.signed.version

    def _announce(self, items: Sequence[tuple[str, bytes]]) -> None:
        if self.channel is None:
            return
        for name, data in items:
            try:
                self.channel.publish_metadata(name, data)
            except Exception:  # the HTTP path still serves it; the worker republishes later
                log.exception("could not announce %s over MQTT", name)

    def refresh(self) -> bool:
        """Re-sign snapshot/timestamp before they expire (run from the manager's loop)."""
        latest_targets = self.store.latest_metadata("targets")
        ts = self.store.latest_metadata("timestamp")
        if latest_targets is None:
            return False
        if ts is not None:
            md = Metadata.from_bytes(ts[1])
            if md.signed.expires - self.clock() > TIMESTAMP_LIFETIME / 2:
                return False
        self._resign(latest_targets[0], None)
        return True

    def republish_all(self) -> None:
        """Announce the current metadata (e.g. when the MQTT worker (re)connects)."""
        items: list[tuple[str, bytes]] = []
        for role in ("root", "targets", "snapshot"):
            latest = self.store.latest_metadata(role)
            if latest:
                items.append((f"{latest[0]}.{role}.json", latest[1]))
        ts = self.store.get_metadata("timestamp.json")
        if ts:
            items.append(("timestamp.json", ts))
        self._announce(items)

    def target_file(self, path: str) -> Path:
        """``GET /tuf/targets/<dir>/<sha256>.<basename>``: the blob with that digest."""
        sha = target_request_digest(path.rsplit("/", 1)[-1])
        p = self.store.artifact_path(sha) if sha else None
        if p is None:
            raise NotFoundError(f"no target {path!r}")
        return p

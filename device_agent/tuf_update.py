"""Verified downloads: python-tuf's ngclient driven over HTTP or over the MQTT transport.

Why this module exists: python-tuf's ``Updater`` makes every trust decision for a download
(rollback, expiry, mix-and-match, hashes, lengths, endless data); this module supplies it with
bytes through either fetcher and maps its errors onto the edgeops tree (bad content vs
transport). It is apart from :mod:`device_agent.tuf_client` (the MQTT transport an idle agent
keeps running) because ngclient and urllib3 under it are only needed while an update runs, and
an agent that has not updated since it started should not hold them.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import FetcherInterface, Updater

from device_agent.diskspace import DiskFullError, is_disk_full
from device_agent.installer import DeltaArtifact
from device_agent.slots import SlotStore
from device_agent.tuf_client import (
    MQTT_METADATA_URL,
    MQTT_TARGETS_URL,
    DownloadLimits,
    MqttTufTransport,
)
from edgeops.bundle.manifest import Manifest
from edgeops.bundle.signing import SignatureSet, verify_signatures
from edgeops.delta import (
    DeltaError,
    FileId,
    apply_delta_file,
    delta_target_path,
    read_delta_header,
)
from edgeops.errors import EdgeOpsError, TransportError, VerificationError
from edgeops.floors import check_install, floors_from_file
from edgeops.fsutil import atomic_write
from edgeops.protocol.records import DeliveryRecord
from edgeops.trust import trusted_targets_keys

__all__ = ["ActiveArtifact", "Delivery", "FetchedBundle", "HttpFetcher", "MqttFetcher",
           "TufClient", "active_artifact", "delivery_record", "fetch_bundle"]

log = logging.getLogger(__name__)

_NO_LIMITS_GIVEN = DownloadLimits()


# -- HTTP ------------------------------------------------------------------------------------
class HttpFetcher(FetcherInterface):
    """Plain urllib against the manager's ``/tuf/metadata/`` and ``/tuf/targets/``."""

    def __init__(self, timeout_s: float = 30.0, block_bytes: int = 64 * 1024) -> None:
        self.timeout_s = timeout_s
        self.block_bytes = block_bytes

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(("http://", "https://")):
            raise tuf_exc.DownloadError(f"refusing non-HTTP URL {url!r}")
        try:
            resp = urllib.request.urlopen(url, timeout=self.timeout_s)  # noqa: S310 - scheme checked
        except urllib.error.HTTPError as exc:
            raise tuf_exc.DownloadHTTPError(f"GET {url}: HTTP {exc.code}", exc.code) from None
        return self._blocks(resp)

    def _blocks(self, resp: http.client.HTTPResponse) -> Iterator[bytes]:
        with resp as r:
            while block := r.read(self.block_bytes):
                yield block



class MqttFetcher(FetcherInterface):
    """ngclient fetcher over the MQTT transport: URLs are ``mqtt://edgeops/tuf/...``."""

    def __init__(self, transport: MqttTufTransport) -> None:
        self.transport = transport
        self._live: list[Generator[bytes, None, None]] = []

    def abort(self) -> None:
        """Close downloads ngclient gave up on now, not whenever the garbage collector runs."""
        for gen in self._live:
            gen.close()
        self._live.clear()

    def _fetch(self, url: str) -> Iterator[bytes]:
        t = self.transport
        if url.startswith(MQTT_METADATA_URL):
            name = url[len(MQTT_METADATA_URL):]
            data = t.metadata.get(name, t.limits.metadata_wait_s)
            if data is None:
                raise tuf_exc.DownloadHTTPError(f"{name} is not published", 404)
            return iter([data])
        if url.startswith(MQTT_TARGETS_URL):
            basename = url.rsplit("/", 1)[-1]
            gen = t.download(basename.split(".", 1)[0])
            self._live = [*self._live[-7:], gen]
            return gen
        raise tuf_exc.DownloadError(f"unknown MQTT URL {url!r}")


# -- the TUF client --------------------------------------------------------------------------
@contextlib.contextmanager
def _tuf_errors(what: str) -> Iterator[None]:
    """python-tuf's errors as edgeops errors: attack/bug (bad content) vs network hiccup."""
    try:
        yield
    except (VerificationError, DiskFullError):
        raise
    except OSError as exc:
        if is_disk_full(exc):     # the target file (or ngclient's temporary copy) did not fit
            where = f" for {exc.filename}" if exc.filename else ""
            raise DiskFullError(f"{what}: the disk is full ({exc.strerror}{where})") from None
        raise
    except tuf_exc.DownloadLengthMismatchError as exc:
        raise VerificationError(f"{what}: server sent more than the signed length ({exc})",
                                hint="the repository or the network is misbehaving; the old "
                                     "model stays active") from None
    except tuf_exc.ExpiredMetadataError as exc:
        raise VerificationError(f"{what}: TUF metadata has expired ({exc})",
                                hint="the manager must re-sign snapshot/timestamp; check the "
                                     "device clock") from None
    except tuf_exc.BadVersionNumberError as exc:
        raise VerificationError(f"{what}: TUF rollback or mix-and-match rejected ({exc})",
                                hint="the repository served older metadata than this device "
                                     "has already seen") from None
    except tuf_exc.LengthOrHashMismatchError as exc:
        raise VerificationError(f"{what}: length or hash mismatch ({exc})") from None
    except tuf_exc.UnsignedMetadataError as exc:
        raise VerificationError(f"{what}: TUF metadata is not signed by trusted keys ({exc})",
                                hint="tampered or foreign-signed metadata; check the fleet's "
                                     "root.json") from None
    except tuf_exc.RepositoryError as exc:
        raise VerificationError(f"{what}: TUF repository error ({exc})") from None
    except tuf_exc.DownloadError as exc:
        cause = exc.__cause__
        if isinstance(cause, VerificationError):
            raise cause from None
        detail = f"{exc}" + (f": {cause}" if cause else "")
        raise TransportError(f"{what}: download failed ({detail})") from None


class TufClient:
    """One device's TUF state: the trusted metadata cache and the downloaded targets."""

    def __init__(self, root_file: Path, cache_dir: Path, fetcher: FetcherInterface,
                 metadata_url: str, targets_url: str,
                 limits: DownloadLimits = _NO_LIMITS_GIVEN, *,
                 metadata_dir: Path | None = None, targets_dir: Path | None = None) -> None:
        self.root_file = root_file
        self.metadata_dir = metadata_dir or cache_dir / "metadata"
        self.targets_dir = targets_dir or cache_dir / "targets"
        self.fetcher = fetcher
        self.metadata_url = metadata_url
        self.targets_url = targets_url
        self.limits = limits
        self._updater: Updater | None = None

    @classmethod
    def over_http(cls, root_file: Path, cache_dir: Path, fleet_url: str,
                  limits: DownloadLimits = _NO_LIMITS_GIVEN) -> TufClient:
        base = fleet_url.rstrip("/")
        return cls(root_file, cache_dir, HttpFetcher(limits.http_timeout_s),
                   f"{base}/tuf/metadata/", f"{base}/tuf/targets/", limits)

    @classmethod
    def over_mqtt(cls, root_file: Path, cache_dir: Path,
                  transport: MqttTufTransport) -> TufClient:
        return cls(root_file, cache_dir, MqttFetcher(transport), MQTT_METADATA_URL,
                   MQTT_TARGETS_URL, transport.limits)

    def refresh(self) -> None:
        """Fresh top-level metadata (a new Updater: ngclient refreshes once per instance)."""
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        cached = self.metadata_dir / "root.json"
        try:
            bootstrap = None if cached.exists() else self.root_file.read_bytes()
        except OSError as exc:
            raise VerificationError(f"cannot read the trusted root {self.root_file}: {exc}",
                                    hint="enrol the device again") from None
        with _tuf_errors("TUF refresh"):
            updater = Updater(str(self.metadata_dir), self.metadata_url, str(self.targets_dir),
                              self.targets_url, self.fetcher, self.limits.updater_config(),
                              bootstrap=bootstrap)
            updater.refresh()
        self._updater = updater

    def trusted_root(self) -> Metadata[Root]:
        return Metadata[Root].from_file(str(self.metadata_dir / "root.json"))

    def trusted_floors(self) -> dict[str, str]:
        """Release floors of the targets metadata this client last verified (edgeops.floors)."""
        return floors_from_file(self.metadata_dir / "targets.json")

    def target_info(self, path: str) -> TargetFile | None:
        if self._updater is None:
            self.refresh()
        assert self._updater is not None
        with _tuf_errors(f"TUF lookup of {path}"):
            return self._updater.get_targetinfo(path)

    def cached(self, info: TargetFile) -> Path | None:
        """The verified target if it is in the cache already (nothing is fetched)."""
        assert self._updater is not None, "refresh() first"
        with _tuf_errors(f"cache lookup of {info.path}"):
            found = self._updater.find_cached_target(info)
        return Path(found) if found is not None else None

    def download(self, info: TargetFile) -> Path:
        """The verified target on disk (already cached ones are re-verified, not re-fetched)."""
        assert self._updater is not None, "refresh() first"
        with _tuf_errors(f"download of {info.path}"):
            cached = self._updater.find_cached_target(info)
            if cached is not None:
                return Path(cached)
            self.targets_dir.mkdir(parents=True, exist_ok=True)
            final = self.targets_dir / quote(info.path, "")
            tmp = final.with_name(f".{final.name}.part")
            try:
                self._updater.download_target(info, str(tmp))
            finally:
                if isinstance(self.fetcher, MqttFetcher):
                    self.fetcher.abort()
            os.replace(tmp, final)
            return final


@dataclass(frozen=True)
class ActiveArtifact:
    """The model file the device serves now: what a delta may start from."""

    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Delivery:
    """How the artifact arrived, for the device's report and the fleet's bytes-saved figure.

    ``method`` is ``"delta"``, ``"full"`` or ``"cached"`` (already on the device);
    ``fetched_bytes`` what came over the network for the artifact (the delta's size, the full
    size, or 0); ``reason`` why the full artifact was
    fetched although a delta was looked for (None when the delta was used or not looked for).
    """

    method: str
    fetched_bytes: int
    full_bytes: int
    reason: str | None = None
    delta_failed: bool = False     # a published delta was tried and failed (worth a report)


@dataclass(frozen=True)
class FetchedBundle:
    """A bundle's files for this device, each proven by TUF and the targets-key signature."""

    name: str
    version: str
    target: str
    manifest: Manifest
    manifest_bytes: bytes
    signatures_bytes: bytes
    artifact: Path | DeltaArtifact         # a delta is rebuilt by the installer, in the slot
    golden: Path | None
    delivery: Delivery | None = None

    def final_delivery(self) -> Delivery | None:
        """How the artifact came, after the install (a failed rebuild fetched it in full)."""
        if isinstance(self.artifact, DeltaArtifact) and isinstance(
                self.artifact.fallback, _FullFallback) and self.artifact.fallback.used:
            return self.artifact.fallback.used
        return self.delivery

    def artifact_path(self, scratch: Path) -> Path:
        """The artifact as a file (a delta rebuilt into ``scratch``)."""
        if isinstance(self.artifact, DeltaArtifact):
            apply_delta_file(self.artifact.base, self.artifact.delta, scratch,
                             expect=FileId(self.artifact.sha256, self.artifact.size))
            return scratch
        return self.artifact

    def stage(self, directory: Path) -> Path:
        """Lay the files out like an extracted bundle (manifest.json, artifacts/<target>/...)."""
        entry = self.manifest.artifact_for(self.target)
        assert entry is not None
        atomic_write(directory / "manifest.json", self.manifest_bytes)
        atomic_write(directory / "signatures.json", self.signatures_bytes)
        art = self.artifact_path(directory / f"{entry.file.path}.rebuilt")
        atomic_write(directory / entry.file.path, art.read_bytes())
        if art != self.artifact:
            art.unlink()
        if entry.golden is not None and self.golden is not None:
            atomic_write(directory / entry.golden.path, self.golden.read_bytes())
        return directory


def _via_delta(client: TufClient, name: str, version: str, target: str, full: TargetFile,
               base: ActiveArtifact, progress: Callable[[str], None]) -> tuple[Path, int]:
    """The signed delta from ``base`` to ``full``, downloaded and its header checked; raises
    with the reason. The artifact itself is rebuilt by the installer, into the slot."""
    path = delta_target_path(name, version, target, base.sha256, full.hashes["sha256"])
    dinfo = client.target_info(path)
    if dinfo is None:
        raise _NoDelta(f"no delta from the active model ({base.sha256[:12]}) is published")
    progress(path)
    delta = client.download(dinfo)
    try:
        header, _ = read_delta_header(delta)
        if header.base != FileId(base.sha256, base.size):
            raise DeltaError(f"delta was made from {header.base.sha256[:12]}, which this "
                             "device does not hold")
        if header.to != FileId(full.hashes["sha256"], full.length):
            raise DeltaError(f"delta yields {header.to.sha256[:12]}, not the signed artifact "
                             f"{full.hashes['sha256'][:12]}")
    except BaseException:
        delta.unlink(missing_ok=True)
        raise
    return delta, dinfo.length


class _FullFallback:
    """Fetches the full artifact when rebuilding from the delta fails at install time, and
    remembers that it did (for the delivery record)."""

    def __init__(self, client: TufClient, tinfo: TargetFile) -> None:
        self.client, self.tinfo = client, tinfo
        self.used: Delivery | None = None

    def __call__(self, reason: str) -> Path:
        self.used = Delivery("full", self.tinfo.length, self.tinfo.length, reason, True)
        return self.client.download(self.tinfo)


class _NoDelta(Exception):
    pass


def active_artifact(store: SlotStore) -> ActiveArtifact | None:
    """The active slot's model as a delta base (None when nothing is installed or on trial)."""
    info = store.active()
    if info is None or store.pointer().trial or info.model_file not in info.files:
        return None
    sha, size = info.files[info.model_file]
    return ActiveArtifact(store.path(info.slot, info.model_file), sha, size)


def delivery_record(ts: float, deployment_id: str | None, bundle: str,
                    delivery: Delivery) -> DeliveryRecord:
    """A ``delivery`` telemetry record: the fleet sums these into bytes saved per deployment."""
    return DeliveryRecord(ts, deployment_id, bundle, delivery.method, delivery.fetched_bytes,
                          delivery.full_bytes, delivery.reason)


def _artifact(client: TufClient, name: str, version: str, target: str, tinfo: TargetFile,
              base: ActiveArtifact | None,
              progress: Callable[[str], None]) -> tuple[Path | DeltaArtifact, Delivery]:
    """The artifact by delta when one fits the active model, else in full (saying why)."""
    reason: str | None = None
    failed = False
    cached = client.cached(tinfo)
    if cached is not None:                 # e.g. deployed again after a rollback
        return cached, Delivery("cached", 0, tinfo.length)
    if base is not None and base.sha256 != tinfo.hashes.get("sha256"):
        try:
            delta, sent = _via_delta(client, name, version, target, tinfo, base, progress)
            return (DeltaArtifact(base.path, delta, tinfo.hashes["sha256"], tinfo.length,
                                  _FullFallback(client, tinfo)),
                    Delivery("delta", sent, tinfo.length))
        except _NoDelta as exc:
            reason = str(exc)
        except EdgeOpsError as exc:        # transport, bad delta, wrong base: fetch it whole
            reason, failed = f"delta failed ({exc.message}); fetched the full artifact", True
        except OSError as exc:
            reason, failed = (f"delta failed ({exc.strerror or exc}); fetched the full "
                              "artifact"), True
        log.info("%s@%s: %s", name, version, reason)
    return client.download(tinfo), Delivery("full", tinfo.length, tinfo.length, reason, failed)


def fetch_bundle(client: TufClient, name: str, version: str, target: str, *,
                 refresh: bool = True,
                 wait_for_metadata: Callable[[], bool] | None = None,
                 progress: Callable[[str], None] = lambda _m: None,
                 check_space: Callable[[int], None] | None = None,
                 installed: str | None = None, rollback: bool = False,
                 active: ActiveArtifact | None = None) -> FetchedBundle:
    """Refresh TUF, then download manifest, signatures and ONLY this target's artifact + golden.

    ``wait_for_metadata`` (MQTT) blocks until newer metadata arrives and says whether it did: a
    deploy command may overtake the retained metadata that lists its bundle. Before anything is
    downloaded, the downgrade rule (:func:`edgeops.floors.check_install`) runs against the
    release floor in the targets just verified, ``installed`` (this model's version on the
    device now, if any) and ``rollback`` (the operator asked to go back). ``check_space``
    gets the signed size of the artifact and golden file together before either is fetched,
    and raises (:class:`device_agent.diskspace.DiskFullError`) when they cannot fit. With
    ``active`` (the model the device serves), the artifact comes as a delta from it when the
    fleet published one.
    """
    base = f"bundles/{name}/{version}"
    if refresh:
        client.refresh()
    info = client.target_info(f"{base}/manifest.json")
    while info is None and wait_for_metadata is not None and wait_for_metadata():
        client.refresh()
        info = client.target_info(f"{base}/manifest.json")
    if info is None:
        raise VerificationError(f"{name}@{version} is not in the fleet's signed TUF targets",
                                hint="publish the bundle with `edgeops publish` first")
    check_install(name, version, installed=installed, floor=client.trusted_floors().get(name),
                  rollback=rollback)
    progress("manifest")
    manifest_bytes = client.download(info).read_bytes()
    sig_info = client.target_info(f"{base}/signatures.json")
    if sig_info is None:
        raise VerificationError(f"{name}@{version} has no signatures.json in TUF targets")
    sig_bytes = client.download(sig_info).read_bytes()
    manifest = Manifest.from_bytes(manifest_bytes)
    keys, threshold = trusted_targets_keys(client.trusted_root())
    verify_signatures(manifest_bytes, SignatureSet.from_bytes(sig_bytes), keys,  # type: ignore[arg-type]
                      threshold)
    if (manifest.name, manifest.version) != (name, version):
        raise VerificationError(f"manifest says {manifest.name}@{manifest.version}, "
                                f"not {name}@{version} (mix-and-match)")
    entry = manifest.artifact_for(target)
    if entry is None:
        raise VerificationError(f"{name}@{version} has no artifact for target {target!r}",
                                hint="build the bundle with this device's --target")
    if check_space is not None:
        check_space(entry.file.size + (entry.golden.size if entry.golden else 0))
    paths: list[Path | DeltaArtifact | None] = []
    delivery: Delivery | None = None
    for ref in (entry.file, entry.golden):
        if ref is None:
            paths.append(None)
            continue
        tinfo = client.target_info(f"{base}/{ref.path}")
        if tinfo is None:
            raise VerificationError(f"{ref.path} of {name}@{version} is not in TUF targets")
        if tinfo.length != ref.size or tinfo.hashes.get("sha256") != ref.sha256:
            raise VerificationError(f"{ref.path}: TUF targets and the signed manifest disagree "
                                    "on size or SHA-256")
        progress(ref.path)
        if ref is entry.file:
            got, delivery = _artifact(client, name, version, target, tinfo, active, progress)
            paths.append(got)
        else:
            paths.append(client.download(tinfo))
    art, golden = paths
    assert art is not None and not isinstance(golden, DeltaArtifact)
    return FetchedBundle(name, version, target, manifest, manifest_bytes, sig_bytes,
                         art, golden, delivery)

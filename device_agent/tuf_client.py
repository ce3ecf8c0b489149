"""Verified downloads: python-tuf's ngclient with an HTTP fetcher and an MQTT-chunk fetcher.

Why this module exists: a deploy command only *names* a bundle; what gets installed must be
proven by the fleet's TUF repository (root and targets signed offline, snapshot and timestamp by
the manager). python-tuf's ``Updater`` makes every trust decision (rollback, expiry,
mix-and-match, hashes, lengths, endless data); this module only supplies bytes to it, through
either transport, and maps its errors onto the edgeops tree (bad content vs transport).

MQTT transport (docs/PROTOCOL.md): metadata arrives as retained messages on
``tuf/metadata/<file>`` and is cached as it comes; a target file is requested with a ``fetch``
on the device's own topic and arrives as verified chunk frames on ``artifacts/<sha>/chunks``.
Chunks are kept on disk as they arrive, so a reconnect (or an agent restart) asks only for the
missing ranges.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from edgeops.bundle.manifest import Manifest
from edgeops.bundle.signing import SignatureSet, verify_signatures
from edgeops.config import DEFAULT_LIMITS
from edgeops.errors import TransportError, VerificationError
from edgeops.fsutil import atomic_write
from edgeops.protocol import Chunk, FetchRequest, MessageError, decode_chunk, topics
from edgeops.trust import trusted_targets_keys

__all__ = [
    "MQTT_METADATA_URL",
    "MQTT_TARGETS_URL",
    "ChunkAssembler",
    "DownloadLimits",
    "FetchedBundle",
    "HttpFetcher",
    "MessageLink",
    "MetadataCache",
    "MqttFetcher",
    "MqttTufTransport",
    "TufClient",
    "fetch_bundle",
]

log = logging.getLogger(__name__)

MQTT_METADATA_URL = "mqtt://edgeops/tuf/metadata/"
MQTT_TARGETS_URL = "mqtt://edgeops/tuf/targets/"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class DownloadLimits:
    """Bounds on what the fetchers accept and how long they wait. Units are in the names."""

    chunk_bytes: int = DEFAULT_LIMITS.mqtt_chunk_bytes
    max_artifact_bytes: int = DEFAULT_LIMITS.max_artifact_bytes
    max_metadata_bytes: int = DEFAULT_LIMITS.max_metadata_bytes
    idle_timeout_s: float = 15.0     # no new chunk for this long: ask again for what is missing
    max_requests: int = 8            # fetch requests per file before giving up
    metadata_wait_s: float = 10.0    # how long to wait for retained metadata to arrive
    http_timeout_s: float = 30.0

    def updater_config(self) -> UpdaterConfig:
        m = self.max_metadata_bytes
        return UpdaterConfig(root_max_length=m, timestamp_max_length=min(m, 64 * 1024),
                             snapshot_max_length=m, targets_max_length=m)


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


# -- MQTT ------------------------------------------------------------------------------------
class MessageLink(Protocol):
    """What the MQTT transport needs from a connection (MqttConnection provides it)."""

    generation: int

    def subscribe(self, topic_filter: str) -> None: ...
    def unsubscribe(self, topic_filter: str) -> None: ...
    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> object: ...


class MetadataCache:
    """The latest retained TUF metadata by file name, fed by the agent's message loop."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._files: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self.generation = 0

    def put(self, filename: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            log.warning("dropping %s: %d bytes over the metadata limit", filename, len(data))
            return
        with self._cond:
            if data:
                self._files[filename] = data
            else:                       # an empty retained message clears the topic
                self._files.pop(filename, None)
            self.generation += 1
            self._cond.notify_all()

    def get(self, filename: str, wait_s: float) -> bytes | None:
        """The file, waiting up to ``wait_s`` for it; versioned roots never wait once synced.

        ngclient asks for ``N+1.root.json`` until it is missing: once ``timestamp.json`` is here
        the retained set has arrived, and a root absent now does not exist.
        """
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                if filename in self._files:
                    return self._files[filename]
                if filename.endswith(".root.json") and "timestamp.json" in self._files:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def wait_newer(self, generation: int, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.generation > generation, timeout_s)


class ChunkAssembler:
    """Collects one artifact's verified chunks on disk; resumes from what is already there."""

    def __init__(self, artifact: str, directory: Path, limits: DownloadLimits) -> None:
        self.artifact = artifact
        self.dir = directory
        self.limits = limits
        self.count: int | None = None
        self.total: int | None = None
        self._have: dict[int, int] = {}       # index -> length
        self._paths: dict[int, Path] = {}     # index -> "<index>.<sha256>.chunk"
        self._cond = threading.Condition()
        self.rejected = 0
        self.first_rejection: str | None = None
        self.last_rejection: str | None = None
        self._closed = False                  # discarded: late frames must not re-create dir
        self.dir.mkdir(parents=True, exist_ok=True)
        plan = self.dir / "plan"
        if plan.exists():
            with contextlib.suppress(ValueError):
                c, t = (int(x) for x in plan.read_text().split())
                self.count, self.total = c, t
                for p in self.dir.glob("*.chunk"):
                    self._reload(p)
        for p in self.dir.glob("*.chunk.part"):   # a write cut short by a crash
            p.unlink(missing_ok=True)

    def _reload(self, path: Path) -> None:
        """Keep a chunk from an earlier run only if its bytes still match the digest in its name.

        Chunks are written without fsync (two fsyncs per 64 KiB chunk dominated many-agent
        downloads); after a power cut a torn or empty chunk fails this check, is deleted and is
        simply fetched again. The assembled artifact is verified by TUF in any case.
        """
        index, _, digest = path.name.removesuffix(".chunk").partition(".")
        try:
            data = path.read_bytes()
            ok = index.isdigit() and hashlib.sha256(data).hexdigest() == digest
        except OSError:
            ok = False
        if ok:
            self._have[int(index)] = len(data)
            self._paths[int(index)] = path
        else:
            path.unlink(missing_ok=True)

    def _reject(self, why: str) -> None:
        self.rejected += 1
        self.first_rejection = self.first_rejection or why
        self.last_rejection = why
        log.warning("artifact %s: %s", self.artifact[:12], why)

    def add_frame(self, payload: bytes) -> bool:
        """Decode, check and store one chunk frame; False (and counted) if rejected."""
        try:
            chunk = decode_chunk(payload, self.limits.chunk_bytes)
        except MessageError as exc:
            with self._cond:
                self._reject(exc.message)
                self._cond.notify_all()
            return False
        return self.add(chunk)

    def add(self, chunk: Chunk) -> bool:
        with self._cond:
            if self._closed:
                return False      # a straggler after discard(): nothing to keep it for
            try:
                self._check(chunk)
            except MessageError as exc:
                self._reject(exc.message)
                self._cond.notify_all()
                return False
            if chunk.index not in self._have:
                if self.count is None:
                    self.count, self.total = chunk.count, chunk.total_size
                    atomic_write(self.dir / "plan", f"{chunk.count} {chunk.total_size}".encode())
                path = self.dir / f"{chunk.index}.{chunk.sha256}.chunk"
                tmp = path.with_name(path.name + ".part")
                tmp.write_bytes(chunk.data)
                os.replace(tmp, path)          # no fsync: see _reload
                self._have[chunk.index] = len(chunk.data)
                self._paths[chunk.index] = path
            self._cond.notify_all()
            return True

    def _check(self, c: Chunk) -> None:
        if c.artifact != self.artifact:
            raise MessageError("chunk belongs to another artifact")
        if c.total_size > self.limits.max_artifact_bytes:
            raise MessageError(f"artifact of {c.total_size} bytes exceeds the "
                               f"{self.limits.max_artifact_bytes}-byte limit")
        if c.count < 1 or c.count > c.total_size + 1 or \
                c.count * self.limits.chunk_bytes < c.total_size:
            raise MessageError("chunk count does not fit the artifact size")
        if self.count is not None and (c.count, c.total_size) != (self.count, self.total):
            raise MessageError("chunk disagrees with earlier chunks on count or size")
        stored = sum(self._have.values()) - self._have.get(c.index, 0)
        if stored + len(c.data) > c.total_size:
            raise MessageError("chunks add up to more than the declared artifact size")

    def missing(self) -> tuple[tuple[int, int], ...] | None:
        """Missing ``[start, end)`` index ranges; None while the plan is unknown (ask for all)."""
        with self._cond:
            if self.count is None:
                return None
            out: list[tuple[int, int]] = []
            start: int | None = None
            for i in range(self.count):
                if i not in self._have and start is None:
                    start = i
                elif i in self._have and start is not None:
                    out.append((start, i))
                    start = None
            if start is not None:
                out.append((start, self.count))
            return tuple(out)

    def has(self, index: int) -> bool:
        with self._cond:
            return index in self._have

    def read(self, index: int) -> bytes:
        return self._paths[index].read_bytes()

    def wait(self, seen: int, timeout_s: float) -> int:
        """Wait until more chunks (or rejections) than ``seen`` events happened; return count."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._have) + self.rejected > seen, timeout_s)
            return len(self._have) + self.rejected

    def check_complete(self) -> None:
        if self.total is not None and sum(self._have.values()) != self.total:
            raise MessageError("chunks do not add up to the declared artifact size")

    def discard(self) -> None:
        """Delete the chunks for good; frames that still arrive are ignored, not stored."""
        with self._cond:
            self._closed = True
            shutil.rmtree(self.dir, ignore_errors=True)
            self._cond.notify_all()


class MqttTufTransport:
    """Routes TUF metadata and chunk messages for one agent and makes its fetcher."""

    def __init__(self, link: MessageLink, device_id: str, download_dir: Path,
                 limits: DownloadLimits = DownloadLimits(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.link = link
        self.device_id = device_id
        self.download_dir = download_dir
        self.limits = limits
        self.clock = clock
        self.metadata = MetadataCache(limits.max_metadata_bytes)
        # called while waiting for chunks; may raise to abandon the download (cancel, stop)
        self.check: Callable[[], None] | None = None
        self._active: dict[str, ChunkAssembler] = {}
        self._lock = threading.Lock()
        self._meta_prefix = topics.tuf_metadata("x.json")[: -len("x.json")]
        self._chunk_prefix = f"{topics.PREFIX}/artifacts/"

    def filters(self) -> list[str]:
        """The subscriptions the agent keeps for TUF over MQTT."""
        return [f"{self._meta_prefix}#"]

    def handle(self, topic: str, payload: bytes) -> bool:
        """Consume a metadata or chunk message; False if the topic is not ours."""
        if topic.startswith(self._meta_prefix):
            name = topic[len(self._meta_prefix):]
            if "/" not in name and name.endswith(".json"):
                self.metadata.put(name, payload)
            return True
        if topic.startswith(self._chunk_prefix) and topic.endswith("/chunks"):
            sha = topic[len(self._chunk_prefix):-len("/chunks")]
            with self._lock:
                asm = self._active.get(sha)
            if asm is not None:
                asm.add_frame(payload)
            return True
        return False

    def fetcher(self) -> MqttFetcher:
        return MqttFetcher(self)

    def _request(self, asm: ChunkAssembler) -> None:
        req = FetchRequest(self.device_id, asm.artifact, asm.missing())
        self.link.publish(topics.device_topic(self.device_id, "fetch"), req.to_bytes())

    def download(self, sha: str) -> Generator[bytes, None, None]:
        """Yield the artifact's bytes in order as chunks arrive, asking again when stalled."""
        if len(sha) != 64 or not set(sha) <= _HEX:
            raise tuf_exc.DownloadHTTPError(f"{sha!r} is not an artifact digest", 404)
        asm = ChunkAssembler(sha, self.download_dir / sha, self.limits)
        topic = topics.artifact_chunks(sha)
        with self._lock:
            self._active[sha] = asm
        self.link.subscribe(topic)
        refused = False       # bad content: delete what arrived instead of keeping it to resume
        try:
            gen = self.link.generation
            self._request(asm)
            requests, last_progress, seen, nxt = 1, self.clock(), 0, 0
            while True:
                while asm.count is not None and nxt < asm.count and asm.has(nxt):
                    yield asm.read(nxt)
                    nxt += 1
                if asm.count is not None and nxt == asm.count:
                    asm.check_complete()
                    break
                if self.check is not None:
                    self.check()
                now_seen = asm.wait(seen, min(1.0, self.limits.idle_timeout_s))
                if now_seen != seen:
                    seen, last_progress = now_seen, self.clock()
                if self.link.generation != gen:          # reconnected: resume
                    gen = self.link.generation
                    self._request(asm)
                    last_progress = self.clock()
                elif self.clock() - last_progress >= self.limits.idle_timeout_s:
                    if requests >= self.limits.max_requests:
                        err = self._give_up(asm, requests)
                        refused = isinstance(err, VerificationError)
                        raise err
                    requests += 1
                    self._request(asm)
                    last_progress = self.clock()
        except MessageError as exc:
            refused = True
            raise VerificationError(f"artifact {sha[:12]}: {exc.message}") from None
        except GeneratorExit:
            refused = True  # ngclient stopped reading: too long or failed; never resume it
            raise
        finally:
            self.link.unsubscribe(topic)
            # out of the routing table first, then off the disk: a frame routed in between
            # would otherwise re-create the directory (and discard() ignores late ones anyway)
            with self._lock:
                if self._active.get(sha) is asm:
                    del self._active[sha]
            if refused:
                asm.discard()
        asm.discard()

    @staticmethod
    def _give_up(asm: ChunkAssembler, requests: int) -> Exception:
        if asm.last_rejection is not None:
            return VerificationError(
                f"artifact {asm.artifact[:12]}: every chunk offered was rejected "
                f"({asm.rejected}; first: {asm.first_rejection})")
        return tuf_exc.SlowRetrievalError(
            f"artifact {asm.artifact[:12]}: no chunks after {requests} fetch requests")


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
    except VerificationError:
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
                 limits: DownloadLimits = DownloadLimits()) -> None:
        self.root_file = root_file
        self.metadata_dir = cache_dir / "metadata"
        self.targets_dir = cache_dir / "targets"
        self.fetcher = fetcher
        self.metadata_url = metadata_url
        self.targets_url = targets_url
        self.limits = limits
        self._updater: Updater | None = None

    @classmethod
    def over_http(cls, root_file: Path, cache_dir: Path, fleet_url: str,
                  limits: DownloadLimits = DownloadLimits()) -> TufClient:
        base = fleet_url.rstrip("/")
        return cls(root_file, cache_dir, HttpFetcher(limits.http_timeout_s),
                   f"{base}/tuf/metadata/", f"{base}/tuf/targets/", limits)

    @classmethod
    def over_mqtt(cls, root_file: Path, cache_dir: Path,
                  transport: MqttTufTransport) -> TufClient:
        return cls(root_file, cache_dir, transport.fetcher(), MQTT_METADATA_URL,
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

    def target_info(self, path: str) -> TargetFile | None:
        if self._updater is None:
            self.refresh()
        assert self._updater is not None
        with _tuf_errors(f"TUF lookup of {path}"):
            return self._updater.get_targetinfo(path)

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
class FetchedBundle:
    """A bundle's files for this device, each proven by TUF and the targets-key signature."""

    name: str
    version: str
    target: str
    manifest: Manifest
    manifest_bytes: bytes
    signatures_bytes: bytes
    artifact: Path
    golden: Path | None

    def stage(self, directory: Path) -> Path:
        """Lay the files out like an extracted bundle (manifest.json, artifacts/<target>/...)."""
        entry = self.manifest.artifact_for(self.target)
        assert entry is not None
        atomic_write(directory / "manifest.json", self.manifest_bytes)
        atomic_write(directory / "signatures.json", self.signatures_bytes)
        atomic_write(directory / entry.file.path, self.artifact.read_bytes())
        if entry.golden is not None and self.golden is not None:
            atomic_write(directory / entry.golden.path, self.golden.read_bytes())
        return directory


def fetch_bundle(client: TufClient, name: str, version: str, target: str, *,
                 refresh: bool = True,
                 wait_for_metadata: Callable[[], bool] | None = None,
                 progress: Callable[[str], None] = lambda _m: None) -> FetchedBundle:
    """Refresh TUF, then download manifest, signatures and ONLY this target's artifact + golden.

    ``wait_for_metadata`` (MQTT) blocks until newer metadata arrives and says whether it did: a
    deploy command may overtake the retained metadata that lists its bundle.
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
    paths: list[Path | None] = []
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
        paths.append(client.download(tinfo))
    assert paths[0] is not None
    return FetchedBundle(name, version, target, manifest, manifest_bytes, sig_bytes,
                         paths[0], paths[1])

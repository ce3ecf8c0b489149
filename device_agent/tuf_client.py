"""TUF over MQTT: the transport half of verified downloads, which an idle agent keeps running.

Why this module exists: a deploy command only *names* a bundle; what gets installed must be
proven by the fleet's TUF repository (root and targets signed offline, snapshot and timestamp by
the manager). python-tuf's ``Updater`` makes every trust decision (rollback, expiry,
mix-and-match, hashes, lengths, endless data) in :mod:`device_agent.tuf_update`; this module
only moves bytes for it, and is all the agent holds between updates: the ngclient side (with
urllib3 under it) loads with the first download, not at start (benchmarks/agent_footprint.py).
The dependency runs one way: :mod:`device_agent.tuf_update` (fetchers, ``TufClient``,
``fetch_bundle``) builds on this module, which never imports it.

MQTT transport (docs/PROTOCOL.md): metadata arrives as retained messages on
``tuf/metadata/<file>`` and is cached as it comes; a target file is requested with a ``fetch``
on the device's own topic and arrives as verified chunk frames on ``artifacts/<sha>/chunks``.
Chunks are kept on disk as they arrive, so a reconnect (or an agent restart) asks only for the
missing ranges.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tuf.api import exceptions as tuf_exc

from device_agent.diskspace import DiskFullError, is_disk_full
from edgeops.config import DEFAULT_LIMITS
from edgeops.errors import VerificationError
from edgeops.fsutil import atomic_write
from edgeops.protocol import Chunk, FetchRequest, MessageError, decode_chunk, topics

if TYPE_CHECKING:
    from tuf.ngclient import UpdaterConfig

__all__ = [
    "MQTT_METADATA_URL",
    "MQTT_TARGETS_URL",
    "ChunkAssembler",
    "DownloadLimits",
    "MessageLink",
    "MetadataCache",
    "MqttTufTransport",
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
    idle_timeout_s: float = 15.0     # no frame at all for this long: ask again for what is missing
    idle_backoff_max_s: float = 60.0  # ...and each further ask waits twice as long, up to this
    max_requests: int = 8            # fetch requests per file before giving up
    # a fetch no manager acknowledged (docs/PROTOCOL.md ``ack``) is sent again after this,
    # doubling (with jitter) up to fetch_ack_max_s; these re-sends do not count as requests
    fetch_ack_timeout_s: float = 3.0
    fetch_ack_max_s: float = 30.0
    metadata_wait_s: float = 10.0    # how long to wait for retained metadata to arrive
    http_timeout_s: float = 30.0

    def updater_config(self) -> UpdaterConfig:
        from tuf.ngclient import UpdaterConfig

        m = self.max_metadata_bytes
        return UpdaterConfig(root_max_length=m, timestamp_max_length=min(m, 64 * 1024),
                             snapshot_max_length=m, targets_max_length=m)


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
        self.frames = 0                       # frames accepted, repeats of chunks held included
        self.first_rejection: str | None = None
        self.last_rejection: str | None = None
        self._closed = False                  # discarded: late frames must not re-create dir
        self.disk_full: str | None = None     # why a chunk could not be stored (ENOSPC)
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
                try:
                    self._store(chunk)
                except OSError as exc:
                    if not is_disk_full(exc):
                        raise
                    # Not a frame received: the download fails now with the reason instead of
                    # counting the carousel's every resend as progress for minutes.
                    self.disk_full = self.disk_full or f"{exc.strerror} ({self.dir})"
                    self._cond.notify_all()
                    return False
            self.frames += 1
            self._cond.notify_all()
            return True

    def _store(self, chunk: Chunk) -> None:
        if self.count is None:
            atomic_write(self.dir / "plan", f"{chunk.count} {chunk.total_size}".encode())
            self.count, self.total = chunk.count, chunk.total_size
        path = self.dir / f"{chunk.index}.{chunk.sha256}.chunk"
        tmp = path.with_name(path.name + ".part")
        try:
            tmp.write_bytes(chunk.data)
        except OSError:
            tmp.unlink(missing_ok=True)        # no torn part left to hold the space
            raise
        os.replace(tmp, path)                  # no fsync: see _reload
        self._have[chunk.index] = len(chunk.data)
        self._paths[chunk.index] = path

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
        """Wait until more frames (accepted, repeated or rejected) than ``seen`` arrived.

        Returns the new count. Any frame counts: a repeat means the manager's carousel is
        running (for this device or another), and it sends every index that is asked for.
        """
        with self._cond:
            self._cond.wait_for(lambda: self.frames + self.rejected > seen
                                or self.disk_full is not None, timeout_s)
            return self.frames + self.rejected

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
        self._acked: set[str] = set()    # artifacts whose latest fetch a manager acknowledged
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

    def on_ack(self, artifacts: tuple[str, ...]) -> None:
        """A manager acknowledged fetch requests for these artifacts (I/O thread)."""
        with self._lock:
            self._acked.update(a for a in artifacts if a in self._active)

    def _request(self, asm: ChunkAssembler) -> None:
        with self._lock:
            self._acked.discard(asm.artifact)
        req = FetchRequest(self.device_id, asm.artifact, asm.missing())
        self.link.publish(topics.device_topic(self.device_id, "fetch"), req.to_bytes())

    def download(self, sha: str) -> Generator[bytes, None, None]:
        """Yield the artifact's bytes in order as chunks arrive, asking again when stalled.

        One ``fetch`` at the start; another, naming only the missing ranges, after a reconnect
        (frames sent while offline are lost) or when no frame at all arrived for
        ``idle_timeout_s``, doubling that wait after each such ask (up to
        ``idle_backoff_max_s``). Frames of chunks already held count as activity: the
        manager's carousel is serving someone and merges every ask into the pass it is running,
        so asking again while it runs only multiplies its work (and its egress) under load.
        """
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
            patience = self.limits.idle_timeout_s
            ack_wait = self.limits.fetch_ack_timeout_s
            ack_due = self.clock() + ack_wait
            while True:
                while asm.count is not None and nxt < asm.count and asm.has(nxt):
                    yield asm.read(nxt)
                    nxt += 1
                if asm.count is not None and nxt == asm.count:
                    asm.check_complete()
                    break
                if self.check is not None:
                    self.check()
                if asm.disk_full is not None:
                    refused = True   # its chunks go too: the disk needs the room more
                    raise DiskFullError(f"artifact {sha[:12]}: no room for its chunks: "
                                        f"{asm.disk_full}")
                now_seen = asm.wait(seen, min(1.0, self.limits.idle_timeout_s))
                if now_seen != seen:
                    seen, last_progress = now_seen, self.clock()
                if self.link.generation != gen:          # reconnected: resume
                    gen = self.link.generation
                    self._request(asm)
                    last_progress = self.clock()
                elif seen == 0 and sha not in self._acked and self.clock() >= ack_due:
                    # no manager took the request (none subscribed, or a dead session in the
                    # group got it): ask again soon rather than after the idle timeout
                    self._request(asm)
                    ack_wait = min(2 * ack_wait, self.limits.fetch_ack_max_s)
                    ack_due = self.clock() + ack_wait * random.uniform(0.5, 1.0)
                    last_progress = self.clock()
                elif self.clock() - last_progress >= patience:
                    if requests >= self.limits.max_requests:
                        err = self._give_up(asm, requests)
                        refused = isinstance(err, VerificationError)
                        raise err
                    requests += 1
                    self._request(asm)
                    last_progress = self.clock()
                    patience = min(2 * patience, max(self.limits.idle_backoff_max_s,
                                                     self.limits.idle_timeout_s))
        except MessageError as exc:
            refused = True
            raise VerificationError(f"artifact {sha[:12]}: {exc.message}") from None
        except GeneratorExit:
            refused = True  # ngclient stopped reading: too long or failed; never resume it
            raise
        finally:
            self.link.unsubscribe(topic)
            with self._lock:
                self._acked.discard(sha)
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

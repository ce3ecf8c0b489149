"""Artifact delivery over MQTT: chunking, fan-out, per-device resume and back-pressure.

Why it exists: a rollout to thousands of devices must not cost thousands of copies of the model
on the manager's uplink, nor flood the broker. Devices subscribe to
``edgeops/v1/artifacts/<sha256>/chunks`` and then publish a ``fetch`` naming the chunk ranges
they still miss (all, or what a disconnect lost). Requests are merged per artifact into one
*carousel*: every requested chunk index is published once, in order, for everyone listening, so
devices that ask within the same batching window, or join while a pass is running, share one
publication. Egress is therefore about the artifact's size, not devices x size.

Back-pressure: at most ``max_inflight_chunks`` unacknowledged chunk publishes and at most
``max_bytes_per_s`` (token bucket), so a large rollout trickles rather than floods.

Pacing (``pass_bytes_per_s``): one artifact's pass is published no faster than this, and its
start waits for requests to pause for as long as the pass will take (between ``batch_window_s``
and ``batch_window_max_s``). Devices of one rollout ask for a large artifact in cohorts a second
or two apart (each small file before it goes through its own window); unpaced, a 10 MB pass was
over in 0.2 s and the next cohort, 1.6 s later, got a full second pass (200 real agents: 2.0 x
egress). A device that asks while a paced pass runs gets the rest of it, and only the part
already sent is repeated.

Split as the style guide asks: :class:`FanOut` is the pure, clock-fed schedule (what to publish
next); :class:`ChunkDelivery` is the thread that reads chunks from disk and publishes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from edgeops.config import DEFAULT_LIMITS
from edgeops.errors import BadContentError
from edgeops.protocol import topics
from edgeops.protocol.messages import Chunk, FetchRequest, encode_chunk

__all__ = [
    "ArtifactCatalog",
    "ArtifactInfo",
    "ChunkDelivery",
    "DeliveryConfig",
    "DeliveryRejected",
    "DeliveryStats",
    "FanOut",
    "chunk_count",
    "plan_fetch",
    "read_chunk",
]

log = logging.getLogger(__name__)


class DeliveryRejected(BadContentError):
    """A fetch the manager refuses: unknown artifact, wrong target, ranges out of bounds."""

    default_hint = "the device asked for something it may not have; check its target and bundle"


@dataclass(frozen=True)
class DeliveryConfig:
    """Delivery limits. Sizes in bytes, times in seconds."""

    chunk_bytes: int = DEFAULT_LIMITS.mqtt_chunk_bytes
    batch_window_s: float = 0.5          # a pass starts once requests pause this long...
    batch_window_max_s: float = 5.0      # ...or this long after its first request
    pass_bytes_per_s: float = 4 * 1024**2  # one artifact's pass at most this fast; a large
    #                                        artifact's window grows to its pass time; 0 = off
    max_inflight_chunks: int = 32        # unacknowledged chunk publishes
    max_bytes_per_s: float = 64 * 1024**2  # egress ceiling; 0 = no ceiling
    inflight_timeout_s: float = 30.0     # forget a publish never acknowledged (broker restart)
    open_files_max: int = 16             # artifact files kept open
    max_fetches_per_device_per_min: int = 12   # per artifact; more is refused (a device
    #                                            looping on fetch cannot force endless passes)
    fetch_history_max: int = 100_000     # (device, artifact) pairs remembered for that limit

    def __post_init__(self) -> None:
        if self.chunk_bytes <= 0 or self.chunk_bytes > DEFAULT_LIMITS.max_mqtt_payload_bytes * 64:
            raise ValueError(f"chunk_bytes {self.chunk_bytes} is out of range")
        if self.max_inflight_chunks <= 0:
            raise ValueError("max_inflight_chunks must be positive")


@dataclass(frozen=True)
class ArtifactInfo:
    """A deliverable file: where it lies and which targets may fetch it (None = any target,
    e.g. a bundle's manifest.json and signatures.json)."""

    sha256: str
    size: int
    path: Path
    targets: frozenset[str] | None = None


class ArtifactCatalog(Protocol):
    """What delivery needs from the repository: the file behind a digest."""

    def artifact(self, sha256: str) -> ArtifactInfo | None: ...


def chunk_count(size: int, chunk_bytes: int) -> int:
    """An empty file is one empty chunk, so every artifact has at least one frame."""
    return max(1, -(-size // chunk_bytes))


def plan_fetch(req: FetchRequest, info: ArtifactInfo | None, device_target: str | None,
               chunk_bytes: int) -> tuple[int, set[int]]:
    """Check one fetch and return (chunk count, chunk indices to send). Pure."""
    if info is None:
        raise DeliveryRejected(f"device {req.device_id} asked for unknown artifact "
                               f"{req.artifact[:12]}")
    if info.targets is not None and device_target not in info.targets:
        raise DeliveryRejected(
            f"device {req.device_id} (target {device_target}) asked for artifact "
            f"{req.artifact[:12]}, which is built for {', '.join(sorted(info.targets))}")
    count = chunk_count(info.size, chunk_bytes)
    if req.missing is None:
        return count, set(range(count))
    wanted: set[int] = set()
    for start, end in req.missing:
        if start >= count:
            raise DeliveryRejected(f"device {req.device_id} asked for chunks [{start}, {end}) "
                                   f"of an artifact with {count} chunks")
        wanted.update(range(start, min(end, count)))
    return count, wanted


def read_chunk(f: BinaryIO, info: ArtifactInfo, index: int, chunk_bytes: int) -> bytes:
    """The encoded frame for chunk ``index`` (hash computed here, checked by the device)."""
    count = chunk_count(info.size, chunk_bytes)
    f.seek(index * chunk_bytes)
    data = f.read(chunk_bytes)
    expected = min(chunk_bytes, info.size - index * chunk_bytes)
    if len(data) != expected:
        raise DeliveryRejected(f"artifact {info.sha256[:12]} on disk is shorter than recorded",
                               hint="the manager's data directory is damaged; republish")
    return encode_chunk(Chunk(info.sha256, index, count, info.size, data))


@dataclass
class _Pass:
    info: ArtifactInfo
    count: int
    pending: bytearray
    ready_at: float
    first_at: float
    started: bool = False
    remaining: int = 0
    cursor: int = 0
    next_at: float = 0.0       # pacing: the next chunk not before this


class FanOut:
    """The carousel schedule: which (artifact, chunk) to publish next. Pure and clock-fed.

    Each artifact with pending chunks is a pass. It starts once requests have paused for
    ``batch_window_s`` (a rollout notifies devices over seconds, not at one instant), but no
    later than ``batch_window_max_s`` after its first request. It walks its pending indices in
    order from a cursor and wraps around, so a device joining mid-pass gets the rest now and
    the beginning after the wrap. Requests for indices already pending cost nothing. Artifacts
    take turns chunk by chunk.

    With ``pass_bytes_per_s`` a pass sends no faster than that, and the pause it waits for is
    as long as the pass will take (within the two windows): a large artifact waits for the
    next cohort of devices a little longer, a manifest does not.
    """

    def __init__(self, batch_window_s: float, batch_window_max_s: float | None = None,
                 pass_bytes_per_s: float = 0.0) -> None:
        self.batch_window_s = batch_window_s
        self.batch_window_max_s = max(batch_window_s, batch_window_max_s
                                      if batch_window_max_s is not None else batch_window_s)
        self.pass_bytes_per_s = max(0.0, pass_bytes_per_s)
        self._passes: OrderedDict[str, _Pass] = OrderedDict()

    def window_s(self, info: ArtifactInfo) -> float:
        """How long requests must pause before this artifact's pass starts."""
        if self.pass_bytes_per_s <= 0:
            return self.batch_window_s
        return min(self.batch_window_max_s,
                   max(self.batch_window_s, info.size / self.pass_bytes_per_s))

    def add(self, info: ArtifactInfo, count: int, indices: Iterable[int], now: float) -> int:
        """Mark chunks as wanted; returns how many were not already pending."""
        p = self._passes.get(info.sha256)
        if p is None:
            p = _Pass(info, count, bytearray(count), now + self.window_s(info), now)
            self._passes[info.sha256] = p
        elif not p.started:
            p.ready_at = min(now + self.window_s(info), p.first_at + self.batch_window_max_s)
        added = 0
        for i in indices:
            if not p.pending[i]:
                p.pending[i] = 1
                added += 1
        p.remaining += added
        if p.remaining == 0:
            del self._passes[info.sha256]
        return added

    def next(self, now: float) -> tuple[ArtifactInfo, int] | None:
        for sha, p in list(self._passes.items()):
            if p.ready_at > now or p.next_at > now:
                continue
            idx = p.pending.find(1, p.cursor)
            if idx < 0:
                idx = p.pending.find(1)
            p.started = True
            p.pending[idx] = 0
            p.remaining -= 1
            p.cursor = idx + 1
            if self.pass_bytes_per_s > 0:
                p.next_at = max(p.next_at, now) + p.info.size / p.count / self.pass_bytes_per_s
            if p.remaining == 0:
                del self._passes[sha]
            else:
                self._passes.move_to_end(sha)   # round-robin between artifacts
            return p.info, idx
        return None

    def wait_s(self, now: float) -> float | None:
        """Seconds until some pass is ready (0 = now); None when nothing is pending."""
        if not self._passes:
            return None
        return max(0.0, min(max(p.ready_at, p.next_at) for p in self._passes.values()) - now)

    def pending(self, sha256: str) -> int:
        p = self._passes.get(sha256)
        return p.remaining if p else 0


@dataclass
class DeliveryStats:
    requests: int = 0
    rejected: int = 0
    chunks_requested: int = 0            # sum over requests (what naive delivery would send)
    chunks_published: int = 0
    bytes_published: int = 0             # encoded frames, i.e. manager egress for artifacts
    per_artifact_bytes: dict[str, int] = field(default_factory=dict)


class ChunkDelivery:
    """The publishing thread. ``submit`` is called by ingest; ``published`` by the adapter.

    ``publish(topic, frame) -> mid`` must queue a QoS 1 publish on a connection used for chunks
    only, whose acknowledgements are routed to :meth:`published`.
    """

    def __init__(self, catalog: ArtifactCatalog, publish: Callable[[str, bytes], int],
                 config: DeliveryConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.catalog = catalog
        self.config = config or DeliveryConfig()
        self._publish = publish
        self._clock = clock
        self._fanout = FanOut(self.config.batch_window_s, self.config.batch_window_max_s,
                              self.config.pass_bytes_per_s)
        self._cond = threading.Condition()
        self._window = threading.Condition()
        self._inflight: dict[int, float] = {}
        self._early: set[int] = set()
        self._in_hand = False        # a chunk taken from the schedule is being sent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._files: OrderedDict[str, BinaryIO] = OrderedDict()
        self._tokens = 0.0
        self._tokens_at = clock()
        self._fetches: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self.stats = DeliveryStats()

    # -- called from other threads ---------------------------------------------------------
    def submit(self, req: FetchRequest, device_target: str | None) -> int:
        """Queue a device's fetch; raises DeliveryRejected. Returns chunks newly scheduled."""
        info = self.catalog.artifact(req.artifact)
        try:
            count, wanted = plan_fetch(req, info, device_target, self.config.chunk_bytes)
            self._check_fetch_rate(req)
        except DeliveryRejected:
            self.stats.rejected += 1
            raise
        assert info is not None
        with self._cond:
            self.stats.requests += 1
            self.stats.chunks_requested += len(wanted)
            added = self._fanout.add(info, count, wanted, self._clock())
            self._cond.notify()
        return added

    def _check_fetch_rate(self, req: FetchRequest) -> None:
        limit = self.config.max_fetches_per_device_per_min
        if limit <= 0:
            return
        now = self._clock()
        key = (req.device_id, req.artifact)
        with self._cond:
            times = self._fetches.get(key)
            if times is None:
                times = self._fetches[key] = deque(maxlen=limit)
                while len(self._fetches) > self.config.fetch_history_max:
                    self._fetches.popitem(last=False)
            else:
                self._fetches.move_to_end(key)
            if len(times) == limit and now - times[0] < 60.0:
                raise DeliveryRejected(
                    f"device {req.device_id} asked for {req.artifact[:12]} more than {limit} "
                    "times in a minute", hint="the device is looping on fetch; check its agent")
            times.append(now)

    def published(self, mid: int) -> None:
        """A chunk publish was acknowledged by the broker (network thread: no work here)."""
        with self._window:
            if self._inflight.pop(mid, None) is None:
                self._early.add(mid)
            self._window.notify()

    def pending_chunks(self, sha256: str) -> int:
        with self._cond:
            return self._fanout.pending(sha256)

    def idle(self) -> bool:
        with self._cond, self._window:
            return (self._fanout.wait_s(self._clock()) is None and not self._inflight
                    and not self._in_hand)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="chunk-delivery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        with self._window:
            self._window.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for f in self._files.values():
            f.close()
        self._files.clear()

    # -- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            # A window slot first, then the chunk: what is taken from the schedule is sent now.
            if not self._acquire_window():
                return
            with self._cond:
                now = self._clock()
                item = self._fanout.next(now)
                if item is None:
                    wait = self._fanout.wait_s(now)
                    self._cond.wait(timeout=1.0 if wait is None else max(wait, 0.001))
                    continue
                self._in_hand = True     # off the schedule, not yet in flight: not idle
            info, index = item
            try:
                frame = read_chunk(self._file(info), info, index, self.config.chunk_bytes)
            except (OSError, DeliveryRejected) as exc:
                log.error("cannot read chunk %d of %s: %s", index, info.sha256[:12], exc)
                with self._window:
                    self._in_hand = False
                continue
            if not self._take_tokens(len(frame)):
                return
            # Counted before it goes out: a device can receive the last chunk and finish
            # before this thread runs again, and its reader must find the chunk counted.
            self.stats.chunks_published += 1
            self.stats.bytes_published += len(frame)
            per = self.stats.per_artifact_bytes
            per[info.sha256] = per.get(info.sha256, 0) + len(frame)
            mid = self._publish(topics.artifact_chunks(info.sha256), frame)
            with self._window:
                if mid in self._early:
                    self._early.discard(mid)
                else:
                    self._inflight[mid] = self._clock()
                self._in_hand = False

    def _acquire_window(self) -> bool:
        with self._window:
            while len(self._inflight) >= self.config.max_inflight_chunks:
                if self._stop.is_set():
                    return False
                now = self._clock()
                stale = [m for m, t in self._inflight.items()
                         if now - t > self.config.inflight_timeout_s]
                for m in stale:
                    del self._inflight[m]
                if stale:
                    log.warning("forgot %d chunk publishes never acknowledged", len(stale))
                    break
                self._window.wait(timeout=0.5)
            return not self._stop.is_set()

    def _take_tokens(self, size: int) -> bool:
        rate = self.config.max_bytes_per_s
        if rate <= 0:
            return True
        burst = max(float(size), rate * 0.1)
        while not self._stop.is_set():
            now = self._clock()
            self._tokens = min(burst, self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
            if self._tokens >= size:
                self._tokens -= size
                return True
            self._stop.wait((size - self._tokens) / rate)
        return False

    def _file(self, info: ArtifactInfo) -> BinaryIO:
        f = self._files.get(info.sha256)
        if f is None:
            f = open(info.path, "rb")  # noqa: SIM115 - cached, closed on eviction/stop
            self._files[info.sha256] = f
            while len(self._files) > self.config.open_files_max:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(info.sha256)
        return f

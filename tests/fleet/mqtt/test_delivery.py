"""Chunk planning and the fan-out carousel: pure logic, fed with a clock."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeops.protocol import FetchRequest, decode_chunk
from fleet.delivery import (
    ArtifactInfo,
    ChunkDelivery,
    DeliveryConfig,
    DeliveryRejected,
    FanOut,
    chunk_count,
    plan_fetch,
    read_chunk,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


def info(sha: str = SHA_A, size: int = 1000, targets: frozenset[str] | None = None
         ) -> ArtifactInfo:
    return ArtifactInfo(sha, size, Path("/nonexistent"), targets)


def drain(f: FanOut, now: float) -> list[tuple[str, int]]:
    out = []
    while (item := f.next(now)) is not None:
        out.append((item[0].sha256, item[1]))
    return out


@pytest.mark.parametrize(("size", "chunk", "count"), [(0, 10, 1), (1, 10, 1), (10, 10, 1),
                                                      (11, 10, 2), (100, 10, 10)])
def test_chunk_count(size: int, chunk: int, count: int) -> None:
    assert chunk_count(size, chunk) == count


@given(data=st.binary(max_size=5000), chunk=st.integers(1, 700))
@settings(max_examples=60, deadline=None)
def test_chunks_reassemble_to_the_artifact(data: bytes, chunk: int) -> None:
    sha = hashlib.sha256(data).hexdigest()
    art = ArtifactInfo(sha, len(data), Path("x"))
    f = io.BytesIO(data)
    n = chunk_count(len(data), chunk)
    frames = [decode_chunk(read_chunk(f, art, i, chunk), chunk) for i in range(n)]
    assert all(c.count == n and c.total_size == len(data) and c.artifact == sha for c in frames)
    assert b"".join(c.data for c in sorted(frames, key=lambda c: c.index)) == data


def test_read_chunk_refuses_a_truncated_file_on_disk() -> None:
    art = ArtifactInfo("c" * 64, 100, Path("x"))
    with pytest.raises(DeliveryRejected, match="shorter"):
        read_chunk(io.BytesIO(b"x" * 50), art, 0, 64)


def test_plan_all_and_missing_ranges() -> None:
    req = FetchRequest("cam-1", SHA_A)
    assert plan_fetch(req, info(size=1000), "x86-cpu", 100) == (10, set(range(10)))
    req = FetchRequest("cam-1", SHA_A, ((2, 4), (8, 50)))
    assert plan_fetch(req, info(size=1000), "x86-cpu", 100) == (10, {2, 3, 8, 9})


def test_plan_refuses_unknown_artifact() -> None:
    with pytest.raises(DeliveryRejected, match="unknown artifact"):
        plan_fetch(FetchRequest("cam-1", SHA_A), None, "x86-cpu", 100)


def test_plan_refuses_artifact_for_another_target() -> None:
    art = info(targets=frozenset({"rpi5-tflite"}))
    with pytest.raises(DeliveryRejected, match="built for rpi5-tflite"):
        plan_fetch(FetchRequest("cam-1", SHA_A), art, "x86-cpu", 100)
    # the right target, and target-free files (manifest, signatures), are served
    assert plan_fetch(FetchRequest("cam-1", SHA_A), art, "rpi5-tflite", 100)[0] == 10
    assert plan_fetch(FetchRequest("cam-1", SHA_A), info(), "anything", 100)[0] == 10


def test_plan_refuses_ranges_beyond_the_artifact() -> None:
    with pytest.raises(DeliveryRejected, match="10 chunks"):
        plan_fetch(FetchRequest("cam-1", SHA_A, ((10, 12),)), info(size=1000), "x86-cpu", 100)


def test_requests_in_one_window_share_one_pass() -> None:
    f = FanOut(batch_window_s=0.5)
    for _ in range(200):   # 200 devices asking for everything
        f.add(info(), 10, range(10), now=0.0)
    assert f.next(0.1) is None            # still inside the batching window
    assert f.wait_s(0.1) == pytest.approx(0.4)
    sent = drain(f, 0.6)
    assert sent == [(SHA_A, i) for i in range(10)]
    assert f.wait_s(1.0) is None


def test_late_joiner_gets_the_rest_then_the_wrap() -> None:
    f = FanOut(batch_window_s=0.0)
    f.add(info(), 10, range(10), now=0.0)
    first = [f.next(0.0) for _ in range(4)]
    assert [i for _, i in first] == [0, 1, 2, 3]   # type: ignore[misc]
    f.add(info(), 10, range(10), now=0.0)          # a second device joins mid-pass
    rest = drain(f, 0.0)
    assert [i for _, i in rest] == [4, 5, 6, 7, 8, 9, 0, 1, 2, 3]
    # egress: 14 chunks for two devices instead of 20


def test_resume_only_sends_missing_ranges() -> None:
    f = FanOut(batch_window_s=0.0)
    f.add(info(), 10, {3, 4, 7}, now=0.0)
    assert [i for _, i in drain(f, 0.0)] == [3, 4, 7]


def test_artifacts_take_turns() -> None:
    f = FanOut(batch_window_s=0.0)
    f.add(info(SHA_A), 3, range(3), now=0.0)
    f.add(info(SHA_B), 3, range(3), now=0.0)
    order = [s[0][0] for s in drain(f, 0.0)]
    assert order == ["a", "b", "a", "b", "a", "b"]


@given(st.lists(st.tuples(st.integers(0, 3), st.sets(st.integers(0, 19), max_size=20)),
                max_size=12))
@settings(max_examples=80, deadline=None)
def test_every_requested_chunk_is_sent_and_never_twice_per_request(
        reqs: list[tuple[int, set[int]]]) -> None:
    """Whatever the interleaving, the union of requests is sent, each chunk at most once per
    time it was asked for while not pending."""
    f = FanOut(batch_window_s=0.0)
    wanted: set[int] = set()
    sent: list[int] = []
    for steps, idx in reqs:
        f.add(info(), 20, idx, now=0.0)
        wanted |= idx
        for _ in range(steps):
            item = f.next(0.0)
            if item is not None:
                sent.append(item[1])
    sent += [i for _, i in drain(f, 0.0)]
    assert set(sent) == wanted
    assert len(sent) <= sum(len(i) for _, i in reqs)


class _Catalog:
    def __init__(self, arts: dict[str, ArtifactInfo]) -> None:
        self.arts = arts

    def artifact(self, sha256: str) -> ArtifactInfo | None:
        return self.arts.get(sha256)


def test_delivery_window_bounds_unacknowledged_publishes(tmp_path: Path) -> None:
    """With acknowledgements withheld, no more than max_inflight_chunks go out."""
    data = bytes(range(256)) * 40   # 10 KiB → 10 chunks of 1 KiB
    path = tmp_path / "art"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    published: list[int] = []

    def publish(topic: str, frame: bytes) -> int:
        published.append(len(published) + 1)
        return len(published)

    d = ChunkDelivery(_Catalog({sha: ArtifactInfo(sha, len(data), path)}), publish,
                      DeliveryConfig(chunk_bytes=1024, batch_window_s=0.0,
                                     max_inflight_chunks=3, max_bytes_per_s=0))
    d.start()
    try:
        d.submit(FetchRequest("cam-1", sha), "x86-cpu")
        _wait(lambda: len(published) == 3)
        assert len(published) == 3 and d.pending_chunks(sha) == 7
        for mid in list(published):
            d.published(mid)
        _wait(lambda: len(published) == 6)
        for mid in range(4, 11):
            d.published(mid)
            _wait(lambda m=mid: len(published) >= min(10, m + 3))   # type: ignore[misc]
        _wait(d.idle)
        assert len(published) == 10 and d.idle()
        assert d.stats.chunks_published == 10
    finally:
        d.stop()


def _wait(pred: object, timeout_s: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():   # type: ignore[operator]
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached")


def test_the_window_waits_for_requests_to_pause_but_not_forever() -> None:
    f = FanOut(batch_window_s=0.5, batch_window_max_s=2.0)
    f.add(info(), 10, range(10), now=0.0)
    f.add(info(), 10, range(10), now=0.4)     # still arriving: the start moves to 0.9
    assert f.next(0.6) is None
    assert f.next(0.95) is not None
    g = FanOut(batch_window_s=0.5, batch_window_max_s=2.0)
    for k in range(10):                        # a steady trickle cannot postpone it past 2 s
        g.add(info(), 10, range(10), now=k * 0.3)
    assert g.next(1.99) is None
    assert g.next(2.0) is not None
    g.add(info(), 10, range(10), now=2.1)      # once started, joiners do not pause it
    assert g.next(2.1) is not None


def test_a_device_looping_on_fetch_is_refused_after_the_limit(tmp_path: Path) -> None:
    now = [0.0]
    art = ArtifactInfo(SHA_A, 1000, tmp_path / "a")
    d = ChunkDelivery(_Catalog({SHA_A: art}), lambda t, f: 1,
                      DeliveryConfig(chunk_bytes=100, max_fetches_per_device_per_min=3),
                      clock=lambda: now[0])
    for k in range(3):
        now[0] = k * 1.0
        d.submit(FetchRequest("cam-1", SHA_A, ((0, 1),)), "x86-cpu")
    with pytest.raises(DeliveryRejected, match="more than 3 times in a minute"):
        d.submit(FetchRequest("cam-1", SHA_A, ((0, 1),)), "x86-cpu")
    d.submit(FetchRequest("cam-2", SHA_A, ((0, 1),)), "x86-cpu")   # others are not affected
    now[0] = 61.0                                                   # a minute later: allowed
    d.submit(FetchRequest("cam-1", SHA_A, ((0, 1),)), "x86-cpu")
    assert d.stats.rejected == 1 and d.stats.requests == 5


def test_paced_pass_lets_a_late_cohort_share_the_rest() -> None:
    """pass_bytes_per_s: chunks leave no faster than the rate, so a device asking during the
    pass gets the remainder with everyone and only the chunks already sent are repeated."""
    f = FanOut(batch_window_s=0.0, batch_window_max_s=0.0, pass_bytes_per_s=1000.0)
    big = info(size=1000)                           # 10 chunks of 100 bytes: 0.1 s each
    f.add(big, 10, range(10), now=0.0)
    assert f.next(0.0) == (big, 0)
    assert f.next(0.05) is None                     # paced: the next one at 0.1 s
    assert f.wait_s(0.05) == pytest.approx(0.05)
    sent = [0]
    t = 0.1
    while len(sent) < 4:
        item = f.next(t)
        if item is not None:
            sent.append(item[1])
        t += 0.1
    f.add(big, 10, range(10), now=t)                # a late cohort asks for everything
    while (wait := f.wait_s(t)) is not None:
        t += wait
        item = f.next(t)
        if item is not None:
            sent.append(item[1])
    assert sent == [*range(10), 0, 1, 2, 3]         # 14 chunks for both cohorts, not 20


def test_large_artifacts_wait_longer_for_requests_to_pause() -> None:
    """The start waits for a pause as long as the pass will take (within both windows)."""
    f = FanOut(batch_window_s=0.5, batch_window_max_s=5.0, pass_bytes_per_s=1_000_000.0)
    small, big = info(SHA_A, size=2_000), info(SHA_B, size=3_000_000)
    assert f.window_s(small) == 0.5 and f.window_s(big) == 3.0
    assert f.window_s(info(size=100_000_000)) == 5.0
    f.add(small, 1, [0], now=0.0)
    f.add(big, 30, range(30), now=0.0)
    f.add(big, 30, range(30), now=1.6)              # a second cohort 1.6 s later: same pass
    assert f.next(0.5) == (small, 0)
    assert f.next(4.5) is None
    assert f.next(4.6) == (big, 0)
    unpaced = FanOut(batch_window_s=0.5, batch_window_max_s=5.0)
    assert unpaced.window_s(big) == 0.5


def test_a_chunk_is_counted_and_busy_before_any_device_can_receive_it(tmp_path: Path) -> None:
    """What a device receives is already in the stats, and delivery is not idle meanwhile.

    A device may receive the last chunk, finish, and have its stats read before the delivery
    thread runs again; counting after the publish call made a worker test read 16 chunks
    published for 17 received (tests/fleet/mqtt/test_worker.py, under load)."""
    data = bytes(range(256)) * 12   # 3 KiB → 3 chunks of 1 KiB
    path = tmp_path / "art"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    seen: list[tuple[int, int, bool]] = []
    d: ChunkDelivery

    def publish(topic: str, frame: bytes) -> int:
        # what a device's reader would find the moment the frame is on its way
        seen.append((d.stats.chunks_published, d.stats.bytes_published, d.idle()))
        d.published(len(seen))
        return len(seen)

    d = ChunkDelivery(_Catalog({sha: ArtifactInfo(sha, len(data), path)}), publish,
                      DeliveryConfig(chunk_bytes=1024, batch_window_s=0.0, max_bytes_per_s=0))
    d.start()
    try:
        d.submit(FetchRequest("cam-1", sha), "x86-cpu")
        _wait(lambda: len(seen) == 3 and d.idle())
        assert [(n, idle) for n, _, idle in seen] == [(1, False), (2, False), (3, False)]
        assert seen[-1][1] == d.stats.bytes_published
    finally:
        d.stop()

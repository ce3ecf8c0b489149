"""The agent's disk reserve and ENOSPC handling: pure rules, then a real full filesystem."""

from __future__ import annotations

import errno
import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from device_agent.diskspace import (
    DiskFullError,
    DiskLimits,
    DiskReserve,
    is_disk_full,
    space_shortfall,
)
from device_agent.telemetry import DurableQueue
from device_agent.tuf_client import ChunkAssembler, DownloadLimits, MqttTufTransport
from edgeops.protocol import Chunk, encode_chunk, topics
from tests.device_agent.smalldisk import fill, small_disk

KIB = 1024
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def _chained(inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException:
            raise RuntimeError("cannot rollback - no transaction is active")  # noqa: B904
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize(("exc", "full"), [
    (ENOSPC, True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (sqlite3.OperationalError("database or disk is full"), True),
    (_chained(sqlite3.OperationalError("database or disk is full")), True),  # ROLLBACK after it
    (DiskFullError("x"), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (sqlite3.OperationalError("database is locked"), False),
    (ValueError("no"), False),
])
def test_is_disk_full_knows_enospc_from_files_and_sqlite(exc: BaseException, full: bool) -> None:
    assert is_disk_full(exc) is full


def test_space_shortfall_names_need_free_and_floor() -> None:
    mib = 1024 * 1024
    assert space_shortfall(10 * mib, 64 * mib, 100 * mib, "download the model") is None
    why = space_shortfall(10 * mib, 64 * mib, 70 * mib, "download the model")
    assert why == ("not enough disk space to download the model: it needs 10.0 MiB, 70.0 MiB "
                   "are free and 64 MiB must stay free")


def _reserve(tmp_path: Path, free: int, size: int = 64 * KIB) -> DiskReserve:
    return DiskReserve(tmp_path / "disk.reserve",
                       DiskLimits(reserve_bytes=size, restore_margin_bytes=size,
                                  restore_every_s=10.0),
                       free=lambda _p: free, clock=lambda: 0.0)


def test_reserve_is_taken_only_with_room_beside_it(tmp_path: Path) -> None:
    r = _reserve(tmp_path, free=100 * KIB)          # < reserve + margin
    assert not r.ensure() and not r.held and r.missing_bytes == 64 * KIB
    r = _reserve(tmp_path, free=10**9)
    assert r.ensure() and r.held and r.missing_bytes == 0
    st = (tmp_path / "disk.reserve").stat()
    assert st.st_size == 64 * KIB and st.st_blocks * 512 >= 64 * KIB   # allocated, not sparse


def test_run_releases_the_reserve_once_and_tries_again(tmp_path: Path) -> None:
    r = _reserve(tmp_path, free=10**9)
    assert r.ensure()
    calls: list[int] = []

    def write() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ENOSPC
        return "written"

    assert r.run(write, "a report") == "written"
    assert len(calls) == 2 and not r.held and r.releases == 1
    # no reserve left: the next ENOSPC is a DiskFullError at once, caused by the ENOSPC
    with pytest.raises(DiskFullError, match="disk full while writing a report") as ei:
        r.run(lambda: (_ for _ in ()).throw(ENOSPC), "a report")
    assert is_disk_full(ei.value.__cause__ or ei.value)
    # other errors are not its business
    r.ensure()
    with pytest.raises(PermissionError):
        r.run(lambda: (_ for _ in ()).throw(PermissionError(errno.EACCES, "no")), "x")
    assert r.held


def test_released_reserve_comes_back_when_due_and_there_is_room(tmp_path: Path) -> None:
    now = [0.0]
    free = [10**9]
    r = DiskReserve(tmp_path / "disk.reserve",
                    DiskLimits(reserve_bytes=64 * KIB, restore_margin_bytes=64 * KIB,
                               restore_every_s=5.0),
                    free=lambda _p: free[0], clock=lambda: now[0])
    assert r.ensure() and r.release()
    assert not r.restore_if_due()                   # released just now: not yet
    now[0], free[0] = 6.0, 100 * KIB                # due, but still no room
    assert not r.restore_if_due()
    now[0], free[0] = 8.0, 10**9                    # room, but the last try was 2 s ago
    assert not r.restore_if_due()
    now[0] = 12.0
    assert r.restore_if_due() and r.held


# -- a real full filesystem ------------------------------------------------------------------
def test_outbox_on_a_full_disk_is_written_from_the_reserve(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 4) as disk:
        q = DurableQueue(disk / "state_outbox.db", 1000)
        r = DiskReserve(disk / "disk.reserve", DiskLimits(reserve_bytes=512 * KIB,
                                                           restore_margin_bytes=0))
        try:
            assert r.ensure()
            fill(disk)
            big = b"r" * (8 * KIB)                  # a few pages: never fits in 0 bytes
            with pytest.raises(sqlite3.OperationalError) as ei:
                for _ in range(64):
                    q.push(big)
            assert is_disk_full(ei.value)
            before = len(q)
            r.run(lambda: q.push(big), "a state report")
            assert len(q) == before + 1 and r.releases == 1
        finally:
            q.close()


def test_chunks_on_a_full_disk_fail_the_download_at_once_and_leave_nothing(
        tmp_path: Path) -> None:
    """The field failure: every resend of the carousel hit ENOSPC and counted as progress, so
    the download looped for minutes. Now the first chunk that does not fit ends it."""
    data = bytes(range(256)) * 64                   # 16 KiB: 64 chunks of 256 bytes
    sha = hashlib.sha256(data).hexdigest()
    chunks = [Chunk(sha, i, 64, len(data), data[i * 256:(i + 1) * 256]) for i in range(64)]
    with small_disk(tmp_path / "disk", 1) as disk:
        limits = DownloadLimits(chunk_bytes=256, idle_timeout_s=30.0, max_requests=8)
        asm = ChunkAssembler(sha, disk / "dl" / sha, limits)
        assert asm.add(chunks[0])
        fill(disk)
        assert not asm.add(chunks[1]) and asm.disk_full is not None
        assert "No space left" in asm.disk_full
        assert not list((disk / "dl" / sha).glob("*.part"))   # no torn part holds space

        class Link:
            generation = 1

            def subscribe(self, topic_filter: str) -> None: ...
            def unsubscribe(self, topic_filter: str) -> None: ...

            def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> object:
                return None

        (disk / "filler").unlink()
        fill(disk)
        transport = MqttTufTransport(Link(), "cam-disk", disk / "dl2", limits)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                for _ in transport.download(sha):
                    pass
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=run)
        t0 = time.monotonic()
        worker.start()
        topic = topics.artifact_chunks(sha)
        while worker.is_alive() and time.monotonic() - t0 < 20:
            for c in chunks:                        # the carousel keeps sending
                transport.handle(topic, encode_chunk(c))
            time.sleep(0.05)
        worker.join(5)
        assert not worker.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], DiskFullError), errors
        assert "no room for its chunks" in errors[0].message
        assert not (disk / "dl2" / sha).exists()    # its chunks went, the disk needs room


def test_a_zero_reserve_takes_nothing_and_full_is_full_at_once(tmp_path: Path) -> None:
    """The fleet simulator's setting: a thousand agents on one host disk reserve nothing."""
    r = DiskReserve(tmp_path / "disk.reserve", DiskLimits(reserve_bytes=0))
    assert r.ensure() and r.restore_if_due() and r.missing_bytes == 0
    assert not (tmp_path / "disk.reserve").exists()
    with pytest.raises(DiskFullError):
        r.run(lambda: (_ for _ in ()).throw(ENOSPC), "a report")

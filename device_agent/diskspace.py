"""The agent's own disk space: a reserve it can give back, and a check before big writes.

Why it exists: a device whose disk fills up (its own downloads, someone else's logs) must still
tell the fleet why a deployment failed, and keep serving. The agent writes small things all the
time (state outbox, telemetry queue, ``net_state.json``) and large ones rarely (chunks, TUF
targets, slots). So it holds a preallocated reserve file, ``<data_dir>/disk.reserve``; a small
write that fails with ENOSPC releases it and tries once more, which leaves room for the outbox
and the log lines that say what happened. The reserve comes back once there is room for it
again. Large writes are checked up front instead (:func:`space_shortfall`), so a download
that cannot fit fails at once with a reason rather than looping on ENOSPC.

Nothing here knows about MQTT or the fleet; the daemon decides what to guard.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from edgeops.errors import EdgeOpsError

__all__ = ["DiskFullError", "DiskLimits", "DiskReserve", "is_disk_full", "space_shortfall"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_MIB = 1024 * 1024
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13          # SQLITE_FULL: "database or disk is full"


class DiskFullError(EdgeOpsError):
    """The device's disk has no room for what the agent must write.

    Neither bad content nor a network failure: the same deployment succeeds once space is
    freed, so it is its own branch of the tree.
    """

    default_hint = ("free space on the device (old logs, core dumps, other data on the agent's "
                    "disk), then deploy again; the active model keeps serving")


@dataclass(frozen=True)
class DiskLimits:
    """How much disk the agent keeps for itself. Units in the names."""

    # Preallocated at start and released when a write hits ENOSPC: room for the outbox,
    # net_state.json and log lines that report the failure (a state report is < 2 KiB).
    reserve_bytes: int = 8 * _MIB
    # The reserve is taken back only when this much is free beyond it, so it is not released
    # and re-taken on every report while the disk hovers near full.
    restore_margin_bytes: int = 8 * _MIB
    restore_every_s: float = 10.0      # how often a released reserve looks for room again


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the disk or the quota is full.

    OSError ENOSPC/EDQUOT from file writes, SQLITE_FULL from the SQLite queues.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, DiskFullError):
            return True
        if isinstance(cur, OSError) and cur.errno in _FULL_ERRNOS:
            return True
        if isinstance(cur, sqlite3.Error) and (
                getattr(cur, "sqlite_errorcode", None) == _SQLITE_FULL
                or "disk is full" in str(cur)):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s filesystem."""
    return shutil.disk_usage(path).free


def space_shortfall(need_bytes: int, keep_free_bytes: int, free: int, what: str) -> str | None:
    """The reason ``what`` cannot be written, or None when ``need_bytes`` fit beside the floor.

    Pure: the caller measures ``free``.
    """
    if free - need_bytes >= keep_free_bytes:
        return None
    return (f"not enough disk space to {what}: it needs {need_bytes / _MIB:.1f} MiB, "
            f"{free / _MIB:.1f} MiB are free and {keep_free_bytes / _MIB:.0f} MiB must stay "
            "free")


class DiskReserve:
    """A preallocated file the agent gives back when its own small writes hit ENOSPC.

    Thread-safe. :meth:`run` wraps one small write: on ENOSPC it releases the reserve and tries
    once more; a second ENOSPC (or none to release) becomes :class:`DiskFullError`.
    """

    def __init__(self, path: Path, limits: DiskLimits = DiskLimits(), *,
                 free: Callable[[Path], int] = free_bytes,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.limits = limits
        self._free = free
        self._clock = clock
        self._lock = threading.Lock()
        self._next_restore = float("-inf")
        self.releases = 0                 # times the reserve was given back (telemetry, tests)

    @property
    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.limits.reserve_bytes
        except OSError:
            return False

    @property
    def missing_bytes(self) -> int:
        """What taking the reserve back needs: large writes must leave this much free too."""
        return 0 if self.held else max(0, self.limits.reserve_bytes)

    def ensure(self) -> bool:
        """Take the reserve if it is missing and there is room for it; True when held."""
        with self._lock:
            return self._ensure()

    def _ensure(self) -> bool:
        size = self.limits.reserve_bytes
        if size <= 0 or self.held:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            room = self._free(self.path.parent)
        except OSError:
            return False
        if room < size + self.limits.restore_margin_bytes:
            log.warning("disk reserve %s not taken: %.1f MiB free, %.1f MiB wanted beside it",
                        self.path, room / _MIB, (size + self.limits.restore_margin_bytes) / _MIB)
            return False
        tmp = self.path.with_name(self.path.name + ".part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _allocate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.warning("disk reserve %s not taken: %s", self.path, exc)
            return False
        log.info("disk reserve of %.1f MiB held in %s", size / _MIB, self.path)
        return True

    def release(self) -> bool:
        """Give the reserve back to the filesystem; True if there was one."""
        with self._lock:
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                log.error("cannot release the disk reserve %s: %s", self.path, exc)
                return False
            self.releases += 1
            self._next_restore = self._clock() + self.limits.restore_every_s
            return True

    def restore_if_due(self) -> bool:
        """Re-take a released reserve, at most every ``restore_every_s``; True when held."""
        with self._lock:
            if self.limits.reserve_bytes <= 0 or self.held:
                return True
            now = self._clock()
            if now < self._next_restore:
                return False
            self._next_restore = now + self.limits.restore_every_s
            return self._ensure()

    def run(self, fn: Callable[[], T], what: str) -> T:
        """``fn()``; on ENOSPC release the reserve and try once more.

        Raises :class:`DiskFullError` (caused by the last ENOSPC) when it still does not fit.
        """
        try:
            return fn()
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            if not self.release():
                raise DiskFullError(f"disk full while writing {what} ({exc})") from exc
            log.warning("disk full while writing %s: released the %.1f MiB disk reserve",
                        what, self.limits.reserve_bytes / _MIB)
        try:
            return fn()
        except Exception as exc:
            if is_disk_full(exc):
                raise DiskFullError(f"disk full while writing {what}, even after releasing "
                                    f"the reserve ({exc})") from exc
            raise


def _allocate(fd: int, size: int) -> None:
    """Really claim ``size`` bytes (a sparse file would reserve nothing)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    block = b"\0" * min(size, _MIB)
    left = size
    while left > 0:
        left -= os.write(fd, block[:left])

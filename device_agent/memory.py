"""Hand freed heap back to the operating system: the agent lives for months beside the app.

Why: glibc's allocator keeps freed memory mapped for reuse. Two of its defaults cost a
long-running agent resident memory it no longer uses (measured in benchmarks/agent_footprint.py,
about 5 MB of a 90 MB agent):

* the trim threshold is dynamic: once a block above the mmap threshold is freed (loading a
  model does this), glibc raises both thresholds, and up to twice that block's size of free
  heap stays resident for good;
* free pages below the top of the heap are only returned by an explicit ``malloc_trim``.

:func:`tune_allocator` fixes the trim and mmap thresholds at 128 KiB (glibc's own starting
values), so large blocks are mapped and unmapped on their own and free heap above 128 KiB is
trimmed. :func:`release_free_memory` calls ``malloc_trim(0)`` once, after a model swap has
dropped the old session. Both are process-wide, so only the agent's entry point
(:func:`device_agent.daemon.run`) calls :func:`tune_allocator`; an application that embeds the
agent decides for its own process. On a C library other than glibc (musl, macOS) both do
nothing and return False.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from functools import cache

__all__ = ["TRIM_THRESHOLD", "release_free_memory", "tune_allocator"]

log = logging.getLogger(__name__)

TRIM_THRESHOLD = 128 * 1024
# mallopt parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:  # pragma: no cover - a Linux without a loadable C library
        return None


def tune_allocator(threshold: int = TRIM_THRESHOLD) -> bool:
    """Fix glibc's trim and mmap thresholds at ``threshold`` bytes; False where not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, threshold)) and bool(
        libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    if not ok:  # pragma: no cover - glibc accepts any threshold up to 32 MiB
        log.warning("mallopt refused a threshold of %d bytes; allocator left as it was", threshold)
    return ok


def release_free_memory() -> bool:
    """Return free heap pages to the OS now (``malloc_trim(0)``); False where not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True

"""A real small filesystem for the disk-full tests: a tmpfs mounted for one test.

Mounting needs root (or CAP_SYS_ADMIN); where it is not allowed the test is skipped, saying
so, never silently passed. ``fill`` takes every free byte with one preallocated file, the way a
runaway log or core dump would.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "small_disk"]


@contextlib.contextmanager
def small_disk(mountpoint: Path, size_mib: int) -> Iterator[Path]:
    """A fresh tmpfs of ``size_mib`` MiB at ``mountpoint`` for the duration of the block."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    try:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755",
                            "tmpfs", str(mountpoint)], capture_output=True, timeout=20,
                           check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs for the disk-full test: {exc}")
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs for the disk-full test (needs root): "
                    f"{p.stderr.decode(errors='replace').strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=20,
                          check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=20,
                           check=False)


def fill(directory: Path, name: str = "filler") -> Path:
    """Take every free byte of ``directory``'s filesystem; returns the filler file."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        size = shutil.disk_usage(directory).free
        while size >= 4096:            # a running agent may take some of it meanwhile
            try:
                os.posix_fallocate(fd, os.fstat(fd).st_size, size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                size //= 2
                continue
            size = shutil.disk_usage(directory).free
        block = b"\0" * 4096          # whatever fallocate's rounding left
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, block)
    finally:
        os.close(fd)
    return path

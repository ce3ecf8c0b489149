"""Real services for tests: temporary PostgreSQL databases, free ports, skip-or-fail. Nothing here
is a fake; the Mosquitto broker is :mod:`tests.mosquitto`.

When ``EDGEOPS_REQUIRE_SERVICES=1`` (CI), a missing service is a test failure, never a skip.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import random
import resource
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

__all__ = ["free_port", "need", "postgres_database", "wait_port"]

PG_ADMIN_URL = os.environ.get("EDGEOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def need(what: str, available: bool, how: str) -> None:
    """Skip with a reason, or fail in CI where every service must be present."""
    if available:
        return
    msg = f"{what} is not available ({how})"
    if os.environ.get("EDGEOPS_REQUIRE_SERVICES") == "1":
        pytest.fail(msg + "; EDGEOPS_REQUIRE_SERVICES=1 forbids skipping")
    pytest.skip(msg)


# Under pytest-xdist each worker takes ports from its own block, below the kernel's ephemeral
# range (32768-60999 by default): a port handed out here and bound a moment later by a broker
# or server cannot be taken meanwhile by another worker's, or by any client socket the kernel
# numbers itself. Without xdist the kernel picks (port 0), as before.
_PORT_BLOCK_BASE = 20000
_PORT_BLOCK_SIZE = 1000
_PORT_BLOCKS = 12                     # 20000-31999
_port_offset = itertools.count(random.randrange(_PORT_BLOCK_SIZE))


def free_port() -> int:
    """A loopback port free right now (this worker's block under xdist, else the kernel's)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        base = _PORT_BLOCK_BASE + (int(worker[2:]) % _PORT_BLOCKS) * _PORT_BLOCK_SIZE
        for _ in range(_PORT_BLOCK_SIZE):
            port = base + next(_port_offset) % _PORT_BLOCK_SIZE
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, host: str = "127.0.0.1", timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


@contextlib.contextmanager
def many_open_fds(n: int) -> Iterator[None]:
    """Hold ``n`` descriptors open (raising the soft limit if needed), so new ones are > n.

    For the tests that show a network loop still works where ``select()`` cannot (fd >= 1024).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + 512
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"this test needs {need} open files; the hard limit here is {hard} "
                    "(raise it with ulimit -Hn)")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    # Earlier tests leave paho clients and loops in reference cycles, holding low-numbered
    # sockets until a garbage collection; one running mid-test would free numbers below the
    # fillers and hand them to the socket under test. Collect them now, before filling.
    gc.collect()
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(n)]
    try:
        yield
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the local server, dropped afterwards; yields its URL."""
    try:
        import psycopg
    except ImportError:
        need("PostgreSQL driver", False, "pip install 'edgeops[postgres]'")
        raise
    name = f"edgeops_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        need("PostgreSQL", False, f"{PG_ADMIN_URL}: {exc}".splitlines()[0])
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

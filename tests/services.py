"""Real services for tests: temporary PostgreSQL databases, free ports, skip-or-fail. Nothing here
is a fake; the Mosquitto broker is :mod:`tests.mosquitto`.

When ``EDGEOPS_REQUIRE_SERVICES=1`` (CI), a missing service is a test failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
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


def free_port() -> int:
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

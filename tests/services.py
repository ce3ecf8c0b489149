"""Real services for tests: a private Mosquitto per test with its own config, temporary PostgreSQL
databases. Nothing here is a fake.

When ``EDGEOPS_REQUIRE_SERVICES=1`` (CI), a missing service is a test failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Mosquitto", "free_port", "need", "postgres_database", "wait_port"]

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if Path("/usr/sbin/mosquitto").exists() else None)
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


@dataclass
class Mosquitto:
    """A private broker: ``Mosquitto.start(tmp, extra_config)`` → ``.url``; ``stop()`` after."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, workdir: Path, extra: str = "", *, port: int | None = None,
              listener: str | None = None) -> Mosquitto:
        need("mosquitto", MOSQUITTO is not None, "apt-get install mosquitto")
        assert MOSQUITTO is not None
        port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "mosquitto.conf"
        log = workdir / "mosquitto.log"
        head = listener or f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        conf.write_text(
            f"{head}persistence false\nlog_dest file {log}\nlog_type error\nlog_type warning\n"
            "max_inflight_messages 0\nmax_queued_messages 100000\nmax_packet_size 1048576\n"
            f"{extra}\n")
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            wait_port(port)
        except TimeoutError:
            proc.kill()
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"mosquitto did not start: {err} {log.read_text() if log.exists() else ''}"
                               ) from None
        return cls(port, proc, log)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


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

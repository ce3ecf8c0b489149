"""Reusable PostgreSQL helpers for the fleet tests: a temporary database per session.

With EDGEOPS_REQUIRE_SERVICES=1 (CI) a missing server fails the tests; otherwise they skip
with the reason. The server is the one on 127.0.0.1:5432 (trust auth, user postgres) unless
EDGEOPS_TEST_PG points elsewhere (a base URL without a database name).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

__all__ = ["PG_BASE", "pg_available", "require_or_skip", "temporary_database"]

PG_BASE = os.environ.get("EDGEOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def pg_available() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(f"{PG_BASE}/postgres", connect_timeout=3):
            return None
    except Exception as exc:  # any failure means "not available here"
        return f"PostgreSQL not reachable at {PG_BASE}: {str(exc).strip()[:200]}"


def require_or_skip(reason: str) -> None:
    if os.environ.get("EDGEOPS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"EDGEOPS_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@contextmanager
def temporary_database(prefix: str = "edgeops_fleet_test") -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

"""Fleet fixtures: a store on both backends, real keys and a TUF root, a fake device channel."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.store import Store, open_store
from tests.fleet.services import pg_available, require_or_skip, temporary_database

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One temporary PostgreSQL database for the session (schemas per test inside it)."""
    reason = pg_available()
    if reason:
        require_or_skip(reason)
    with temporary_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, migrated store; every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'fleet.db'}", tmp_path / "data")
        yield s
        s.close()
        return
    base = request.getfixturevalue("pg_database")
    import psycopg

    schema = f"t{next(_counter)}_{abs(hash(request.node.nodeid)) % 10**8}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{base}?options=-csearch_path%3D{schema}"
    s = open_store(url, tmp_path / "data")
    yield s
    s.close()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- keys, trust root, bundles --------------------------------------------------------------
from edgeops.keys import KeyStore  # noqa: E402
from tests.edgeops.bundles import PASSPHRASE, make_bundle, make_keystore  # noqa: E402


@pytest.fixture(scope="session")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    """Real Ed25519 keys for every role and a signed TUF root (one per session)."""
    return make_keystore(tmp_path_factory.mktemp("edgeops-home"))


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, keystore: KeyStore) -> dict[str, Path]:
    """Signed bundles: tiny 1.0.0 and 1.1.0 for x86-cpu, and 1.0.0 for arm64-cpu only."""
    d = tmp_path_factory.mktemp("bundles")
    return {"1.0.0": make_bundle(d, keystore, version="1.0.0"),
            "1.1.0": make_bundle(d, keystore, version="1.1.0", seed=1),
            "arm": make_bundle(d, keystore, name="tiny-arm", target="arm64-cpu")}


__all__ = ["PASSPHRASE"]

"""The store's role Protocols and its blob store: each role is a real slice of the SQL store,
and artifact bytes live in files by digest, apart from the database."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgeops.errors import ConfigError, UsageError
from fleet.store import Store, open_store, roles
from fleet.store.blobs import BlobStore, is_sha256_hex
from fleet.store.postgres import PostgresStore
from fleet.store.sqlite import SqliteStore

ROLES = [getattr(roles, name) for name in roles.__all__]


def _members(protocol: type) -> set[str]:
    """Public methods and attributes a Protocol declares, its bases' included."""
    out: set[str] = set()
    for cls in protocol.__mro__:
        if cls is object or not getattr(cls, "_is_protocol", False):
            continue
        out |= {n for n in vars(cls) if not n.startswith("_")}
        out |= set(vars(cls).get("__annotations__", {}))
    return out


def _own_methods(protocol: type) -> set[str]:
    if protocol is object or not getattr(protocol, "_is_protocol", False):
        return set()
    return {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.__name__)
def test_the_sql_store_plays_every_role(store: Store, role: type) -> None:
    assert isinstance(store, role)


def test_every_store_method_belongs_to_exactly_one_role() -> None:
    """Declared once (a union such as RepositoryStore declares none of its own); attributes
    such as ``data_dir`` may be shared by the roles that read them."""
    seen: dict[str, str] = {}
    for role in ROLES:
        for name in _own_methods(role):
            assert name not in seen, f"{name} is in {seen.get(name)} and {role.__name__}"
            seen[name] = role.__name__
    assert set(seen) == {n for cls in Store.__mro__ for n in _own_methods(cls)}
    assert len(seen) > 50


@pytest.mark.parametrize("impl", [SqliteStore, PostgresStore], ids=lambda c: c.__name__)
def test_every_public_sql_store_method_is_in_a_role(impl: type) -> None:
    """A mixin's table (captures, drift alerts) is reachable through ``Store`` and typed by a
    role, never only by the concrete class."""
    public = {n for cls in impl.__mro__ if cls is not object for n in vars(cls)
              if not n.startswith("_")}
    assert public - _members(Store) == {"dialect"}      # the backend's SQL flavour


def test_blob_store_writes_once_by_digest(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    sha = blobs.put_bytes(b"weights")
    assert sha == hashlib.sha256(b"weights").hexdigest()
    path = blobs.path(sha)
    assert path == tmp_path / "blobs" / sha[:2] / sha and path.read_bytes() == b"weights"
    assert blobs.put_bytes(b"weights") == sha          # idempotent
    assert blobs.existing(sha) == path
    assert blobs.existing("c" * 64) is None            # well-formed, not on disk


@pytest.mark.parametrize("bad", ["", "../" * 20 + "etc/passwd", "g" * 64, "a" * 63, "a/" * 32])
def test_blob_store_refuses_names_that_are_not_digests(tmp_path: Path, bad: str) -> None:
    blobs = BlobStore(tmp_path)
    assert not is_sha256_hex(bad)
    assert blobs.existing(bad) is None
    with pytest.raises(UsageError, match="not a sha256 digest"):
        blobs.path(bad)


def test_store_serves_only_recorded_blobs_from_its_blob_store(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "fleet.db"), tmp_path / "data")
    try:
        assert store.blobs is not None                  # type: ignore[attr-defined]
        sha = store.blobs.put_bytes(b"abc")             # type: ignore[attr-defined]
        assert store.artifact_path(sha) is None         # on disk, not recorded
        store.add_blob(sha, 3)
        assert store.artifact_path(sha) == tmp_path / "data" / "blobs" / sha[:2] / sha
        assert store.artifact_path("../" + sha[3:]) is None
    finally:
        store.close()


def test_a_store_without_a_data_directory_has_no_blobs(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "fleet.db"))
    try:
        assert store.artifact_path("a" * 64) is None
        with pytest.raises(ConfigError, match="no data directory"):
            store.blob_path("a" * 64)
    finally:
        store.close()

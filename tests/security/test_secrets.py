"""Secrets at rest: every private key file 0600, offline keys passphrase-protected."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edgeops.errors import KeyError_
from edgeops.keys import OFFLINE_ROLES, ONLINE_ROLES, KeyStore
from tests.edgeops.bundles import PASSPHRASE, make_keystore


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("home"))


def test_every_private_key_is_0600_and_the_key_dir_0700(store: KeyStore) -> None:
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    for role in (*OFFLINE_ROLES, *ONLINE_ROLES):
        assert stat.S_IMODE((store.dir / f"{role}.pem").stat().st_mode) == 0o600


def test_offline_keys_are_encrypted_and_need_the_passphrase(store: KeyStore) -> None:
    for role in OFFLINE_ROLES:
        assert b"ENCRYPTED" in (store.dir / f"{role}.pem").read_bytes()
        with pytest.raises(KeyError_, match="encrypted"):
            store.signer(role)
        with pytest.raises(KeyError_, match="wrong passphrase"):
            store.signer(role, b"not the passphrase")
        assert store.signer(role, PASSPHRASE).public_key.keyid == store.public_key(role).keyid


def test_an_offline_key_cannot_be_made_without_a_passphrase(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="needs a passphrase"):
        KeyStore(tmp_path).generate("targets", None)
    assert not (tmp_path / "keys" / "targets.pem").exists()

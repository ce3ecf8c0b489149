"""Threshold co-signing of a bundle: ``cosign_bundle`` and ``edgeops bundle sign``."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeops.bundle import read_bundle
from edgeops.bundle.archive import cosign_bundle
from edgeops.keys import KeyStore
from edgeops.trust import create_root
from tests.edgeops.bundles import PASSPHRASE, make_keystore, signed_bundle


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    s = make_keystore(tmp_path_factory.mktemp("home"))
    s.generate("targets-2", PASSPHRASE)
    create_root(s, PASSPHRASE, targets_threshold=2)
    return s


def test_cosigning_adds_a_signature_and_changes_nothing_else(store: KeyStore,
                                                            tmp_path: Path) -> None:
    a, b = store.signer("targets", PASSPHRASE), store.signer("targets-2", PASSPHRASE)
    path = signed_bundle(tmp_path, [a])
    one = read_bundle(path)
    trusted = [a.public_key, b.public_key]
    with pytest.raises(Exception, match="1 of 2 required"):
        one.verify(trusted, 2)
    cosign_bundle(one, [b], tmp_path / "two.edgebundle")
    two = read_bundle(tmp_path / "two.edgebundle")
    assert sorted(two.verify(trusted, 2)) == sorted(k.keyid for k in trusted)
    assert two.manifest_bytes == one.manifest_bytes
    for ref in one.manifest.files():
        assert two.read_file(ref.path) == one.read_file(ref.path)
    # deterministic, and signing again with a key already on it changes nothing
    cosign_bundle(two, [b], tmp_path / "again.edgebundle")
    assert (tmp_path / "again.edgebundle").read_bytes() == (tmp_path / "two.edgebundle").read_bytes()
    # the same as signing with both at build time
    both = signed_bundle(tmp_path / "both", [a, b])
    assert both.read_bytes() == (tmp_path / "two.edgebundle").read_bytes()


def test_bundle_sign_refuses_an_altered_bundle_and_writes_nothing(
        store: KeyStore, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeops.cli.main import main

    path = signed_bundle(tmp_path, [store.signer("targets", PASSPHRASE)])
    data = bytearray(path.read_bytes())
    model = read_bundle(path).read_file("artifacts/x86-cpu/model.onnx")
    at = bytes(data).index(model)
    data[at + len(model) // 2] ^= 1                       # one bit of the artifact
    path.write_bytes(bytes(data))
    monkeypatch.setenv("EDGEOPS_HOME", str(store.home))
    monkeypatch.setenv("EDGEOPS_KEY_PASSPHRASE", PASSPHRASE.decode())
    with pytest.raises(SystemExit) as exc:
        main(["bundle", "sign", str(path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "does not match its SHA-256" in err and "Traceback" not in err
    assert path.read_bytes() == bytes(data)
    assert list(tmp_path.glob(".cosign-*")) == []

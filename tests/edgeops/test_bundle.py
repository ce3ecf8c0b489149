"""The signed bundle: round trips, determinism, and every bad input the foundation names."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeops.bundle import Manifest, read_bundle
from edgeops.bundle.manifest import canonical_json
from edgeops.errors import InvalidBundleError, VerificationError
from edgeops.keys import KeyStore
from tests.edgeops.bundles import PASSPHRASE, make_bundle, make_keystore, sha

Members = list[tuple[tarfile.TarInfo, bytes]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("home"))


@pytest.fixture()
def good(tmp_path: Path, store: KeyStore) -> Path:
    return make_bundle(tmp_path, store)


def targets_key(store: KeyStore) -> list:
    return [store.public_key("targets")]


def members_of(path: Path) -> Members:
    with tarfile.open(path) as tar:
        out = []
        for ti in tar:
            f = tar.extractfile(ti) if ti.isreg() else None
            out.append((ti, f.read() if f else b""))
        return out


def rewrite(src: Path, dest: Path, mutate: Callable[[Members], Members]) -> Path:
    members = mutate(members_of(src))
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for ti, data in members:
            ti.size = len(data) if ti.isreg() else 0
            tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return dest


def replace_member(name: str, fn: Callable[[bytes], bytes]) -> Callable[[Members], Members]:
    def mutate(ms: Members) -> Members:
        return [(ti, fn(d) if ti.name == name else d) for ti, d in ms]
    return mutate


# -- good bundles -------------------------------------------------------------------------------

def test_good_bundle_verifies_and_unpacks(good: Path, store: KeyStore, tmp_path: Path) -> None:
    b = read_bundle(good)
    assert b.verify(targets_key(store)) == [store.public_key("targets").keyid]
    written = b.extract(tmp_path / "out")
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in written)
    assert names == ["artifacts/x86-cpu/golden.npz", "artifacts/x86-cpu/model.onnx",
                     "manifest.json", "signatures.json"]
    assert (tmp_path / "out" / "manifest.json").read_bytes() == b.manifest_bytes


def test_building_twice_is_byte_identical(tmp_path: Path, store: KeyStore) -> None:
    a = make_bundle(tmp_path / "a", store)
    b = make_bundle(tmp_path / "b", store)
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        infos = tar.getmembers()
    assert [t.name for t in infos] == ["manifest.json", "signatures.json",
                                       "artifacts/x86-cpu/golden.npz",
                                       "artifacts/x86-cpu/model.onnx"]
    assert {(t.mtime, t.uid, t.gid, t.uname, t.mode) for t in infos} == {(0, 0, 0, "", 0o644)}


def test_manifest_round_trips_canonically(good: Path) -> None:
    m = read_bundle(good).manifest
    again = Manifest.from_bytes(m.to_bytes())
    assert again == m
    assert m.to_bytes() == canonical_json(json.loads(m.to_bytes()))


# -- bad input: each is rejected with a clear error and changes nothing ------------------------

@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_bundle_is_rejected(good: Path, tmp_path: Path, store: KeyStore,
                                      fraction: float) -> None:
    bad = tmp_path / "trunc.edgebundle"
    bad.write_bytes(good.read_bytes()[: int(good.stat().st_size * fraction)])
    with pytest.raises(InvalidBundleError, match="truncated|not a readable|incomplete"):
        read_bundle(bad).verify(targets_key(store))


def test_non_bundle_file_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07\x12\x07pytorch" * 100)
    with pytest.raises(InvalidBundleError, match="not a readable edgeops bundle"):
        read_bundle(bad)


def test_tar_without_manifest_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "x.edgebundle"
    with tarfile.open(bad, "w") as tar:
        ti = tarfile.TarInfo("hello.txt")
        ti.size = 2
        tar.addfile(ti, io.BytesIO(b"hi"))
    with pytest.raises(InvalidBundleError, match="no manifest.json"):
        read_bundle(bad)


def test_artifact_altered_by_one_byte_fails_verification(good: Path, tmp_path: Path,
                                                         store: KeyStore) -> None:
    def flip(d: bytes) -> bytes:
        return d[:100] + bytes([d[100] ^ 1]) + d[101:]

    bad = rewrite(good, tmp_path / "flip.edgebundle",
                  replace_member("artifacts/x86-cpu/model.onnx", flip))
    b = read_bundle(bad)
    with pytest.raises(VerificationError, match="does not match its SHA-256"):
        b.verify(targets_key(store))
    with pytest.raises(VerificationError):
        b.extract(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsigned_bundle_is_rejected(good: Path, tmp_path: Path, store: KeyStore) -> None:
    empty = canonical_json({"schema": "edgeops.signatures/v1", "signed": "manifest.json",
                            "signatures": []})
    bad = rewrite(good, tmp_path / "unsigned.edgebundle",
                  replace_member("signatures.json", lambda _d: empty))
    with pytest.raises(VerificationError, match="unsigned"):
        read_bundle(bad).verify(targets_key(store))


def test_foreign_signed_bundle_is_rejected(good: Path, tmp_path: Path, store: KeyStore) -> None:
    other = make_keystore(tmp_path / "other-home")
    foreign = make_bundle(tmp_path / "foreign", other)
    with pytest.raises(VerificationError, match="not signed by a trusted targets key"):
        read_bundle(foreign).verify(targets_key(store))


def test_manifest_altered_after_signing_is_rejected(good: Path, tmp_path: Path,
                                                    store: KeyStore) -> None:
    def bump(d: bytes) -> bytes:
        m = json.loads(d)
        m["version"] = "9.9.9"
        return canonical_json(m)

    bad = rewrite(good, tmp_path / "bumped.edgebundle", replace_member("manifest.json", bump))
    with pytest.raises(VerificationError, match="does not match the manifest"):
        read_bundle(bad).verify(targets_key(store))


@pytest.mark.parametrize("evil", ["/etc/passwd", "../../evil.sh", "artifacts/../../evil"])
def test_path_traversal_entries_are_rejected(good: Path, tmp_path: Path, evil: str) -> None:
    def add(ms: Members) -> Members:
        ti = tarfile.TarInfo(evil)
        return [*ms, (ti, b"#!/bin/sh\necho pwned\n")]

    bad = rewrite(good, tmp_path / "slip.edgebundle", add)
    with pytest.raises(InvalidBundleError, match="path traversal|unsafe path"):
        read_bundle(bad)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_link_entries_are_rejected(good: Path, tmp_path: Path, kind: bytes) -> None:
    def add(ms: Members) -> Members:
        ti = tarfile.TarInfo("artifacts/x86-cpu/link")
        ti.type, ti.linkname = kind, "/etc/shadow"
        return [*ms, (ti, b"")]

    bad = rewrite(good, tmp_path / "link.edgebundle", add)
    with pytest.raises(InvalidBundleError, match="is a link"):
        read_bundle(bad)


def test_manifest_that_is_not_json_is_rejected(good: Path, tmp_path: Path) -> None:
    bad = rewrite(good, tmp_path / "nojson.edgebundle",
                  replace_member("manifest.json", lambda _d: b"{not json"))
    with pytest.raises(InvalidBundleError, match="not valid JSON"):
        read_bundle(bad)


@pytest.mark.parametrize("field", ["name", "version", "artifacts", "signature", "source"])
def test_manifest_missing_fields_is_rejected(good: Path, tmp_path: Path, field: str) -> None:
    def drop(d: bytes) -> bytes:
        m = json.loads(d)
        del m[field]
        return canonical_json(m)

    bad = rewrite(good, tmp_path / f"no-{field}.edgebundle", replace_member("manifest.json", drop))
    with pytest.raises(InvalidBundleError, match=f"missing field '{field}'"):
        read_bundle(bad)


def test_artifact_larger_than_declared_is_rejected(good: Path, tmp_path: Path,
                                                   store: KeyStore) -> None:
    bad = rewrite(good, tmp_path / "big.edgebundle",
                  replace_member("artifacts/x86-cpu/model.onnx", lambda d: d + b"\0" * 4096))
    with pytest.raises(VerificationError, match="but the manifest declares"):
        read_bundle(bad).verify(targets_key(store))


def test_unlisted_extra_file_is_rejected(good: Path, tmp_path: Path) -> None:
    bad = rewrite(good, tmp_path / "extra.edgebundle",
                  lambda ms: [*ms, (tarfile.TarInfo("artifacts/x86-cpu/extra.bin"), b"x")])
    with pytest.raises(InvalidBundleError, match="does not list"):
        read_bundle(bad)


def test_keys_on_disk_are_private_and_offline_keys_encrypted(store: KeyStore) -> None:
    for info in store.list():
        assert info.private_path.stat().st_mode & 0o777 == 0o600
        assert info.encrypted == (info.role in ("root", "targets"))
    assert store.signer("targets", PASSPHRASE).public_key.keyid == store.public_key("targets").keyid


def test_wrong_passphrase_is_a_clear_error(store: KeyStore) -> None:
    from edgeops.errors import KeyError_

    with pytest.raises(KeyError_, match="wrong passphrase"):
        store.signer("targets", b"nope")


def test_sha_helper_sanity(good: Path) -> None:
    # the bundle file is stable content: its digest equals a rebuild's (see determinism test)
    assert len(sha(good)) == 64

"""Malicious bundles: tar-slip, absolute paths, links, path traversal in a signed manifest.

Two entry points take bundle content: ``edgeops.bundle.read_bundle`` (operators, ``publish``)
and the agent's ``Installer`` (files delivered by TUF). Both must refuse, write nothing outside
their directory, and on the device the old model must keep serving.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from device_agent.installer import Installer, InstallRequest
from device_agent.slots import SlotStore
from edgeops.bundle import read_bundle, sign_manifest
from edgeops.errors import InvalidBundleError
from edgeops.keys import KeyStore
from edgeops.protocol import DevicePhase
from edgeops.trust import root_path, trusted_targets_keys
from tests.edgeops.bundles import PASSPHRASE, make_bundle, make_keystore


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def good(store: KeyStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("good"), store, version="1.0.0", seed=1)


def _rewrite(src: Path, dest: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]],
             drop: str | None = None) -> Path:
    """Copy a real bundle's members into a new tar, adding the attacker's entries."""
    with tarfile.open(src, "r:") as tin, tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT
                                                      ) as tout:
        for ti in tin:
            if ti.name == drop:
                continue
            tout.addfile(ti, tin.extractfile(ti))
        for ti, data in extra:
            tout.addfile(ti, io.BytesIO(data) if data is not None else None)
    return dest


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    return ti, data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = target
    return ti, None


MODEL = "artifacts/x86-cpu/model.onnx"


@pytest.mark.parametrize("label, entries, drop", [
    ("tar-slip ../../", [_file("../../evil.txt", b"pwned")], None),
    ("absolute path", [_file("/tmp/edgeops-evil.txt", b"pwned")], None),
    ("symlink entry", [_link(MODEL, "/etc/passwd", tarfile.SYMTYPE)], MODEL),
    ("hardlink entry", [_link(MODEL, "/etc/passwd", tarfile.LNKTYPE)], MODEL),
    ("symlinked directory", [_link("artifacts/x86-cpu", "/tmp", tarfile.SYMTYPE)], None),
    ("device node", [_link("artifacts/x86-cpu/dev", "", tarfile.CHRTYPE)], None),
    ("duplicate entry", [_file(MODEL, b"second copy")], None),
])
def test_malicious_tar_is_refused_and_writes_nothing(good: Path, tmp_path: Path, attack,
                                                     label: str, entries, drop) -> None:
    evil = _rewrite(good, tmp_path / "evil.edgebundle", entries, drop)
    dest = tmp_path / "out" / "unpacked"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InvalidBundleError) as info:
        read_bundle(evil).extract(dest)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Path("/tmp/edgeops-evil.txt").exists()
    attack(f"bundle with {label}", "InvalidBundleError, nothing written",
           info.value.message[:60])


# -- on the device ---------------------------------------------------------------------------
@pytest.fixture
def device(store: KeyStore, good: Path, tmp_path: Path) -> tuple[Installer, SlotStore]:
    root = Metadata[Root].from_file(str(root_path(store)))
    keys, threshold = trusted_targets_keys(root)
    slots = SlotStore(tmp_path / "slots")
    inst = Installer(slots, target="x86-cpu", trusted=keys, threshold=threshold)  # type: ignore[arg-type]
    out = inst.install(_request(good))
    assert out.phase is DevicePhase.HEALTHY, out.reason
    return inst, slots


def _request(bundle: Path, manifest: bytes | None = None, signatures: bytes | None = None
             ) -> InstallRequest:
    b = read_bundle(bundle)
    entry = b.manifest.artifact_for("x86-cpu")
    assert entry is not None and entry.golden is not None
    return InstallRequest(manifest=manifest or b.manifest_bytes,
                          signatures=signatures or b.signatures.to_bytes(),
                          artifact=b.read_file(entry.file.path),
                          golden=b.read_file(entry.golden.path))


def _serving(slots: SlotStore) -> tuple[str | None, bytes]:
    active = slots.active()
    assert active is not None
    return f"{active.name}@{active.version}", slots.path(active.slot, active.model_file
                                                         ).read_bytes()


def test_signed_manifest_with_path_traversal_is_refused_on_device(
        device: tuple[Installer, SlotStore], store: KeyStore, tmp_path: Path, good: Path,
        attack) -> None:
    """Even signed with the real targets key, a '..' path never reaches the disk."""
    inst, slots = device
    before = _serving(slots)
    b = read_bundle(make_bundle(tmp_path / "v2", store, version="2.0.0", seed=2))
    evil_manifest = b.manifest_bytes.replace(MODEL.encode(), b"../../../../tmp/evil.onnx")
    sigs = sign_manifest(evil_manifest, [store.signer("targets", PASSPHRASE)])
    entry = b.manifest.artifact_for("x86-cpu")
    assert entry is not None and entry.golden is not None
    out = inst.install(InstallRequest(manifest=evil_manifest, signatures=sigs.to_bytes(),
                                      artifact=b.read_file(entry.file.path),
                                      golden=b.read_file(entry.golden.path)))
    assert out.phase is DevicePhase.FAILED and "unsafe path" in (out.reason or "")
    assert _serving(slots) == before
    assert not Path("/tmp/evil.onnx").exists()
    attack("signed manifest with ../ path (device)", "refused, old model serving",
           (out.reason or "")[:60])


def test_bundle_signed_by_a_foreign_key_is_refused_on_device(
        device: tuple[Installer, SlotStore], tmp_path: Path, attack) -> None:
    inst, slots = device
    before = _serving(slots)
    evil_store = make_keystore(tmp_path / "attacker")
    evil = make_bundle(tmp_path / "evil", evil_store, version="2.0.0", seed=3)
    out = inst.install(_request(evil))
    assert out.phase is DevicePhase.FAILED and "rejected" in (out.reason or "")
    assert _serving(slots) == before
    attack("bundle signed by a foreign key (device)", "refused, old model serving",
           (out.reason or "")[:60])


def test_artifact_swapped_under_a_valid_signature_is_refused_on_device(
        device: tuple[Installer, SlotStore], store: KeyStore, tmp_path: Path, attack) -> None:
    inst, slots = device
    before = _serving(slots)
    v2 = make_bundle(tmp_path / "v2", store, version="2.0.0", seed=2)
    other = read_bundle(make_bundle(tmp_path / "v3", store, version="3.0.0", seed=3))
    req = _request(v2)
    swapped = InstallRequest(manifest=req.manifest, signatures=req.signatures,
                             artifact=other.read_file(MODEL), golden=req.golden)
    out = inst.install(swapped)
    assert out.phase is DevicePhase.FAILED and "does not match" in (out.reason or "")
    assert _serving(slots) == before
    state = json.loads(inst.state_file.read_bytes())
    assert state["phase"] == "failed"   # the refusal is recorded for the state report
    attack("artifact swapped under valid manifest (device)", "refused, old model serving",
           (out.reason or "")[:60])

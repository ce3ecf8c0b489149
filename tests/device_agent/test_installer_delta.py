"""The installer rebuilds a delta straight into the inactive slot; when the rebuild fails it
installs the full artifact from the fallback, saying why; the active slot is only read."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

import edgeops.delta
from device_agent.installer import DeltaArtifact, Installer, InstallRequest
from device_agent.tuf_update import active_artifact
from edgeops.delta import diff_artifacts
from edgeops.errors import TransportError
from edgeops.protocol.messages import DevicePhase
from tests.device_agent.bundles import Fleet, build_bundle, bundle_parts
from tests.device_agent.test_installer import Recorder, make_installer, request


class Fallback:
    """Stands in for the TUF client's full download."""

    def __init__(self, full: Path | None) -> None:
        self.full = full
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> Path:
        self.reasons.append(reason)
        if self.full is None:
            raise TransportError("the broker is gone")
        return self.full


@pytest.fixture
def two(tmp_path: Path, fleet: Fleet, bundle_dir: Path) -> tuple[Installer, Recorder, Path]:
    rec = Recorder()
    inst = make_installer(tmp_path, fleet, rec)
    assert inst.install(request(build_bundle(bundle_dir, fleet, version="1.0.0"))).phase \
        is DevicePhase.HEALTHY
    return inst, rec, build_bundle(bundle_dir, fleet, version="2.0.0", scale=3.0)


def _delta_request(inst: Installer, v2: Path, tmp: Path, delta: bytes,
                   fallback: Fallback) -> InstallRequest:
    p = bundle_parts(v2)
    base = active_artifact(inst.store)
    assert base is not None
    (tmp / "d.edgedelta").write_bytes(delta)
    art = DeltaArtifact(base.path, tmp / "d.edgedelta", hashlib.sha256(p.artifact).hexdigest(),
                        len(p.artifact), fallback)
    return InstallRequest(p.manifest, p.signatures, art, p.golden)


def _active_model(inst: Installer) -> bytes:
    info = inst.store.active()
    assert info is not None
    return inst.store.path(info.slot, info.model_file).read_bytes()


def test_delta_is_rebuilt_into_the_inactive_slot(
        two: tuple[Installer, Recorder, Path], tmp_path: Path) -> None:
    inst, _, v2 = two
    v1_model = _active_model(inst)
    new = bundle_parts(v2).artifact
    fb = Fallback(None)
    out = inst.install(_delta_request(inst, v2, tmp_path, diff_artifacts(v1_model, new).to_bytes(),
                                      fb))
    assert out.phase is DevicePhase.HEALTHY and out.active is not None
    assert out.active["version"] == "2.0.0" and _active_model(inst) == new
    assert fb.reasons == []
    prev = inst.store.pointer().previous
    assert prev is not None and inst.store.info(prev, check_digests=True) is not None


def test_corrupt_delta_payload_installs_the_full_artifact_and_says_why(
        two: tuple[Installer, Recorder, Path], tmp_path: Path) -> None:
    inst, rec, v2 = two
    new = bundle_parts(v2).artifact
    bad = bytearray(diff_artifacts(_active_model(inst), new).to_bytes())
    bad[-3] ^= 0xFF
    (tmp_path / "full.onnx").write_bytes(new)
    fb = Fallback(tmp_path / "full.onnx")
    out = inst.install(_delta_request(inst, v2, tmp_path, bytes(bad), fb))
    assert out.phase is DevicePhase.HEALTHY and _active_model(inst) == new
    assert len(fb.reasons) == 1 and "delta failed" in fb.reasons[0]
    said = [r for p, _, r in rec.phases if p is DevicePhase.INSTALLING and r]
    assert said == fb.reasons


def test_full_disk_while_rebuilding_falls_back(two: tuple[Installer, Recorder, Path],
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    inst, _, v2 = two
    new = bundle_parts(v2).artifact
    delta = diff_artifacts(_active_model(inst), new).to_bytes()

    def no_space(*_a: object, **_kw: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(edgeops.delta, "apply_delta", no_space)
    (tmp_path / "full.onnx").write_bytes(new)
    fb = Fallback(tmp_path / "full.onnx")
    out = inst.install(_delta_request(inst, v2, tmp_path, delta, fb))
    assert out.phase is DevicePhase.HEALTHY and _active_model(inst) == new
    assert "No space left" in fb.reasons[0]


def test_failed_rebuild_and_failed_fallback_fail_cleanly(
        two: tuple[Installer, Recorder, Path], tmp_path: Path) -> None:
    inst, _, v2 = two
    v1_model = _active_model(inst)
    bad = bytearray(diff_artifacts(v1_model, bundle_parts(v2).artifact).to_bytes())
    bad[-3] ^= 0xFF
    before = inst.store.pointer()
    out = inst.install(_delta_request(inst, v2, tmp_path, bytes(bad), Fallback(None)))
    assert out.phase is DevicePhase.FAILED and "broker is gone" in str(out.reason)
    assert inst.store.pointer().active == before.active and _active_model(inst) == v1_model
    staged = "b" if before.active == "a" else "a"
    assert inst.store.info(staged) is None            # nothing committed in the other slot

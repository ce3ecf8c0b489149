"""The install state machine with real keys, real bundles and real ONNX Runtime health checks."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from device_agent.config import DrivingSignal
from device_agent.health import HealthSettings, check_slot
from device_agent.installer import Installer, InstallRequest, verify_update
from device_agent.policy import DrivingState, InstallPolicy
from device_agent.slots import SlotInfo, SlotStore
from edgeops.errors import BadContentError
from edgeops.protocol.messages import DevicePhase
from tests.cpuinfo import ARM64, AVX2, AVX512_NO_VNNI, AVX512_VNNI, AVX_VNNI, VNNI_PLAN, cpu
from tests.device_agent.bundles import Fleet, build_bundle, bundle_parts

FAST = HealthSettings(warmup_runs=1, timed_runs=5)


def request(path: Path, target: str = "x86-cpu", **kw: Any) -> InstallRequest:
    p = bundle_parts(path, target)
    return InstallRequest(p.manifest, p.signatures, p.artifact, p.golden, **kw)


class Recorder:
    def __init__(self) -> None:
        self.phases: list[tuple[DevicePhase, str | None, str | None]] = []
        self.activated: list[SlotInfo | None] = []

    def phase(self, phase: DevicePhase, label: str | None, reason: str | None) -> None:
        self.phases.append((phase, label, reason))

    def activate(self, info: SlotInfo | None) -> None:
        self.activated.append(info)


def make_installer(tmp_path: Path, fleet: Fleet, rec: Recorder | None = None,
                   target: str = "x86-cpu", **kw: Any) -> Installer:
    keys, threshold = fleet.trusted
    rec = rec or Recorder()
    return Installer(SlotStore(tmp_path / "slots"), target=target, trusted=keys,
                     threshold=threshold, health=lambda d, t: check_slot(d, t, FAST),
                     on_phase=rec.phase, on_activate=rec.activate, **kw)


def test_first_install_is_healthy_and_reports_every_phase(tmp_path: Path, fleet: Fleet,
                                                          bundle_dir: Path) -> None:
    rec = Recorder()
    inst = make_installer(tmp_path, fleet, rec)
    out = inst.install(request(build_bundle(bundle_dir, fleet), deployment_id="d-1"))
    assert out.phase is DevicePhase.HEALTHY, out.reason
    assert [p for p, _, _ in rec.phases] == [DevicePhase.VERIFYING, DevicePhase.INSTALLING,
                                             DevicePhase.ACTIVATED, DevicePhase.HEALTHY]
    assert out.active == {"name": "classifier", "version": "1.0.0", "target": "x86-cpu",
                          "slot": "a"}
    assert out.health is not None and out.health.latency_checked
    assert rec.activated[-1] is not None and rec.activated[-1].version == "1.0.0"
    assert not inst.store.pointer().trial
    saved = json.loads(inst.state_file.read_bytes())
    assert saved["phase"] == "healthy" and saved["deployment_id"] == "d-1"


def test_upgrade_keeps_previous_and_same_version_is_a_no_op(tmp_path: Path, fleet: Fleet,
                                                             bundle_dir: Path) -> None:
    inst = make_installer(tmp_path, fleet)
    v1 = build_bundle(bundle_dir, fleet)
    assert inst.install(request(v1)).phase is DevicePhase.HEALTHY
    v2 = build_bundle(bundle_dir, fleet, version="2.0.0", scale=3.0)
    out = inst.install(request(v2))
    assert out.phase is DevicePhase.HEALTHY and out.active is not None
    assert out.active["version"] == "2.0.0" and out.active["slot"] == "b"
    p = inst.store.pointer()
    assert (p.active, p.previous) == ("b", "a")
    again = inst.install(request(v2))
    assert again.phase is DevicePhase.HEALTHY and again.reason == "already active"
    assert inst.store.pointer().gen == p.gen
    # a fleet rollback command goes back to 1.0.0
    back = inst.rollback()
    assert back.phase is DevicePhase.ROLLED_BACK
    assert back.active is not None and back.active["version"] == "1.0.0"
    assert inst.rollback().phase is DevicePhase.FAILED   # nothing older left


@pytest.mark.parametrize(("kind", "needle"), [
    ("nan", "NaN"),
    ("broken", "does not load"),
    ("wrong", "differs from golden"),
    ("slow", "too slow"),
])
def test_bad_model_rolls_back_and_old_keeps_serving(tmp_path: Path, fleet: Fleet,
                                                     bundle_dir: Path, kind: str,
                                                     needle: str) -> None:
    rec = Recorder()
    inst = make_installer(tmp_path, fleet, rec)
    assert inst.install(request(build_bundle(bundle_dir, fleet))).phase is DevicePhase.HEALTHY
    bad = build_bundle(bundle_dir, fleet, version="2.0.0", kind=kind)
    out = inst.install(request(bad, deployment_id="d-bad"))
    assert out.phase is DevicePhase.ROLLED_BACK
    assert out.reason is not None and needle in out.reason
    assert out.active is not None and out.active["version"] == "1.0.0"
    assert rec.activated[-1] is not None and rec.activated[-1].version == "1.0.0"
    # the failed slot is never served again, even if the pointer is lost
    (inst.store.root / "pointer.json").unlink()
    assert inst.store.recover().active == "a"
    assert json.loads(inst.state_file.read_bytes())["reason"] == out.reason


def test_bad_first_model_leaves_no_active_model(tmp_path: Path, fleet: Fleet,
                                                bundle_dir: Path) -> None:
    inst = make_installer(tmp_path, fleet)
    out = inst.install(request(build_bundle(bundle_dir, fleet, kind="nan")))
    assert out.phase is DevicePhase.FAILED and out.reason is not None
    assert "no previous model" in out.reason
    assert inst.store.active() is None and inst.store.recover().active is None


def _tamper(req: InstallRequest, **changes: Any) -> InstallRequest:
    d = {"manifest": req.manifest, "signatures": req.signatures, "artifact": req.artifact,
         "golden": req.golden}
    d.update(changes)
    return InstallRequest(**d)


@pytest.mark.parametrize(("case", "needle"), [
    ("artifact", "does not match the signed manifest"),
    ("golden", "golden samples"),
    ("manifest", "does not match the manifest"),
    ("foreign", "not signed by a trusted targets key"),
    ("unsigned", "unsigned"),
    ("target", "no artifact for target"),
    ("agent", "needs agent 9.0.0"),
    ("mixmatch", "mix-and-match"),
    ("garbage", "signatures file"),
])
def test_bad_input_is_rejected_before_anything_is_written(tmp_path: Path, fleet: Fleet,
                                                          bundle_dir: Path, case: str,
                                                          needle: str) -> None:
    inst = make_installer(tmp_path, fleet)
    assert inst.install(request(build_bundle(bundle_dir, fleet))).phase is DevicePhase.HEALTHY
    good = request(build_bundle(bundle_dir, fleet, version="2.0.0", scale=5.0))
    before = sorted(p.name for p in (inst.store.root / "b").glob("*")) \
        if (inst.store.root / "b").exists() else []
    assert isinstance(good.artifact, bytes) and isinstance(good.golden, bytes)
    req = {
        "artifact": lambda: _tamper(good, artifact=good.artifact[:-1] + b"\x00"),
        "golden": lambda: _tamper(good, golden=good.golden + b"x"),
        "manifest": lambda: _tamper(good, manifest=good.manifest.replace(b"2.0.0", b"2.0.1")),
        "foreign": lambda: request(build_bundle(bundle_dir, fleet, version="2.0.0",
                                                signer=fleet.foreign)),
        "unsigned": lambda: _tamper(good, signatures=good.signatures.split(b'"signatures":')[0]
                                    + b'"signatures":[]}'),
        "target": lambda: request(build_bundle(bundle_dir, fleet, version="2.0.0",
                                               target="arm64-cpu"), "arm64-cpu"),
        "agent": lambda: request(build_bundle(bundle_dir, fleet, version="2.0.0",
                                              min_agent_version="9.0.0")),
        "mixmatch": lambda: InstallRequest(good.manifest, good.signatures, good.artifact,
                                           good.golden, expect_name="classifier",
                                           expect_version="3.0.0"),
        "garbage": lambda: _tamper(good, signatures=b"\x00not json"),
    }[case]()
    if case == "target":
        req = InstallRequest(**{**req.__dict__, "artifact": good.artifact})
    out = inst.install(req)
    assert out.phase is DevicePhase.FAILED
    assert out.reason is not None and needle in out.reason, out.reason
    assert out.active is not None and out.active["version"] == "1.0.0"
    after = sorted(p.name for p in (inst.store.root / "b").glob("*")) \
        if (inst.store.root / "b").exists() else []
    assert after == before   # nothing written to the inactive slot
    assert inst.store.pointer().previous is None or inst.store.pointer().active == "a"


def test_verify_update_accepts_artifact_as_file(tmp_path: Path, fleet: Fleet,
                                                bundle_dir: Path) -> None:
    good = request(build_bundle(bundle_dir, fleet))
    assert isinstance(good.artifact, bytes)
    f = tmp_path / "download.bin"
    f.write_bytes(good.artifact)
    keys, threshold = fleet.trusted
    v = verify_update(_tamper(good, artifact=f), target="x86-cpu", trusted=keys,
                      threshold=threshold)
    assert v.label == "classifier@1.0.0"
    f.write_bytes(good.artifact + b"\x00")
    with pytest.raises(BadContentError):
        verify_update(_tamper(good, artifact=f), target="x86-cpu", trusted=keys,
                      threshold=threshold)


def test_deferred_by_policy_then_activated(tmp_path: Path, fleet: Fleet,
                                           bundle_dir: Path) -> None:
    flag = tmp_path / "driving"
    flag.write_text("1")
    now = [datetime(2026, 11, 27, 12, 0)]
    policy = InstallPolicy(["02:00-04:00"], DrivingState(DrivingSignal(file=flag)),
                           clock=lambda: now[0])
    inst = make_installer(tmp_path, fleet, policy=policy)
    out = inst.install(request(build_bundle(bundle_dir, fleet), deployment_id="d-9"))
    assert out.phase is DevicePhase.DEFERRED
    assert out.reason is not None and "maintenance window" in out.reason
    assert inst.store.active() is None and inst.staged() is not None
    now[0] = datetime(2026, 11, 27, 2, 30)
    out = inst.activate_staged()
    assert out is not None and out.phase is DevicePhase.DEFERRED
    assert out.reason is not None and "driving" in out.reason
    flag.write_text("0")
    out = inst.activate_staged()
    assert out is not None and out.phase is DevicePhase.HEALTHY
    assert out.deployment_id == "d-9"
    assert inst.staged() is None and inst.activate_staged() is None


def test_resume_finishes_a_trial_left_by_a_crash(tmp_path: Path, fleet: Fleet,
                                                 bundle_dir: Path) -> None:
    inst = make_installer(tmp_path, fleet)
    assert inst.install(request(build_bundle(bundle_dir, fleet))).phase is DevicePhase.HEALTHY
    # simulate a crash right after activation of a bad model
    w = inst.store.begin_install()
    parts = bundle_parts(build_bundle(bundle_dir, fleet, version="2.0.0", kind="nan"))
    for name, data in (("manifest.json", parts.manifest), ("signatures.json", parts.signatures),
                       ("model.onnx", parts.artifact), ("golden.npz", parts.golden)):
        w.write_bytes(name, data)
    w.commit(name="classifier", version="2.0.0", target="x86-cpu", model_file="model.onnx")
    inst.store.activate("b", trial=True)
    out = make_installer(tmp_path, fleet).resume()
    assert out is not None and out.phase is DevicePhase.ROLLED_BACK
    assert inst.store.active() is not None and inst.store.active().version == "1.0.0"  # type: ignore[union-attr]
    assert make_installer(tmp_path, fleet).resume() is None


def test_signed_manifest_with_traversal_path_is_rejected(tmp_path: Path, fleet: Fleet,
                                                         bundle_dir: Path) -> None:
    """Even a validly signed manifest cannot name a path outside the slot."""
    import dataclasses
    import hashlib

    from edgeops.bundle import Manifest, sign_manifest

    good = request(build_bundle(bundle_dir, fleet, version="2.0.0"))
    m = Manifest.from_bytes(good.manifest)
    art = m.artifacts[0]
    assert isinstance(good.artifact, bytes)
    evil_ref = dataclasses.replace(art.file, path="../../../evil.sh")   # bypasses from_dict
    evil = dataclasses.replace(m, artifacts=(dataclasses.replace(art, file=evil_ref),))
    evil_bytes = evil.to_bytes()
    sigs = sign_manifest(evil_bytes, [fleet.targets]).to_bytes()
    inst = make_installer(tmp_path / "dev", fleet)
    out = inst.install(InstallRequest(evil_bytes, sigs, good.artifact, good.golden))
    assert out.phase is DevicePhase.FAILED and "unsafe path" in str(out.reason)
    assert hashlib.sha256(good.artifact).hexdigest() == art.file.sha256
    assert not list(tmp_path.rglob("evil.sh")) and inst.store.active() is None


@pytest.mark.slow
def test_installer_killed_at_random_instants_restarts_healthy(tmp_path: Path, fleet: Fleet,
                                                              bundle_dir: Path) -> None:
    """SIGKILL a real process running full installs (good, good, NaN); every restart settles
    on a whole model that passes its health check and computes one of the good functions."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    import numpy as np

    from edgeops.keys import KeyStore
    from edgeops.runtime import load_runner
    from edgeops.trust import root_path
    from tests.device_agent.bundles import FEATURES

    repo = Path(__file__).resolve().parents[2]
    bundles = [build_bundle(bundle_dir, fleet, version="1.0.0", scale=2.0),
               build_bundle(bundle_dir, fleet, version="2.0.0", scale=3.0),
               build_bundle(bundle_dir, fleet, version="3.0.0", kind="nan")]
    good = {"1.0.0": 2.0, "2.0.0": 3.0}
    iterations = int(os.environ.get("EDGEOPS_INSTALL_KILL_ITERATIONS", "20"))
    rng = random.Random(99)
    x = np.ones((1, FEATURES), np.float32)
    served: set[str] = set()
    # Bounded in time without being a timed assertion: on a loaded machine fewer kills fit, but
    # never fewer than min_kills, and every kill that ran is checked in full.
    deadline = time.monotonic() + 240
    min_kills = min(iterations, 8)
    for i in range(iterations):
        if i >= min_kills and time.monotonic() > deadline:
            break
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.device_agent.install_crash_child",
             str(tmp_path / "slots"), str(root_path(KeyStore(fleet.home))),
             *map(str, bundles)], cwd=repo, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(repo)})
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 1.0))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
        inst = make_installer(tmp_path, fleet)       # same slots dir as the child
        resumed = inst.resume()
        if resumed is not None:
            assert resumed.phase in (DevicePhase.HEALTHY, DevicePhase.ROLLED_BACK,
                                     DevicePhase.FAILED)
        p = inst.store.pointer()
        if p.active is None:
            assert not served, f"iteration {i}: lost the model after a kill"
            continue
        assert not p.trial
        info = inst.store.info(p.active, check_digests=True)
        assert info is not None and info.version in good, info
        y = load_runner(inst.store.path(p.active, info.model_file),
                        runtime="onnxruntime").run({"x": x})["y"]
        np.testing.assert_allclose(y, x * good[info.version] + 1)
        served.add(info.version)
    assert served == set(good)


def test_not_enough_disk_is_refused_before_writing(tmp_path: Path, fleet: Fleet,
                                                   bundle_dir: Path) -> None:
    import shutil

    inst = make_installer(tmp_path, fleet)
    assert inst.install(request(build_bundle(bundle_dir, fleet))).phase is DevicePhase.HEALTHY
    inst.reserve_free_bytes = shutil.disk_usage(tmp_path).free + 10**12   # more than exists
    out = inst.install(request(build_bundle(bundle_dir, fleet, version="2.0.0")))
    assert out.phase is DevicePhase.FAILED and "not enough disk space" in str(out.reason)
    assert out.active is not None and out.active["version"] == "1.0.0"
    assert not (inst.store.root / "b").exists()


def test_serving_side_load_failure_rolls_back(tmp_path: Path, fleet: Fleet,
                                              bundle_dir: Path) -> None:
    """Healthy in the checker, but the serving process cannot load it: back to the old one."""
    from edgeops.runtime import ModelLoadError

    served: list[str | None] = []

    def activate(info: SlotInfo | None) -> None:
        if info is not None and info.version == "2.0.0":
            raise ModelLoadError("out of memory while loading")
        served.append(info.version if info else None)

    keys, threshold = fleet.trusted
    inst = Installer(SlotStore(tmp_path / "slots"), target="x86-cpu", trusted=keys,
                     threshold=threshold, health=lambda d, t: check_slot(d, t, FAST),
                     on_activate=activate)
    assert inst.install(request(build_bundle(bundle_dir, fleet))).phase is DevicePhase.HEALTHY
    out = inst.install(request(build_bundle(bundle_dir, fleet, version="2.0.0")))
    assert out.phase is DevicePhase.ROLLED_BACK
    assert "serving process cannot load it: out of memory" in str(out.reason)
    assert served == ["1.0.0", "1.0.0"] and inst.store.active().version == "1.0.0"  # type: ignore[union-attr]


@pytest.mark.slow
def test_killed_while_rebuilding_from_a_delta_serves_the_old_model(
        tmp_path: Path, fleet: Fleet, bundle_dir: Path) -> None:
    """SIGKILL a process that installs from deltas, rebuilt straight into the inactive slot
    (issue 20): a kill mid-reconstruction leaves the slot it was serving active, whole and
    healthy."""
    import os
    import random
    import signal
    import subprocess
    import sys

    from edgeops.delta import diff_artifacts
    from edgeops.keys import KeyStore
    from edgeops.trust import root_path

    repo = Path(__file__).resolve().parents[2]
    v1 = build_bundle(bundle_dir, fleet, version="1.0.0", scale=2.0)
    v2 = build_bundle(bundle_dir, fleet, version="2.0.0", scale=3.0)
    a1, a2 = bundle_parts(v1).artifact, bundle_parts(v2).artifact
    (tmp_path / "d12").write_bytes(diff_artifacts(a1, a2).to_bytes())
    (tmp_path / "d21").write_bytes(diff_artifacts(a2, a1).to_bytes())
    rng = random.Random(20)
    mid_rebuild = 0
    for i in range(int(os.environ.get("EDGEOPS_DELTA_KILL_ITERATIONS", "6"))):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.device_agent.delta_crash_child",
             str(tmp_path / "slots"), str(root_path(KeyStore(fleet.home))),
             str(v1), str(v2), str(tmp_path / "d12"),
             str(tmp_path / "d21")], cwd=repo, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(repo)})
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        for _ in range(rng.randrange(1, 3)):            # let a round or two complete first
            line = child.stdout.readline()
            while line != b"rebuilt\n":
                line = child.stdout.readline()
        line = child.stdout.readline()
        assert line.startswith(b"rebuild ")
        serving = line.split()[1].decode()
        child.send_signal(signal.SIGKILL)               # reads are slowed: mid-reconstruction
        child.wait(timeout=10)
        rest = child.stdout.read()
        child.stdout.close()
        inst = make_installer(tmp_path, fleet)
        inst.resume()
        p = inst.store.pointer()
        assert p.active is not None and not p.trial, f"iteration {i}: lost the model"
        info = inst.store.info(p.active, check_digests=True)
        assert info is not None
        if b"rebuilt" not in rest:
            mid_rebuild += 1
            assert info.version == serving, f"iteration {i}: not the model it was serving"
    assert mid_rebuild >= 3       # most kills landed mid-reconstruction, as intended


@pytest.mark.parametrize("cpuinfo", [AVX2, AVX512_NO_VNNI], ids=["avx2", "avx512-no-vnni"])
def test_vnni_artifact_is_refused_on_a_cpu_without_vnni(tmp_path: Path, fleet: Fleet,
                                                         bundle_dir: Path, cpuinfo: str) -> None:
    rec = Recorder()
    inst = make_installer(tmp_path, fleet, rec, target="x86-cpu-vnni", cpu=cpu(cpuinfo))
    # FP32 artifacts of the VNNI target run correctly anywhere: installed as usual.
    fp32 = request(build_bundle(bundle_dir, fleet, target="x86-cpu-vnni"), "x86-cpu-vnni")
    assert inst.install(fp32).phase is DevicePhase.HEALTHY
    before = inst.store.pointer()
    vnni = build_bundle(bundle_dir, fleet, version="2.0.0", target="x86-cpu-vnni",
                        precision="int8", details={"plan": VNNI_PLAN})
    rec.phases.clear()
    out = inst.install(request(vnni, "x86-cpu-vnni", deployment_id="d-vnni"))
    assert out.phase is DevicePhase.FAILED
    assert out.reason == (
        "rejected: classifier@2.0.0: the x86-cpu-vnni int8 artifact has 8-bit weights that "
        "need VNNI, and this x86_64 CPU has neither avx512_vnni nor avx_vnni: ONNX Runtime "
        "would saturate them and give wrong outputs without an error; enrol this device as "
        "x86-cpu")
    # refused while verifying, reported like any refusal, before a byte of the slot was written
    assert [p for p, _, _ in rec.phases] == [DevicePhase.VERIFYING, DevicePhase.FAILED]
    assert rec.phases[-1][2] == out.reason
    assert inst.store.pointer() == before and not (inst.store.root / "b").exists()
    assert out.active is not None and out.active["version"] == "1.0.0"
    assert json.loads(inst.state_file.read_bytes())["deployment_id"] == "d-vnni"


@pytest.mark.parametrize("cpuinfo", [AVX512_VNNI, AVX_VNNI, ARM64],
                         ids=["avx512_vnni", "avx_vnni", "arm64"])
def test_vnni_artifact_installs_where_its_weights_are_exact(tmp_path: Path, fleet: Fleet,
                                                            bundle_dir: Path,
                                                            cpuinfo: str) -> None:
    inst = make_installer(tmp_path, fleet, target="x86-cpu-vnni", cpu=cpu(cpuinfo))
    vnni = build_bundle(bundle_dir, fleet, target="x86-cpu-vnni", precision="int8",
                        details={"plan": VNNI_PLAN})
    out = inst.install(request(vnni, "x86-cpu-vnni"))
    assert out.phase is DevicePhase.HEALTHY, out.reason


def test_seven_bit_x86_artifact_installs_on_any_x86_cpu(tmp_path: Path, fleet: Fleet,
                                                        bundle_dir: Path) -> None:
    inst = make_installer(tmp_path, fleet, cpu=cpu(AVX2))
    plan = {**VNNI_PLAN, "reduce_range": True, "target_isa": "x86_64"}
    out = inst.install(request(build_bundle(bundle_dir, fleet, precision="int8",
                                            details={"plan": plan})))
    assert out.phase is DevicePhase.HEALTHY, out.reason


def test_rollback_to_a_vnni_model_is_refused_on_a_cpu_without_vnni(tmp_path: Path, fleet: Fleet,
                                                                   bundle_dir: Path) -> None:
    # 1.0.0 (8-bit) was installed where it was exact, or by an agent that did not check; the
    # slots now sit on a CPU without VNNI, serving the FP32 2.0.0.
    vnni = build_bundle(bundle_dir, fleet, target="x86-cpu-vnni", precision="int8",
                        details={"plan": VNNI_PLAN})
    fp32 = build_bundle(bundle_dir, fleet, version="2.0.0", target="x86-cpu-vnni")
    before = make_installer(tmp_path, fleet, target="x86-cpu-vnni", cpu=cpu(AVX512_VNNI))
    for b in (vnni, fp32):
        assert before.install(request(b, "x86-cpu-vnni")).phase is DevicePhase.HEALTHY
    inst = make_installer(tmp_path, fleet, target="x86-cpu-vnni", cpu=cpu(AVX2))
    pointer = inst.store.pointer()
    out = inst.rollback(deployment_id="d-back")
    assert out.phase is DevicePhase.FAILED
    assert out.reason is not None and out.reason.startswith(
        "will not roll back to classifier@1.0.0: the x86-cpu-vnni int8 artifact has 8-bit "
        "weights that need VNNI")
    assert out.reason.endswith("; enrol this device as x86-cpu")
    assert inst.store.pointer() == pointer
    assert out.active is not None and out.active["version"] == "2.0.0"


def test_failed_health_check_does_not_fall_back_onto_a_vnni_model(tmp_path: Path, fleet: Fleet,
                                                                  bundle_dir: Path) -> None:
    vnni = build_bundle(bundle_dir, fleet, target="x86-cpu-vnni", precision="int8",
                        details={"plan": VNNI_PLAN})
    before = make_installer(tmp_path, fleet, target="x86-cpu-vnni", cpu=cpu(AVX512_VNNI))
    assert before.install(request(vnni, "x86-cpu-vnni")).phase is DevicePhase.HEALTHY
    rec = Recorder()
    inst = make_installer(tmp_path, fleet, rec, target="x86-cpu-vnni", cpu=cpu(AVX2))
    nan = build_bundle(bundle_dir, fleet, version="2.0.0", target="x86-cpu-vnni", kind="nan")
    out = inst.install(request(nan, "x86-cpu-vnni"))
    assert out.phase is DevicePhase.FAILED and out.reason is not None
    assert out.reason.startswith("health check failed: ")
    assert "; will not roll back to classifier@1.0.0: the x86-cpu-vnni int8 artifact" in out.reason
    assert out.active is None and inst.store.active() is None and rec.activated[-1] is None

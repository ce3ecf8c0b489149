"""AgentCore: start-up order, crash recovery of a trial, config commands, trust updates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device_agent.config import CONFIG_SCHEMA, AgentConfig
from device_agent.core import AgentCore, load_trusted_root, request_from_fetched
from device_agent.health import HealthSettings
from device_agent.installer import InstallRequest
from edgeops.bundle import Manifest
from edgeops.errors import ConfigError
from edgeops.keys import KeyStore
from edgeops.protocol.messages import DevicePhase
from edgeops.trust import root_path
from tests.cpuinfo import AVX2, AVX512_VNNI, VNNI_PLAN, cpu
from tests.device_agent.bundles import FEATURES, Fleet, build_bundle, bundle_parts, make_fleet

FAST = HealthSettings(warmup_runs=1, timed_runs=5)


def make_config(tmp_path: Path, root: Path, **extra: object) -> AgentConfig:
    d = {"schema": CONFIG_SCHEMA, "device_id": "bus-4", "device_class": "vehicle",
         "target": "x86-cpu", "data_dir": "state",
         "trust": {"root": str(root), "manager_keys": []}, **extra}
    p = tmp_path / "agent.json"
    p.write_text(json.dumps(d))
    return AgentConfig.from_file(p)


def req(bundle: Path, deployment_id: str = "d-1") -> InstallRequest:
    p = bundle_parts(bundle)
    return InstallRequest(p.manifest, p.signatures, p.artifact, p.golden, deployment_id)


def test_install_swaps_serving_model_and_restart_serves_it(tmp_path: Path, fleet: Fleet,
                                                           bundle_dir: Path) -> None:
    cfg = make_config(tmp_path, root_path(KeyStore(fleet.home)))
    phases: list[DevicePhase] = []
    x = np.ones((1, FEATURES), np.float32)
    with AgentCore(cfg, on_phase=lambda p, _l, _r: phases.append(p),
                   health_settings=FAST) as core:
        assert core.inference.model is None
        out = core.install(req(build_bundle(bundle_dir, fleet, scale=5.0)))
        assert out.phase is DevicePhase.HEALTHY and phases[-1] is DevicePhase.HEALTHY
        np.testing.assert_allclose(core.inference.predict({"x": x})["y"], x * 5 + 1)
        bad = core.install(req(build_bundle(bundle_dir, fleet, version="2.0.0", kind="nan")))
        assert bad.phase is DevicePhase.ROLLED_BACK
        np.testing.assert_allclose(core.inference.predict({"x": x})["y"], x * 5 + 1)
        st = core.status()
        assert st["serving"]["version"] == "1.0.0"
        assert st["last_install"]["phase"] == "rolled-back"
        with pytest.raises(ConfigError, match="another agent"):
            AgentCore(cfg).start()
    with AgentCore(cfg, health_settings=FAST) as again:
        np.testing.assert_allclose(again.inference.predict({"x": x})["y"], x * 5 + 1)


def test_start_settles_a_trial_left_by_a_crash(tmp_path: Path, fleet: Fleet,
                                               bundle_dir: Path) -> None:
    cfg = make_config(tmp_path, root_path(KeyStore(fleet.home)))
    with AgentCore(cfg, health_settings=FAST) as core:
        assert core.install(req(build_bundle(bundle_dir, fleet))).phase is DevicePhase.HEALTHY
        parts = bundle_parts(build_bundle(bundle_dir, fleet, version="2.0.0", scale=7.0))
        w = core.store.begin_install()
        for name, data in (("manifest.json", parts.manifest), ("model.onnx", parts.artifact),
                           ("golden.npz", parts.golden)):
            w.write_bytes(name, data)
        w.commit(name="classifier", version="2.0.0", target="x86-cpu",
                 model_file="model.onnx", extra={"deployment_id": "d-2"})
        core.store.activate(w.slot, trial=True)      # ... and the power goes out
    core = AgentCore(cfg, health_settings=FAST)
    resumed = core.start(serve_api=False)
    try:
        assert resumed is not None and resumed.phase is DevicePhase.HEALTHY
        assert resumed.deployment_id == "d-2"
        assert core.inference.model is not None and core.inference.model.version == "2.0.0"
        assert not core.store.pointer().trial
    finally:
        core.close()


def test_config_command_and_deferral(tmp_path: Path, fleet: Fleet, bundle_dir: Path) -> None:
    flag = tmp_path / "driving"
    flag.write_text("1")
    cfg = make_config(tmp_path, root_path(KeyStore(fleet.home)),
                      policy={"maintenance_windows": [],
                              "driving_signal": {"topic": "local/vehicle/driving"}})
    with AgentCore(cfg, health_settings=FAST) as core:
        out = core.install(req(build_bundle(bundle_dir, fleet)))
        assert out.phase is DevicePhase.DEFERRED and "unknown" in str(out.reason)
        core.apply_config({"driving_signal": {"file": str(flag)}})
        out2 = core.retry_deferred()
        assert out2 is not None and out2.phase is DevicePhase.DEFERRED
        assert "driving" in str(out2.reason)
        core.policy.driving.set_signal(None)
        out3 = core.retry_deferred()
        assert out3 is not None and out3.phase is DevicePhase.HEALTHY
        with pytest.raises(ConfigError):
            core.apply_config({"driving_signal": {"topic": "a/#"}})


def test_trust_comes_from_the_root_and_can_be_updated(tmp_path: Path, fleet: Fleet,
                                                      bundle_dir: Path) -> None:
    other = make_fleet(tmp_path / "other-home")
    cfg = make_config(tmp_path, root_path(KeyStore(other.home)))
    with AgentCore(cfg, health_settings=FAST) as core:
        out = core.install(req(build_bundle(bundle_dir, fleet)))
        assert out.phase is DevicePhase.FAILED and "not signed by a trusted" in str(out.reason)
        core.update_trust(load_trusted_root(root_path(KeyStore(fleet.home))))
        assert core.install(req(build_bundle(bundle_dir, fleet))).phase is DevicePhase.HEALTHY


def test_bad_roots(tmp_path: Path, fleet: Fleet) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_trusted_root(tmp_path / "missing.json")
    bad = tmp_path / "root.json"
    good = json.loads(root_path(KeyStore(fleet.home)).read_text())
    good["signed"]["version"] = 7               # breaks the root's self-signature
    bad.write_text(json.dumps(good))
    with pytest.raises(ConfigError, match="not a valid self-signed TUF root"):
        load_trusted_root(bad)


def test_request_from_fetched(tmp_path: Path, fleet: Fleet, bundle_dir: Path) -> None:
    from device_agent.tuf_update import FetchedBundle

    parts = bundle_parts(build_bundle(bundle_dir, fleet))
    art = tmp_path / "a"
    art.write_bytes(parts.artifact)
    fetched = FetchedBundle("classifier", "1.0.0", "x86-cpu",
                            Manifest.from_bytes(parts.manifest), parts.manifest,
                            parts.signatures, art, None)
    r = request_from_fetched(fetched, "d-3")
    assert (r.expect_name, r.expect_version, r.deployment_id) == ("classifier", "1.0.0", "d-3")
    assert r.artifact == art and r.golden is None and r.manifest == parts.manifest


def test_enrolled_as_vnni_on_a_cpu_without_it_warns_at_start(
        tmp_path: Path, fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(tmp_path, root_path(KeyStore(fleet.home)), target="x86-cpu-vnni")
    with caplog.at_level("WARNING", logger="device_agent.core"):
        core = AgentCore(cfg, cpu=cpu(AVX2))
        core.start(serve_api=False)       # a warning, not a refusal: the agent runs
        core.close()
        assert [r.getMessage() for r in caplog.records] == [
            "target x86-cpu-vnni declares VNNI but this x86_64 CPU has neither avx512_vnni nor "
            "avx_vnni: its INT8 artifacts would give wrong outputs here and will be refused; "
            "enrol this device as x86-cpu"]
        caplog.clear()
        core = AgentCore(cfg, cpu=cpu(AVX512_VNNI))
        core.start(serve_api=False)
        core.close()
        assert caplog.records == []


def test_active_vnni_model_is_not_served_once_the_cpu_lacks_vnni(
        tmp_path: Path, fleet: Fleet, bundle_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    # Installed where it was exact (or by an agent that did not check), then found on a CPU
    # without VNNI: "no model" is a clear answer, its outputs would be silently wrong.
    cfg = make_config(tmp_path, root_path(KeyStore(fleet.home)), target="x86-cpu-vnni")
    p = bundle_parts(build_bundle(bundle_dir, fleet, target="x86-cpu-vnni", precision="int8",
                                  details={"plan": VNNI_PLAN}), "x86-cpu-vnni")
    with AgentCore(cfg, health_settings=FAST, cpu=cpu(AVX512_VNNI)) as core:
        out = core.install(InstallRequest(p.manifest, p.signatures, p.artifact, p.golden))
        assert out.phase is DevicePhase.HEALTHY, out.reason
        assert core.inference.model is not None
    with caplog.at_level("ERROR", logger="device_agent.core"), \
            AgentCore(cfg, health_settings=FAST, cpu=cpu(AVX2)) as core:
        assert core.inference.model is None
        assert core.store.active() is not None          # kept: the fleet decides what next
        assert any(r.getMessage().startswith("active model classifier@1.0.0 is not served: "
                                             "the x86-cpu-vnni int8 artifact has 8-bit weights")
                   and r.getMessage().endswith("enrol this device as x86-cpu")
                   for r in caplog.records)

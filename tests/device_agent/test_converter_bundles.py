"""Bundles from the real converter (`edgeops build`) install, pass health and serve on the agent.

This is the converter → agent contract end to end: golden layout and dtype (NHWC, int8 I/O),
tolerance and latency metric names, runtime and providers, I/O adapters for local inference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from device_agent.health import HealthSettings, check_slot
from device_agent.inference import InferenceService
from device_agent.installer import Installer, InstallRequest
from device_agent.slots import SlotStore
from edgeops.protocol.messages import DevicePhase
from tests.clirun import run_edgeops
from tests.device_agent.bundles import PASSPHRASE, Fleet, bundle_parts
from tests.device_agent.test_io_adapter import SHAPE, conv_model

# one worker builds the bundle once for every target (make test: -n N --dist loadgroup)
pytestmark = pytest.mark.xdist_group("converter-bundles")
TARGETS = {"x86-cpu": "fp32", "tflite-cpu": "fp32", "edgetpu": "int8"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, fleet: Fleet) -> tuple[Path, bytes]:
    work = tmp_path_factory.mktemp("build")
    model = conv_model()
    (work / "model.onnx").write_bytes(model)
    rng = np.random.default_rng(3)
    np.savez(work / "cal.npz", x=rng.standard_normal((32, *SHAPE[1:]), dtype=np.float32))
    args = ["build", str(work / "model.onnx"),
            "--name", "conv", "--version", "1.0.0", "--calibration", str(work / "cal.npz"),
            "--max-accuracy-drop", "0.5", "--out", str(work / "out"), "--sign-latency",
            "--precision", ",".join(f"{t}={p}" for t, p in TARGETS.items())]
    for t in TARGETS:
        args += ["--target", t]
    r = run_edgeops(*args, env={"EDGEOPS_HOME": str(fleet.home),
                                "EDGEOPS_KEY_PASSPHRASE": PASSPHRASE.decode()})
    if r.returncode != 0:
        pytest.fail(f"edgeops build failed: {r.stderr[-2000:]}")
    return work / "out" / "conv-1.0.0.edgebundle", model


@pytest.mark.slow
@pytest.mark.parametrize("target", list(TARGETS))
def test_built_bundle_installs_and_serves(tmp_path: Path, fleet: Fleet,
                                          built: tuple[Path, bytes], target: str) -> None:
    bundle, model = built
    keys, threshold = fleet.trusted
    store = SlotStore(tmp_path / "slots")
    inst = Installer(store, target=target, trusted=keys, threshold=threshold,
                     # a shared 2-core CI box is slower than the build moment: generous slack,
                     # the latency check itself is covered in test_health.py
                     health=lambda d, t: check_slot(d, t, HealthSettings(budget_slack=50.0)))
    p = bundle_parts(bundle, target)
    out = inst.install(InstallRequest(p.manifest, p.signatures, p.artifact, p.golden))
    assert out.phase is DevicePhase.HEALTHY, out.reason
    assert out.health is not None and out.health.samples > 0
    # edgetpu's build-machine figure (XNNPACK) is not the device's: no budget, check skipped
    assert out.health.latency_checked is (target != "edgetpu"), out.health.notes
    info = store.active()
    assert info is not None
    svc = InferenceService()
    svc.load_slot(store, info)
    x = np.random.default_rng(4).standard_normal(SHAPE, dtype=np.float32)
    y = svc.predict({"x": x})["y"]
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    assert y.shape == ref.shape
    limit = 0.15 * float(np.max(np.abs(ref))) if TARGETS[target] == "int8" else 1e-4
    assert float(np.max(np.abs(y - ref))) <= limit


@pytest.mark.slow
def test_health_reads_the_converters_latency_figure(built: tuple[Path, bytes]) -> None:
    from device_agent.health import latency_reference_ms
    from edgeops.bundle import read_bundle

    for entry in read_bundle(built[0]).manifest.artifacts:
        ref, source = latency_reference_ms(entry.metrics)
        assert entry.tolerance, entry.target
        if entry.target == "edgetpu":
            # timed on the build machine's XNNPACK, not on the Edge TPU: never signed
            assert "latency_budget_ms" not in entry.metrics and source != "latency_budget_ms"
            continue
        assert ref is not None and ref > 0 and source == "latency_budget_ms", (
            entry.target, entry.metrics.keys(), source)

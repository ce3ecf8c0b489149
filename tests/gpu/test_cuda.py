"""The cuda-gpu profile on a real CUDA provider: converter artifact, agent loader, hardware suite.

Marked ``gpu``: they skip, naming what is missing, unless this ONNX Runtime has the CUDA
execution provider and a GPU answers (onnxruntime-gpu on an NVIDIA machine). CI has no GPU, so
they run where one is lent (see docs/HARDWARE_TESTS.md); they import nothing from the test
services, so ``pytest tests/gpu --noconftest`` runs them on a bare GPU box.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

pytestmark = pytest.mark.gpu
CUDA = "CUDAExecutionProvider"
ROOT = Path(__file__).resolve().parents[2]


def _require_cuda() -> None:
    import onnxruntime as ort

    have = ort.get_available_providers()
    if CUDA not in have:
        pytest.skip(f"needs onnxruntime-gpu with {CUDA} and an NVIDIA GPU "
                    f"(this onnxruntime {ort.__version__} has: {', '.join(have)})")


def _convnet(path: Path) -> Path:
    rng = np.random.default_rng(3)
    inits = [nh.from_array((rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
             nh.from_array((rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32), "w2"),
             nh.from_array((rng.standard_normal((10, 16)) * 0.3).astype(np.float32), "wf"),
             nh.from_array(np.zeros(10, np.float32), "bf")]
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             h.make_node("Softmax", ["c2"], ["s"], axis=1),     # kept FP32 (numerically unsafe)
             h.make_node("GlobalAveragePool", ["s"], ["g"]),
             h.make_node("Flatten", ["g"], ["f"]),
             h.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1)]
    g = h.make_graph(nodes, "convnet", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 32, 32])],
                     [h.make_tensor_value_info("logits", T.FLOAT, ["N", 10])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.save(m, str(path))
    x = np.random.default_rng(4).standard_normal((32, 3, 32, 32)).astype(np.float32)
    np.savez(path.with_suffix(".val.npz"), x=x)
    return path


def test_fp16_artifact_runs_on_the_cuda_provider_and_matches_fp32(tmp_path: Path) -> None:
    _require_cuda()
    import onnxruntime as ort

    from converters.api import BuildRequest
    from converters.build import build

    src = _convnet(tmp_path / "convnet.onnx")
    req = BuildRequest(model=src, name="convnet", version="1.0.0", targets=("cuda-gpu",),
                       validation=src.with_suffix(".val.npz"))
    (art,) = build(req, lambda m: None, tmp_path / "work").artifacts
    assert art.precision == "fp16"
    sess = ort.InferenceSession(str(art.path), providers=[CUDA, "CPUExecutionProvider"])
    assert sess.get_providers()[0] == CUDA
    kinds = {i.type for i in sess.get_inputs()} | {o.type for o in sess.get_outputs()}
    assert kinds == {"tensor(float)"}                       # FP32 I/O kept by default
    x = np.load(src.with_suffix(".val.npz"))["x"]
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = sess.run(None, {"x": x})[0]
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.999
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.95


def test_agent_loader_never_silently_lands_on_cpu_for_cuda_gpu(tmp_path: Path) -> None:
    """With the profile's providers (TensorRT, CUDA, CPU) the agent runs on TensorRT or CUDA."""
    _require_cuda()
    from edgeops.runtime import load_runner
    from edgeops.targets import get_profile

    profile = get_profile("cuda-gpu")
    runner = load_runner(_convnet(tmp_path / "m.onnx"), runtime="onnxruntime",
                         providers=profile.providers)
    active = tuple(getattr(runner, "active_providers", ()))
    assert active and active[0] in ("TensorrtExecutionProvider", CUDA), active


def _bundle(tmp: Path, target: str = "cuda-gpu") -> Path:
    from edgeops.examples import make_vehicle_classifier

    ex = make_vehicle_classifier(tmp / "model")
    env = {**os.environ, "EDGEOPS_HOME": str(tmp / "home"), "EDGEOPS_KEY_PASSPHRASE": "gpu-test"}
    cli = [sys.executable, "-m", "edgeops.cli.main"]
    subprocess.run([*cli, "keys", "init"], env=env, check=True, capture_output=True)
    subprocess.run([*cli, "build", str(ex.model), "--name", "vehicle-classifier", "--version",
                    "1.0.0", "--calibration", str(ex.calibration), "--validation",
                    str(ex.validation), "--max-accuracy-drop", "0.03", "--sign-latency",
                    "--target", target, "--out", str(tmp / "out")],
                   env=env, check=True, capture_output=True)
    return tmp / "out" / "vehicle-classifier-1.0.0.edgebundle"


def test_hardware_suite_blesses_cuda_gpu_on_cuda(tmp_path: Path) -> None:
    _require_cuda()
    bundle = _bundle(tmp_path)
    report = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "hardware_tests"), "-q",
                          "-p", "no:cacheprovider", "--bundle", str(bundle), "--target", "cuda-gpu",
                          "--provider", CUDA, "--report", str(report)],
                         cwd=tmp_path, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    doc = json.loads(report.read_text())
    assert doc["passed"] is True
    load = next(c for c in doc["checks"] if c["name"] == "load")
    assert load["figures"]["active_providers"][0] == CUDA


def install_and_check(tmp: Path, target: str) -> Any:
    """Build on this machine, verify and install as the agent does, health-checked in a child."""
    from device_agent.core import load_trusted_root
    from device_agent.health import check_slot_isolated
    from device_agent.installer import Installer, InstallRequest
    from device_agent.slots import SlotStore
    from edgeops.bundle import read_bundle
    from edgeops.trust import trusted_targets_keys

    b = read_bundle(_bundle(tmp, target))
    entry = b.manifest.artifact_for(target)
    assert entry is not None and entry.golden is not None
    # timed on this machine's own provider for the target, so --sign-latency signed it
    assert entry.metrics.get("latency_budget_ms"), entry.metrics
    keys, threshold = trusted_targets_keys(load_trusted_root(tmp / "home" / "trust" / "root.json"))
    inst = Installer(SlotStore(tmp / "slots"), target=target, trusted=keys,  # type: ignore[arg-type]
                     threshold=threshold, health=check_slot_isolated)
    return inst.install(InstallRequest(b.manifest_bytes, b.signatures.to_bytes(),
                                       b.read_file(entry.file.path), b.read_file(entry.golden.path)))


def test_agent_installs_cuda_gpu_and_its_health_check_runs_on_the_gpu(tmp_path: Path) -> None:
    _require_cuda()
    from edgeops.protocol.messages import DevicePhase

    out = install_and_check(tmp_path, "cuda-gpu")
    assert out.phase is DevicePhase.HEALTHY, out.reason
    assert out.health is not None and out.health.latency_checked and out.health.samples > 0
    assert out.health.providers[0] in ("TensorrtExecutionProvider", CUDA), out.health

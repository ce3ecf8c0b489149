"""Signed bundles for the attack suite, signed by whatever list of keys the attack needs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from securesystemslib.signer import Signer

from edgeops.bundle import ArtifactEntry, Manifest, TensorSpec, file_ref, write_bundle
from tests.edgeops.bundles import tiny_model

__all__ = ["build_bundle"]


def build_bundle(tmp: Path, signers: list[Signer], *, name: str = "tiny", version: str,
                 seed: int, target: str = "x86-cpu") -> Path:
    """A real signed bundle (tiny ONNX model + golden outputs from ONNX Runtime)."""
    import numpy as np
    import onnxruntime as ort

    work = tmp / f"src-{name}-{version}-{seed}"
    work.mkdir(parents=True, exist_ok=True)
    model = tiny_model(work / "model.onnx", seed)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    golden = work / "golden.npz"
    with open(golden, "wb") as f:
        np.savez(f, **{"input/x": x, "output/y": y})
    art, gold = f"artifacts/{target}/model.onnx", f"artifacts/{target}/golden.npz"
    entry = ArtifactEntry(target=target, file=file_ref(art, model), format="onnx",
                          runtime="onnxruntime", providers=("CPUExecutionProvider",),
                          precision="fp32", golden=file_ref(gold, golden),
                          metrics={"latency_ms_p95": 1.0}, tolerance={"atol": 1e-5, "rtol": 1e-4})
    manifest = Manifest(name=name, version=version,
                        source_sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
                        inputs=(TensorSpec("x", "float32", ("N", 4)),),
                        outputs=(TensorSpec("y", "float32", ("N", 3)),), artifacts=(entry,),
                        provenance={"edgeops": "attack-suite"})
    return write_bundle(tmp / manifest.bundle_filename, manifest, {art: model, gold: golden},
                        signers)

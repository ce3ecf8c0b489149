"""Test helpers: a tiny real ONNX model, real keys, and bundles built from them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from securesystemslib.signer import Signer

from edgeops.bundle import ArtifactEntry, FileRef, Manifest, TensorSpec, file_ref, write_bundle
from edgeops.keys import OFFLINE_ROLES, ROLES, KeyStore
from edgeops.trust import create_root

PASSPHRASE = b"correct horse battery staple"


def make_keystore(home: Path) -> KeyStore:
    store = KeyStore(home)
    for role in ROLES:
        store.generate(role, PASSPHRASE if role in OFFLINE_ROLES else None)
    create_root(store, PASSPHRASE)
    return store


def tiny_model(path: Path, seed: int = 0) -> Path:
    """y = relu(x @ W + b): a real ONNX model ONNX Runtime can run."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def make_bundle(tmp: Path, store: KeyStore, *, name: str = "tiny", version: str = "1.0.0",
                target: str = "x86-cpu", seed: int = 0, out: Path | None = None) -> Path:
    """A signed bundle with one real ONNX artifact and its golden samples (targets key)."""
    return signed_bundle(tmp, [store.signer("targets", PASSPHRASE)], name=name, version=version,
                         target=target, seed=seed, out=out)


def signed_bundle(tmp: Path, signers: list[Signer], *, name: str = "tiny", version: str = "1.0.0",
                  target: str = "x86-cpu", seed: int = 0, out: Path | None = None,
                  provenance: str = "test") -> Path:
    """The same, signed by whatever keys the caller holds (the attack suite forges some)."""
    work = tmp / f"work-{name}-{version}-{target}-{seed}"
    work.mkdir(parents=True, exist_ok=True)
    model = tiny_model(work / "model.onnx", seed)
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    golden = work / "golden.npz"
    with open(golden, "wb") as f:
        np.savez(f, **{"input/x": x, "output/y": y})
    art_path = f"artifacts/{target}/model.onnx"
    gold_path = f"artifacts/{target}/golden.npz"
    entry = ArtifactEntry(
        target=target, file=file_ref(art_path, model), format="onnx", runtime="onnxruntime",
        providers=("CPUExecutionProvider",), precision="fp32",
        golden=file_ref(gold_path, golden), metrics={"latency_ms_p95": 1.0},
        tolerance={"atol": 1e-5, "rtol": 1e-4})
    manifest = Manifest(
        name=name, version=version,
        source_sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
        inputs=(TensorSpec("x", "float32", ("N", 4)),),
        outputs=(TensorSpec("y", "float32", ("N", 3)),), artifacts=(entry,),
        provenance={"edgeops": provenance})
    dest = out or tmp / manifest.bundle_filename
    return write_bundle(dest, manifest, {art_path: model, gold_path: golden}, signers)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = ["PASSPHRASE", "FileRef", "make_bundle", "make_keystore", "sha", "signed_bundle",
           "tiny_model"]

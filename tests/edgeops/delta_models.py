"""Models and bundles for the delta tests: an MLP whose head can be retrained on its own."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import helper as h
from onnx import numpy_helper as nh

from edgeops.bundle import ArtifactEntry, Manifest, TensorSpec, file_ref, write_bundle
from edgeops.keys import KeyStore
from tests.edgeops.bundles import PASSPHRASE


def mlp_model(seed: int, head_seed: int | None = None, hidden: int = 128) -> bytes:
    """A small MLP as ONNX bytes; ``head_seed`` retrains only the last layer."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.1, (32, hidden)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (hidden,)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (hidden, hidden)).astype(np.float32)
    head = np.random.default_rng(head_seed if head_seed is not None else seed + 1)
    w3 = head.normal(0, 0.1, (hidden, 10)).astype(np.float32)
    nodes = [h.make_node("MatMul", ["x", "w1"], ["h1"]), h.make_node("Add", ["h1", "b1"], ["h2"]),
             h.make_node("Relu", ["h2"], ["h3"]), h.make_node("MatMul", ["h3", "w2"], ["h4"]),
             h.make_node("MatMul", ["h4", "w3"], ["y"])]
    g = h.make_graph(nodes, "mlp", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 32])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 10])],
                     [nh.from_array(w1, "w1"), nh.from_array(b1, "b1"), nh.from_array(w2, "w2"),
                      nh.from_array(w3, "w3")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)]).SerializeToString()


def mlp_bundle(tmp: Path, keys: KeyStore, *, version: str, head_seed: int | None = None,
               name: str = "mlp", target: str = "x86-cpu", hidden: int = 128) -> Path:
    """A signed bundle of :func:`mlp_model` (seed 0) for one target, with golden samples."""
    import onnxruntime as ort

    work = tmp / f"mlp-{name}-{version}-{head_seed}"
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model.onnx"
    model.write_bytes(mlp_model(0, head_seed, hidden))
    x = np.random.default_rng(1).standard_normal((1, 32)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    golden = work / "golden.npz"
    with open(golden, "wb") as f:
        np.savez(f, **{"input/x": x, "output/y": y})
    art, gold = f"artifacts/{target}/model.onnx", f"artifacts/{target}/golden.npz"
    entry = ArtifactEntry(
        target=target, file=file_ref(art, model), format="onnx", runtime="onnxruntime",
        providers=("CPUExecutionProvider",), precision="fp32", golden=file_ref(gold, golden),
        metrics={"latency_ms_p95": 1.0}, tolerance={"atol": 1e-4, "rtol": 1e-3})
    manifest = Manifest(
        name=name, version=version, source_sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
        inputs=(TensorSpec("x", "float32", (1, 32)),),
        outputs=(TensorSpec("y", "float32", (1, 10)),), artifacts=(entry,),
        provenance={"edgeops": "test"})
    return write_bundle(tmp / manifest.bundle_filename, manifest, {art: model, gold: golden},
                        [keys.signer("targets", PASSPHRASE)])

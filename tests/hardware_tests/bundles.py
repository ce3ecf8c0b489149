"""Real bundles for testing the hardware suite: onnx.helper models, ONNX Runtime outputs,
Ed25519 signatures from a real key store. Options produce the bad inputs the issue names."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeops.bundle import ArtifactEntry, Manifest, TensorSpec, file_ref, write_bundle
from edgeops.keys import KeyStore

PASSPHRASE = b"hardware suite passphrase"


def make_keystore(home: Path, *, full: bool = False) -> KeyStore:
    """A real key store: the targets key, or (``full``) every role and a signed TUF root."""
    store = KeyStore(home)
    if not full:
        store.generate("targets", PASSPHRASE)
        return store
    from edgeops.keys import OFFLINE_ROLES, ROLES
    from edgeops.trust import create_root

    for role in ROLES:
        store.generate(role, PASSPHRASE if role in OFFLINE_ROLES else None)
    create_root(store, PASSPHRASE)
    return store


def mlp_model(path: Path, seed: int = 0, hidden: int = 16) -> Path:
    """y = softmax(relu(x @ W1 + b1) @ W2 + b2): small, real, with a dynamic batch dim."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W1", (8, hidden)), ("B1", (hidden,)), ("W2", (hidden, 4)),
                          ("B2", (4,)))]
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "B2"], ["z"]),
             helper.make_node("Softmax", ["z"], ["y"], axis=1)]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def build_bundle(tmp: Path, store: KeyStore, *, target: str = "x86-cpu",
                 providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 metrics: Mapping[str, Any] | None = None,
                 tolerance: Mapping[str, float] | None = None,
                 with_golden: bool = True, golden_offset: float = 0.0,
                 name: str = "mlp", version: str = "1.0.0", precision: str = "fp32",
                 details: Mapping[str, Any] | None = None) -> Path:
    """A signed single-artifact bundle; ``golden_offset`` shifts the recorded outputs.

    ``precision`` and ``details`` are what the manifest claims (the model stays the FP32 MLP),
    for the checks that read the claim, such as the CPU's ISA."""
    work = tmp / f"src-{name}-{version}-{target}"
    work.mkdir(parents=True, exist_ok=True)
    model = mlp_model(work / "model.onnx")
    x = np.random.default_rng(7).standard_normal((3, 8)).astype(np.float32)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x})[0] + np.float32(golden_offset)
    files = {f"artifacts/{target}/model.onnx": model}
    golden_ref = None
    if with_golden:
        golden = work / "golden.npz"
        with open(golden, "wb") as f:
            np.savez(f, **{"input/x": x, "output/y": y})
        files[f"artifacts/{target}/golden.npz"] = golden
        golden_ref = file_ref(f"artifacts/{target}/golden.npz", golden)
    entry = ArtifactEntry(
        target=target, file=file_ref(f"artifacts/{target}/model.onnx", model), format="onnx",
        runtime="onnxruntime", providers=providers, precision=precision, golden=golden_ref,
        metrics=dict(metrics if metrics is not None else
                     {"latency_ms_p50": 50.0, "latency_ms_p95": 80.0, "peak_memory_mib": 64.0}),
        tolerance=dict(tolerance if tolerance is not None else {"atol": 1e-5, "rtol": 1e-4}),
        details=dict(details or {}))
    manifest = Manifest(
        name=name, version=version, source_sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
        inputs=(TensorSpec("x", "float32", ("N", 8)),),
        outputs=(TensorSpec("y", "float32", ("N", 4)),), artifacts=(entry,),
        provenance={"built_by": "tests/hardware_tests"})
    return write_bundle(tmp / manifest.bundle_filename, manifest, files,
                        [store.signer("targets", PASSPHRASE)])


def corrupt_member(bundle: Path, member: str, out: Path) -> Path:
    """Copy ``bundle`` with one byte of ``member`` flipped in place (same size, wrong digest)."""
    data = bytearray(bundle.read_bytes())
    with tarfile.open(bundle) as tar:
        ti = tar.getmember(member)
    data[ti.offset_data + ti.size // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    return out

"""Reusable test helper: real keys, tiny real ONNX models and signed bundles built from them.

Other test packages may import it (``from tests.device_agent.bundles import ...``). Everything
is real: Ed25519 keys from :class:`edgeops.keys.KeyStore` in a temporary EDGEOPS_HOME, a TUF root
from :func:`edgeops.trust.create_root`, ONNX models from ``onnx.helper``, golden outputs from
ONNX Runtime itself, bundles from :func:`edgeops.bundle.write_bundle`.

Model kinds: ``affine`` (y = x·scale + 1, healthy), ``nan`` (y = sqrt(-1 - |x|): NaN),
``broken`` (a graph ONNX Runtime refuses to load), ``wrong`` (golden outputs that the model does
not reproduce), ``slow`` (healthy, but the manifest claims an impossible 1 ns latency).
"""

from __future__ import annotations

import hashlib
import io
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root

from edgeops.bundle import (
    ArtifactEntry,
    FileRef,
    Manifest,
    TensorSpec,
    read_bundle,
    write_bundle,
)
from edgeops.drift.reference import DriftReference
from edgeops.keys import ROLES, KeyStore
from edgeops.trust import create_root, trusted_targets_keys

__all__ = [
    "FEATURES",
    "BundleParts",
    "Fleet",
    "build_bundle",
    "bundle_parts",
    "golden_npz",
    "make_fleet",
    "onnx_model",
    "traversal_bundle",
]

PASSPHRASE = b"test-passphrase"
FEATURES = 4


@dataclass
class Fleet:
    """A fleet's trust material: its root, targets signer, and a foreign (untrusted) signer."""

    home: Path
    root: Metadata[Root]
    targets: CryptoSigner
    foreign: CryptoSigner
    manager: CryptoSigner

    @property
    def trusted(self) -> tuple[list[Any], int]:
        return trusted_targets_keys(self.root)


def make_fleet(home: Path) -> Fleet:
    store = KeyStore(home)
    for role in ROLES:
        store.generate(role, PASSPHRASE)
    root = create_root(store, PASSPHRASE)
    other = KeyStore(home / "foreign")
    other.generate("targets", PASSPHRASE)
    return Fleet(home, root, store.signer("targets", PASSPHRASE),
                 other.signer("targets", PASSPHRASE), store.signer("manager"))


def onnx_model(kind: str = "affine", scale: float = 2.0) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", FEATURES])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", FEATURES])
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
             helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])]
    if kind == "nan":
        nodes = [helper.make_node("Abs", ["x"], ["a"]),
                 helper.make_node("Add", ["a", "one"], ["b"]),
                 helper.make_node("Neg", ["b"], ["c"]),
                 helper.make_node("Sqrt", ["c"], ["y"])]
    elif kind == "broken":
        nodes = [helper.make_node("Mul", ["x", "does_not_exist"], ["y"])]
    else:
        nodes = [helper.make_node("Mul", ["x", "s"], ["m"]),
                 helper.make_node("Add", ["m", "one"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def golden_npz(scale: float = 2.0, samples: int = 3, seed: int = 0,
               offset: float = 0.0) -> bytes:
    """Golden file with the *real* outputs of the affine model, as converters write it."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, FEATURES), dtype=np.float32)
    sess = ort.InferenceSession(onnx_model("affine", scale), providers=["CPUExecutionProvider"])
    outs = np.concatenate([sess.run(["y"], {"x": x[i:i + 1]})[0] for i in range(samples)])
    buf = io.BytesIO()
    np.savez(buf, **{"input/x": x, "output/y": outs + offset})
    return buf.getvalue()


@dataclass
class BundleParts:
    """What the installer is fed: the four byte strings a TUF download would yield."""

    manifest: bytes
    signatures: bytes
    artifact: bytes
    golden: bytes
    path: Path


def build_bundle(out_dir: Path, fleet: Fleet, *, name: str = "classifier",
                 version: str = "1.0.0", target: str = "x86-cpu", kind: str = "affine",
                 scale: float = 2.0, signer: CryptoSigner | None = None,
                 metrics: dict[str, Any] | None = None, min_agent_version: str = "0.1.0",
                 tolerance: dict[str, float] | None = None,
                 drift: DriftReference | None = None, precision: str = "fp32",
                 details: dict[str, Any] | None = None) -> Path:
    """A real signed bundle holding one artifact of the given ``kind``.

    ``precision`` and ``details`` are only what the manifest claims (the model stays the FP32
    affine one): enough for the checks that read the claim, such as the CPU's ISA."""
    uniq = uuid.uuid4().hex[:8]
    work = out_dir / f"src-{name}-{version}-{uniq}"
    (work / "artifacts" / target).mkdir(parents=True, exist_ok=True)
    model_path = work / "artifacts" / target / "model.onnx"
    golden_path = work / "artifacts" / target / "golden.npz"
    model_bytes = onnx_model(kind, scale)
    model_path.write_bytes(model_bytes)
    golden_path.write_bytes(golden_npz(scale, offset=0.5 if kind == "wrong" else 0.0))
    if metrics is None:
        metrics = {"latency_ms": {"p50": 1e-6, "p95": 1e-6}} if kind == "slow" else \
            {"latency_ms": {"p50": 50.0, "p95": 100.0}}
    entry = ArtifactEntry(
        target=target,
        file=FileRef(f"artifacts/{target}/model.onnx", hashlib.sha256(model_bytes).hexdigest(),
                     len(model_bytes)),
        format="onnx", runtime="onnxruntime", providers=("CPUExecutionProvider",),
        precision=precision,
        golden=FileRef(f"artifacts/{target}/golden.npz",
                       hashlib.sha256(golden_path.read_bytes()).hexdigest(),
                       golden_path.stat().st_size),
        metrics=metrics, tolerance=tolerance if tolerance is not None else
        {"atol": 1e-5, "rtol": 1e-4}, details=dict(details or {}))
    spec = (TensorSpec("x", "float32", ("n", FEATURES)),)
    manifest = Manifest(name=name, version=version,
                        source_sha256=hashlib.sha256(model_bytes).hexdigest(),
                        inputs=spec, outputs=(TensorSpec("y", "float32", ("n", FEATURES)),),
                        artifacts=(entry,), min_agent_version=min_agent_version,
                        baseline={"x": {"mean": 0.0, "std": 1.0}}, drift=drift)
    files = {entry.file.path: model_path, entry.golden.path: golden_path}  # type: ignore[union-attr]
    out = out_dir / f"{name}-{version}-{kind}-{uniq}.edgebundle"
    return write_bundle(out, manifest, files, [signer or fleet.targets])


def bundle_parts(path: Path, target: str = "x86-cpu") -> BundleParts:
    """Split a bundle into the bytes the TUF client would download for one target."""
    b = read_bundle(path)
    entry = b.manifest.artifact_for(target)
    assert entry is not None and entry.golden is not None
    return BundleParts(b.manifest_bytes, b.signatures.to_bytes(), b.read_file(entry.file.path),
                       b.read_file(entry.golden.path), path)


def check_model_loads(data: bytes) -> None:
    onnx.checker.check_model(onnx.load_from_string(data))


def traversal_bundle(good: Path, out: Path) -> Path:
    """Copy of a real bundle with one extra entry that climbs out of the bundle."""
    import tarfile

    with tarfile.open(good) as src, tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as dst:
        for ti in src.getmembers():
            dst.addfile(ti, src.extractfile(ti))
        evil = tarfile.TarInfo("../../evil.sh")
        payload = b"#!/bin/sh\necho pwned\n"
        evil.size = len(payload)
        dst.addfile(evil, io.BytesIO(payload))
    return out


def drift_reference(scale: float = 2.0, window_inferences: int = 16) -> DriftReference:
    """The drift reference of the affine model: x ~ N(0, 1) per column, y = scale * x; counted
    on every request, a window closing after ``window_inferences`` requests."""
    from edgeops.drift.features import build_reference

    x = np.random.default_rng(0).standard_normal((400, FEATURES)).astype(np.float32)
    ref = build_reference({"x": x}, {"y": x * scale}, window_inferences=window_inferences,
                          sample_every=1)
    assert ref is not None
    return ref


def sketch_counts(rec: dict[str, Any], ref: DriftReference) -> dict[str, list[int]]:
    """A ``drift_sketch`` record's packed counts by feature name, features without a count left
    out: what the manager's intake stores (edgeops/drift/sketch_codec.py)."""
    from edgeops.drift.sketch_codec import PACKED_FIELD, unpack_counts

    per = unpack_counts(rec[PACKED_FIELD], [f.bins for f in ref.features])
    return {f.name: c for f, c in zip(ref.features, per, strict=True) if any(c)}

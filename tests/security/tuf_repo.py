"""The attacker's TUF repository: real python-tuf metadata, real Ed25519 keys, served over HTTP.

Why it lives here (and not in fleet/): the attack suite needs a repository it can make lie in
every way TUF defends against — roll back, freeze, mix and match, send endless data, sign with
a foreign or a below-threshold set of keys — while the device side is the real
``device_agent.tuf_client`` + ``device_agent.installer``. Keys are a real ``KeyStore`` (as
``edgeops keys init`` makes them); the root can require two targets keys (threshold 2) to test
key compromise below threshold.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from edgeops.bundle import ArtifactEntry, Manifest, TensorSpec, file_ref, read_bundle, write_bundle
from edgeops.keys import KeyStore
from tests.edgeops.bundles import PASSPHRASE, tiny_model

__all__ = ["AttackRepo", "build_bundle"]

_SER = JSONSerializer(compact=True)


def _in(days: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


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


class AttackRepo:
    """A TUF repository with consistent snapshots whose every file the test can replace."""

    def __init__(self, store: KeyStore, *, targets_threshold: int = 1) -> None:
        self.store = store
        self.root_signer = store.signer("root", PASSPHRASE)
        self.targets_signers: list[Signer] = [store.signer("targets", PASSPHRASE)]
        if targets_threshold > 1:
            self.targets_signers += [CryptoSigner.generate_ed25519()
                                     for _ in range(targets_threshold - 1)]
        self.online = {r: store.signer(r) for r in ("snapshot", "timestamp")}
        root = Root(expires=_in(365), consistent_snapshot=True)
        root.add_key(self.root_signer.public_key, "root")
        for s in self.targets_signers:
            root.add_key(s.public_key, "targets")
        root.roles["targets"].threshold = targets_threshold
        for r, s in self.online.items():
            root.add_key(s.public_key, r)
        self.root = Metadata(root)
        self.root.sign(self.root_signer)
        self.targets = Metadata(Targets(expires=_in(30)))
        self.snapshot = Metadata(Snapshot(expires=_in(7)))
        self.timestamp = Metadata(Timestamp(expires=_in(1)))
        self.metadata: dict[str, bytes] = {"1.root.json": self.root.to_bytes(_SER)}
        self.target_files: dict[str, bytes] = {}
        self.history: list[dict[str, bytes]] = []
        self._first = True
        self.publish()

    @property
    def root_bytes(self) -> bytes:
        return self.metadata["1.root.json"]

    def add_target(self, path: str, data: bytes) -> TargetFile:
        tf = TargetFile.from_data(path, data, ["sha256"])
        self.targets.signed.targets[path] = tf
        d, _, base = path.rpartition("/")
        self.target_files[f"{d}/{hashlib.sha256(data).hexdigest()}.{base}"] = data
        return tf

    def add_bundle(self, bundle: Path) -> None:
        b = read_bundle(bundle)
        base = f"bundles/{b.manifest.name}/{b.manifest.version}"
        self.add_target(f"{base}/manifest.json", b.manifest_bytes)
        self.add_target(f"{base}/signatures.json", b.signatures.to_bytes())
        for ref in b.manifest.files():
            self.add_target(f"{base}/{ref.path}", b.read_file(ref.path))

    def publish(self, *, targets_signers: list[Signer] | None = None,
                timestamp_expires: datetime | None = None) -> None:
        """New targets, snapshot and timestamp versions (targets signed by ``targets_signers``)."""
        self.history.append(dict(self.metadata))
        t, s, ts = self.targets.signed, self.snapshot.signed, self.timestamp.signed
        if not self._first:
            t.version += 1
            s.version += 1
            ts.version += 1
        self._first = False
        self.targets.signatures.clear()
        for signer in (self.targets_signers if targets_signers is None else targets_signers):
            self.targets.sign(signer, append=True)
        s.meta["targets.json"] = MetaFile(version=t.version)
        self.snapshot.signatures.clear()
        self.snapshot.sign(self.online["snapshot"])
        ts.snapshot_meta = MetaFile(version=s.version)
        ts.expires = timestamp_expires or _in(1)
        self.timestamp.signatures.clear()
        self.timestamp.sign(self.online["timestamp"])
        self.metadata[f"{t.version}.targets.json"] = self.targets.to_bytes(_SER)
        self.metadata[f"{s.version}.snapshot.json"] = self.snapshot.to_bytes(_SER)
        self.metadata["timestamp.json"] = self.timestamp.to_bytes(_SER)


class HttpRepo:
    """Serves ``/tuf/metadata/<file>`` and ``/tuf/targets/<path>`` on 127.0.0.1 only."""

    def __init__(self, repo: AttackRepo) -> None:
        self.repo = repo
        self.overrides: dict[str, bytes] = {}
        self.endless: set[str] = set()       # url paths answered with an endless body
        self.sent_bytes: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path in outer.endless:
                    self.send_response(200)
                    self.end_headers()
                    sent = 0
                    try:
                        while sent < 64 * 1024 * 1024:   # bounded: the test must end
                            self.wfile.write(b"\0" * 65536)
                            sent += 65536
                    except OSError:
                        pass
                    outer.sent_bytes[self.path] = sent
                    return
                body = outer._lookup(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _lookup(self, path: str) -> bytes | None:
        if path in self.overrides:
            return self.overrides[path]
        if path.startswith("/tuf/metadata/"):
            return self.repo.metadata.get(path[len("/tuf/metadata/"):])
        if path.startswith("/tuf/targets/"):
            return self.repo.target_files.get(path[len("/tuf/targets/"):])
        return None

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

"""Shared builders for the agent networking tests: keys, a two-target bundle, a TUF repo."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from device_agent.mqtt import Backoff, BrokerSettings, MqttConnection
from device_agent.tuf_client import MqttTufTransport
from edgeops.bundle import ArtifactEntry, Manifest, TensorSpec, file_ref, write_bundle
from edgeops.keys import KeyStore
from edgeops.protocol import StatusMessage
from tests.edgeops.bundles import PASSPHRASE, tiny_model

__all__ = ["Pump", "make_bundle2", "mqtt_link"]


def make_bundle2(tmp: Path, store: KeyStore, *, name: str = "tiny", version: str = "1.0.0",
                 targets: tuple[str, ...] = ("x86-cpu", "arm64-cpu"), seed: int = 0,
                 signer_store: KeyStore | None = None) -> Path:
    """A signed bundle with one real ONNX artifact + golden per target."""
    import onnxruntime as ort

    work = tmp / f"b2-{name}-{version}-{seed}"
    work.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    entries = []
    for i, target in enumerate(targets):
        model = tiny_model(work / f"{target}.onnx", seed + i)
        x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
        y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(
            None, {"x": x})[0]
        golden = work / f"{target}.npz"
        with open(golden, "wb") as f:
            np.savez(f, **{"input/x": x, "output/y": y})
        a, g = f"artifacts/{target}/model.onnx", f"artifacts/{target}/golden.npz"
        files[a], files[g] = model, golden
        entries.append(ArtifactEntry(
            target=target, file=file_ref(a, model), format="onnx", runtime="onnxruntime",
            providers=("CPUExecutionProvider",), precision="fp32", golden=file_ref(g, golden),
            metrics={"latency_ms_p95": 1.0}, tolerance={"atol": 1e-5, "rtol": 1e-4}))
    manifest = Manifest(
        name=name, version=version,
        source_sha256=hashlib.sha256(files[f"artifacts/{targets[0]}/model.onnx"].read_bytes())
        .hexdigest(),
        inputs=(TensorSpec("x", "float32", ("N", 4)),),
        outputs=(TensorSpec("y", "float32", ("N", 3)),), artifacts=tuple(entries),
        provenance={"edgeops": "test"},
        baseline={"x": {"mean": 0.0, "std": 1.0, "min": -3.0, "max": 3.0}})
    return write_bundle(tmp / manifest.bundle_filename, manifest, files,
                        [(signer_store or store).signer("targets", PASSPHRASE)])


def mqtt_link(port: int, device_id: str) -> MqttConnection:
    conn = MqttConnection(device_id, BrokerSettings("127.0.0.1", port,
                                                    backoff=Backoff(0.05, 0.5)),
                          lambda online: StatusMessage(device_id, online).to_bytes())
    return conn


class Pump:
    """Plays the daemon's message loop: inbox -> transport.handle().

    Topics the transport does not claim are recorded in ``unclaimed``: a test publishes a marker
    after its last frame and waits for it here to know every earlier frame was handled.
    """

    def __init__(self, conn: MqttConnection, transport: MqttTufTransport) -> None:
        self.conn, self.transport = conn, transport
        self.unclaimed: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.conn.get(0.1)
            if msg is not None and not self.transport.handle(msg.topic, msg.payload):
                with self._cond:
                    self.unclaimed.append(msg.topic)
                    self._cond.notify_all()

    def wait_unclaimed(self, topic: str, timeout_s: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: topic in self.unclaimed, timeout_s)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)

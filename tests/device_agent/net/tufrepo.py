"""A real TUF repository built in the test with python-tuf's Metadata API and real Ed25519 keys.

Keys come from a real ``KeyStore`` and the root from ``edgeops.trust.create_root``, exactly as
``edgeops keys init`` makes them; targets are signed with the offline targets key, snapshot and
timestamp with the online keys, consistent snapshots on. The repository can also be made to
misbehave (roll back, expire, tamper, mix and match) for the attack tests. Served over HTTP by
:class:`HttpRepoServer` and over MQTT by ``fake_manager.FakeManager``.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from edgeops.bundle import read_bundle
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from tests.edgeops.bundles import PASSPHRASE

__all__ = ["HttpRepoServer", "TufRepo", "foreign_signer"]

_SER = JSONSerializer(compact=True)


def _in(days: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


class TufRepo:
    """metadata: file name -> bytes as served; targets: '<dir>/<sha>.<name>' -> bytes."""

    def __init__(self, store: KeyStore, passphrase: bytes = PASSPHRASE) -> None:
        self.store = store
        self.root = Metadata[Root].from_file(str(root_path(store)))
        self.signers: dict[str, Signer] = {
            role: store.signer(role, passphrase)
            for role in ("root", "targets", "snapshot", "timestamp")}
        self.targets = Metadata(Targets(expires=_in(30)))
        self.snapshot = Metadata(Snapshot(expires=_in(7)))
        self.timestamp = Metadata(Timestamp(expires=_in(1)))
        self.metadata: dict[str, bytes] = {"1.root.json": self.root.to_bytes(_SER)}
        self.target_files: dict[str, bytes] = {}
        self.by_sha: dict[str, bytes] = {}
        self.history: list[dict[str, bytes]] = []
        self.publish()

    @property
    def root_bytes(self) -> bytes:
        return self.metadata["1.root.json"]

    def add_target(self, path: str, data: bytes) -> TargetFile:
        tf = TargetFile.from_data(path, data, ["sha256"])
        self.targets.signed.targets[path] = tf
        sha = hashlib.sha256(data).hexdigest()
        d, _, base = path.rpartition("/")
        self.target_files[f"{d}/{sha}.{base}"] = data
        self.by_sha[sha] = data
        return tf

    def add_bundle(self, bundle: Path) -> dict[str, TargetFile]:
        b = read_bundle(bundle)
        base = f"bundles/{b.manifest.name}/{b.manifest.version}"
        out = {"manifest.json": self.add_target(f"{base}/manifest.json", b.manifest_bytes),
               "signatures.json": self.add_target(f"{base}/signatures.json",
                                                  b.signatures.to_bytes())}
        for ref in b.manifest.files():
            out[ref.path] = self.add_target(f"{base}/{ref.path}", b.read_file(ref.path))
        return out

    def publish(self, *, sign_targets_with: Signer | None = None,
                timestamp_expires: datetime | None = None) -> None:
        """New targets, snapshot and timestamp versions, signed (optionally by a wrong key)."""
        self.history.append(dict(self.metadata))
        t, s, ts = self.targets.signed, self.snapshot.signed, self.timestamp.signed
        if len(self.history) > 1:
            t.version += 1
            s.version += 1
            ts.version += 1
        self.targets.signatures.clear()
        self.targets.sign(sign_targets_with or self.signers["targets"])
        s.meta["targets.json"] = MetaFile(version=t.version)
        self.snapshot.signatures.clear()
        self.snapshot.sign(self.signers["snapshot"])
        ts.snapshot_meta = MetaFile(version=s.version)
        ts.expires = timestamp_expires or _in(1)
        self.timestamp.signatures.clear()
        self.timestamp.sign(self.signers["timestamp"])
        self.metadata[f"{t.version}.targets.json"] = self.targets.to_bytes(_SER)
        self.metadata[f"{s.version}.snapshot.json"] = self.snapshot.to_bytes(_SER)
        self.metadata["timestamp.json"] = self.timestamp.to_bytes(_SER)

    def rollback_timestamp(self) -> None:
        """Serve the previous (validly signed, older) timestamp again."""
        self.metadata["timestamp.json"] = self.history[-1]["timestamp.json"]

    def tamper(self, filename: str, old: bytes, new: bytes) -> None:
        assert old in self.metadata[filename]
        self.metadata[filename] = self.metadata[filename].replace(old, new)


class HttpRepoServer:
    """Serves ``/tuf/metadata/<file>`` and ``/tuf/targets/<path>`` on 127.0.0.1 only."""

    def __init__(self, repo: TufRepo) -> None:
        self.repo = repo
        self.overrides: dict[str, bytes] = {}   # url path -> body, for misbehaviour
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
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


def foreign_signer() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


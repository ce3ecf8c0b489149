"""The suite's TUF repository simulator: real python-tuf metadata, real Ed25519 keys, served over
HTTP on loopback (and over MQTT by ``tests/device_agent/net/fake_manager.FakeManager``).

Keys come from a real ``KeyStore`` as ``edgeops keys init`` makes them. By default the root is
the store's own (``edgeops.trust.create_root``); ``targets_threshold=N`` instead signs a fresh
root that requires N targets keys (N-1 generated here), to test compromise below threshold.
Targets are signed with the offline targets key(s), snapshot and timestamp with the online keys,
consistent snapshots on.

Attack hooks, for tests/security and the agent's refusal tests: publish with a foreign or
below-threshold set of targets keys, or with an expired timestamp; serve an older timestamp
again (``rollback_timestamp``); tamper with any metadata file; replace a target's bytes
(``by_sha``); and on the server, override any URL's body or answer it with an endless one.
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

from edgeops.bundle import read_bundle
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from tests.edgeops.bundles import PASSPHRASE

__all__ = ["HttpRepoServer", "TufRepo", "foreign_signer"]

_SER = JSONSerializer(compact=True)
ENDLESS_CAP = 64 * 1024 * 1024   # an "endless" body still ends, so that the test does


def _in(days: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


def foreign_signer() -> CryptoSigner:
    """A key the fleet's root does not know (an attacker's, or a compromised manager's)."""
    return CryptoSigner.generate_ed25519()


class TufRepo:
    """metadata: file name -> bytes as served; target_files: '<dir>/<sha>.<name>' -> bytes;
    by_sha: sha256 -> bytes (what the MQTT chunk server sends)."""

    def __init__(self, store: KeyStore, passphrase: bytes = PASSPHRASE, *,
                 targets_threshold: int | None = None) -> None:
        self.store = store
        self.root_signer = store.signer("root", passphrase)
        self.targets_signers: list[Signer] = [store.signer("targets", passphrase)]
        self.online: dict[str, Signer] = {r: store.signer(r, passphrase)
                                          for r in ("snapshot", "timestamp")}
        if targets_threshold is None:
            self.root = Metadata[Root].from_file(str(root_path(store)))
        else:
            self.targets_signers += [foreign_signer() for _ in range(targets_threshold - 1)]
            self.root = self._fresh_root(targets_threshold)
        self.targets = Metadata(Targets(expires=_in(30)))
        self.snapshot = Metadata(Snapshot(expires=_in(7)))
        self.timestamp = Metadata(Timestamp(expires=_in(1)))
        self.metadata: dict[str, bytes] = {"1.root.json": self.root.to_bytes(_SER)}
        self.target_files: dict[str, bytes] = {}
        self.by_sha: dict[str, bytes] = {}
        self.history: list[dict[str, bytes]] = []
        self.publish()

    def _fresh_root(self, targets_threshold: int) -> Metadata[Root]:
        root = Root(expires=_in(365), consistent_snapshot=True)
        root.add_key(self.root_signer.public_key, "root")
        for s in self.targets_signers:
            root.add_key(s.public_key, "targets")
        root.roles["targets"].threshold = targets_threshold
        for r, s in self.online.items():
            root.add_key(s.public_key, r)
        md = Metadata(root)
        md.sign(self.root_signer)
        return md

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
        """Every file of a signed bundle as targets under ``bundles/<name>/<version>/``."""
        b = read_bundle(bundle)
        base = f"bundles/{b.manifest.name}/{b.manifest.version}"
        out = {"manifest.json": self.add_target(f"{base}/manifest.json", b.manifest_bytes),
               "signatures.json": self.add_target(f"{base}/signatures.json",
                                                  b.signatures.to_bytes())}
        for ref in b.manifest.files():
            out[ref.path] = self.add_target(f"{base}/{ref.path}", b.read_file(ref.path))
        return out

    def publish(self, *, targets_signers: list[Signer] | None = None,
                timestamp_expires: datetime | None = None) -> None:
        """New targets, snapshot and timestamp versions; targets signed by ``targets_signers``
        (default: the repository's own), the timestamp expiring at ``timestamp_expires``."""
        self.history.append(dict(self.metadata))
        t, s, ts = self.targets.signed, self.snapshot.signed, self.timestamp.signed
        if len(self.history) > 1:
            t.version += 1
            s.version += 1
            ts.version += 1
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

    def rollback_timestamp(self) -> None:
        """Serve the previous (validly signed, older) timestamp again."""
        self.metadata["timestamp.json"] = self.history[-1]["timestamp.json"]

    def tamper(self, filename: str, old: bytes, new: bytes) -> None:
        assert old in self.metadata[filename], f"{old!r} is not in {filename}"
        self.metadata[filename] = self.metadata[filename].replace(old, new)


class HttpRepoServer:
    """Serves ``/tuf/metadata/<file>`` and ``/tuf/targets/<path>`` on 127.0.0.1 only.

    ``overrides``: url path -> body; ``endless``: url paths answered with an endless body (capped
    at 64 MiB; ``sent_bytes`` says how much went out); ``requests``: every path asked for."""

    def __init__(self, repo: TufRepo) -> None:
        self.repo = repo
        self.overrides: dict[str, bytes] = {}
        self.endless: set[str] = set()
        self.sent_bytes: dict[str, int] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if self.path in outer.endless:
                    self.send_response(200)
                    self.end_headers()
                    outer.sent_bytes[self.path] = outer._send_endless(self.wfile)
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

    @staticmethod
    def _send_endless(out: Any) -> int:
        sent = 0
        try:
            while sent < ENDLESS_CAP:
                out.write(b"\0" * 65536)
                sent += 65536
        except OSError:
            pass
        return sent

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

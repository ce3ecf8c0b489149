"""The fleet's TUF trust root, made and rotated offline with the root key.

``root.json`` names which keys may sign each TUF role: the offline ``root`` and ``targets``
keys, and the manager's online ``snapshot`` and ``timestamp`` keys. Devices are provisioned with
it at enrolment; python-tuf's ngclient then enforces TUF's protections from it. The fleet's
repository logic (targets, snapshot, timestamp) lives in :mod:`fleet.repository`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tuf.api.metadata import Metadata, Root
from tuf.api.serialization.json import JSONSerializer

from edgeops.errors import UsageError
from edgeops.fsutil import atomic_write
from edgeops.keys import KeyStore

__all__ = ["TUF_ROLES", "create_root", "root_path", "rotate_root", "trusted_targets_keys"]

TUF_ROLES = ("root", "targets", "snapshot", "timestamp")
ROOT_LIFETIME = timedelta(days=365)


def root_path(store: KeyStore) -> Path:
    return store.home / "trust" / "root.json"


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def create_root(store: KeyStore, passphrase: bytes, version: int = 1,
                previous: Metadata[Root] | None = None,
                targets_threshold: int | None = None) -> Metadata[Root]:
    """Write ``trust/root.json`` naming the store's current keys, signed by the root key.

    Every targets key in the store (``targets``, ``targets-2``, ...) is listed for the targets
    role; ``targets_threshold`` of them must sign (default: the previous root's threshold, else
    1). On rotation (``previous`` given) the new root is also signed by the previous root's key,
    as TUF requires so devices can walk the chain.
    """
    root = Root(version=version, expires=_utcnow() + ROOT_LIFETIME, consistent_snapshot=True)
    for role in TUF_ROLES:
        root.add_key(store.public_key(role), role)
    for name in store.targets_names()[1:]:
        root.add_key(store.public_key(name), "targets")
    if targets_threshold is None:
        targets_threshold = previous.signed.roles["targets"].threshold if previous else 1
    if not 1 <= targets_threshold <= len(root.roles["targets"].keyids):
        raise UsageError(f"a targets threshold of {targets_threshold} needs at least that many "
                         f"targets keys (there are {len(root.roles['targets'].keyids)})",
                         hint="--threshold must be between 1 and --targets-keys")
    root.roles["targets"].threshold = targets_threshold
    md = Metadata(root)
    signer = store.signer("root", passphrase)
    md.sign(signer, append=True)
    if previous is not None:
        for keyid in previous.signed.roles["root"].keyids:
            if keyid != signer.public_key.keyid:
                old = store.home / "keys"
                # the previous root key was moved aside by KeyStore.generate
                for candidate in sorted(old.glob("root.pem.*.old"), reverse=True):
                    from cryptography.hazmat.primitives import serialization
                    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
                        Ed25519PrivateKey,
                    )
                    from securesystemslib.signer import CryptoSigner, SSlibKey

                    priv = serialization.load_pem_private_key(candidate.read_bytes(), passphrase)
                    assert isinstance(priv, Ed25519PrivateKey)
                    pub = SSlibKey.from_crypto(priv.public_key())
                    if pub.keyid == keyid:
                        md.sign(CryptoSigner(priv, pub), append=True)
                        break
    atomic_write(root_path(store), md.to_bytes(JSONSerializer(compact=False)))
    # keep every version: devices that missed some walk the chain 1.root.json, 2.root.json, ...
    atomic_write(root_path(store).with_name(f"{version}.root.json"),
                 md.to_bytes(JSONSerializer(compact=False)))
    return md


def rotate_root(store: KeyStore, passphrase: bytes) -> Metadata[Root]:
    previous = Metadata[Root].from_file(str(root_path(store)))
    return create_root(store, passphrase, previous.signed.version + 1, previous)


def trusted_targets_keys(root: Metadata[Root]) -> tuple[list[object], int]:
    """The keys (and threshold) allowed to sign what may be installed."""
    role = root.signed.roles["targets"]
    return [root.signed.keys[k] for k in role.keyids], role.threshold

"""Ed25519 signatures over a bundle's canonical manifest bytes.

The manifest pins every file in the bundle by SHA-256 and size, so one signature over the
manifest covers the whole bundle. Keys and signatures are securesystemslib objects, the same ones
python-tuf uses, so a bundle's signer is literally the key listed for the ``targets`` role in the
fleet's TUF root.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Key, Signature, Signer

from edgeops.bundle.manifest import canonical_json
from edgeops.errors import InvalidBundleError, VerificationError

__all__ = ["SIGNATURES_SCHEMA", "SignatureSet", "sign_manifest", "verify_signatures"]

SIGNATURES_SCHEMA = "edgeops.signatures/v1"


@dataclass(frozen=True)
class SignatureSet:
    """The signatures file of a bundle: who signed the manifest bytes."""

    signatures: tuple[Signature, ...]

    def to_bytes(self) -> bytes:
        sigs = sorted((s.to_dict() for s in self.signatures), key=lambda s: str(s["keyid"]))
        return canonical_json({"schema": SIGNATURES_SCHEMA, "signed": "manifest.json",
                               "signatures": sigs})

    @classmethod
    def from_bytes(cls, data: bytes) -> SignatureSet:
        try:
            d = json.loads(data.decode("utf-8"))
            if d.get("schema") != SIGNATURES_SCHEMA:
                raise InvalidBundleError(f"signatures file has unknown schema {d.get('schema')!r}")
            sigs = tuple(Signature.from_dict(dict(s)) for s in d["signatures"])
        except InvalidBundleError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidBundleError(f"signatures file is malformed: {exc}") from None
        return cls(sigs)


def sign_manifest(manifest_bytes: bytes, signers: Iterable[Signer]) -> SignatureSet:
    return SignatureSet(tuple(s.sign(manifest_bytes) for s in signers))


def verify_signatures(manifest_bytes: bytes, sigset: SignatureSet, trusted: Sequence[Key],
                      threshold: int = 1) -> list[str]:
    """Return the key ids of trusted keys that signed; raise unless ``threshold`` of them did."""
    if not sigset.signatures:
        raise VerificationError("bundle is unsigned",
                                hint="sign it by building with `edgeops build` after `keys init`")
    by_id = {k.keyid: k for k in trusted}
    good: list[str] = []
    for sig in sigset.signatures:
        key = by_id.get(sig.keyid)
        if key is None or sig.keyid in good:
            continue
        try:
            key.verify_signature(sig, manifest_bytes)
        except UnverifiedSignatureError:
            raise VerificationError(
                f"signature by key {sig.keyid[:12]} does not match the manifest "
                "(manifest or signature altered)") from None
        good.append(sig.keyid)
    if len(good) < threshold:
        foreign = ", ".join(s.keyid[:12] for s in sigset.signatures)
        raise VerificationError(
            f"bundle is not signed by a trusted targets key (signed by: {foreign}; "
            f"{len(good)} of {threshold} required)",
            hint="verify with the fleet's targets key (--key/--root) or re-sign the bundle")
    return good

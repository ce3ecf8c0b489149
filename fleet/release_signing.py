"""Detached, threshold signing of a TUF ``targets`` update: K holders, K machines, one file.

Why this module exists: with ``edgeops keys init --targets-keys N --threshold K`` no machine
holds enough targets keys to publish alone. One holder writes the next ``targets`` version,
signed with what they hold (``edgeops publish --sign-only -o targets.partial.json``); the others
add their signatures to that file on their own machines (``edgeops sign-targets``); whoever
uploads merges the copies (``edgeops publish --with-signatures``). The signed part never changes
after the first holder made it, so every copy can be signed in any order, in parallel or in turn.
Pure: bytes and TUF objects in, TUF objects and counts out; files and the fleet stay in the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, Root, Targets
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from edgeops.bundle import Bundle
from edgeops.errors import VerificationError
from edgeops.floors import floors_of
from fleet.repository import bundle_target_paths

__all__ = ["SigningState", "add_signatures", "check_pins", "merge_partials", "signing_state"]

_SER = JSONSerializer(compact=False)


@dataclass(frozen=True)
class SigningState:
    """How far a targets update is: which trusted keys signed it, and how many must."""

    version: int
    signed_by: tuple[str, ...]
    threshold: int
    floors: dict[str, str]

    @property
    def complete(self) -> bool:
        return len(self.signed_by) >= self.threshold

    def line(self) -> str:
        return (f"targets v{self.version}: {len(self.signed_by)} of {self.threshold} required "
                "targets signatures")


def _parse(data: bytes, where: str) -> Metadata[Targets]:
    try:
        md = Metadata.from_bytes(data)
    except (DeserializationError, ValueError) as exc:
        raise VerificationError(f"{where} is not TUF metadata: {exc}",
                                hint="pass the file `edgeops publish --sign-only` wrote") from None
    if not isinstance(md.signed, Targets):
        raise VerificationError(f"{where} holds {md.signed.type} metadata, not targets",
                                hint="pass the file `edgeops publish --sign-only` wrote")
    return md


def signing_state(root: Metadata[Root], md: Metadata[Targets]) -> SigningState:
    """Valid signatures by the root's targets keys; a signature that does not verify is an error
    (the file was altered after someone signed it), not merely a missing one."""
    result = root.signed.get_verification_result("targets", md.signed_bytes, md.signatures)
    bad = [k for k in md.signatures if k in result.unsigned
           and k in root.signed.roles["targets"].keyids]
    if bad:
        raise VerificationError(f"the signature of targets key {bad[0][:12]} does not match this "
                                "targets update (altered after it was signed?)",
                                hint="start a new round with `edgeops publish --sign-only`")
    return SigningState(md.signed.version, tuple(sorted(result.signed)), result.threshold,
                        floors_of(md.signed))


def merge_partials(files: Sequence[tuple[str, bytes]]) -> Metadata[Targets]:
    """One targets update from several signed copies of it (``(name, bytes)`` each)."""
    if not files:
        raise VerificationError("no targets update given")
    first_name, first = files[0]
    md = _parse(first, first_name)
    for name, data in files[1:]:
        other = _parse(data, name)
        if other.signed_bytes != md.signed_bytes:
            raise VerificationError(f"{name} is a different targets update than {first_name} "
                                    "(not copies of the same --sign-only file)",
                                    hint="every holder must sign the same file")
        for keyid, sig in other.signatures.items():
            md.signatures.setdefault(keyid, sig)
    return md


def add_signatures(md: Metadata[Targets], signers: Sequence[Signer]) -> bytes:
    """Append this machine's signatures (keeping the others) and serialise."""
    for s in signers:
        md.sign(s, append=True)
    return md.to_bytes(_SER)


def check_pins(md: Metadata[Targets], bundle: Bundle) -> None:
    """The update pins every file of ``bundle`` as the bundle has it (what the holder signs)."""
    for path, (length, sha) in bundle_target_paths(bundle).items():
        tf = md.signed.targets.get(path)
        if tf is None or tf.length != length or tf.hashes.get("sha256") != sha:
            raise VerificationError(f"this targets update does not pin {path} as "
                                    f"{bundle.path.name} has it",
                                    hint="sign only the update made for this exact bundle "
                                         "(co-sign the bundle first: `edgeops bundle sign`)")

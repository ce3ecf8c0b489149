"""Signed bundles for the attack suite, signed by whatever list of keys the attack needs."""

from __future__ import annotations

from pathlib import Path

from securesystemslib.signer import Signer

from tests.edgeops.bundles import signed_bundle

__all__ = ["build_bundle"]


def build_bundle(tmp: Path, signers: list[Signer], *, name: str = "tiny", version: str,
                 seed: int, target: str = "x86-cpu") -> Path:
    """A real signed bundle (tiny ONNX model + golden outputs from ONNX Runtime)."""
    return signed_bundle(tmp, signers, name=name, version=version, seed=seed, target=target,
                         provenance="attack-suite")

"""The signed bundle: one file per model version holding manifest, artifacts and signatures."""

from edgeops.bundle.archive import Bundle, file_ref, read_bundle, write_bundle
from edgeops.bundle.lineage import DataDigest, Lineage
from edgeops.bundle.manifest import (
    MANIFEST_SCHEMA,
    ArtifactEntry,
    FileRef,
    Manifest,
    TensorSpec,
    canonical_json,
    parse_version,
)
from edgeops.bundle.signing import SignatureSet, sign_manifest, verify_signatures

__all__ = [
    "MANIFEST_SCHEMA",
    "ArtifactEntry",
    "Bundle",
    "DataDigest",
    "FileRef",
    "Lineage",
    "Manifest",
    "SignatureSet",
    "TensorSpec",
    "canonical_json",
    "file_ref",
    "parse_version",
    "read_bundle",
    "sign_manifest",
    "verify_signatures",
    "write_bundle",
]

"""Tensor-level deltas between two artifacts of one target (format, encoder, applier).

The core contract shared by ``edgeops publish`` (makes deltas), the fleet manager (lists and
serves them as TUF targets) and the device agent (applies them into a new artifact). I/O-free
apart from reading and writing the files it is given; see docs/PROTOCOL.md, "Delta updates".
"""

from edgeops.delta.apply import apply_delta, apply_delta_file, read_delta_header
from edgeops.delta.encode import DEFAULT_LEVEL, Delta, PlannedOp, diff_artifacts, diff_files
from edgeops.delta.format import DeltaError, DeltaHeader, DeltaOp, FileId
from edgeops.delta.tensors import TensorRegion, detect_format, tensor_regions

__all__ = [
    "DEFAULT_LEVEL",
    "Delta",
    "DeltaError",
    "DeltaHeader",
    "DeltaOp",
    "FileId",
    "PlannedOp",
    "TensorRegion",
    "apply_delta",
    "apply_delta_file",
    "delta_file_path",
    "delta_target_path",
    "detect_format",
    "diff_artifacts",
    "diff_files",
    "read_delta_header",
    "tensor_regions",
]


def delta_file_path(target: str, from_sha256: str, to_sha256: str) -> str:
    """A delta's path inside a bundle's TUF directory: named by from- and to-digest."""
    return f"artifacts/{target}/deltas/{from_sha256}-{to_sha256}.edgedelta"


def delta_target_path(name: str, version: str, target: str, from_sha256: str,
                      to_sha256: str) -> str:
    """The TUF target path of the delta that turns one artifact into ``name@version``'s."""
    return f"bundles/{name}/{version}/{delta_file_path(target, from_sha256, to_sha256)}"

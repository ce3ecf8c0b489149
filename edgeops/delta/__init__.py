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
    "delta_target_path",
    "detect_format",
    "diff_artifacts",
    "diff_files",
    "read_delta_header",
    "tensor_regions",
]


def delta_target_path(from_sha256: str, to_sha256: str) -> str:
    """The TUF target path of the delta from one artifact digest to another."""
    return f"deltas/{from_sha256}/{to_sha256}.edgedelta"

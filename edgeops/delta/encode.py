"""Making a delta between two artifacts of one target (publisher side; pure, bytes in and out).

Tensors of the new artifact are matched with the old one's by name, shape and element type:
identical bytes become a ``copy`` (also when a tensor moved or was renamed: matched by content),
changed ones the smallest of ``xor``, ``sub`` and ``lit`` after zstd, unmatched ones ``lit``;
every payload is cut into block frames (see :mod:`edgeops.delta.format`).
Everything between tensors (the graph, protobuf framing, flatbuffer tables) forms one stream,
compressed with the old file's graph bytes as a zstd dictionary, which is what
``zstd --patch-from`` does for the whole file. Whether the result is worth shipping is the
caller's call (:attr:`Delta.worthwhile`: smaller than the full artifact).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from edgeops.delta._blocks import difference
from edgeops.delta.format import (
    BLOCK_BYTES,
    MAX_GRAPH_DICT_BYTES,
    SMALL_TENSOR_BYTES,
    WINDOW_LOG,
    DeltaHeader,
    DeltaOp,
    FileId,
)
from edgeops.delta.tensors import TensorRegion, detect_format, tensor_regions
from edgeops.fsutil import atomic_open

__all__ = ["DEFAULT_LEVEL", "Delta", "PlannedOp", "diff_artifacts", "diff_files"]

DEFAULT_LEVEL = 9          # zstd level: level 19 gains ~3% on weights at 10x the time
# xor/sub diffs are byte planes of BLOCK_BYTES / width bytes each, with very different
# statistics (exponent bytes: few values; low mantissa bytes: noise). zstd's blocks are at most
# its window, and each block gets its own literal Huffman table, so a 1 KiB window gives each
# plane its own tables: 5 % smaller than a 128 KiB window on a fine-tune, 2 % on a retrained
# head (benchmarks/delta). Matches in these planes are rare and short, so the window costs
# nothing; applying does not depend on it (each block frame is decoded in one call).
DIFF_WINDOW_LOG = 10


@dataclass(frozen=True)
class PlannedOp:
    """One op with what it is for, for `edgeops bundle delta` and the publisher's log."""

    op: DeltaOp
    name: str | None          # tensor name; None for graph bytes
    why: str                  # "unchanged", "moved", "changed", "new", "graph"

    @property
    def sent(self) -> int:
        return self.op.payload


@dataclass(frozen=True)
class Delta:
    """A computed delta: header, payloads and what each op is for."""

    header: DeltaHeader
    graph_payload: bytes
    payloads: tuple[bytes, ...]      # in op order, one per op with a payload
    planned: tuple[PlannedOp, ...]

    @property
    def size(self) -> int:
        return len(self.header.encode()) + self.header.payload_bytes

    @property
    def worthwhile(self) -> bool:
        """Smaller than sending the new artifact whole (otherwise ship the full artifact)."""
        return self.size < self.header.to.size

    def to_bytes(self) -> bytes:
        return b"".join((self.header.encode(), self.graph_payload, *self.payloads))

    def write(self, path: Path) -> Path:
        with atomic_open(path) as f:
            f.write(self.header.encode())
            f.write(self.graph_payload)
            for p in self.payloads:
                f.write(p)
        return path

    def summary(self) -> dict[str, Any]:
        """Counts and bytes per kind of tensor change, for planning and logs."""
        groups: dict[str, dict[str, int]] = {}
        for p in self.planned:
            g = groups.setdefault(p.why, {"count": 0, "bytes": 0, "sent": 0})
            g["count"] += 1
            g["bytes"] += p.op.length
            g["sent"] += p.sent
        g = groups.setdefault("graph", {"count": 0, "bytes": 0, "sent": 0})
        g["sent"] += len(self.graph_payload)
        return {"format": self.header.fmt, "from": self.header.base.to_dict(),
                "to": self.header.to.to_dict(), "delta_bytes": self.size,
                "full_bytes": self.header.to.size,
                "ratio": round(self.size / max(1, self.header.to.size), 6),
                "worthwhile": self.worthwhile, "tensors": groups}


def _params(level: int) -> zstandard.ZstdCompressionParameters:
    """The level's parameters with the window capped, so applying stays in bounded memory."""
    p = zstandard.ZstdCompressionParameters.from_level(level)
    return zstandard.ZstdCompressionParameters.from_level(
        level, window_log=min(p.window_log, WINDOW_LOG))


def _diff_params(level: int) -> zstandard.ZstdCompressionParameters:
    return zstandard.ZstdCompressionParameters.from_level(level, window_log=DIFF_WINDOW_LOG)


def _file_id(data: memoryview) -> FileId:
    return FileId(hashlib.sha256(data).hexdigest(), len(data))


def _gaps(regions: list[TensorRegion], size: int) -> list[tuple[int, int]]:
    out, pos = [], 0
    for r in regions:
        if r.offset > pos:
            out.append((pos, r.offset - pos))
        pos = r.offset + r.length
    if size > pos:
        out.append((pos, size - pos))
    return out


def _block_frames(data: bytes | memoryview, compress: Callable[[bytes], bytes]) -> bytes:
    """``data`` as block frames: per :data:`BLOCK_BYTES`, a u32 length and one zstd frame."""
    out: list[bytes] = []
    for i in range(0, len(data), BLOCK_BYTES):
        frame = compress(bytes(data[i:i + BLOCK_BYTES]))
        out += (struct.pack(">I", len(frame)), frame)
    return b"".join(out)


def _diff_payload(kind: str, old: memoryview, new: memoryview, width: int,
                  compress: Callable[[bytes], bytes]) -> bytes:
    return _block_frames(b"".join(
        difference(kind, old[i:i + BLOCK_BYTES], new[i:i + BLOCK_BYTES], width)
        for i in range(0, len(new), BLOCK_BYTES)), compress)


def diff_artifacts(old: bytes | memoryview, new: bytes | memoryview, *,
                   level: int = DEFAULT_LEVEL) -> Delta:
    """The delta that turns ``old`` into ``new`` (any two files; tensor-aware for ONNX/TFLite)."""
    o, n = memoryview(old).cast("B"), memoryview(new).cast("B")
    fmt = detect_format(n)
    # small tensors (scales, zero points, biases) cost more as ops than inside the graph
    # stream, where the old graph (and their old values) is the dictionary
    new_regions = [r for r in tensor_regions(n, fmt) if r.length >= SMALL_TENSOR_BYTES]
    old_regions = [r for r in tensor_regions(o, detect_format(o))
                   if r.length >= SMALL_TENSOR_BYTES] if fmt != "bytes" else []
    by_key: dict[tuple[str, tuple[int, ...], str], TensorRegion] = {}
    by_digest: dict[bytes, TensorRegion] = {}
    for r in old_regions:
        by_key.setdefault(r.key, r)
        by_digest.setdefault(hashlib.sha256(o[r.offset:r.offset + r.length]).digest(), r)
    cctx = zstandard.ZstdCompressor(compression_params=_params(level))
    diff_cctx = zstandard.ZstdCompressor(compression_params=_diff_params(level))

    ops: list[PlannedOp] = []
    payloads: list[bytes] = []
    graph: list[memoryview] = []
    pos = 0

    def add_graph(end: int) -> None:
        if end > pos:
            graph.append(n[pos:end])
            ops.append(PlannedOp(DeltaOp("graph", end - pos), None, "graph"))

    for r in new_regions:
        add_graph(r.offset)
        data = n[r.offset:r.offset + r.length]
        match = by_key.get(r.key)
        if match is not None and match.length == r.length and \
                o[match.offset:match.offset + match.length] == data:
            ops.append(PlannedOp(DeltaOp("copy", r.length, match.offset), r.name, "unchanged"))
        elif (moved := by_digest.get(hashlib.sha256(data).digest())) is not None:
            ops.append(PlannedOp(DeltaOp("copy", r.length, moved.offset), r.name, "moved"))
        else:
            best = _block_frames(data, cctx.compress)
            op = DeltaOp("lit", r.length, payload=len(best))
            why = "new"
            if match is not None and match.length == r.length:
                why = "changed"
                width = r.width if r.length % r.width == 0 else 1
                base = o[match.offset:match.offset + match.length]
                for kind in ("xor", "sub"):
                    cand = _diff_payload(kind, base, data, width, diff_cctx.compress)
                    if len(cand) < len(best):
                        best = cand
                        op = DeltaOp(kind, r.length, match.offset, width, len(cand))
            ops.append(PlannedOp(op, r.name, why))
            payloads.append(best)
        pos = r.offset + r.length
    add_graph(len(n))

    old_gaps = _gaps(old_regions, len(o))
    if sum(length for _, length in old_gaps) > MAX_GRAPH_DICT_BYTES:
        old_gaps = []
    stream = b"".join(graph)
    if old_gaps:
        dict_bytes = b"".join(bytes(o[s:s + length]) for s, length in old_gaps)
        zdict = zstandard.ZstdCompressionDict(dict_bytes, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        zdict.precompute_compress(compression_params=_params(level))   # once, not per block
        graph_payload = _block_frames(stream, zstandard.ZstdCompressor(
            dict_data=zdict, compression_params=_params(level)).compress)
    else:
        graph_payload = _block_frames(stream, cctx.compress)
    header = DeltaHeader(fmt=fmt, base=_file_id(o), to=_file_id(n),
                         ops=tuple(p.op for p in ops), graph_length=len(stream),
                         graph_payload=len(graph_payload), graph_dict=tuple(old_gaps))
    return Delta(header, graph_payload, tuple(payloads), tuple(ops))


def diff_files(old: Path, new: Path, *, level: int = DEFAULT_LEVEL) -> Delta:
    """:func:`diff_artifacts` over two files on disk."""
    return diff_artifacts(Path(old).read_bytes(), Path(new).read_bytes(), level=level)

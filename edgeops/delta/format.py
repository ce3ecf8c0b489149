"""The ``.edgedelta`` file: a header of typed operations, then their compressed payloads.

Layout (see docs/PROTOCOL.md, "Delta updates")::

    b"EDGEDLT2"                 magic (8 bytes)
    u32 big-endian              header length
    header                      canonical JSON, schema edgeops.delta/v2, as one zstd frame
    graph payload               block frames of the graph stream (dictionary: old graph bytes)
    op payloads                 block frames of each op that has a payload, in op order

Every payload is a run of *block frames*: a big-endian u32 length, then one zstd frame holding
the next :data:`BLOCK_BYTES` (the last one: fewer) of that op's bytes (or of the graph
stream), its content size in the frame header. A block frame is decompressed in one call into
a buffer of its own size, so applying needs one zstd context and a few blocks, never a
streaming window (v1 used one streaming frame per payload: 0.25-0.75 MiB of buffers).

The header says how to write the new artifact from first byte to last, one op at a time:

=========  ===================================  ==============================================
op         fields                                new bytes
=========  ===================================  ==============================================
``copy``   old offset, length                    the old file's bytes (unchanged tensor)
``xor``    old offset, length, width, payload    old XOR diff (diff bytes transposed per width)
``sub``    old offset, length, width, payload    old + diff, element-wise modulo 2^(8*width)
``lit``    length, payload                       the payload itself (new tensor)
``graph``  length                                the next bytes of the graph stream
=========  ===================================  ==============================================

Every offset and length is checked against the declared sizes when the header is parsed, and
the payload lengths must add up to the file's size exactly, so a truncated or padded delta is
refused before a byte is written. The result is only trusted once its SHA-256 and size match
the header's ``to`` *and* what the caller's signed metadata says.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

import zstandard

from edgeops.bundle.manifest import canonical_json
from edgeops.errors import BadContentError

__all__ = [
    "BLOCK_BYTES",
    "DELTA_SCHEMA",
    "FRAME_PREFIX",
    "MAGIC",
    "MAX_FRAME_BYTES",
    "SMALL_TENSOR_BYTES",
    "WINDOW_LOG",
    "DeltaError",
    "DeltaHeader",
    "DeltaOp",
    "FileId",
    "read_header",
]

MAGIC = b"EDGEDLT2"
DELTA_SCHEMA = "edgeops.delta/v2"
BLOCK_BYTES = 32 * 1024           # one zstd frame per block: bounded memory when applying
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_GRAPH_DICT_BYTES = 16 * 1024 * 1024
WINDOW_LOG = 17                   # largest zstd window a frame may declare (128 KiB)
FRAME_PREFIX = 4                  # u32 big-endian length before each block frame
MAX_FRAME_BYTES = BLOCK_BYTES + 1024   # above zstd's compress bound of one block
SMALL_TENSOR_BYTES = 4096         # smaller tensors travel in the graph stream (less overhead)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KINDS = {"copy": 2, "xor": 4, "sub": 4, "lit": 2, "graph": 1}
_WIDTHS = (1, 2, 4, 8)


class DeltaError(BadContentError):
    """A delta that cannot be applied: malformed, truncated, or made for other files."""

    default_hint = "fetch the full artifact instead (the agent does this by itself)"


@dataclass(frozen=True)
class FileId:
    """An artifact a delta starts from or yields, by digest and size."""

    sha256: str
    size: int

    @classmethod
    def from_dict(cls, d: Any, where: str) -> FileId:
        if not isinstance(d, dict):
            raise DeltaError(f"delta header: {where} is not an object")
        sha, size = d.get("sha256"), d.get("size")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise DeltaError(f"delta header: {where}.sha256 is not a hex SHA-256 digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise DeltaError(f"delta header: {where}.size is not a size")
        return cls(sha, size)

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class DeltaOp:
    """One step of reconstruction (see the module docstring for the kinds)."""

    kind: str
    length: int
    old_offset: int = 0
    width: int = 1
    payload: int = 0          # compressed bytes in the delta file

    def to_list(self) -> list[Any]:
        if self.kind == "copy":
            return ["copy", self.old_offset, self.length]
        if self.kind in ("xor", "sub"):
            return [self.kind, self.old_offset, self.length, self.width, self.payload]
        if self.kind == "lit":
            return ["lit", self.length, self.payload]
        return ["graph", self.length]

    @classmethod
    def from_list(cls, raw: Any, i: int) -> DeltaOp:
        if not isinstance(raw, list) or not raw or raw[0] not in _KINDS:
            raise DeltaError(f"delta header: op {i} is not a known operation")
        kind, args = raw[0], raw[1:]
        if len(args) != _KINDS[kind] or not all(
                isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in args):
            raise DeltaError(f"delta header: op {i} ({kind}) has bad fields")
        if kind == "copy":
            return cls(kind, args[1], old_offset=args[0])
        if kind in ("xor", "sub"):
            if args[2] not in _WIDTHS or args[1] % args[2]:
                raise DeltaError(f"delta header: op {i} has element width {args[2]}")
            return cls(kind, args[1], old_offset=args[0], width=args[2], payload=args[3])
        if kind == "lit":
            return cls(kind, args[0], payload=args[1])
        return cls(kind, args[0])


@dataclass(frozen=True)
class DeltaHeader:
    """A parsed, validated header: ``ops`` write exactly ``to.size`` bytes from ``base``."""

    fmt: str
    base: FileId
    to: FileId
    ops: tuple[DeltaOp, ...]
    graph_length: int                       # uncompressed size of the graph stream
    graph_payload: int                      # its compressed size
    graph_dict: tuple[tuple[int, int], ...]  # (offset, length) spans of the old file

    def __post_init__(self) -> None:
        if sum(op.length for op in self.ops) != self.to.size:
            raise DeltaError("delta header: operations do not add up to the new file's size")
        if sum(op.length for op in self.ops if op.kind == "graph") != self.graph_length:
            raise DeltaError("delta header: graph operations do not match the graph stream")
        for i, op in enumerate(self.ops):
            if op.kind in ("copy", "xor", "sub") and op.old_offset + op.length > self.base.size:
                raise DeltaError(f"delta header: op {i} reads past the end of the old file")
        if sum(n for _, n in self.graph_dict) > MAX_GRAPH_DICT_BYTES or any(
                o + n > self.base.size for o, n in self.graph_dict):
            raise DeltaError("delta header: graph dictionary is out of bounds")

    @property
    def payload_bytes(self) -> int:
        return self.graph_payload + sum(op.payload for op in self.ops)

    def to_bytes(self) -> bytes:
        return canonical_json({
            "schema": DELTA_SCHEMA, "format": self.fmt, "block": BLOCK_BYTES,
            "from": self.base.to_dict(), "to": self.to.to_dict(),
            "graph": {"length": self.graph_length, "payload": self.graph_payload,
                      "dict": [list(s) for s in self.graph_dict]},
            "ops": [op.to_list() for op in self.ops]})

    def encode(self) -> bytes:
        """Magic, length and header: what precedes the payloads."""
        body = zstandard.ZstdCompressor(level=19).compress(self.to_bytes())
        return MAGIC + struct.pack(">I", len(body)) + body

    @classmethod
    def from_bytes(cls, body: bytes) -> DeltaHeader:
        try:
            d = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise DeltaError("delta header is not valid JSON") from None
        if not isinstance(d, dict) or d.get("schema") != DELTA_SCHEMA:
            raise DeltaError(f"delta header is not {DELTA_SCHEMA}",
                             hint="the delta was made by another edgeops version; fetch the "
                                  "full artifact")
        if d.get("block") != BLOCK_BYTES:
            raise DeltaError("delta header: unsupported block size")
        graph, ops = d.get("graph"), d.get("ops")
        if not isinstance(graph, dict) or not isinstance(ops, list):
            raise DeltaError("delta header lacks graph or ops")
        spans = graph.get("dict")
        lengths = (graph.get("length"), graph.get("payload"))
        if not isinstance(spans, list) or not all(
                isinstance(s, list) and len(s) == 2 and all(
                    isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in s)
                for s in spans) or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in lengths):
            raise DeltaError("delta header: graph section has bad fields")
        fmt = d.get("format")
        return cls(fmt=fmt if isinstance(fmt, str) else "bytes",
                   base=FileId.from_dict(d.get("from"), "from"),
                   to=FileId.from_dict(d.get("to"), "to"),
                   ops=tuple(DeltaOp.from_list(op, i) for i, op in enumerate(ops)),
                   graph_length=int(lengths[0]), graph_payload=int(lengths[1]),  # type: ignore[arg-type]
                   graph_dict=tuple((s[0], s[1]) for s in spans))


def read_header(prefix: bytes, file_size: int) -> tuple[DeltaHeader, int]:
    """Parse the header from the first bytes of a delta; returns it and where payloads start.

    ``prefix`` must hold at least the header (callers read ``12 + MAX_HEADER_BYTES`` at most).
    The payload lengths must fill the rest of the file exactly.
    """
    if len(prefix) >= 8 and prefix[:7] == MAGIC[:7] and prefix[:8] != MAGIC:
        raise DeltaError(f"delta format {bytes(prefix[7:8]).decode('latin-1')!r} is not the "
                         f"{MAGIC[7:].decode()!r} this edgeops reads",
                         hint="the delta was made by another edgeops version; fetch the full "
                              "artifact")
    if len(prefix) < 12 or prefix[:8] != MAGIC:
        raise DeltaError("not an edgeops delta (bad magic)")
    (n,) = struct.unpack(">I", prefix[8:12])
    if n > MAX_HEADER_BYTES:
        raise DeltaError(f"delta header is {n} bytes, over the {MAX_HEADER_BYTES} limit")
    if len(prefix) < 12 + n:
        raise DeltaError("delta is truncated inside its header")
    try:
        body = zstandard.ZstdDecompressor().decompress(bytes(prefix[12:12 + n]),
                                                       max_output_size=MAX_HEADER_BYTES)
    except zstandard.ZstdError:
        raise DeltaError("delta header is corrupt or over the size limit") from None
    header = DeltaHeader.from_bytes(body)
    if 12 + n + header.payload_bytes != file_size:
        raise DeltaError(f"delta is {file_size} bytes but its header accounts for "
                         f"{12 + n + header.payload_bytes} (truncated or padded)")
    return header, 12 + n

"""Applying a delta (device side): old artifact + delta file -> new artifact, streamed.

Memory stays bounded by a few :data:`~edgeops.delta.format.BLOCK_BYTES` blocks, the graph
dictionary and one zstd decompression context, whatever the model's size: the old file is read
block by block at the offsets the header names, each block frame is decompressed in one call
into a buffer of its own size (no streaming window), and the output is hashed as it is
written.

Nothing is trusted until the end: the header is checked against the file size (so a truncated
delta fails before any work), the old file against the header's ``from`` digest (a delta for a
version this device does not hold fails here), and the result against the header's ``to`` *and*
the caller's ``expect`` (the signed length and hash of the new artifact). Use
:func:`apply_delta_file` to get all-or-nothing on disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

import zstandard

from edgeops.delta._blocks import combine
from edgeops.delta.format import (
    BLOCK_BYTES,
    FRAME_PREFIX,
    MAGIC,
    MAX_FRAME_BYTES,
    MAX_HEADER_BYTES,
    WINDOW_LOG,
    DeltaError,
    DeltaHeader,
    FileId,
    read_header,
)
from edgeops.fsutil import atomic_open

__all__ = ["apply_delta", "apply_delta_file", "read_delta_header"]


class _Frames:
    """The block frames of one payload ``[start, start + length)`` of the delta file.

    Each :meth:`block` reads one length-prefixed zstd frame and decompresses it in one call
    (no streaming window): the only buffers are the frame and its output.
    """

    def __init__(self, f: BinaryIO, start: int, length: int,
                 dctx: zstandard.ZstdDecompressor, what: str) -> None:
        self._f, self._pos, self._end, self._dctx, self._what = f, start, start + length, dctx, what

    def block(self, n: int) -> bytes:
        """The next ``n`` bytes (one block frame's content, exactly ``n`` bytes long)."""
        head = _pread(self._f, self._pos, FRAME_PREFIX) if self._pos + FRAME_PREFIX <= \
            self._end else b""
        size = int.from_bytes(head, "big") if head else -1
        if size > MAX_FRAME_BYTES:
            raise DeltaError(f"delta payload for {self._what} has a block frame of {size} bytes, "
                             f"more than one block compresses to ({MAX_FRAME_BYTES})")
        if size < 0 or self._pos + FRAME_PREFIX + size > self._end:
            raise DeltaError(f"delta payload for {self._what} is shorter than declared")
        frame = _pread(self._f, self._pos + FRAME_PREFIX, size)
        self._pos += FRAME_PREFIX + size
        data: bytes = self._dctx.decompress(frame, max_output_size=n)
        if len(data) != n:
            raise DeltaError(f"delta payload for {self._what} has a block of {len(data)} bytes, "
                             f"not {n}")
        return data

    def done(self) -> bool:
        return self._pos == self._end


def _pread(f: BinaryIO, offset: int, n: int) -> bytes:
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:
        raise DeltaError("the old artifact is shorter than the delta expects")
    return data


def read_delta_header(delta: Path) -> tuple[DeltaHeader, int]:
    """The validated header of a delta file and the offset of its first payload."""
    size = Path(delta).stat().st_size
    with open(delta, "rb") as f:
        head = f.read(12)
        if len(head) == 12 and head[:8] == MAGIC:
            n = int.from_bytes(head[8:12], "big")
            head += f.read(min(n, MAX_HEADER_BYTES + 1))
    return read_header(head, size)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK_BYTES):
            h.update(block)
    return h.hexdigest()


def apply_delta(base: Path, delta: Path, out: BinaryIO, *,
                expect: FileId | None = None) -> FileId:
    """Write the new artifact to ``out``; raise :class:`DeltaError` on any mismatch.

    ``out`` may hold partial output after an error: write to a temporary file (as
    :func:`apply_delta_file` does) and keep it only on success.
    """
    header, start = read_delta_header(delta)
    if expect is not None and header.to != expect:
        raise DeltaError(f"delta yields {header.to.sha256[:12]} ({header.to.size} bytes), not "
                         f"the signed artifact {expect.sha256[:12]} ({expect.size} bytes)")
    try:
        base_size = Path(base).stat().st_size
    except OSError as exc:
        raise DeltaError(f"the old artifact {base} cannot be read ({exc.strerror})") from None
    if base_size != header.base.size or _sha256_file(base) != header.base.sha256:
        raise DeltaError(f"delta was made from {header.base.sha256[:12]}, which this device "
                         "does not hold")
    h = hashlib.sha256()
    written = 0

    def emit(data: bytes | memoryview) -> None:
        nonlocal written
        h.update(data)
        written += len(data)
        out.write(data)

    try:
        with open(base, "rb") as old, open(delta, "rb") as df:
            zdict = (zstandard.ZstdCompressionDict(
                b"".join(_pread(old, o, n) for o, n in header.graph_dict),
                dict_type=zstandard.DICT_TYPE_RAWCONTENT) if header.graph_dict else None)
            # one context for every frame (frames made without the dictionary never refer to it)
            dctx = zstandard.ZstdDecompressor(dict_data=zdict, max_window_size=1 << WINDOW_LOG)
            graph = _Frames(df, start, header.graph_payload, dctx, "the graph stream")
            pending = memoryview(b"")          # decoded graph bytes not yet written
            graph_left = header.graph_length
            pos = start + header.graph_payload
            for i, op in enumerate(header.ops):
                what = f"op {i} ({op.kind})"
                if op.kind == "graph":
                    need = op.length
                    while need:
                        if not pending:
                            pending = memoryview(graph.block(min(BLOCK_BYTES,
                                                                 graph_left)))
                            graph_left -= len(pending)
                        take = min(need, len(pending))
                        emit(pending[:take])
                        pending, need = pending[take:], need - take
                    continue
                if op.kind == "copy":
                    for k in range(0, op.length, BLOCK_BYTES):
                        emit(_pread(old, op.old_offset + k, min(BLOCK_BYTES, op.length - k)))
                    continue
                frames = _Frames(df, pos, op.payload, dctx, what)
                pos += op.payload
                for k in range(0, op.length, BLOCK_BYTES):
                    n = min(BLOCK_BYTES, op.length - k)
                    block = frames.block(n)
                    emit(block if op.kind == "lit" else
                         combine(op.kind, _pread(old, op.old_offset + k, n), block, op.width))
                if not frames.done():
                    raise DeltaError(f"delta payload for {what} is longer than declared")
            if pending or not graph.done():
                raise DeltaError("delta graph stream is longer than its operations")
    except zstandard.ZstdError as exc:
        raise DeltaError(f"delta payload is corrupt ({exc})") from None
    got = FileId(h.hexdigest(), written)
    if got != header.to:
        raise DeltaError(f"reconstruction gave {got.sha256[:12]} ({got.size} bytes), not the "
                         f"{header.to.sha256[:12]} ({header.to.size} bytes) the delta promises "
                         "(delta corrupted)")
    return got


def apply_delta_file(base: Path, delta: Path, dest: Path, *,
                     expect: FileId | None = None) -> FileId:
    """:func:`apply_delta` into ``dest`` atomically: on any error ``dest`` is left as it was."""
    with atomic_open(dest) as out:
        return apply_delta(base, delta, out, expect=expect)

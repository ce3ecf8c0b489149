"""Where the tensors lie inside an ONNX or TFLite file: name, shape, element width, byte span.

Why it exists: a tensor-level delta needs to know which bytes of an artifact are weights and
which are graph, without loading the model (the device may not hold the converter's
dependencies, and the publisher should not pay a full protobuf parse for a byte map). Both
formats are walked with a few dozen lines of wire-format reading: protobuf fields for ONNX
(``ModelProto.graph.initializer[*].raw_data``), flatbuffer tables for TFLite
(``Model.buffers[*].data``, named through ``SubGraph.tensors``). Anything the walker does not
understand yields no tensors (the whole file is then "graph"), never an error: the delta stays
correct, only larger.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["TensorRegion", "detect_format", "tensor_regions"]

# ONNX TensorProto.DataType -> bytes per element (types not listed: treated as bytes)
_ONNX_WIDTH = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8,
               16: 2}
_ONNX_DTYPE = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
               7: "int64", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
               16: "bfloat16"}
# TFLite TensorType -> (name, bytes per element)
_TFL_TYPE = {0: ("float32", 4), 1: ("float16", 2), 2: ("int32", 4), 3: ("uint8", 1),
             4: ("int64", 8), 6: ("bool", 1), 7: ("int16", 2), 9: ("int8", 1),
             10: ("float64", 8), 12: ("uint64", 8), 15: ("uint32", 4), 16: ("uint16", 2)}


@dataclass(frozen=True)
class TensorRegion:
    """One tensor's raw bytes inside an artifact file."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    width: int            # bytes per element (1 when unknown)
    offset: int
    length: int

    @property
    def key(self) -> tuple[str, tuple[int, ...], str]:
        """What matches a tensor across versions: name and shape (and element type)."""
        return self.name, self.shape, self.dtype


class _Malformed(Exception):
    pass


def detect_format(data: bytes | memoryview) -> str:
    """``"tflite"``, ``"onnx"`` or ``"bytes"`` (anything else: no tensor map)."""
    if len(data) >= 8 and bytes(data[4:8]) == b"TFL3":
        return "tflite"
    if len(data) >= 2 and data[0] == 0x08:     # ModelProto field 1 (ir_version), varint
        return "onnx"
    return "bytes"


def tensor_regions(data: bytes | memoryview, fmt: str | None = None) -> list[TensorRegion]:
    """The tensors of an artifact, sorted by offset and never overlapping; [] if unparsable."""
    mv = memoryview(data)
    fmt = fmt or detect_format(mv)
    try:
        if fmt == "onnx":
            regions = _onnx(mv)
        elif fmt == "tflite":
            regions = _tflite(mv)
        else:
            return []
    except (_Malformed, struct.error, IndexError, UnicodeDecodeError, ValueError):
        return []
    regions = sorted((r for r in regions if r.length > 0), key=lambda r: r.offset)
    out: list[TensorRegion] = []
    end = 0
    for r in regions:                 # shared buffers or odd files: keep the first claim
        if r.offset >= end and r.offset + r.length <= len(mv):
            out.append(r)
            end = r.offset + r.length
    return out


# -- protobuf (ONNX) -------------------------------------------------------------------------
def _varint(mv: memoryview, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("varint")
        b = mv[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(mv: memoryview, start: int, end: int):  # type: ignore[no-untyped-def]
    """Yield (field number, wire type, value or (offset, length)) for one message."""
    pos = start
    while pos < end:
        key, pos = _varint(mv, pos, end)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(mv, pos, end)
            yield num, wire, value
        elif wire == 1:
            pos += 8
            yield num, wire, None
        elif wire == 2:
            length, pos = _varint(mv, pos, end)
            if pos + length > end:
                raise _Malformed("length")
            yield num, wire, (pos, length)
            pos += length
        elif wire == 5:
            pos += 4
            yield num, wire, None
        else:
            raise _Malformed("group")
    if pos != end:
        raise _Malformed("overrun")


def _onnx(mv: memoryview) -> list[TensorRegion]:
    out: list[TensorRegion] = []
    for num, wire, val in _fields(mv, 0, len(mv)):
        if num == 7 and wire == 2:                       # ModelProto.graph
            gstart, glen = val
            for gnum, gwire, gval in _fields(mv, gstart, gstart + glen):
                if gnum == 5 and gwire == 2:             # GraphProto.initializer
                    r = _onnx_tensor(mv, gval[0], gval[0] + gval[1])
                    if r is not None:
                        out.append(r)
    return out


def _onnx_tensor(mv: memoryview, start: int, end: int) -> TensorRegion | None:
    dims: list[int] = []
    dtype, name, span, width = 0, "", None, 1
    for num, wire, val in _fields(mv, start, end):
        if num == 1 and wire == 0:
            dims.append(val)
        elif num == 1 and wire == 2:                     # packed dims
            p, e = val[0], val[0] + val[1]
            while p < e:
                d, p = _varint(mv, p, e)
                dims.append(d)
        elif num == 2 and wire == 0:
            dtype = val
        elif num == 8 and wire == 2:
            name = bytes(mv[val[0]:val[0] + val[1]]).decode("utf-8")
        elif num == 9 and wire == 2:                     # raw_data
            span, width = val, 0
        elif num in (4, 10) and wire == 2 and span is None:   # packed float/double data
            span, width = val, 4 if num == 4 else 8
    if span is None or not name:
        return None
    if width == 0:
        width = _ONNX_WIDTH.get(dtype, 1)
    if span[1] % width:
        width = 1
    return TensorRegion(name, tuple(dims), _ONNX_DTYPE.get(dtype, f"onnx{dtype}"), width,
                        span[0], span[1])


# -- flatbuffers (TFLite) --------------------------------------------------------------------
class _Table:
    def __init__(self, mv: memoryview, pos: int) -> None:
        if pos + 4 > len(mv):
            raise _Malformed("table")
        self.mv, self.pos = mv, pos
        self.vt = pos - struct.unpack_from("<i", mv, pos)[0]
        if not 0 <= self.vt <= len(mv) - 4:
            raise _Malformed("vtable")
        self.vt_len = struct.unpack_from("<H", mv, self.vt)[0]

    def _field(self, index: int) -> int:
        slot = 4 + 2 * index
        if slot + 2 > self.vt_len:
            return 0
        off: int = struct.unpack_from("<H", self.mv, self.vt + slot)[0]
        return self.pos + off if off else 0

    def ref(self, index: int) -> int:
        p = self._field(index)
        return p + struct.unpack_from("<I", self.mv, p)[0] if p else 0

    def scalar(self, index: int, fmt: str, default: int) -> int:
        p = self._field(index)
        return int(struct.unpack_from(fmt, self.mv, p)[0]) if p else default

    def vector(self, index: int) -> tuple[int, int]:
        """(position of the first element, element count); (0, 0) when absent."""
        p = self.ref(index)
        if not p:
            return 0, 0
        n: int = struct.unpack_from("<I", self.mv, p)[0]
        if p + 4 + n > len(self.mv):
            raise _Malformed("vector")
        return p + 4, n

    def tables(self, index: int) -> list[_Table]:
        first, n = self.vector(index)
        return [_Table(self.mv, first + 4 * i + struct.unpack_from("<I", self.mv, first + 4 * i)[0])
                for i in range(n)]

    def string(self, index: int) -> str:
        first, n = self.vector(index)
        return bytes(self.mv[first:first + n]).decode("utf-8") if n else ""


def _tflite(mv: memoryview) -> list[TensorRegion]:
    model = _Table(mv, struct.unpack_from("<I", mv, 0)[0])
    named: dict[int, tuple[str, tuple[int, ...], str, int]] = {}
    for sg_index, sg in enumerate(model.tables(2)):                  # Model.subgraphs
        for tensor in sg.tables(0):                                   # SubGraph.tensors
            buf = tensor.scalar(2, "<I", 0)                           # Tensor.buffer
            if buf == 0 or buf in named:
                continue
            first, n = tensor.vector(0)                               # Tensor.shape
            shape = tuple(struct.unpack_from(f"<{n}i", mv, first)) if n else ()
            dtype, width = _TFL_TYPE.get(tensor.scalar(1, "<b", 0), ("bytes", 1))
            name = tensor.string(3) or f"subgraph{sg_index}/tensor"
            named[buf] = (name, shape, dtype, width)
    out: list[TensorRegion] = []
    for i, buffer in enumerate(model.tables(4)):                      # Model.buffers
        first, n = buffer.vector(0)                                   # Buffer.data
        offset, size = buffer.scalar(1, "<Q", 0), buffer.scalar(2, "<Q", 0)
        if not n and offset > 1:                                      # data after the flatbuffer
            first, n = offset, size
        if not n:
            continue
        name, shape, dtype, width = named.get(i, (f"buffer{i}", (), "bytes", 1))
        out.append(TensorRegion(name, shape, dtype, width if n % width == 0 else 1, first, n))
    return out

"""The compact wire form of a drift sketch's counts, shared by the agent and the manager.

Why it exists: a sketch is sent every window whatever the traffic, so on a quiet device its
size is the whole cost of drift detection (issue 18's goal: under 1 % of the raw inputs).
Counts as JSON with feature names as keys spend most of their bytes on names and digits. The
signed reference already fixes which features there are, in which order, and how many bins
each has, so the agent sends only the numbers: every feature's counts in the reference's
feature order, each count an unsigned LEB128 varint, the whole compressed with zlib and
base64'd into one JSON string (``counts_z`` in the ``drift_sketch`` record, docs/DRIFT.md).

Decoding is where untrusted bytes enter the manager, so it is strict and bounded: the
decompressed size is capped by the bins the reference expects (a zlib bomb stops there), the
stream must end exactly (no short or trailing data), and the number of counts must equal the
bins. Varints are unsigned, so a negative count cannot be expressed. Pure: no I/O, no reference
import; callers pass the bins per feature.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Sequence

from edgeops.errors import BadContentError

__all__ = ["MAX_COUNT", "MAX_VARINT_BYTES", "PACKED_FIELD", "SketchEncodingError",
           "pack_counts", "unpack_counts"]

PACKED_FIELD = "counts_z"       # the record's field holding the packed counts
MAX_VARINT_BYTES = 5            # 35 bits: above the intake's bound (1,024 x 10 million samples)
MAX_COUNT = (1 << (7 * MAX_VARINT_BYTES)) - 1
# Huffman coding alone: on a window's ~250 small counts LZ77 matches rarely pay for their
# codes, and this strategy spends fewer bytes (measured in benchmarks/drift.py, "bytes")
_STRATEGY = zlib.Z_HUFFMAN_ONLY


class SketchEncodingError(BadContentError):
    """Packed counts that cannot be decoded against the reference's bins.

    ``reason`` is the intake's refusal reason: ``bad-encoding`` (not base64, not a complete
    zlib stream, data after it, over the size cap, a cut or over-long varint) or
    ``bins-mismatch`` (more or fewer counts than the reference has bins)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _varints(counts: Sequence[Sequence[int]]) -> bytes:
    out = bytearray()
    for feature in counts:
        for v in feature:
            v = int(v)
            if not 0 <= v <= MAX_COUNT:
                raise ValueError(f"count {v} is outside 0..{MAX_COUNT}")
            while v >= 0x80:
                out.append((v & 0x7F) | 0x80)
                v >>= 7
            out.append(v)
    return bytes(out)


def pack_counts(counts: Sequence[Sequence[int]], *, level: int = 9,
                strategy: int = _STRATEGY) -> str:
    """Per feature (the reference's order, every bin, zeros too) -> the ``counts_z`` string.

    A count outside 0..:data:`MAX_COUNT` is a ValueError (the agent's own bug, not input)."""
    c = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, 9, strategy)
    data = c.compress(_varints(counts)) + c.flush()
    return base64.b64encode(data).decode("ascii")


def unpack_counts(text: str, bins: Sequence[int]) -> list[list[int]]:
    """The ``counts_z`` string -> per feature its counts, ``len(result[i]) == bins[i]``.

    Raises :class:`SketchEncodingError` with the refusal reason; never reads more than
    ``sum(bins) * MAX_VARINT_BYTES`` decompressed bytes."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as e:
        raise SketchEncodingError("bad-encoding", f"packed counts are not base64: {e}") from None
    expected = sum(bins)
    cap = expected * MAX_VARINT_BYTES
    d = zlib.decompressobj()
    try:
        raw = d.decompress(data, cap + 1)
    except zlib.error as e:
        raise SketchEncodingError("bad-encoding", f"packed counts are not zlib: {e}") from None
    if len(raw) > cap:
        raise SketchEncodingError("bad-encoding", f"packed counts decompress past {cap} bytes "
                                  f"({expected} bins of at most {MAX_VARINT_BYTES} bytes)")
    if not d.eof:
        raise SketchEncodingError("bad-encoding", "packed counts: the zlib stream is cut short")
    if d.unused_data:
        raise SketchEncodingError("bad-encoding", f"packed counts: {len(d.unused_data)} bytes "
                                  "after the zlib stream")
    values = _read_varints(raw)
    if len(values) != expected:
        raise SketchEncodingError("bins-mismatch", f"{len(values)} packed counts for the "
                                  f"reference's {expected} bins")
    out: list[list[int]] = []
    at = 0
    for b in bins:
        out.append(values[at:at + b])
        at += b
    return out


def _read_varints(raw: bytes) -> list[int]:
    values: list[int] = []
    v = shift = n = 0
    for byte in raw:
        v |= (byte & 0x7F) << shift
        n += 1
        if byte < 0x80:
            values.append(v)
            v = shift = n = 0
        elif n == MAX_VARINT_BYTES:
            raise SketchEncodingError("bad-encoding", f"a packed count longer than "
                                      f"{MAX_VARINT_BYTES} bytes (over {MAX_COUNT})")
        else:
            shift += 7
    if n:
        raise SketchEncodingError("bad-encoding", "packed counts end inside a count")
    return values

"""The diff transforms, block by block, shared by the encoder and the applier.

A changed tensor is sent as ``new - old`` (element-wise, modulo 2^bits) or ``new XOR old``; the
difference of a fine-tuned float tensor is small in its high bytes and noisy in its low ones, so
its bytes are transposed per element width (all first bytes, then all second bytes...) before
zstd sees them, as Blosc's shuffle does. Both transforms work on :data:`BLOCK_BYTES` at a time
so applying a delta never holds more than a few blocks, whatever the tensor's size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["combine", "difference"]

_UINT: dict[int, np.dtype[Any]] = {1: np.dtype(np.uint8), 2: np.dtype("<u2"),
                                   4: np.dtype("<u4"), 8: np.dtype("<u8")}


def _shuffle(data: np.ndarray[Any, Any], width: int) -> bytes:
    if width == 1:
        return data.tobytes()
    return data.view(np.uint8).reshape(-1, width).T.tobytes()


def _unshuffle(data: bytes, width: int) -> np.ndarray[Any, Any]:
    """The diff's bytes back in element order, as a fresh writable array."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if width == 1:
        return raw.copy()
    return np.ascontiguousarray(raw.reshape(width, -1).T).reshape(-1)


def difference(kind: str, old: bytes | memoryview, new: bytes | memoryview, width: int) -> bytes:
    """The transformed difference of one block (``old`` and ``new`` of equal length)."""
    if kind == "xor":
        d = np.bitwise_xor(np.frombuffer(new, np.uint8), np.frombuffer(old, np.uint8))
    else:
        t = _UINT[width]
        d = np.subtract(np.frombuffer(new, t), np.frombuffer(old, t))
    return _shuffle(d, width)


def combine(kind: str, old: bytes, diff: bytes, width: int) -> memoryview:
    """Undo :func:`difference`: the new block from the old one and the transformed diff.

    Computed in place in the unshuffled diff (one block-sized buffer besides the inputs).
    """
    d = _unshuffle(diff, width)
    if kind == "xor":
        np.bitwise_xor(d, np.frombuffer(old, np.uint8), out=d)
    else:
        t = _UINT[width]
        dt = d.view(t)
        np.add(dt, np.frombuffer(old, t), out=dt)
    view: memoryview = d.data          # uint8, contiguous: bytes as written
    return view

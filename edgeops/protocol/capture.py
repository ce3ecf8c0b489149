"""Opt-in data capture: the order a device receives and the sample frame it sends back.

Why it exists here: the manager writes the order into a signed ``capture`` command and reads the
samples; the agent reads the order and writes the samples. One typed, validating definition of
both keeps the two sides from drifting apart, with numpy only (no paho, no HTTP).

A capture is **off by default**: a device samples nothing until it accepted a signed ``capture``
command whose body is a :class:`CaptureOrder` with ``open`` true, and it stops at ``until``, at
either byte cap, or on a ``capture`` command with ``open`` false. The order states every bound
(sample rate, bytes per device, bytes per UTC day, bytes per sample), so what a device may send
is in the command it verified, not in its config.

A sample travels as a ``capture`` telemetry record whose ``data`` is the base64 of
:func:`sample_bytes`: ``EOC1`` + u32 header length + JSON header + raw C-order arrays, one per
input (``input:<name>``) and output (``output:<name>``). :func:`read_sample` checks every size
before a byte is used and accepts plain numeric dtypes only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edgeops.protocol.messages import MessageError

__all__ = [
    "MAX_SAMPLE_BYTES",
    "CaptureOrder",
    "read_sample",
    "sample_bytes",
]

MAX_SAMPLE_BYTES = 128 * 1024        # one request's tensors; a telemetry batch is 192 KiB
_MAGIC = b"EOC1"
_ID = re.compile(r"^c-[0-9a-f]{8,32}$")
_DTYPES = frozenset({"bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                     "uint64", "float16", "float32", "float64"})


@dataclass(frozen=True)
class CaptureOrder:
    """The body of a ``capture`` command. Bytes count encoded samples (before base64)."""

    KIND: ClassVar[str] = "capture"
    capture_id: str
    open: bool
    sample_rate: float = 0.0              # fraction of served requests sampled, (0, 1]
    max_bytes_per_device: int = 0         # over the whole capture
    max_bytes_per_day: int = 0            # per UTC day of the device's clock
    until: float = 0.0                    # epoch seconds; nothing is sampled after it
    max_sample_bytes: int = 64 * 1024     # a larger request is skipped, not cut

    def __post_init__(self) -> None:
        if not _ID.match(self.capture_id):
            raise MessageError(f"capture id {self.capture_id!r} is not c-<hex>")
        if not self.open:
            return
        if not (0.0 < self.sample_rate <= 1.0):
            raise MessageError(f"capture sample_rate {self.sample_rate} is not in (0, 1]")
        if self.max_bytes_per_device <= 0 or self.max_bytes_per_day <= 0:
            raise MessageError("capture byte caps must be positive")
        if not 0 < self.max_sample_bytes <= MAX_SAMPLE_BYTES:
            raise MessageError(f"capture max_sample_bytes must be in 1..{MAX_SAMPLE_BYTES}")
        if not math.isfinite(self.until):
            raise MessageError("capture 'until' is not a time")

    def to_dict(self) -> dict[str, Any]:
        return {"capture_id": self.capture_id, "open": self.open,
                "sample_rate": self.sample_rate,
                "max_bytes_per_device": self.max_bytes_per_device,
                "max_bytes_per_day": self.max_bytes_per_day, "until": self.until,
                "max_sample_bytes": self.max_sample_bytes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CaptureOrder:
        try:
            cid, is_open = d["capture_id"], d["open"]
            if not isinstance(cid, str) or not isinstance(is_open, bool):
                raise TypeError
            nums = {k: d.get(k, v) for k, v in (("sample_rate", 0.0), ("until", 0.0))}
            ints = {k: d.get(k, v) for k, v in (("max_bytes_per_device", 0),
                                                ("max_bytes_per_day", 0),
                                                ("max_sample_bytes", 64 * 1024))}
            if any(isinstance(v, bool) or not isinstance(v, int | float) for v in nums.values()):
                raise TypeError
            if any(isinstance(v, bool) or not isinstance(v, int) for v in ints.values()):
                raise TypeError
        except (KeyError, TypeError):
            raise MessageError("capture command body is malformed") from None
        return cls(cid, is_open, float(nums["sample_rate"]), int(ints["max_bytes_per_device"]),
                   int(ints["max_bytes_per_day"]), float(nums["until"]),
                   int(ints["max_sample_bytes"]))


def sample_bytes(inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> bytes:
    """One request's inputs and outputs as an ``EOC1`` frame."""
    header, blobs = [], []
    for side, arrays in (("input", inputs), ("output", outputs)):
        for name, value in arrays.items():
            a = np.ascontiguousarray(value)
            if a.dtype.name not in _DTYPES:
                raise MessageError(f"{side} {name!r} has dtype {a.dtype.name}, not numeric")
            header.append({"name": f"{side}:{name}", "dtype": a.dtype.name,
                           "shape": list(a.shape)})
            blobs.append(a.tobytes())
    h = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_MAGIC, len(h).to_bytes(4, "big"), h, *blobs])


def read_sample(data: bytes, max_bytes: int = MAX_SAMPLE_BYTES
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(inputs, outputs) of an ``EOC1`` frame; :class:`MessageError` for anything malformed."""
    if len(data) > max_bytes:
        raise MessageError(f"sample of {len(data)} bytes is over the {max_bytes}-byte limit")
    if len(data) < 8 or data[:4] != _MAGIC:
        raise MessageError("sample is not an EOC1 frame")
    hlen = int.from_bytes(data[4:8], "big")
    if 8 + hlen > len(data):
        raise MessageError("sample header length is out of range")
    try:
        specs = [(str(e["name"]), str(e["dtype"]), tuple(int(x) for x in e["shape"]))
                 for e in json.loads(data[8:8 + hlen])]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise MessageError("sample header is malformed") from None
    out: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] = ({}, {})
    pos = 8 + hlen
    for name, dtype, shape in specs:
        side, _, tensor = name.partition(":")
        if side not in ("input", "output") or not tensor:
            raise MessageError(f"sample tensor {name!r} is not input:/output:")
        if dtype not in _DTYPES or any(d < 0 for d in shape) or len(shape) > 8:
            raise MessageError(f"sample tensor {name!r}: bad dtype or shape")
        count = math.prod(shape)
        nbytes = count * np.dtype(dtype).itemsize
        if pos + nbytes > len(data):
            raise MessageError(f"sample tensor {name!r} is truncated")
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(shape)
        target = out[0] if side == "input" else out[1]
        if tensor in target:
            raise MessageError(f"sample tensor {name!r} appears twice")
        target[tensor] = arr
        pos += nbytes
    if pos != len(data):
        raise MessageError("sample frame has trailing bytes")
    if not out[0]:
        raise MessageError("sample holds no input")
    return out

"""Between the model's signature and the artifact's own I/O form: layout and int8 I/O.

Why: the application speaks the manifest's signature (the source model's layout and float
dtypes, e.g. NCHW float32) whatever the target, but a TFLite artifact may take NHWC and, built
with int8 I/O, quantised tensors. The converter records both in the artifact's ``details``
(``io_layout``: ``{name: {"perm_from_onnx": [...]}}``; ``io_dtype`` and ``io_quantization``:
``{name: {"scale", "zero_point"}}``). This adapter applies them on the way in and undoes them on
the way out, so one application works on every target. Golden files are already in the
artifact's form, so the health check feeds them without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeops.runtime import TensorInfo

__all__ = ["IoAdapter"]

_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


@dataclass(frozen=True)
class IoAdapter:
    in_perm: dict[str, tuple[int, ...]]
    out_inverse_perm: dict[str, tuple[int, ...]]
    in_quant: dict[str, tuple[float, int, str]]       # scale, zero point, integer dtype
    out_quant: dict[str, tuple[float, int]]

    @property
    def identity(self) -> bool:
        return not (self.in_perm or self.out_inverse_perm or self.in_quant or self.out_quant)

    @classmethod
    def from_details(cls, details: Mapping[str, Any], inputs: Sequence[TensorInfo],
                     outputs: Sequence[TensorInfo]) -> IoAdapter:
        """Build from an ArtifactEntry's ``details`` and what the loaded model reports."""
        layout = details.get("io_layout")
        layout = layout if isinstance(layout, dict) else {}
        quant = details.get("io_quantization")
        quant = quant if isinstance(quant, dict) else {}

        def perm(name: str) -> tuple[int, ...] | None:
            rec = layout.get(name)
            p = rec.get("perm_from_onnx") if isinstance(rec, dict) else None
            if not isinstance(p, list) or sorted(p) != list(range(len(p))):
                return None
            return None if p == sorted(p) else tuple(int(i) for i in p)

        def qparams(t: TensorInfo) -> tuple[float, int] | None:
            q = quant.get(t.name)
            if t.dtype not in _INT_RANGES or not isinstance(q, dict):
                return None
            scale, zp = q.get("scale"), q.get("zero_point")
            if not isinstance(scale, int | float) or not isinstance(zp, int) or scale <= 0:
                return None
            return float(scale), zp

        in_perm = {t.name: p for t in inputs if (p := perm(t.name)) is not None}
        out_inv: dict[str, tuple[int, ...]] = {}
        for t in outputs:
            p = perm(t.name)
            if p is not None:
                out_inv[t.name] = tuple(int(i) for i in np.argsort(p))
        in_q = {t.name: (*q, t.dtype) for t in inputs if (q := qparams(t)) is not None}
        out_q = {t.name: q for t in outputs if (q := qparams(t)) is not None}
        return cls(in_perm, out_inv, in_q, out_q)

    def to_artifact(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(feed)
        for name, (scale, zp, dtype) in self.in_quant.items():
            lo, hi = _INT_RANGES[dtype]
            out[name] = np.clip(np.rint(out[name] / scale) + zp, lo, hi).astype(dtype)
        for name, p in self.in_perm.items():
            out[name] = np.ascontiguousarray(np.transpose(out[name], p))
        return out

    def from_artifact(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(outputs)
        for name, inv in self.out_inverse_perm.items():
            if name in out:
                out[name] = np.ascontiguousarray(np.transpose(out[name], inv))
        for name, (scale, zp) in self.out_quant.items():
            if name in out:
                out[name] = ((out[name].astype(np.float32) - zp) * scale).astype(np.float32)
        return out

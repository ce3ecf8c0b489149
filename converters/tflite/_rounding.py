"""The TFLite writer's weight grid, for AdaRound on the full-integer path.

AdaRound (:mod:`converters.quant.adaround`) chooses, per weight, floor or ceil on a quantiser's
grid; its choice survives only if the quantiser that writes the artifact derives the same
scales and rounds the written float weights back to the same integers. The full-integer TFLite
writer (:func:`converters.tflite._quant._sym_quant`) is not ONNX Runtime: symmetric int8 in
[-127, 127] with ``scale = float32(max|w|) / 127`` in float32, one scale per output channel of
a convolution when the target rounds per channel, one per tensor otherwise (every weight on
Edge TPU, FULLY_CONNECTED everywhere). This grid reproduces exactly that, and checks every
layer it puts on the grid with the writer's own function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converters.quant._gram import Layer
from converters.quant.adaround import Grid
from converters.tflite._quant import _sym_quant

__all__ = ["WriterGrid"]

_QMAX = 127


@dataclass(frozen=True)
class WriterGrid:
    """The writer's grid; ``per_tensor_ops``: ONNX op types whose weight it rounds per tensor
    (MatMul and Gemm lower to FULLY_CONNECTED, which the writer always rounds per tensor)."""

    per_tensor_ops: tuple[str, ...]

    @property
    def label(self) -> str:
        return ("TFLite writer, 8-bit symmetric, per tensor: "
                + ", ".join(self.per_tensor_ops) if self.per_tensor_ops
                else "TFLite writer, 8-bit symmetric, per channel")

    def _per_tensor(self, layer: Layer) -> bool:
        return layer.op in self.per_tensor_ops

    def grid(self, layer: Layer, w: np.ndarray) -> Grid:
        w = w.astype(np.float32)
        mag = np.abs(w)
        amax = (np.full(w.shape[0], mag.max(), np.float32) if self._per_tensor(layer)
                else mag.max(axis=1))
        scale = np.where(amax > 0, amax / np.float32(_QMAX), np.float32(1.0)).astype(np.float32)
        return Grid(scale, _QMAX, mag == amax[:, None])

    def on_grid(self, layer: Layer, w: np.ndarray, q: np.ndarray, g: Grid) -> np.ndarray:
        w = w.astype(np.float32)
        mag = np.abs(w)
        amax = (np.full((w.shape[0], 1), mag.max(), np.float32) if self._per_tensor(layer)
                else mag.max(axis=1, keepdims=True))
        out = (q * g.scale.astype(np.float64)[:, None]).astype(np.float32)
        out = np.clip(out, -amax, amax)          # never a new maximum: the scale stays
        out = np.where(g.fixed, w, out).astype(np.float32)
        # the writer's own quantiser, on the same [outputs, K] rows (the layout it writes in
        # only moves elements; each weight's division by its scale is the same)
        written, quant = _sym_quant(out, None if self._per_tensor(layer) else 0)
        scales = np.broadcast_to(quant.scale, g.scale.shape)
        if not (np.array_equal(written, q) and np.array_equal(scales, g.scale)):
            raise ArithmeticError("rounded weights do not reproduce their integers on the "
                                  "TFLite writer's grid")
        return out

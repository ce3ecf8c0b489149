"""Which layers have a weight to round, and the second moment of their inputs, streamed.

A layer's output error from a weight change ``dW`` over inputs ``X`` is ``||dW X||^2 =
N tr(dW H dW^T)`` with ``H = X X^T / N``: the rounding optimiser needs the inputs only through
``H`` (one ``K x K`` matrix per group, ``K`` = inputs per output: ``Cin/g*kh*kw`` im2col rows
for a Conv, one small matrix per channel for a depthwise one). ``H`` is accumulated one
calibration sample at a time from the FP32 model's layer inputs, so memory holds one sample's
inputs plus the matrices, whatever the number of samples. Pure numpy apart from
:func:`accumulate`, which runs the model (through :func:`converters.quant._stats.stream_tensors`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from converters.quant._graph import Graph, attr

__all__ = ["Layer", "accumulate", "layers", "patches"]


@dataclass(frozen=True)
class Layer:
    """One Conv/Gemm/MatMul whose constant weight the quantiser rounds per output channel."""

    node: str
    op: str                  # "Conv" | "Gemm" | "MatMul"
    input: str               # the activation tensor the weight multiplies
    weight: str              # the initialiser (private to this node)
    shape: tuple[int, ...]   # the weight's shape
    axis: int                # ORT's per-channel axis for this op
    groups: int = 1
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()      # begin..., end...; empty: from auto_pad
    auto_pad: str = "NOTSET"
    trans_a: bool = False

    @property
    def k(self) -> int:
        """Inputs per output channel (the size of each ``H``)."""
        if self.op == "Conv":
            return int(np.prod(self.shape[1:]))
        return self.shape[1] if self.axis == 0 else self.shape[0]

    @property
    def outputs(self) -> int:
        """Output channels (ORT's per-channel scales)."""
        return self.shape[self.axis]

    def h_bytes(self) -> int:
        return self.groups * self.k * self.k * 8

    def matrix(self, w: np.ndarray) -> np.ndarray:
        """The weight as ``[outputs, K]`` (row = one output channel, ORT's channel)."""
        if self.op == "Conv":
            return w.reshape(w.shape[0], -1)
        return w if self.axis == 0 else w.T

    def unmatrix(self, m: np.ndarray) -> np.ndarray:
        return m.reshape(self.shape) if self.op == "Conv" else (m if self.axis == 0 else m.T)


def layers(model: Any) -> tuple[list[Layer], dict[str, str]]:
    """The roundable layers in graph order, and ``{node: why not}`` for the others."""
    g = Graph(model)
    out: list[Layer] = []
    left: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        name = n.name or n.output[0]
        if len(n.input) < 2 or not g.private_const(n.input[1]) or n.input[0] in g.inits:
            left[name] = "weight is not a float constant used by this node alone"
            continue
        w = g.const(n.input[1])
        assert w is not None
        if n.op_type == "Conv":
            if w.ndim not in (3, 4):
                left[name] = f"{w.ndim - 2}-D convolution (1-D and 2-D are handled)"
                continue
            sp = w.ndim - 2
            out.append(Layer(
                name, "Conv", n.input[0], n.input[1], tuple(w.shape), 0,
                groups=int(attr(n, "group", 1)), kernel=tuple(w.shape[2:]),
                strides=tuple(attr(n, "strides", [1] * sp)),
                dilations=tuple(attr(n, "dilations", [1] * sp)),
                pads=tuple(attr(n, "pads", [])),
                auto_pad=_text(attr(n, "auto_pad", "NOTSET"))))
            continue
        if w.ndim != 2:
            left[name] = f"{w.ndim}-D {n.op_type} weight (2-D is handled)"
            continue
        if n.op_type == "Gemm":
            if float(attr(n, "alpha", 1.0)) != 1.0:
                left[name] = "Gemm with alpha != 1"
                continue
            out.append(Layer(name, "Gemm", n.input[0], n.input[1], tuple(w.shape),
                             0 if int(attr(n, "transB", 0)) else 1,
                             trans_a=bool(int(attr(n, "transA", 0)))))
        else:
            out.append(Layer(name, "MatMul", n.input[0], n.input[1], tuple(w.shape), 1))
    return out, left


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def patches(layer: Layer, x: np.ndarray, max_positions: int, rng: np.random.Generator
            ) -> np.ndarray:
    """``[groups, K, L]`` input columns of ``layer`` for one sample (at most ``max_positions``
    output positions, drawn with ``rng`` when there are more)."""
    if layer.op != "Conv":
        rows = x.T if layer.trans_a else x.reshape(-1, x.shape[-1])
        rows = _pick(rows, max_positions, rng)
        return np.ascontiguousarray(rows.T)[None]
    if x.ndim == 3:     # 1-D: a unit height
        x = x[:, :, None, :]
    kern = (1, *layer.kernel) if len(layer.kernel) == 1 else layer.kernel
    strides = (1, *layer.strides) if len(layer.strides) == 1 else layer.strides
    dil = (1, *layer.dilations) if len(layer.dilations) == 1 else layer.dilations
    pads = _pads(layer, x.shape[2:])
    if len(layer.kernel) == 1:
        pads = (0, pads[0], 0, pads[1])
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    eff = [(k - 1) * d + 1 for k, d in zip(kern, dil, strict=True)]
    win = np.lib.stride_tricks.sliding_window_view(xp, tuple(eff), axis=(2, 3))
    win = win[:, :, ::strides[0], ::strides[1], ::dil[0], ::dil[1]]   # N C Ho Wo kh kw
    n, _, ho, wo = win.shape[:4]
    idx = np.arange(n * ho * wo)
    if idx.size > max_positions:
        idx = np.sort(rng.choice(idx.size, max_positions, replace=False))
    ni, rest = np.divmod(idx, ho * wo)
    hi, wi = np.divmod(rest, wo)
    cols = win[ni, :, hi, wi]                                          # L C kh kw
    g = layer.groups
    cols = cols.reshape(cols.shape[0], g, -1)                          # L g K
    return np.ascontiguousarray(cols.transpose(1, 2, 0))


def _pick(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if rows.shape[0] <= n:
        return rows
    return rows[np.sort(rng.choice(rows.shape[0], n, replace=False))]


def _pads(layer: Layer, spatial: tuple[int, ...]) -> tuple[int, ...]:
    sp = len(layer.kernel)
    if layer.auto_pad in ("NOTSET", "") and layer.pads:
        return tuple(layer.pads)
    if layer.auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return (0,) * (2 * sp)
    sizes = spatial[-sp:]
    begin, end = [], []
    for size, k, s, d in zip(sizes, layer.kernel, layer.strides, layer.dilations, strict=True):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begin.append(small if layer.auto_pad == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return (*begin, *end)


def accumulate(model: Any, chosen: list[Layer], samples: Iterable[Mapping[str, Any]],
               max_positions: int, seed: int, max_patch_bytes: int = 32 * 2**20
               ) -> tuple[dict[str, np.ndarray], int]:
    """``{node: H [groups, K, K]}`` (float64, mean over the columns seen) and samples seen.

    Per layer and sample at most ``max_positions`` columns, and fewer where their float32
    copy would pass ``max_patch_bytes`` (``groups * K`` values per column)."""
    from converters.quant._stats import stream_tensors

    names = list(dict.fromkeys(la.input for la in chosen))
    sums = {la.node: np.zeros((la.groups, la.k, la.k)) for la in chosen}
    counts = dict.fromkeys(sums, 0)
    step = [0]

    def add(arrays: dict[str, np.ndarray]) -> None:
        for i, la in enumerate(chosen):
            rng = np.random.default_rng([seed, i, step[0]])
            cap = max(1, min(max_positions, max_patch_bytes // (4 * la.groups * la.k)))
            p = patches(la, np.asarray(arrays[la.input], np.float32), cap, rng)
            # float32 products (half the time of float64; one sample's columns at a time),
            # summed over samples in float64
            sums[la.node] += np.matmul(p, p.transpose(0, 2, 1))
            counts[la.node] += p.shape[2]
        step[0] += 1

    seen = stream_tensors(model, names, samples, add)
    return {k: v / max(1, counts[k]) for k, v in sums.items()}, seen

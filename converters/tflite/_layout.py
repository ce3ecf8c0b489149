"""Where each ONNX tensor lives in the TFLite graph, and in which axis order.

The lowering keeps every ONNX tensor under a permutation of its axes
(``ir = onnx.transpose(perm)``). :class:`LayoutTracker` hands out a tensor in the layout an op
asks for, emitting the TRANSPOSE (or, when only size-1 axes move, a RESHAPE) once per tensor
and layout and caching it; constants are permuted at build time instead. This is what keeps
transposes to the places where semantics need them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from converters.tflite._ir import Graph
from converters.tflite._prep import Prepared

__all__ = ["LayoutTracker", "Perm", "channels_last", "identity", "ir_dtype", "layout_record"]

Perm = tuple[int, ...]


def ir_dtype(dt: np.dtype[np.generic] | None) -> str:
    """The dtype an ONNX tensor of ``dt`` has inside the TFLite graph: integers compute in
    int32 (LiteRT's integer kernels; token and byte ids fit), bool stays bool."""
    if dt is None or np.issubdtype(dt, np.floating):
        return "float32"
    if dt == np.bool_:
        return "bool"
    return "int32"


def channels_last(rank: int) -> Perm:
    """Channels-last permutation of an N, C, spatial... tensor."""
    return (0, *range(2, rank), 1) if rank >= 3 else tuple(range(rank))


def identity(rank: int) -> Perm:
    return tuple(range(rank))


def layout_record(perm: Perm) -> dict[str, object]:
    """How an artifact input/output relates to the ONNX tensor (recorded in the manifest).

    An unpermuted tensor is "as-onnx", never "NCHW": the lowering cannot know the ONNX tensor's
    own layout (a tf2onnx model's input is NHWC already). A channels-last permutation is only
    chosen for tensors that feed or leave NCHW spatial ops, so "NHWC"/"NWC" are sure."""
    if perm == identity(len(perm)):
        return {"layout": "as-onnx", "perm_from_onnx": list(perm)}
    names = {(0, 2, 3, 1): "NHWC", (0, 2, 1): "NWC"}
    return {"layout": names.get(perm, "custom"), "perm_from_onnx": list(perm)}


class LayoutTracker:
    """The TFLite graph under construction plus each ONNX tensor's location and layout."""

    def __init__(self, prep: Prepared) -> None:
        self.p = prep
        self.g = Graph()
        self.val: dict[str, tuple[str, Perm]] = {}
        self.cache: dict[tuple[str, Perm], str] = {}

    def shape(self, name: str) -> tuple[int, ...]:
        return self.p.shapes[name]

    def const(self, name: str) -> np.ndarray | None:
        return self.p.consts.get(name) if name else None

    def perm_of(self, name: str) -> Perm:
        if name in self.val:
            return self.val[name][1]
        return identity(len(self.shape(name)))

    def new(self, onnx_name: str, perm: Perm, shape: Sequence[int] | None = None) -> str:
        shp = tuple(self.shape(onnx_name)) if shape is None else tuple(shape)
        t = self.g.add_tensor(onnx_name, tuple(shp[i] for i in perm),
                              ir_dtype(self.p.dtypes.get(onnx_name)))
        self.val[onnx_name] = (t, perm)
        return t

    def get(self, name: str, want: Perm | None = None, *, rank: int | None = None) -> str:
        """The TFLite tensor holding ONNX tensor ``name`` in layout ``want`` (default ONNX)."""
        c = self.const(name)
        if c is not None:
            arr = np.asarray(c)
            if rank is not None and arr.ndim < rank:
                arr = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
            want = want or identity(arr.ndim)
            key = (name + f"@{arr.ndim}", want)
            if key not in self.cache:
                data = arr.transpose(want)
                if data.dtype == np.float64:
                    data = data.astype(np.float32)
                elif data.dtype == np.int64:
                    data = data.astype(np.int32)
                self.cache[key] = self.g.add_const(name, data)
            return self.cache[key]
        ir, cur = self.val[name]
        want = want or identity(len(cur))
        if rank is not None and len(cur) < rank:
            # broadcasting operand of lower rank: bring to ONNX layout, then pad leading 1s
            ir = self.get(name)
            shp = (1,) * (rank - len(cur)) + self.shape(name)
            key = (name + f"@{rank}", identity(rank))
            if key not in self.cache:
                out = self.g.add_tensor(name + "__r", shp, self.g.tensors[ir].dtype)
                self._reshape(ir, out, shp)
                self.cache[key] = out
            ir = self.cache[key]
            cur = identity(rank)
            if want == cur:
                return ir
            return self._convert(name + f"@{rank}", ir, cur, want, shp)
        if want == cur:
            return ir
        return self._convert(name, ir, cur, want, self.shape(name))

    def _convert(self, key_name: str, ir: str, cur: Perm, want: Perm,
                 onnx_shape: tuple[int, ...]) -> str:
        key = (key_name, want)
        if key in self.cache:
            return self.cache[key]
        q = tuple(cur.index(w) for w in want)
        src_shape = self.g.tensors[ir].shape
        out_shape = tuple(onnx_shape[w] for w in want)
        out = self.g.add_tensor(key_name + "__" + "".join(map(str, want)), out_shape,
                                self.g.tensors[ir].dtype)
        moved = [i for i in q if src_shape[i] != 1]
        if moved == sorted(moved):
            self._reshape(ir, out, out_shape)        # only size-1 axes move: memory order kept
        else:
            self.g.add_op("TRANSPOSE", [ir, self.g.add_const("perm", np.array(q, np.int32))],
                          [out])
        self.cache[key] = out
        return out

    def _reshape(self, src: str, out: str, shape: Sequence[int]) -> None:
        self.g.add_op("RESHAPE", [src, self.g.add_const("shape", np.array(shape, np.int32))],
                      [out], newShape=[int(d) for d in shape])

    def i32(self, base: str, values: Sequence[int]) -> str:
        return self.g.add_const(base, np.array(values, np.int32))

    # -- driver --------------------------------------------------------------------------------

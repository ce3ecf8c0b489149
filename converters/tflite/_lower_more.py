"""Lowering of the ops real exports add beyond convolutions: split, reductions, math, norms.

YOLO heads (Split, Max/Min), transformer encoders (LayerNormalization, Gelu, Pow/Sqrt
normalisation chains, Where, Expand, Gather on constants' axes) and classifier tails
(GlobalMaxPool, ReduceSum/Max, Exp) land here. Axis arguments are mapped through the tensor's
current layout, so none of these ops forces a transpose on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from converters.tflite._attrs import Attrs
from converters.tflite._layout import Perm, channels_last, identity, ir_dtype
from converters.tflite._lower_spatial import SpatialOps
from edgeops.errors import UnsupportedModelError

__all__ = ["MORE_OPS", "REDUCE_KINDS", "MoreOps"]

REDUCE_KINDS = {"ReduceMean": "MEAN", "ReduceSum": "SUM", "ReduceMax": "REDUCE_MAX",
                "ReduceMin": "REDUCE_MIN", "ReduceProd": "REDUCE_PROD"}
_UNARY_KINDS = {"Sqrt": "SQRT", "Exp": "EXP", "Log": "LOG", "Neg": "NEG", "Abs": "ABS",
                "Sin": "SIN", "Cos": "COS"}
MORE_OPS = frozenset({"Split", "Gelu", "Pow", "Reciprocal", "LayerNormalization", "Where",
                      "Expand", "Max", "Min", "GlobalMaxPool", "Gather", "Cast", "Softplus",
                      *REDUCE_KINDS, *_UNARY_KINDS})


def _axes_after_reduce(perm: Perm, axes: Sequence[int], keep: bool) -> Perm:
    if keep:
        return perm
    rest = [p for p in perm if p not in axes]
    order = sorted(rest)
    return tuple(order.index(p) for p in rest)


class MoreOps(SpatialOps):
    """Split, reductions, elementwise math, LayerNormalization, Gelu, Where, Expand, Gather."""

    def _full(self, value: float, rank: int, base: str) -> str:
        return self.g.add_const(base, np.full((1,) * rank, value, np.float32))

    # -- split / broadcast / select -------------------------------------------------------------
    def op_Split(self, n: onnx.NodeProto, a: Attrs) -> None:
        rank = len(self.shape(n.input[0]))
        axis = a.i("axis", 0) % rank
        # sizes come from shape inference, which covers the `split` input (opset 13+), the
        # `split` attribute (opset <13), even splits and `num_outputs` (opset 18)
        sizes = [self.shape(o)[axis] for o in n.output]
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        ys = [self.new(o, perm) for o in n.output]
        ax = perm.index(axis)
        if len(set(sizes)) == 1 and sizes[0] * len(sizes) == self.shape(n.input[0])[axis]:
            self.g.add_op("SPLIT", [self.i32("axis", [ax]), x], ys, n.name, numSplits=len(ys))
        else:
            self.g.add_op("SPLIT_V", [x, self.i32("size_splits", sizes), self.i32("axis", [ax])],
                          ys, n.name, numSplits=len(ys))

    def op_Expand(self, n: onnx.NodeProto, a: Attrs) -> None:
        out = self.shape(n.output[0])
        rank = len(out)
        perm = self.perm_of(n.input[0]) if len(self.shape(n.input[0])) == rank else identity(rank)
        x = self.get(n.input[0], perm, rank=rank)
        if self.g.tensors[x].shape == tuple(out[p] for p in perm):
            self.val[n.output[0]] = (x, perm)            # expanding to its own shape: no op
            return
        y = self.new(n.output[0], perm)
        self.g.add_op("BROADCAST_TO", [x, self.i32("shape", [out[p] for p in perm])], [y], n.name)

    def op_Where(self, n: onnx.NodeProto, a: Attrs) -> None:
        rank = len(self.shape(n.output[0]))
        perm = identity(rank)
        for name in n.input[1:]:
            if self.const(name) is None and len(self.shape(name)) == rank:
                perm = self.perm_of(name)
                break
        cond = self.const(n.input[0])
        if cond is None:                            # a mask computed at run time
            c_name = self.get(n.input[0], perm, rank=rank)
        else:
            c = np.asarray(cond, bool)
            c = c.reshape((1,) * (rank - c.ndim) + c.shape).transpose(perm)
            c_name = self.g.add_const(n.input[0] + "_cond", c)
        ins = [c_name] + [self.get(name, perm, rank=rank) for name in n.input[1:]]
        y = self.new(n.output[0], perm)
        self.g.add_op("SELECT_V2", ins, [y], n.name)

    def op_Gather(self, n: onnx.NodeProto, a: Attrs) -> None:
        rank = len(self.shape(n.input[0]))
        axis = a.i("axis", 0) % rank
        if self.const(n.input[1]) is None:
            self._gather_computed(n, axis)
            return
        idx = np.asarray(self.p.consts[n.input[1]]).astype(np.int64)
        idx = np.where(idx < 0, idx + self.shape(n.input[0])[axis], idx).astype(np.int32)
        perm = self.perm_of(n.input[0])
        if idx.ndim <= 1:
            out_perm = perm                          # same rank: the layout carries over
        else:
            perm, out_perm = identity(rank), identity(len(self.shape(n.output[0])))
        x = self.get(n.input[0], perm)
        # a scalar index drops the axis: gather one slice (LiteRT reads a 0-d index tensor
        # as unknown-rank), then reshape it away
        scalar = idx.ndim == 0
        oshape = list(self.g.tensors[x].shape)
        oshape[perm.index(axis)] = 1
        y = self.g.add_tensor(n.output[0] + "__g", tuple(oshape)) if scalar \
            else self.new(n.output[0], out_perm)
        self.g.add_op("GATHER", [x, self.g.add_const(n.input[1] + "_i32", idx.reshape(-1)
                                                     if scalar else idx)], [y], n.name,
                      axis=perm.index(axis), batchDims=0)
        if scalar:
            z = self.new(n.output[0], _axes_after_reduce(perm, [axis], keep=False))
            self._reshape(y, z, self.g.tensors[z].shape)

    def _gather_computed(self, n: onnx.NodeProto, axis: int) -> None:
        """GATHER with indices from the graph (token ids into an embedding table). LiteRT
        takes no negative indices: ids out of [0, dim) fail at run time there."""
        x = self.get(n.input[0])
        idx = self.get(n.input[1])
        y = self.new(n.output[0], identity(len(self.shape(n.output[0]))))
        self.g.add_op("GATHER", [x, idx], [y], n.name, axis=axis, batchDims=0)

    def op_Cast(self, n: onnx.NodeProto, a: Attrs) -> None:
        # float->float and int64<->int32 keep the graph's type (integers are int32 inside)
        src = self.g.tensors[self.val[n.input[0]][0]].dtype
        perm = self.perm_of(n.input[0])
        if src == ir_dtype(self.p.dtypes.get(n.output[0])):
            self.val[n.output[0]] = self.val[n.input[0]]
            return
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        self.g.add_op("CAST", [x], [y], n.name)

    # -- reductions -----------------------------------------------------------------------------
    def _reduce(self, n: onnx.NodeProto, a: Attrs, kind: str) -> None:
        rank = len(self.shape(n.input[0]))
        axes_v = self.const(n.input[1]) if len(n.input) > 1 and n.input[1] else a.get("axes")
        axes = sorted(int(v) % rank for v in (np.asarray(axes_v).ravel()
                                              if axes_v is not None else range(rank)))
        keep = bool(a.get("keepdims", 1))
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], _axes_after_reduce(perm, axes, keep))
        ir_axes = sorted(perm.index(ax) for ax in axes)
        if kind == "MEAN":
            self._mean(x, ir_axes, keep, y, n.name)
            return
        self.g.add_op(kind, [x, self.i32("axes", ir_axes)], [y], n.name, keepDims=keep)

    def op_ReduceMean(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._reduce(n, a, "MEAN")

    def op_ReduceSum(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._reduce(n, a, "SUM")

    def op_ReduceMax(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._reduce(n, a, "REDUCE_MAX")

    def op_ReduceMin(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._reduce(n, a, "REDUCE_MIN")

    def op_ReduceProd(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._reduce(n, a, "REDUCE_PROD")

    def op_GlobalMaxPool(self, n: onnx.NodeProto, a: Attrs) -> None:
        rank = len(self.shape(n.input[0]))
        x = self.get(n.input[0], channels_last(rank))
        y = self.new(n.output[0], channels_last(rank))
        self.g.add_op("REDUCE_MAX", [x, self.i32("axes", list(range(1, rank - 1)))], [y], n.name,
                      keepDims=True)

    # -- elementwise math -----------------------------------------------------------------------
    def _nary(self, n: onnx.NodeProto, kind: str) -> None:
        """Max/Min of two or more tensors as a chain of binary ops."""
        names = [i for i in n.input if i]
        if len(names) == 1:
            self.val[n.output[0]] = self.val[names[0]]
            return
        out_rank = len(self.shape(n.output[0]))
        perm = identity(out_rank)
        for name in names:
            if self.const(name) is None and len(self.shape(name)) == out_rank:
                perm = self.perm_of(name)
                break
        cur = self.get(names[0], perm, rank=out_rank)
        for i, name in enumerate(names[1:], 1):
            other = self.get(name, perm, rank=out_rank)
            if i == len(names) - 1:
                y = self.new(n.output[0], perm)
            else:
                shp = np.broadcast_shapes(self.g.tensors[cur].shape, self.g.tensors[other].shape)
                y = self.g.add_tensor(f"{n.output[0]}__{kind.lower()}{i}", shp)
            self.g.add_op(kind, [cur, other], [y], n.name)
            cur = y

    def op_Max(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._nary(n, "MAXIMUM")

    def op_Min(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._nary(n, "MINIMUM")

    def _simple(self, n: onnx.NodeProto, kind: str) -> None:
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        self.g.add_op(kind, [x], [y], n.name)

    def op_Sqrt(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._simple(n, "SQRT")

    def op_Exp(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._simple(n, "EXP")

    def op_Log(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._simple(n, "LOG")

    def op_Neg(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._simple(n, "NEG")

    def op_Abs(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._simple(n, "ABS")

    def op_Sin(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._simple(n, "SIN")

    def op_Cos(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._simple(n, "COS")

    def op_Gelu(self, n: onnx.NodeProto, a: Attrs) -> None:
        approx = a.get("approximate", b"none")
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        self.g.add_op("GELU", [x], [y], n.name,
                      approximate=(approx.decode() if isinstance(approx, bytes)
                                   else str(approx)) == "tanh")

    def op_Softplus(self, n: onnx.NodeProto, a: Attrs) -> None:
        # log(1 + exp(x)); no TFLite builtin
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        shp = self.g.tensors[x].shape
        e = self.g.add_tensor(n.output[0] + "__exp", shp)
        self.g.add_op("EXP", [x], [e], n.name)
        e1 = self.g.add_tensor(n.output[0] + "__exp1", shp)
        self.g.add_op("ADD", [e, self._full(1.0, len(shp), "one")], [e1], n.name,
                      fusedActivationFunction=0)
        y = self.new(n.output[0], perm)
        self.g.add_op("LOG", [e1], [y], n.name)

    def op_Reciprocal(self, n: onnx.NodeProto, a: Attrs) -> None:
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        self.g.add_op("DIV", [self._full(1.0, len(perm), "one"), x], [y], n.name,
                      fusedActivationFunction=0)

    def op_Pow(self, n: onnx.NodeProto, a: Attrs) -> None:
        e = float(np.asarray(self.p.consts[n.input[1]]).ravel()[0])
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        if e == 2.0:
            self.g.add_op("SQUARE", [x], [y], n.name)
        elif e == 1.0:
            self.g.add_op("RESHAPE", [x, self.i32("shape", list(self.g.tensors[x].shape))], [y],
                          n.name, newShape=list(self.g.tensors[x].shape))
        elif e == 0.5:
            self.g.add_op("SQRT", [x], [y], n.name)
        elif e == -0.5:
            self.g.add_op("RSQRT", [x], [y], n.name)
        else:
            self.g.add_op("POW", [x, self._full(e, len(perm), "exponent")], [y], n.name)

    # -- normalisation --------------------------------------------------------------------------
    def op_LayerNormalization(self, n: onnx.NodeProto, a: Attrs) -> None:
        """mean, squared difference, mean, +eps, rsqrt, scale, shift: LiteRT's fast kernels."""
        if len(n.output) > 1 and any(n.output[1:]):
            raise UnsupportedModelError(f"LayerNormalization {n.name}: Mean/InvStdDev outputs")
        shp = self.shape(n.input[0])
        rank = len(shp)
        axis = a.i("axis", -1) % rank
        eps = a.f("epsilon", 1e-5)
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        ir_axes = sorted(perm.index(ax) for ax in range(axis, rank))
        ts = self.g.tensors[x].shape
        red = tuple(1 if i in ir_axes else d for i, d in enumerate(ts))
        base = n.output[0]
        mean = self.g.add_tensor(base + "__mean", red)
        self.g.add_op("MEAN", [x, self.i32("axes", ir_axes)], [mean], n.name, keepDims=True)
        sq = self.g.add_tensor(base + "__sqdiff", ts)
        self.g.add_op("SQUARED_DIFFERENCE", [x, mean], [sq], n.name)
        var = self.g.add_tensor(base + "__var", red)
        self.g.add_op("MEAN", [sq, self.i32("axes", ir_axes)], [var], n.name, keepDims=True)
        vare = self.g.add_tensor(base + "__vareps", red)
        self.g.add_op("ADD", [var, self._full(eps, rank, "eps")], [vare], n.name,
                      fusedActivationFunction=0)
        inv = self.g.add_tensor(base + "__rstd", red)
        self.g.add_op("RSQRT", [vare], [inv], n.name)
        d = self.g.add_tensor(base + "__centred", ts)
        self.g.add_op("SUB", [x, mean], [d], n.name, fusedActivationFunction=0)
        cur = self.g.add_tensor(base + "__normed", ts)
        self.g.add_op("MUL", [d, inv], [cur], n.name, fusedActivationFunction=0)
        scale = n.input[1] if len(n.input) > 1 and n.input[1] else ""
        bias = n.input[2] if len(n.input) > 2 and n.input[2] else ""
        for name, kind in ((scale, "MUL"), (bias, "ADD")):
            if not name:
                continue
            last = kind == "ADD" or not bias
            out = self.new(n.output[0], perm) if last else \
                self.g.add_tensor(base + "__scaled", ts)
            self.g.add_op(kind, [cur, self.get(name, perm, rank=rank)], [out], n.name,
                          fusedActivationFunction=0)
            cur = out
        if not scale and not bias:
            self.val[n.output[0]] = (cur, perm)

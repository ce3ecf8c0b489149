"""Lowering of bool logic, NaN tests, GatherND and DepthToSpace (issue 23: minilm, nucleus-seg).

Transformer exports build their attention masks from bools: ``Cast(mask, to=BOOL)`` becomes
NOT_EQUAL against zero, And/Or/Xor the LOGICAL_* ops (Xor as NOT_EQUAL of two bools), IsNaN
NOT_EQUAL of a tensor with itself (only NaN differs from itself), and GatherND (batch_dims 0)
GATHER_ND in ONNX order. Sub-pixel convolution decoders (nucleus-seg) use DepthToSpace:
TFLite's DEPTH_TO_SPACE on a channels-last tensor is exactly ONNX's DCR mode; CRD mode first
reorders the channels from (C, b, b) to (b, b, C) with RESHAPE, TRANSPOSE, RESHAPE.
"""

from __future__ import annotations

import numpy as np
import onnx

from converters.tflite._attrs import Attrs
from converters.tflite._layout import LayoutTracker, channels_last, identity

__all__ = ["LOGIC_ANY_DTYPE", "LOGIC_OPS", "LogicOps", "logic_problem"]

_LOGICAL = {"And": "LOGICAL_AND", "Or": "LOGICAL_OR", "Xor": "NOT_EQUAL"}
LOGIC_OPS = frozenset({*_LOGICAL, "IsNaN", "GatherND", "DepthToSpace"})
# ops of LOGIC_OPS that take integer or bool data
LOGIC_ANY_DTYPE = frozenset({*_LOGICAL, "GatherND"})



def logic_problem(n: onnx.NodeProto, a: Attrs, shapes: dict[str, tuple[int, ...]],
                  consts: dict[str, np.ndarray]) -> str:
    """Why a node of LOGIC_OPS cannot be lowered with these attributes ("" if it can)."""
    t = n.op_type
    if t == "DepthToSpace" and a.s("mode", "DCR") not in ("DCR", "CRD"):
        return f"DepthToSpace mode={a.s('mode', None)}"
    if t == "DepthToSpace" and len(shapes.get(n.input[0], ())) != 4:
        return "DepthToSpace of a non-4D tensor"
    if t == "GatherND" and a.i("batch_dims", 0) != 0:
        return "GatherND batch_dims!=0"
    return ""


class LogicOps(LayoutTracker):
    """And/Or/Xor, IsNaN, Cast to bool, GatherND, DepthToSpace."""

    def _logic(self, kind: str, n: onnx.NodeProto, ins: list[str]) -> None:
        """A binary op whose inputs take the layout of the first same-rank computed input."""
        out_rank = len(self.shape(n.output[0]))
        perm = identity(out_rank)
        for name in ins:
            if self.const(name) is None and len(self.shape(name)) == out_rank:
                perm = self.perm_of(name)
                break
        xs = [self.get(name, perm, rank=out_rank) for name in ins]
        y = self.new(n.output[0], perm)
        self.g.add_op(kind, xs, [y], n.name)

    def op_And(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._logic("LOGICAL_AND", n, list(n.input[:2]))

    def op_Or(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._logic("LOGICAL_OR", n, list(n.input[:2]))

    def op_Xor(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._logic("NOT_EQUAL", n, list(n.input[:2]))

    def op_IsNaN(self, n: onnx.NodeProto, a: Attrs) -> None:
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        self.g.add_op("NOT_EQUAL", [x, x], [y], n.name)

    def cast_to_bool(self, n: onnx.NodeProto) -> None:
        """Cast(x, to=BOOL): x != 0, zero of x's type inside the graph."""
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        src = self.g.tensors[x].dtype
        zero = self.g.add_const(n.output[0] + "_zero",
                                np.zeros((1,) * len(perm), np.bool_ if src == "bool" else
                                         np.float32 if src == "float32" else np.int32))
        y = self.new(n.output[0], perm)
        self.g.add_op("NOT_EQUAL", [x, zero], [y], n.name)

    def op_GatherND(self, n: onnx.NodeProto, a: Attrs) -> None:
        x = self.get(n.input[0])
        c = self.const(n.input[1])
        if c is None:
            idx = self.get(n.input[1])
        else:
            arr = np.asarray(c).astype(np.int64)
            dims = np.array(self.shape(n.input[0])[:arr.shape[-1]], np.int64)
            arr = np.where(arr < 0, arr + dims, arr)           # LiteRT takes no negative ones
            idx = self.g.add_const(n.input[1] + "_i32", arr.astype(np.int32))
        y = self.new(n.output[0], identity(len(self.shape(n.output[0]))))
        self.g.add_op("GATHER_ND", [x, idx], [y], n.name)

    def op_DepthToSpace(self, n: onnx.NodeProto, a: Attrs) -> None:
        b = a.i("blocksize")
        x = self.get(n.input[0], channels_last(4))
        if a.s("mode", "DCR") == "CRD":         # channel c*b*b + k -> k*C + c
            nn, hh, ww, cc = self.g.tensors[x].shape
            c = cc // (b * b)
            split = self.g.add_tensor(n.output[0] + "__crd", (nn, hh, ww, c, b * b),
                                      self.g.tensors[x].dtype)
            self._reshape(x, split, (nn, hh, ww, c, b * b))
            moved = self.g.add_tensor(n.output[0] + "__dcr5", (nn, hh, ww, b * b, c),
                                      self.g.tensors[x].dtype)
            self.g.add_op("TRANSPOSE", [split, self.i32("perm", [0, 1, 2, 4, 3])], [moved])
            x = self.g.add_tensor(n.output[0] + "__dcr", (nn, hh, ww, cc),
                                  self.g.tensors[split].dtype)
            self._reshape(moved, x, (nn, hh, ww, cc))
        y = self.new(n.output[0], channels_last(4))
        self.g.add_op("DEPTH_TO_SPACE", [x], [y], n.name, blockSize=b)

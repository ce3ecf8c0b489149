"""A small, TFLite-shaped graph that the ONNX lowering writes and the quantiser rewrites.

Kept apart from the flatbuffer writer so graph passes (activation fusion, dead-op removal,
transpose cancellation) are plain Python over dataclasses and can be tested without LiteRT.
Tensors are keyed by unique name; ops refer to tensors by name ("" = omitted optional input).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Graph", "Op", "Quant", "Tensor"]

# elementwise unary ops: they commute with reshapes
_UNARY = {"RELU", "RELU6", "RELU_N1_TO_1", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU"}


@dataclass
class Quant:
    """Affine quantisation: real = scale * (q - zero_point); axis for per-channel scales."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"                 # numpy dtype name: float32 float16 int8 int32 int64
    data: np.ndarray | None = None         # constants only
    quant: Quant | None = None


@dataclass
class Op:
    kind: str                              # a TFLite BuiltinOperator name, e.g. "CONV_2D"
    inputs: list[str]
    outputs: list[str]
    options: dict[str, Any] = field(default_factory=dict)  # attribute names of <Kind>OptionsT
    source: str = ""                       # ONNX node this came from, for reports


@dataclass
class Graph:
    tensors: dict[str, Tensor] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    # -- building -----------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.tensors:
            name, i = f"{base}_{i}", i + 1
        return name

    def add_tensor(self, name: str, shape: tuple[int, ...], dtype: str = "float32") -> str:
        name = self.unique(name)
        self.tensors[name] = Tensor(name, tuple(int(d) for d in shape), dtype)
        return name

    def add_const(self, name: str, data: np.ndarray) -> str:
        name = self.unique(name)
        arr = np.ascontiguousarray(data)
        self.tensors[name] = Tensor(name, tuple(arr.shape), arr.dtype.name, arr)
        return name

    def add_op(self, kind: str, inputs: list[str], outputs: list[str], source: str = "",
               **options: Any) -> Op:
        op = Op(kind, list(inputs), list(outputs), options, source)
        self.ops.append(op)
        return op

    # -- queries ------------------------------------------------------------------------------
    def is_const(self, name: str) -> bool:
        return bool(name) and self.tensors[name].data is not None

    def producer(self, name: str) -> Op | None:
        for op in self.ops:
            if name in op.outputs:
                return op
        return None

    def consumers(self, name: str) -> Iterator[Op]:
        return (op for op in self.ops if name in op.inputs)

    # -- passes -------------------------------------------------------------------------------
    def replace_uses(self, old: str, new: str) -> None:
        for op in self.ops:
            op.inputs = [new if t == old else t for t in op.inputs]
        self.outputs = [new if t == old else t for t in self.outputs]

    def rename(self, old: str, new: str) -> None:
        """Give tensor ``old`` the name ``new`` (moving a holder of ``new`` aside first)."""
        if old == new:
            return
        if new in self.tensors:
            self.rename(new, self.unique(new + "__pre"))
        t = self.tensors.pop(old)
        t.name = new
        self.tensors[new] = t
        for op in self.ops:
            op.inputs = [new if n == old else n for n in op.inputs]
            op.outputs = [new if n == old else n for n in op.outputs]
        self.inputs = [new if n == old else n for n in self.inputs]
        self.outputs = [new if n == old else n for n in self.outputs]

    def prune(self) -> None:
        """Drop ops whose outputs nobody reads, then tensors nobody references."""
        changed = True
        while changed:
            needed = set(self.outputs)
            for op in self.ops:
                needed.update(op.inputs)
            keep = [op for op in self.ops if any(o in needed for o in op.outputs)]
            changed = len(keep) != len(self.ops)
            self.ops = keep
        used = set(self.inputs) | set(self.outputs)
        for op in self.ops:
            used.update(op.inputs)
            used.update(op.outputs)
        self.tensors = {k: v for k, v in self.tensors.items() if k in used}

    def cancel_transposes(self) -> int:
        """Remove TRANSPOSE→TRANSPOSE chains whose permutations compose to the identity."""
        removed = 0
        for op in list(self.ops):
            if op.kind != "TRANSPOSE" or op not in self.ops:
                continue
            first = self.producer(op.inputs[0])
            if first is None or first.kind != "TRANSPOSE":
                continue
            p1 = self.tensors[first.inputs[1]].data
            p2 = self.tensors[op.inputs[1]].data
            assert p1 is not None and p2 is not None
            if list(np.asarray(p1)[np.asarray(p2)]) == list(range(len(p1))):
                if op.outputs[0] in self.outputs:
                    continue
                self.replace_uses(op.outputs[0], first.inputs[0])
                self.ops.remove(op)
                removed += 1
        self.prune()
        return removed

    def fuse_activations(self) -> None:
        """Fold a lone RELU/RELU6 after conv, FC, add... into the op's fused activation."""
        fusable = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL",
                   "TRANSPOSE_CONV", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}
        codes = {"RELU": 1, "RELU6": 3}
        for op in list(self.ops):
            if op.kind not in codes:
                continue
            prod = self.producer(op.inputs[0])
            if (prod is None or prod.kind not in fusable
                    or prod.options.get("fusedActivationFunction", 0) != 0
                    or prod.outputs[0] in self.outputs
                    or sum(1 for _ in self.consumers(prod.outputs[0])) != 1):
                continue
            prod.options["fusedActivationFunction"] = codes[op.kind]
            self.ops.remove(op)
            if op.outputs[0] in self.outputs:
                # keep the graph output's name: the fused op writes it directly
                old = prod.outputs[0]
                prod.outputs[0] = op.outputs[0]
                self.replace_uses(old, op.outputs[0])
            else:
                self.replace_uses(op.outputs[0], prod.outputs[0])
        self.prune()

    def merge_reshapes(self) -> None:
        """Sink reshapes past unary ops, fold RESHAPE chains, drop same-shape reshapes."""
        self._sink_reshapes()
        for op in list(self.ops):
            if op.kind != "RESHAPE":
                continue
            prev = self.producer(op.inputs[0])
            if prev is not None and prev.kind == "RESHAPE" and prev.outputs[0] not in self.outputs:
                op.inputs[0] = prev.inputs[0]
        self.prune()
        for op in list(self.ops):
            if op.kind == "RESHAPE" and self.tensors[op.inputs[0]].shape == \
                    self.tensors[op.outputs[0]].shape and op.outputs[0] not in self.outputs:
                self.replace_uses(op.outputs[0], op.inputs[0])
                self.ops.remove(op)
        self.prune()

    def _sink_reshapes(self) -> None:
        """RESHAPE→unary becomes unary→RESHAPE, so reshape pairs meet (1D conv chains)."""
        changed = True
        while changed:
            changed = False
            for op in self.ops:
                if op.kind not in _UNARY:
                    continue
                rs = self.producer(op.inputs[0])
                if rs is None or rs.kind != "RESHAPE" or rs.outputs[0] in self.outputs \
                        or sum(1 for _ in self.consumers(rs.outputs[0])) != 1:
                    continue
                src, mid, out = rs.inputs[0], rs.outputs[0], op.outputs[0]
                # the unary op now reads the reshape's input and writes a tensor of its shape
                self.tensors[mid].shape = self.tensors[src].shape
                op.inputs[0], op.outputs[0] = src, mid
                rs.inputs[0], rs.outputs[0] = mid, out
                i, j = self.ops.index(rs), self.ops.index(op)
                self.ops[i], self.ops[j] = op, rs
                changed = True
                break

    def op_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            out[op.kind] = out.get(op.kind, 0) + 1
        return out

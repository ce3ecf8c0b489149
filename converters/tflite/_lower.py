"""Lower a prepared (static, folded) ONNX graph to TFLite ops in channels-last layout.

Each ONNX tensor is held in the TFLite graph under some permutation of its axes (see
``_layout``). Layout-sensitive ops (Conv, pooling, Resize) ask for their input channels-last;
elementwise ops accept whatever layout their inputs are in; ops whose meaning depends on memory
order (Reshape, Flatten, MatMul) ask for the ONNX layout. An ONNX ``Transpose`` node only
relabels the permutation, so the model's own transposes cost nothing and cancelling pairs never
reach the flatbuffer. This module holds the op support check, the driver and the non-spatial
ops; ``_lower_spatial`` the convolutions and pooling.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from converters.tflite._attrs import Attrs, node_attrs
from converters.tflite._ir import Graph
from converters.tflite._layout import Perm, channels_last, identity, layout_record
from converters.tflite._lower_logic import LOGIC_ANY_DTYPE, LOGIC_OPS, LogicOps, logic_problem
from converters.tflite._lower_more import MORE_OPS, MoreOps
from converters.tflite._lower_rnn import RnnOps, gru_problem
from converters.tflite._prep import Prepared
from edgeops.errors import UnsupportedModelError

__all__ = ["SUPPORTED_OPS", "check_supported", "lower"]

SUPPORTED_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Clip",
    "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softmax", "MaxPool",
    "AveragePool", "GlobalAveragePool", "BatchNormalization", "Concat", "Reshape", "Flatten",
    "Squeeze", "Unsqueeze", "Transpose", "Pad", "Resize", "Slice", "ReduceMean", "Identity",
    "Dropout", "Equal", "Less", "Greater", "Not", "GRU", "LSTM",
}) | MORE_OPS | LOGIC_OPS
# ops that also move integer and bool tensors (ids, masks, one-hot comparisons)
_ANY_DTYPE = {"Identity", "Where", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand",
              "Equal", "Less", "Greater", "Not", "Cast", "Gather", "Concat", "Transpose",
              "Slice"} | LOGIC_ANY_DTYPE
# consumers that read a tensor in ONNX order (a held permutation costs them a TRANSPOSE) ...
_ONNX_ORDER = {"MatMul", "Gemm", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
# ... and ops that take any layout and hand it on
_AGNOSTIC = {"Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid",
             "Clip", "LeakyRelu", "Gelu", "Erf", "Pow", "Sqrt", "ReduceMean", "Slice",
             "LayerNormalization", "Identity", "Dropout", "Softmax", "Max", "Min", "Exp", "Neg"}
_SPATIAL = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
            "GlobalMaxPool", "Resize"}
# ONNX ops lowered exactly like another: all three only change the shape in ONNX order
_SAME_LOWERING = {"Dropout": "Identity", "Flatten": "Reshape", "Squeeze": "Reshape",
                  "Unsqueeze": "Reshape"}



def check_supported(prep: Prepared) -> None:
    """One error naming every node the TFLite lowering cannot take, before anything is built."""
    bad: list[str] = []
    dynamic = False
    for n in prep.graph.node:
        a = node_attrs(n)
        why = ""
        if n.domain not in ("", "ai.onnx") or n.op_type not in SUPPORTED_OPS:
            why = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
            if n.op_type == "Erf" and n.domain in ("", "ai.onnx"):
                why = _ERF_HINT
        elif n.op_type == "Resize" and a.s("mode", "nearest") not in ("nearest", "linear"):
            why = f"Resize mode={a.s('mode', None)}"
        elif n.op_type == "Pad" and a.s("mode", "constant") not in ("constant", "reflect"):
            why = f"Pad mode={a.s('mode', None)}"
        elif n.op_type == "ConvTranspose" and a.i("group", 1) != 1:
            why = "ConvTranspose group>1"
        elif n.op_type in ("Conv", "ConvTranspose") and n.input[1] not in prep.consts:
            why = f"{n.op_type} with non-constant weights"
        elif n.op_type in ("Conv", "ConvTranspose", "MaxPool", "AveragePool") and \
                len(prep.shapes.get(n.input[0], ())) not in (3, 4):
            why = f"{n.op_type} on rank {len(prep.shapes.get(n.input[0], ()))} (1D/2D only)"
        elif any(prep.dtypes.get(i, np.dtype(np.float32)) not in (np.float32,)
                 for i in n.input[:1] if i and i not in prep.consts) and \
                n.op_type not in _ANY_DTYPE:
            why = f"{n.op_type} on {prep.dtypes.get(n.input[0])} data (float32 only)"
        elif n.op_type == "Resize" and len(prep.shapes.get(n.input[0], ())) != 4:
            why = "Resize of a non-4D tensor"
        elif n.op_type == "Gemm" and (a.i("transA", 0)
                                      or n.input[1] not in prep.consts):
            why = "Gemm with transA or non-constant B"
        elif n.op_type == "ConvTranspose" and any(d != 1 for d in a.ints("dilations", [1])):
            why = "ConvTranspose with dilations"
        elif n.op_type == "MaxPool" and len(n.output) > 1 and n.output[1]:
            why = "MaxPool with indices output"
        elif n.op_type in ("MaxPool", "AveragePool") and \
                any(d != 1 for d in a.ints("dilations", [1])):
            why = f"{n.op_type} with dilations"
        elif any(o and o not in prep.shapes for o in n.output):
            why = f"{n.op_type} with an output shape that is not static"
            dynamic = True
        else:
            why = _attribute_problem(n, a, prep)
        if why:
            bad.append(f"{n.name or n.output[0]} ({why})")
    if bad:
        kinds = sorted({b.split("(", 1)[1][:-1] for b in bad})   # keeps "(float32 only)" whole
        hint = f"unsupported: {', '.join(kinds)}; change the model or pick an ONNX target " \
               "(x86-cpu, arm64-cpu), which runs every op"
        if dynamic:
            hint = ("shapes that depend on data at run time cannot be written to TFLite: fix "
                    "the input shapes with --input-shape NAME=1x3x224x224, or pick an ONNX "
                    "target (x86-cpu, arm64-cpu), which runs dynamic shapes; " + hint)
        raise UnsupportedModelError(
            f"{len(bad)} node(s) not supported by the TFLite backend: {', '.join(bad)}",
            hint=hint)


_CAST_TO = {onnx.TensorProto.FLOAT, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
            onnx.TensorProto.BOOL}
_CAST_FROM = {np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64, np.bool_)}
_ERF_HINT = "Erf outside GELU x*0.5*(1+erf(x/sqrt(2)))"


def _attribute_problem(n: onnx.NodeProto, a: Attrs, prep: Prepared) -> str:
    """Why a supported op type cannot be lowered with these attributes/inputs ("" if it can)."""
    def const(i: int) -> bool:
        return len(n.input) > i and bool(n.input[i]) and n.input[i] in prep.consts

    t = n.op_type
    if t == "Pow" and not const(1):
        return "Pow with a non-constant exponent"
    if t == "Pow" and np.asarray(prep.consts[n.input[1]]).size != 1:
        return "Pow with a non-scalar exponent"
    if t == "Cast" and a.i("to", 0) not in _CAST_TO:
        return f"Cast to {onnx.TensorProto.DataType.Name(a.i('to', 0))}"
    if t == "Cast" and prep.dtypes.get(n.input[0], np.dtype(np.float32)) not in _CAST_FROM:
        return f"Cast from {prep.dtypes.get(n.input[0])}"
    if t == "LayerNormalization" and len(n.output) > 1 and any(n.output[1:]):
        return "LayerNormalization with Mean/InvStdDev outputs"
    if t == "LayerNormalization" and a.i("stash_type", 1) != 1:
        return "LayerNormalization stash_type!=1"
    if t == "MatMul" and any(len(prep.shapes.get(i, ())) < 2 for i in n.input[:2]):
        return "MatMul with a 1D operand"
    if t.startswith("Reduce") and a.i("noop_with_empty_axes", 0) \
            and not (const(1) and np.asarray(prep.consts[n.input[1]]).size) \
            and not a.get("axes"):
        return f"{t} noop_with_empty_axes=1"
    if t in ("GRU", "LSTM"):
        return gru_problem(n, a, prep.consts, prep.shapes)
    if t == "Split" and any(not o for o in n.output):
        return "Split with an omitted output"
    if t in LOGIC_OPS:
        return logic_problem(n, a, prep.shapes, prep.consts)
    return ""


class _Lowering(MoreOps, RnnOps, LogicOps):
    """ONNX node by node into the TFLite graph; spatial ops come from ``SpatialOps``, the ops
    of real exports beyond convolutions (split, reductions, norms) from :class:`MoreOps`."""

    def __init__(self, prep: Prepared, keep_io_layout: bool) -> None:
        super().__init__(prep)
        self.keep_io = keep_io_layout
        self.io_layout: dict[str, dict[str, object]] = {}

    def run(self) -> Graph:
        g = self.p.graph
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        self.consumers = consumers
        for vi in g.input:
            if vi.name in self.p.consts:
                continue
            shp = self.p.input_shapes[vi.name]
            spatial = any(c.op_type in _SPATIAL for c in consumers.get(vi.name, []))
            perm = channels_last(len(shp)) if (not self.keep_io and spatial and len(shp) in (3, 4)) \
                else identity(len(shp))
            if self.p.dtypes.get(vi.name) == np.int64:
                # the artifact takes the model's int64 ids and computes in int32
                raw = self.g.add_tensor(vi.name, tuple(shp[i] for i in perm), "int64")
                self.g.inputs.append(raw)
                self.g.add_op("CAST", [raw], [self.new(vi.name, perm)], vi.name)
            else:
                self.g.inputs.append(self.new(vi.name, perm))
            self.io_layout[vi.name] = layout_record(perm)
        for n in g.node:
            getattr(self, "op_" + _SAME_LOWERING.get(n.op_type, n.op_type))(n, node_attrs(n))
        for o in g.output:
            perm = self.perm_of(o.name)
            if self.keep_io or not (len(perm) == 4 and perm == channels_last(4)):
                perm = identity(len(perm))
            t = self.get(o.name, perm)
            if t in self.g.inputs or t in self.g.outputs or self.g.is_const(t):
                # an output that is an input, another output or a constant needs its own tensor
                copy = self.g.add_tensor(o.name + "__copy", self.g.tensors[t].shape,
                                         self.g.tensors[t].dtype)
                self._reshape(t, copy, self.g.tensors[t].shape)
                t = copy
            self.g.outputs.append(t)
            self.io_layout[o.name] = layout_record(perm)
        self.g.prune()
        self.g.cancel_transposes()
        self.g.merge_reshapes()
        self.g.fuse_activations()
        # devices match golden outputs by tensor name: the artifact's I/O carry the ONNX names
        for o, t in zip(g.output, list(self.g.outputs), strict=True):
            self.g.rename(t, o.name)
        return self.g

    def op_Cast(self, n: onnx.NodeProto, a: Attrs) -> None:
        if a.i("to", 0) == onnx.TensorProto.BOOL:
            self.cast_to_bool(n)
        else:
            super().op_Cast(n, a)

    def op_Identity(self, n: onnx.NodeProto, a: Attrs) -> None:
        if n.input[0] in self.p.consts:
            self.p.consts[n.output[0]] = self.p.consts[n.input[0]]
        else:
            self.val[n.output[0]] = self.val[n.input[0]]

    def _binary(self, n: onnx.NodeProto, kind: str) -> None:
        a_name, b_name = n.input[0], n.input[1]
        out_rank = len(self.shape(n.output[0]))
        if kind == "DIV" and self.const(b_name) is not None:
            recip = (1.0 / np.asarray(self.p.consts[b_name], np.float64)).astype(np.float32)
            b_name = b_name + "__recip"
            self.p.consts[b_name] = recip
            kind = "MUL"
        perm = identity(out_rank)
        for name in (a_name, b_name):
            if self.const(name) is None and len(self.shape(name)) == out_rank:
                perm = self.perm_of(name)
                if perm != identity(out_rank):
                    break
        ins = [self.get(name, perm, rank=out_rank) for name in (a_name, b_name)]
        y = self.new(n.output[0], perm)
        self.g.add_op(kind, ins, [y], n.name, **({"fusedActivationFunction": 0}
                                                 if kind in ("ADD", "SUB", "MUL", "DIV")
                                                 else {}))

    def op_Equal(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._binary(n, "EQUAL")

    def op_Less(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._binary(n, "LESS")

    def op_Greater(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._binary(n, "GREATER")

    def op_Not(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._unary(n, "LOGICAL_NOT")

    def op_Add(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._binary(n, "ADD")

    def op_Sub(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._binary(n, "SUB")

    def op_Mul(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._binary(n, "MUL")

    def op_Div(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._binary(n, "DIV")

    def _unary(self, n: onnx.NodeProto, kind: str, **opts: object) -> None:
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        self.g.add_op(kind, [x], [y], n.name, **opts)

    def op_Relu(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._unary(n, "RELU")

    def op_Sigmoid(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._unary(n, "LOGISTIC")

    def op_Tanh(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._unary(n, "TANH")

    def op_HardSwish(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._unary(n, "HARD_SWISH")

    def op_LeakyRelu(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._unary(n, "LEAKY_RELU", alpha=a.f("alpha", 0.01))

    def _clamp(self, n: onnx.NodeProto, x: str, lo: float | None, hi: float | None,
               perm: Perm) -> None:
        rank = len(perm)
        cur = x
        for v, kind in ((lo, "MAXIMUM"), (hi, "MINIMUM")):
            if v is None:
                continue
            other = (kind == "MAXIMUM" and hi is not None)
            out = self.g.add_tensor(n.output[0] + f"__{kind.lower()}", self.g.tensors[x].shape) \
                if other else self.new(n.output[0], perm)
            c = self.g.add_const(f"{n.name}_{kind.lower()}",
                                 np.full((1,) * rank, v, np.float32))
            self.g.add_op(kind, [cur, c], [out], n.name)
            cur = out

    def op_Clip(self, n: onnx.NodeProto, a: Attrs) -> None:
        lo_v = self.const(n.input[1]) if len(n.input) > 1 and n.input[1] else a.get("min")
        hi_v = self.const(n.input[2]) if len(n.input) > 2 and n.input[2] else a.get("max")
        lo = None if lo_v is None else float(np.asarray(lo_v))
        hi = None if hi_v is None else float(np.asarray(hi_v))
        if lo == 0.0 and hi == 6.0:
            self._unary(n, "RELU6")
        elif lo == 0.0 and hi is None:
            self._unary(n, "RELU")
        elif lo == -1.0 and hi == 1.0:
            self._unary(n, "RELU_N1_TO_1")
        else:
            perm = self.perm_of(n.input[0])
            self._clamp(n, self.get(n.input[0], perm), lo, hi, perm)

    def op_HardSigmoid(self, n: onnx.NodeProto, a: Attrs) -> None:
        alpha = a.f("alpha", 0.2)
        beta = a.f("beta", 0.5)
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        rank = len(perm)
        shp = self.g.tensors[x].shape
        t1 = self.g.add_tensor(n.output[0] + "__scaled", shp)
        self.g.add_op("MUL", [x, self.g.add_const("hs_alpha", np.full((1,) * rank, alpha,
                                                                     np.float32))], [t1],
                      n.name, fusedActivationFunction=0)
        t2 = self.g.add_tensor(n.output[0] + "__shifted", shp)
        self.g.add_op("ADD", [t1, self.g.add_const("hs_beta", np.full((1,) * rank, beta,
                                                                     np.float32))], [t2],
                      n.name, fusedActivationFunction=0)
        self._clamp(n, t2, 0.0, 1.0, perm)

    def op_PRelu(self, n: onnx.NodeProto, a: Attrs) -> None:
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        slope = self.get(n.input[1], perm, rank=len(perm))
        y = self.new(n.output[0], perm)
        self.g.add_op("PRELU", [x, slope], [y], n.name)

    def op_Softmax(self, n: onnx.NodeProto, a: Attrs) -> None:
        rank = len(self.shape(n.input[0]))
        default = -1 if self.p.opset >= 13 else 1
        axis = a.i("axis", default) % rank
        if self.p.opset < 13 and axis != rank - 1:
            raise UnsupportedModelError(f"Softmax {n.name}: opset<13 softmax over axes "
                                        f"{axis}.. of a rank-{rank} tensor")
        perm = self.perm_of(n.input[0])
        if perm[-1] != axis:
            perm = (*tuple(p for p in identity(rank) if p != axis), axis)
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        self.g.add_op("SOFTMAX", [x], [y], n.name, beta=1.0)

    def op_BatchNormalization(self, n: onnx.NodeProto, a: Attrs) -> None:
        eps = a.f("epsilon", 1e-5)
        gamma, beta, mean, var = (np.asarray(self.p.consts[i], np.float64) for i in n.input[1:5])
        k = gamma / np.sqrt(var + eps)
        rank = len(self.shape(n.input[0]))
        shp = (1, -1) + (1,) * (rank - 2)
        ks, bs = n.output[0] + "__bn_k", n.output[0] + "__bn_b"
        self.p.consts[ks] = k.reshape(shp).astype(np.float32)
        self.p.consts[bs] = (beta - mean * k).reshape(shp).astype(np.float32)
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        t = self.g.add_tensor(n.output[0] + "__bn", self.g.tensors[x].shape)
        self.g.add_op("MUL", [x, self.get(ks, perm)], [t], n.name, fusedActivationFunction=0)
        y = self.new(n.output[0], perm)
        self.g.add_op("ADD", [t, self.get(bs, perm)], [y], n.name, fusedActivationFunction=0)

    def op_Concat(self, n: onnx.NodeProto, a: Attrs) -> None:
        rank = len(self.shape(n.output[0]))
        axis = a.i("axis") % rank
        perm = identity(rank)
        for i in n.input:
            if self.const(i) is None:
                perm = self.perm_of(i)
                if perm != identity(rank):
                    break
        perm = self._cheapest_layout(n, perm)
        ins = [self.get(i, perm) for i in n.input if i and math.prod(self.shape(i)) > 0]
        y = self.new(n.output[0], perm)
        self.g.add_op("CONCATENATION", ins, [y], n.name, axis=perm.index(axis))

    def _cheapest_layout(self, n: onnx.NodeProto, default: Perm) -> Perm:
        """The layout for an op joining tensors held in different layouts that moves the
        fewest elements: inputs not in it are transposed, and so is the output when it is a
        graph output or flows into ops that need ONNX order. Ties keep ``default``."""
        rank = len(self.shape(n.output[0]))
        held = [(self.perm_of(i), math.prod(self.shape(i))) for i in n.input
                if i and self.const(i) is None and len(self.shape(i)) == rank]
        out_size = math.prod(self.shape(n.output[0]))
        out_wants_onnx = n.output[0] in {o.name for o in self.p.graph.output} or \
            self._wants_onnx_order(n.output[0])

        def cost(p: Perm) -> int:
            moved = sum(size for q, size in held if q != p)
            return moved + (out_size if out_wants_onnx and p != identity(rank) else 0)

        best = default
        for p in [identity(rank), *(q for q, _ in held)]:
            if cost(p) < cost(best):
                best = p
        return best

    def _reshape_node(self, n: onnx.NodeProto) -> None:
        shp = self.shape(n.output[0])
        ins = self.shape(n.input[0])
        if n.input[0] in self.val and len(ins) >= 3 and len(shp) >= 3 \
                and self.perm_of(n.input[0]) == channels_last(len(ins)) \
                and ins[:2] == shp[:2]:
            # only the spatial dims merge or split (a detection head's (N, C, H, W) ->
            # (N, C, H*W)): channels-last memory order is the same before and after, so the
            # result stays channels-last and no TRANSPOSE is needed
            x = self.get(n.input[0], channels_last(len(ins)))
            perm = channels_last(len(shp))
            y = self.new(n.output[0], perm)
            self._reshape(x, y, tuple(shp[i] for i in perm))
            return
        x = self.get(n.input[0])
        y = self.new(n.output[0], identity(len(shp)))
        self._reshape(x, y, shp)

    def op_Reshape(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._reshape_node(n)

    def op_Transpose(self, n: onnx.NodeProto, a: Attrs) -> None:
        rank = len(self.shape(n.input[0]))
        t = a.ints("perm", list(reversed(range(rank))))
        ir, cur = self.val[n.input[0]]
        inv_t = [t.index(i) for i in range(rank)]
        # ir = in.transpose(cur) and out = in.transpose(t)  =>  ir = out.transpose(inv_t∘cur)
        perm = tuple(inv_t[c] for c in cur)
        self.val[n.output[0]] = (ir, perm)
        swapped = (*range(rank - 2), rank - 1, rank - 2)
        readers = self.consumers.get(n.output[0], [])
        if perm == swapped and readers and all(c.op_type == "MatMul" for c in readers):
            return                                   # k^T: BATCH_MATMUL's adj flag reads it
        if perm != identity(rank) and self._wants_onnx_order(n.output[0]):
            # relabelling would make every elementwise op downstream hold the permuted order
            # and each MatMul/Reshape pay its own TRANSPOSE: transpose once, here, instead
            self.val[n.output[0]] = (self.get(n.output[0], identity(rank)), identity(rank))

    def _wants_onnx_order(self, name: str) -> bool:
        """Whether ``name`` flows, through layout-agnostic ops only, into ops that need the ONNX
        order (MatMul, Gemm, Reshape...) and into no op that prefers channels-last."""
        seen: set[str] = set()
        votes: set[str] = set()
        todo = [name]
        while todo and len(seen) < 64:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in self.p.graph.output:
                votes.add("output")
            for c in self.consumers.get(t, []):
                if c.op_type in _ONNX_ORDER:
                    votes.add("onnx")
                elif c.op_type in _SPATIAL or c.op_type in ("Transpose", "Concat", "Split"):
                    votes.add("other")
                elif c.op_type in _AGNOSTIC:
                    todo.extend(o for o in c.output if o)
                else:
                    votes.add("other")
        return votes == {"onnx"}

    def op_Pad(self, n: onnx.NodeProto, a: Attrs) -> None:
        rank = len(self.shape(n.input[0]))
        pads_v = self.const(n.input[1]) if len(n.input) > 1 and n.input[1] else a.get("pads")
        pads = [int(v) for v in np.asarray(pads_v).ravel()]
        axes = list(range(rank))
        if len(n.input) > 3 and n.input[3]:
            axes = [int(v) % rank for v in np.asarray(self.p.consts[n.input[3]]).ravel()]
        full = [[0, 0] for _ in range(rank)]
        for j, ax in enumerate(axes):
            full[ax] = [pads[j], pads[j + len(axes)]]
        if any(v < 0 for p in full for v in p):
            raise UnsupportedModelError(f"Pad {n.name} has negative pads")
        value = 0.0
        if len(n.input) > 2 and n.input[2]:
            value = float(np.asarray(self.p.consts[n.input[2]]).ravel()[0])
        elif "value" in a:
            value = a.f("value")
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        pc = self.g.add_const("pads", np.array([full[p] for p in perm], np.int32))
        mode = a.s("mode", "constant")
        if mode == "reflect":
            self.g.add_op("MIRROR_PAD", [x, pc], [y], n.name, mode=0)
        elif value == 0.0:
            self.g.add_op("PAD", [x, pc], [y], n.name)
        else:
            self.g.add_op("PADV2", [x, pc, self.g.add_const("padv", np.array([value],
                                                                             np.float32))],
                          [y], n.name)

    def op_Resize(self, n: onnx.NodeProto, a: Attrs) -> None:
        ins, outs = self.shape(n.input[0]), self.shape(n.output[0])
        if len(ins) != 4 or ins[:2] != outs[:2]:
            raise UnsupportedModelError(f"Resize {n.name}: only the spatial dims of a 4D "
                                        "tensor may be resized")
        mode = a.s("mode", "nearest")
        ctm = a.s("coordinate_transformation_mode", "half_pixel")
        align = ctm == "align_corners"
        half = ctm in ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn")
        if mode == "nearest" and ctm == "asymmetric":
            nm = a.s("nearest_mode", "round_prefer_floor")
            if nm != "floor" and any(o % i for i, o in zip(ins[2:], outs[2:], strict=True)):
                raise UnsupportedModelError(f"Resize {n.name}: nearest_mode {nm} with a "
                                            "non-integer scale")
        x = self.get(n.input[0], channels_last(4))
        y = self.new(n.output[0], channels_last(4))
        kind = "RESIZE_NEAREST_NEIGHBOR" if mode == "nearest" else "RESIZE_BILINEAR"
        self.g.add_op(kind, [x, self.i32("size", list(outs[2:]))], [y], n.name,
                      alignCorners=align, halfPixelCenters=half)

    def op_Slice(self, n: onnx.NodeProto, a: Attrs) -> None:
        shp = self.shape(n.input[0])
        rank = len(shp)

        def arg(i: int, key: str) -> list[int] | None:
            if len(n.input) > i and n.input[i]:
                return [int(v) for v in np.asarray(self.p.consts[n.input[i]]).ravel()]
            return a.ints(key) if key in a else None

        starts, ends = arg(1, "starts") or [], arg(2, "ends") or []
        axes = [x % rank for x in (arg(3, "axes") or list(range(len(starts))))]
        steps = arg(4, "steps") or [1] * len(starts)
        b, e, st = [0] * rank, list(shp), [1] * rank
        end_mask = 0
        perm = self.perm_of(n.input[0])
        for s0, e0, ax, stp in zip(starts, ends, axes, steps, strict=True):
            dim = shp[ax]
            if stp > 0:
                b[ax] = min(max(s0 + dim if s0 < 0 else s0, 0), dim)
                e[ax] = min(max(e0 + dim if e0 < 0 else e0, 0), dim)
            else:
                b[ax] = min(max(s0 + dim if s0 < 0 else s0, -1), dim - 1)
                ev = e0 + dim if e0 < 0 else e0
                e[ax] = min(max(ev, -1), dim - 1)
                if e[ax] == -1:
                    end_mask |= 1 << perm.index(ax)
            st[ax] = stp
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        self.g.add_op("STRIDED_SLICE", [x, self.i32("begin", [b[p] for p in perm]),
                                        self.i32("end", [e[p] for p in perm]),
                                        self.i32("strides", [st[p] for p in perm])], [y],
                      n.name, endMask=end_mask)

    def _fc(self, n: onnx.NodeProto, x_name: str, w: np.ndarray, bias: np.ndarray) -> None:
        """FULLY_CONNECTED with weights [out, in]; keeps leading dims of x."""
        x = self.get(x_name)
        xs = self.shape(x_name)
        out = self.shape(n.output[0])
        y = self.new(n.output[0], identity(len(out)))
        self.g.add_op("FULLY_CONNECTED", [x, self.g.add_const(n.output[0] + "_w",
                                                              w.astype(np.float32)),
                                          self.g.add_const(n.output[0] + "_bias",
                                                           bias.astype(np.float32))], [y],
                      n.name, keepNumDims=len(xs) > 2, fusedActivationFunction=0)

    def op_Gemm(self, n: onnx.NodeProto, a: Attrs) -> None:
        alpha = a.f("alpha", 1.0)
        beta = a.f("beta", 1.0)
        if a.i("transA", 0) or self.const(n.input[1]) is None:
            raise UnsupportedModelError(f"Gemm {n.name}: transA or non-constant B")
        b = np.asarray(self.p.consts[n.input[1]], np.float64)
        w = b if a.i("transB", 0) else b.T
        w = w * alpha
        nout = w.shape[0]
        c = self.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if c is None:
            bias = np.zeros(nout)
        else:
            cb = np.broadcast_to(np.asarray(c, np.float64) * beta, self.shape(n.output[0]))
            if not np.all(cb == cb[:1]):
                raise UnsupportedModelError(f"Gemm {n.name}: bias varies along rows")
            bias = cb[0]
        self._fc(n, n.input[0], w, bias)

    def op_MatMul(self, n: onnx.NodeProto, a: Attrs) -> None:
        b = self.const(n.input[1])
        if b is not None and np.asarray(b).ndim == 2:
            bb = np.asarray(b, np.float32)
            self._fc(n, n.input[0], bb.T, np.zeros(bb.shape[1], np.float32))
            return
        out = self.shape(n.output[0])
        ins, adj = [], []
        for name in n.input[:2]:
            rank = len(self.shape(name))
            swapped = (*range(rank - 2), rank - 1, rank - 2)
            if rank >= 2 and self.const(name) is None and self.perm_of(name) == swapped:
                ins.append(self.val[name][0])          # held transposed (k^T): adj flag, no op
                adj.append(True)
            else:
                ins.append(self.get(name))
                adj.append(False)
        y = self.new(n.output[0], identity(len(out)))
        self.g.add_op("BATCH_MATMUL", ins, [y], n.name, adjX=adj[0], adjY=adj[1])


def lower(prep: Prepared, *, keep_io_layout: bool) -> tuple[Graph, dict[str, dict[str, object]]]:
    """The float32 TFLite graph and each graph input/output's layout record."""
    check_supported(prep)
    low = _Lowering(prep, keep_io_layout)
    return low.run(), low.io_layout

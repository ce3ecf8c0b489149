"""Lower a prepared (static, folded) ONNX graph to TFLite ops in channels-last layout.

Each ONNX tensor is held in the TFLite graph under some permutation ``perm`` of its ONNX axes
(``ir = onnx.transpose(perm)``). Layout-sensitive ops (Conv, pooling, Resize) ask for their input
channels-last; elementwise ops accept whatever layout their inputs are in; ops whose meaning
depends on memory order (Reshape, Flatten, MatMul) ask for the ONNX layout. A layout change is
emitted lazily, once per tensor and layout (cached), and an ONNX ``Transpose`` node only
relabels the permutation, so the model's own transposes cost nothing and cancelling pairs never
reach the flatbuffer. Transposes that move only size-1 axes become reshapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from converters.tflite._ir import Graph
from converters.tflite._prep import Prepared
from edgeops.errors import UnsupportedModelError

__all__ = ["SUPPORTED_OPS", "check_supported", "lower"]

Perm = tuple[int, ...]

SUPPORTED_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Clip",
    "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softmax", "MaxPool",
    "AveragePool", "GlobalAveragePool", "BatchNormalization", "Concat", "Reshape", "Flatten",
    "Squeeze", "Unsqueeze", "Transpose", "Pad", "Resize", "Slice", "ReduceMean", "Identity",
    "Dropout",
})
_SPATIAL = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "Resize"}
_PAD_MIN = -3.4e38
# ONNX ops lowered exactly like another: all three only change the shape in ONNX order
_SAME_LOWERING = {"Dropout": "Identity", "Flatten": "Reshape", "Squeeze": "Reshape",
                  "Unsqueeze": "Reshape"}


def _cl(rank: int) -> Perm:
    """Channels-last permutation of an N, C, spatial... tensor."""
    return (0, *range(2, rank), 1) if rank >= 3 else tuple(range(rank))


def _ident(rank: int) -> Perm:
    return tuple(range(rank))


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def check_supported(prep: Prepared) -> None:
    """One error naming every node the TFLite lowering cannot take, before anything is built."""
    bad: list[str] = []
    for n in prep.graph.node:
        a = _attrs(n)
        why = ""
        if n.domain not in ("", "ai.onnx") or n.op_type not in SUPPORTED_OPS:
            why = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        elif n.op_type == "Resize" and _s(a.get("mode", "nearest")) not in ("nearest", "linear"):
            why = f"Resize mode={_s(a.get('mode'))}"
        elif n.op_type == "Pad" and _s(a.get("mode", "constant")) not in ("constant", "reflect"):
            why = f"Pad mode={_s(a.get('mode'))}"
        elif n.op_type == "ConvTranspose" and int(a.get("group", 1)) != 1:  # type: ignore[call-overload]
            why = "ConvTranspose group>1"
        elif n.op_type in ("Conv", "ConvTranspose") and n.input[1] not in prep.consts:
            why = f"{n.op_type} with non-constant weights"
        elif n.op_type in ("Conv", "ConvTranspose", "MaxPool", "AveragePool") and \
                len(prep.shapes.get(n.input[0], ())) not in (3, 4):
            why = f"{n.op_type} on rank {len(prep.shapes.get(n.input[0], ()))} (1D/2D only)"
        elif any(prep.dtypes.get(i, np.dtype(np.float32)) not in (np.float32,)
                 for i in n.input[:1] if i and i not in prep.consts) and \
                n.op_type not in ("Identity",):
            why = f"{n.op_type} on {prep.dtypes.get(n.input[0])} data (float32 only)"
        elif any(o and o not in prep.shapes for o in n.output):
            why = f"{n.op_type} with an output shape that is not static"
        if why:
            bad.append(f"{n.name or n.output[0]} ({why})")
    if bad:
        kinds = sorted({b.split("(", 1)[1].rstrip(")") for b in bad})
        raise UnsupportedModelError(
            f"{len(bad)} node(s) not supported by the TFLite backend: {', '.join(bad)}",
            hint=f"unsupported: {', '.join(kinds)}; change the model or pick an ONNX target")


class _Lowering:
    def __init__(self, prep: Prepared, keep_io_layout: bool) -> None:
        self.p = prep
        self.g = Graph()
        self.keep_io = keep_io_layout
        self.val: dict[str, tuple[str, Perm]] = {}
        self.cache: dict[tuple[str, Perm], str] = {}
        self.io_layout: dict[str, dict[str, object]] = {}

    # -- tensors in layouts --------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        return self.p.shapes[name]

    def const(self, name: str) -> np.ndarray | None:
        return self.p.consts.get(name) if name else None

    def perm_of(self, name: str) -> Perm:
        if name in self.val:
            return self.val[name][1]
        return _ident(len(self.shape(name)))

    def new(self, onnx_name: str, perm: Perm, shape: Sequence[int] | None = None) -> str:
        shp = tuple(self.shape(onnx_name)) if shape is None else tuple(shape)
        t = self.g.add_tensor(onnx_name, tuple(shp[i] for i in perm))
        self.val[onnx_name] = (t, perm)
        return t

    def get(self, name: str, want: Perm | None = None, *, rank: int | None = None) -> str:
        """The TFLite tensor holding ONNX tensor ``name`` in layout ``want`` (default ONNX)."""
        c = self.const(name)
        if c is not None:
            arr = np.asarray(c)
            if rank is not None and arr.ndim < rank:
                arr = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
            want = want or _ident(arr.ndim)
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
        want = want or _ident(len(cur))
        if rank is not None and len(cur) < rank:
            # broadcasting operand of lower rank: bring to ONNX layout, then pad leading 1s
            ir = self.get(name)
            shp = (1,) * (rank - len(cur)) + self.shape(name)
            key = (name + f"@{rank}", _ident(rank))
            if key not in self.cache:
                out = self.g.add_tensor(name + "__r", shp)
                self._reshape(ir, out, shp)
                self.cache[key] = out
            ir = self.cache[key]
            cur = _ident(rank)
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
        out = self.g.add_tensor(key_name + "__" + "".join(map(str, want)), out_shape)
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
    def run(self) -> Graph:
        g = self.p.graph
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        for vi in g.input:
            if vi.name in self.p.consts:
                continue
            shp = self.p.input_shapes[vi.name]
            spatial = any(c.op_type in _SPATIAL for c in consumers.get(vi.name, []))
            perm = _cl(len(shp)) if (not self.keep_io and spatial and len(shp) in (3, 4)) \
                else _ident(len(shp))
            self.g.inputs.append(self.new(vi.name, perm))
            self.io_layout[vi.name] = self._layout_record(perm)
        for n in g.node:
            getattr(self, "op_" + _SAME_LOWERING.get(n.op_type, n.op_type))(n, _attrs(n))
        for o in g.output:
            perm = self.perm_of(o.name)
            if self.keep_io or not (len(perm) == 4 and perm == _cl(4)):
                perm = _ident(len(perm))
            t = self.get(o.name, perm)
            if t in self.g.inputs or t in self.g.outputs or self.g.is_const(t):
                # an output that is an input, another output or a constant needs its own tensor
                copy = self.g.add_tensor(o.name + "__copy", self.g.tensors[t].shape)
                self._reshape(t, copy, self.g.tensors[t].shape)
                t = copy
            self.g.outputs.append(t)
            self.io_layout[o.name] = self._layout_record(perm)
        self.g.prune()
        self.g.cancel_transposes()
        _merge_reshapes(self.g)
        self.g.fuse_activations()
        # devices match golden outputs by tensor name: the artifact's I/O carry the ONNX names
        for o, t in zip(g.output, list(self.g.outputs), strict=True):
            self.g.rename(t, o.name)
        return self.g

    def _layout_record(self, perm: Perm) -> dict[str, object]:
        names = {(0, 2, 3, 1): "NHWC", (0, 1, 2, 3): "NCHW", (0, 2, 1): "NWC", (0, 1, 2): "NCW"}
        return {"layout": names.get(perm, "as-onnx" if perm == _ident(len(perm)) else "custom"),
                "perm_from_onnx": list(perm)}

    # -- helpers for spatial ops ---------------------------------------------------------------
    def _to4d(self, name: str) -> tuple[str, bool]:
        """Channels-last 4D view of a 3D (N, C, T) or 4D tensor; True when it was 1D."""
        rank = len(self.shape(name))
        x = self.get(name, _cl(rank))
        if rank == 4:
            return x, False
        n, c, t = self.shape(name)
        out = self.g.add_tensor(name + "__4d", (n, 1, t, c))
        self._reshape(x, out, (n, 1, t, c))
        return out, True

    def _from4d(self, onnx_out: str, t4: str, was1d: bool) -> None:
        if not was1d:
            self.val[onnx_out] = (t4, _cl(4))
            return
        n, c, t = self.shape(onnx_out)
        out = self.new(onnx_out, _cl(3))
        self._reshape(t4, out, (n, t, c))

    def _spatial_params(self, a: dict[str, object], k: Sequence[int], in_hw: Sequence[int],
                        out_hw: Sequence[int], was1d: bool) -> tuple[list[int], list[int],
                                                                     list[int], list[int]]:
        nd = len(k)
        strides = list(a.get("strides", [1] * nd))  # type: ignore[call-overload]
        dil = list(a.get("dilations", [1] * nd))  # type: ignore[call-overload]
        pads = list(a.get("pads", [0] * 2 * nd))  # type: ignore[call-overload]
        auto = _s(a.get("auto_pad", "NOTSET"))
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0] * 2 * nd
            for i in range(nd):
                total = max((math.ceil(in_hw[i] / strides[i]) - 1) * strides[i]
                            + (k[i] - 1) * dil[i] + 1 - in_hw[i], 0)
                small = total // 2
                pads[i], pads[i + nd] = ((small, total - small) if auto == "SAME_UPPER"
                                         else (total - small, small))
        elif auto == "VALID":
            pads = [0] * 2 * nd
        if was1d:
            return [1, strides[0]], [1, dil[0]], [0, pads[0]], [0, pads[1]]
        return strides, dil, pads[:nd], pads[nd:]

    @staticmethod
    def _padding_mode(k: Sequence[int], in_hw: Sequence[int], s: Sequence[int],
                      d: Sequence[int], pb: Sequence[int], pe: Sequence[int]) -> str:
        if not any(pb) and not any(pe):
            return "VALID"
        for i in range(len(k)):
            total = max((math.ceil(in_hw[i] / s[i]) - 1) * s[i] + (k[i] - 1) * d[i] + 1
                        - in_hw[i], 0)
            if (pb[i], pe[i]) != (total // 2, total - total // 2):
                return "EXPLICIT"
        return "SAME"

    def _pad4d(self, x: str, pb: Sequence[int], pe: Sequence[int], value: float = 0.0) -> str:
        n, h, w, c = self.g.tensors[x].shape
        out = self.g.add_tensor(x + "__pad", (n, h + pb[0] + pe[0], w + pb[1] + pe[1], c))
        pads = self.g.add_const("pads", np.array([[0, 0], [pb[0], pe[0]], [pb[1], pe[1]], [0, 0]],
                                                 np.int32))
        if value == 0.0:
            self.g.add_op("PAD", [x, pads], [out])
        else:
            self.g.add_op("PADV2", [x, pads, self.g.add_const("padv", np.array([value],
                                                                              np.float32))],
                          [out])
        return out

    # -- ops -----------------------------------------------------------------------------------
    def op_Identity(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        if n.input[0] in self.p.consts:
            self.p.consts[n.output[0]] = self.p.consts[n.input[0]]
        else:
            self.val[n.output[0]] = self.val[n.input[0]]

    def op_Conv(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        x, was1d = self._to4d(n.input[0])
        w = np.asarray(self.p.consts[n.input[1]], np.float32)
        if was1d:
            w = w[:, :, None, :]
        o, ipg, kh, kw = w.shape
        bias = np.asarray(self.const(n.input[2]) if len(n.input) > 2 and n.input[2]
                          else np.zeros(o), np.float32)
        _, h, wd, cin = self.g.tensors[x].shape
        groups = int(a.get("group", 1))  # type: ignore[call-overload]
        s, d, pb, pe = self._spatial_params(a, (kh, kw) if not was1d else (kw,), (h, wd)
                                            if not was1d else (wd,), (), was1d)
        mode = self._padding_mode((kh, kw), (h, wd), s, d, pb, pe)
        if mode == "EXPLICIT":
            x = self._pad4d(x, pb, pe)
            mode = "VALID"
        out_shape = self.shape(n.output[0])
        oh, ow = (1, out_shape[2]) if was1d else out_shape[2:]
        opts = {"padding": 0 if mode == "SAME" else 1, "strideH": s[0], "strideW": s[1],
                "dilationHFactor": d[0], "dilationWFactor": d[1]}
        y = self.g.add_tensor(n.output[0] + "__4d" if was1d else n.output[0],
                              (out_shape[0], oh, ow, o))
        if groups == 1:
            self.g.add_op("CONV_2D", [x, self.g.add_const(n.input[1] + "_ohwi",
                                                         w.transpose(0, 2, 3, 1)),
                                      self.g.add_const(n.output[0] + "_bias", bias)], [y],
                          n.name, **opts)
        elif groups == cin and ipg == 1:
            self.g.add_op("DEPTHWISE_CONV_2D",
                          [x, self.g.add_const(n.input[1] + "_1hwo", w.transpose(1, 2, 3, 0)),
                           self.g.add_const(n.output[0] + "_bias", bias)], [y], n.name,
                          depthMultiplier=o // cin, **opts)
        else:
            parts = [self.g.add_tensor(f"{x}__g{i}", (*self.g.tensors[x].shape[:3], ipg))
                     for i in range(groups)]
            self.g.add_op("SPLIT", [self.i32("axis", [3]), x], parts, n.name, numSplits=groups)
            og = o // groups
            outs = []
            for i, part in enumerate(parts):
                yi = self.g.add_tensor(f"{y}__g{i}", (out_shape[0], oh, ow, og))
                self.g.add_op("CONV_2D", [part,
                                          self.g.add_const(f"{n.input[1]}_g{i}",
                                                           w[i * og:(i + 1) * og]
                                                           .transpose(0, 2, 3, 1)),
                                          self.g.add_const(f"{n.output[0]}_bias_g{i}",
                                                           bias[i * og:(i + 1) * og])],
                              [yi], n.name, **opts)
                outs.append(yi)
            self.g.add_op("CONCATENATION", outs, [y], n.name, axis=3)
        self._from4d(n.output[0], y, was1d)

    def op_ConvTranspose(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        x, was1d = self._to4d(n.input[0])
        w = np.asarray(self.p.consts[n.input[1]], np.float32)   # [C_in, C_out, kh, kw]
        if was1d:
            w = w[:, :, None, :]
        _, o, kh, kw = w.shape
        bias = np.asarray(self.const(n.input[2]) if len(n.input) > 2 and n.input[2]
                          else np.zeros(o), np.float32)
        nb, h, wd, _ = self.g.tensors[x].shape
        nd = 1 if was1d else 2
        strides = list(a.get("strides", [1] * nd))  # type: ignore[call-overload]
        dil = list(a.get("dilations", [1] * nd))  # type: ignore[call-overload]
        pads = list(a.get("pads", [0] * 2 * nd))  # type: ignore[call-overload]
        if any(v != 1 for v in dil):
            raise UnsupportedModelError(f"ConvTranspose {n.name} has dilations {dil}",
                                        hint="TFLite TRANSPOSE_CONV takes no dilation")
        s = [1, strides[0]] if was1d else strides
        begin = [0, pads[0]] if was1d else pads[:2]
        full = ((h - 1) * s[0] + kh, (wd - 1) * s[1] + kw)
        out_shape = self.shape(n.output[0])
        ohw = (1, out_shape[2]) if was1d else tuple(out_shape[2:])
        auto = _s(a.get("auto_pad", "NOTSET"))
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            tot = [full[i] - ohw[i] for i in range(2)]
            begin = [t // 2 if auto == "SAME_LOWER" else t - t // 2 for t in tot]
            begin = [t - t // 2 if auto == "SAME_LOWER" else t // 2 for t in tot]
        if any(begin[i] + ohw[i] > full[i] for i in range(2)):
            raise UnsupportedModelError(f"ConvTranspose {n.name}: output_padding beyond the "
                                        "kernel's reach is not supported")
        yfull = self.g.add_tensor(n.output[0] + "__full", (nb, *full, o))
        self.g.add_op("TRANSPOSE_CONV",
                      [self.i32("oshape", [nb, *full, o]),
                       self.g.add_const(n.input[1] + "_ohwi", w.transpose(1, 2, 3, 0)), x,
                       self.g.add_const(n.output[0] + "_bias", bias)], [yfull], n.name,
                      padding=1, strideH=s[0], strideW=s[1])
        y = yfull
        if tuple(full) != tuple(ohw):
            y = self.g.add_tensor(n.output[0] + "__4d" if was1d else n.output[0],
                                  (nb, *ohw, o))
            self.g.add_op("STRIDED_SLICE", [yfull, self.i32("begin", [0, *begin, 0]),
                                            self.i32("end", [nb, begin[0] + ohw[0],
                                                             begin[1] + ohw[1], o]),
                                            self.i32("strides", [1, 1, 1, 1])], [y], n.name)
        self._from4d(n.output[0], y, was1d)

    def _pool(self, n: onnx.NodeProto, a: dict[str, object], kind: str) -> None:
        x, was1d = self._to4d(n.input[0])
        _, h, wd, c = self.g.tensors[x].shape
        k = list(a["kernel_shape"])  # type: ignore[call-overload]
        k2 = [1, k[0]] if was1d else k
        s, d, pb, pe = self._spatial_params(a, k, (wd,) if was1d else (h, wd), (), was1d)
        if any(v != 1 for v in d):
            raise UnsupportedModelError(f"{n.op_type} {n.name} has dilations",
                                        hint="TFLite pooling takes no dilation")
        out_shape = self.shape(n.output[0])
        ohw = (1, out_shape[2]) if was1d else tuple(out_shape[2:])
        mode = self._padding_mode(k2, (h, wd), s, d, pb, pe)
        if mode == "SAME" and kind == "AVERAGE_POOL_2D" and int(a.get("count_include_pad", 0)):  # type: ignore[call-overload]
            mode = "EXPLICIT"
        if mode == "EXPLICIT":
            x = self._pad4d(x, pb, pe, _PAD_MIN if kind == "MAX_POOL_2D" else 0.0)
            mode = "VALID"
            if kind == "AVERAGE_POOL_2D" and not int(a.get("count_include_pad", 0)):  # type: ignore[call-overload]
                raise UnsupportedModelError(
                    f"AveragePool {n.name}: asymmetric padding that excludes pad cells",
                    hint="use symmetric 'same' padding or count_include_pad=1")
        # ceil_mode and floor results agree when the inferred shape says so
        ph, pw = self.g.tensors[x].shape[1:3]
        expect = ((ph - k2[0]) // s[0] + 1, (pw - k2[1]) // s[1] + 1) if mode == "VALID" \
            else (math.ceil(ph / s[0]), math.ceil(pw / s[1]))
        if tuple(expect) != tuple(ohw):
            raise UnsupportedModelError(f"{n.op_type} {n.name}: ceil_mode output shape not "
                                        "reachable with TFLite pooling")
        y = self.g.add_tensor(n.output[0] + ("__4d" if was1d else ""),
                              (out_shape[0], *ohw, c))
        self.g.add_op(kind, [x], [y], n.name, padding=0 if mode == "SAME" else 1,
                      strideH=s[0], strideW=s[1], filterHeight=k2[0], filterWidth=k2[1])
        self._from4d(n.output[0], y, was1d)

    def op_MaxPool(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        if len(n.output) > 1 and n.output[1]:
            raise UnsupportedModelError(f"MaxPool {n.name} with indices output")
        self._pool(n, a, "MAX_POOL_2D")

    def op_AveragePool(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        self._pool(n, a, "AVERAGE_POOL_2D")

    def op_GlobalAveragePool(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        rank = len(self.shape(n.input[0]))
        x = self.get(n.input[0], _cl(rank))
        y = self.new(n.output[0], _cl(rank))
        self.g.add_op("MEAN", [x, self.i32("axes", list(range(1, rank - 1)))], [y], n.name,
                      keepDims=True)

    def op_ReduceMean(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        rank = len(self.shape(n.input[0]))
        axes_v = self.const(n.input[1]) if len(n.input) > 1 and n.input[1] else a.get("axes")
        axes = sorted(int(v) % rank for v in (np.asarray(axes_v).ravel()
                                              if axes_v is not None else range(rank)))
        keep = bool(a.get("keepdims", 1))
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        ir_axes = sorted(perm.index(ax) for ax in axes)
        if keep:
            out_perm = perm
        else:
            rest = [p for p in perm if p not in axes]
            order = sorted(rest)
            out_perm = tuple(order.index(p) for p in rest)
        y = self.new(n.output[0], out_perm)
        self.g.add_op("MEAN", [x, self.i32("axes", ir_axes)], [y], n.name, keepDims=keep)

    def _binary(self, n: onnx.NodeProto, kind: str) -> None:
        a_name, b_name = n.input[0], n.input[1]
        out_rank = len(self.shape(n.output[0]))
        if kind == "DIV" and self.const(b_name) is not None:
            recip = (1.0 / np.asarray(self.p.consts[b_name], np.float64)).astype(np.float32)
            b_name = b_name + "__recip"
            self.p.consts[b_name] = recip
            kind = "MUL"
        perm = _ident(out_rank)
        for name in (a_name, b_name):
            if self.const(name) is None and len(self.shape(name)) == out_rank:
                perm = self.perm_of(name)
                if perm != _ident(out_rank):
                    break
        ins = [self.get(name, perm, rank=out_rank) for name in (a_name, b_name)]
        y = self.new(n.output[0], perm)
        self.g.add_op(kind, ins, [y], n.name, **({"fusedActivationFunction": 0}
                                                 if kind in ("ADD", "SUB", "MUL", "DIV")
                                                 else {}))

    def op_Add(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        self._binary(n, "ADD")

    def op_Sub(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        self._binary(n, "SUB")

    def op_Mul(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        self._binary(n, "MUL")

    def op_Div(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        self._binary(n, "DIV")

    def _unary(self, n: onnx.NodeProto, kind: str, **opts: object) -> None:
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        self.g.add_op(kind, [x], [y], n.name, **opts)

    def op_Relu(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        self._unary(n, "RELU")

    def op_Sigmoid(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        self._unary(n, "LOGISTIC")

    def op_Tanh(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        self._unary(n, "TANH")

    def op_HardSwish(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        self._unary(n, "HARD_SWISH")

    def op_LeakyRelu(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        self._unary(n, "LEAKY_RELU", alpha=float(a.get("alpha", 0.01)))  # type: ignore[arg-type]

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

    def op_Clip(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
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

    def op_HardSigmoid(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        alpha = float(a.get("alpha", 0.2))  # type: ignore[arg-type]
        beta = float(a.get("beta", 0.5))  # type: ignore[arg-type]
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

    def op_PRelu(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        slope = self.get(n.input[1], perm, rank=len(perm))
        y = self.new(n.output[0], perm)
        self.g.add_op("PRELU", [x, slope], [y], n.name)

    def op_Softmax(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        rank = len(self.shape(n.input[0]))
        default = -1 if self.p.opset >= 13 else 1
        axis = int(a.get("axis", default)) % rank  # type: ignore[call-overload]
        if self.p.opset < 13 and axis != rank - 1:
            raise UnsupportedModelError(f"Softmax {n.name}: opset<13 softmax over axes "
                                        f"{axis}.. of a rank-{rank} tensor")
        perm = self.perm_of(n.input[0])
        if perm[-1] != axis:
            perm = (*tuple(p for p in _ident(rank) if p != axis), axis)
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        self.g.add_op("SOFTMAX", [x], [y], n.name, beta=1.0)

    def op_BatchNormalization(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        eps = float(a.get("epsilon", 1e-5))  # type: ignore[arg-type]
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

    def op_Concat(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        rank = len(self.shape(n.output[0]))
        axis = int(a["axis"]) % rank  # type: ignore[call-overload]
        perm = _ident(rank)
        for i in n.input:
            if self.const(i) is None:
                perm = self.perm_of(i)
                if perm != _ident(rank):
                    break
        ins = [self.get(i, perm) for i in n.input if i and math.prod(self.shape(i)) > 0]
        y = self.new(n.output[0], perm)
        self.g.add_op("CONCATENATION", ins, [y], n.name, axis=perm.index(axis))

    def _reshape_node(self, n: onnx.NodeProto) -> None:
        x = self.get(n.input[0])
        shp = self.shape(n.output[0])
        y = self.new(n.output[0], _ident(len(shp)))
        self._reshape(x, y, shp)

    def op_Reshape(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        self._reshape_node(n)

    def op_Transpose(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        rank = len(self.shape(n.input[0]))
        t = list(a.get("perm", list(reversed(range(rank)))))  # type: ignore[call-overload]
        ir, cur = self.val[n.input[0]]
        inv_t = [t.index(i) for i in range(rank)]
        # ir = in.transpose(cur) and out = in.transpose(t)  =>  ir = out.transpose(inv_t∘cur)
        self.val[n.output[0]] = (ir, tuple(inv_t[c] for c in cur))

    def op_Pad(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
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
            value = float(a["value"])  # type: ignore[arg-type]
        perm = self.perm_of(n.input[0])
        x = self.get(n.input[0], perm)
        y = self.new(n.output[0], perm)
        pc = self.g.add_const("pads", np.array([full[p] for p in perm], np.int32))
        mode = _s(a.get("mode", "constant"))
        if mode == "reflect":
            self.g.add_op("MIRROR_PAD", [x, pc], [y], n.name, mode=0)
        elif value == 0.0:
            self.g.add_op("PAD", [x, pc], [y], n.name)
        else:
            self.g.add_op("PADV2", [x, pc, self.g.add_const("padv", np.array([value],
                                                                             np.float32))],
                          [y], n.name)

    def op_Resize(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        ins, outs = self.shape(n.input[0]), self.shape(n.output[0])
        if len(ins) != 4 or ins[:2] != outs[:2]:
            raise UnsupportedModelError(f"Resize {n.name}: only the spatial dims of a 4D "
                                        "tensor may be resized")
        mode = _s(a.get("mode", "nearest"))
        ctm = _s(a.get("coordinate_transformation_mode", "half_pixel"))
        align = ctm == "align_corners"
        half = ctm in ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn")
        if mode == "nearest" and ctm == "asymmetric":
            nm = _s(a.get("nearest_mode", "round_prefer_floor"))
            if nm != "floor" and any(o % i for i, o in zip(ins[2:], outs[2:], strict=True)):
                raise UnsupportedModelError(f"Resize {n.name}: nearest_mode {nm} with a "
                                            "non-integer scale")
        x = self.get(n.input[0], _cl(4))
        y = self.new(n.output[0], _cl(4))
        kind = "RESIZE_NEAREST_NEIGHBOR" if mode == "nearest" else "RESIZE_BILINEAR"
        self.g.add_op(kind, [x, self.i32("size", list(outs[2:]))], [y], n.name,
                      alignCorners=align, halfPixelCenters=half)

    def op_Slice(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        shp = self.shape(n.input[0])
        rank = len(shp)

        def arg(i: int, key: str) -> list[int] | None:
            if len(n.input) > i and n.input[i]:
                return [int(v) for v in np.asarray(self.p.consts[n.input[i]]).ravel()]
            v = a.get(key)
            return None if v is None else [int(x) for x in v]  # type: ignore[attr-defined]

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
        y = self.new(n.output[0], _ident(len(out)))
        self.g.add_op("FULLY_CONNECTED", [x, self.g.add_const(n.output[0] + "_w",
                                                              w.astype(np.float32)),
                                          self.g.add_const(n.output[0] + "_bias",
                                                           bias.astype(np.float32))], [y],
                      n.name, keepNumDims=len(xs) > 2, fusedActivationFunction=0)

    def op_Gemm(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        alpha = float(a.get("alpha", 1.0))  # type: ignore[arg-type]
        beta = float(a.get("beta", 1.0))  # type: ignore[arg-type]
        if int(a.get("transA", 0)) or self.const(n.input[1]) is None:  # type: ignore[call-overload]
            raise UnsupportedModelError(f"Gemm {n.name}: transA or non-constant B")
        b = np.asarray(self.p.consts[n.input[1]], np.float64)
        w = b if int(a.get("transB", 0)) else b.T  # type: ignore[call-overload]
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

    def op_MatMul(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        b = self.const(n.input[1])
        if b is not None and np.asarray(b).ndim == 2:
            bb = np.asarray(b, np.float32)
            self._fc(n, n.input[0], bb.T, np.zeros(bb.shape[1], np.float32))
            return
        out = self.shape(n.output[0])
        xa, xb = self.get(n.input[0]), self.get(n.input[1])
        y = self.new(n.output[0], _ident(len(out)))
        self.g.add_op("BATCH_MATMUL", [xa, xb], [y], n.name)


_UNARY = {"RELU", "RELU6", "RELU_N1_TO_1", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU"}


def _sink_reshapes(g: Graph) -> None:
    """RESHAPE→unary becomes unary→RESHAPE, so reshape pairs meet and cancel (1D conv chains)."""
    changed = True
    while changed:
        changed = False
        for op in g.ops:
            if op.kind not in _UNARY:
                continue
            rs = g.producer(op.inputs[0])
            if rs is None or rs.kind != "RESHAPE" or rs.outputs[0] in g.outputs \
                    or sum(1 for _ in g.consumers(rs.outputs[0])) != 1:
                continue
            src, mid, out = rs.inputs[0], rs.outputs[0], op.outputs[0]
            # unary now reads the reshape's input and writes a tensor of that shape
            g.tensors[mid].shape = g.tensors[src].shape
            op.inputs[0], op.outputs[0] = src, mid
            rs.inputs[0], rs.outputs[0] = mid, out
            i, j = g.ops.index(rs), g.ops.index(op)
            g.ops[i], g.ops[j] = op, rs
            changed = True
            break


def _merge_reshapes(g: Graph) -> None:
    """RESHAPE of a RESHAPE is one RESHAPE."""
    _sink_reshapes(g)
    for op in list(g.ops):
        if op.kind != "RESHAPE":
            continue
        prev = g.producer(op.inputs[0])
        if prev is not None and prev.kind == "RESHAPE" and prev.outputs[0] not in g.outputs:
            op.inputs[0] = prev.inputs[0]
    g.prune()
    # a reshape to the same shape is nothing
    for op in list(g.ops):
        if op.kind == "RESHAPE" and g.tensors[op.inputs[0]].shape == \
                g.tensors[op.outputs[0]].shape and op.outputs[0] not in g.outputs:
            g.replace_uses(op.outputs[0], op.inputs[0])
            g.ops.remove(op)
    g.prune()


def lower(prep: Prepared, *, keep_io_layout: bool) -> tuple[Graph, dict[str, dict[str, object]]]:
    """The float32 TFLite graph and each graph input/output's layout record."""
    check_supported(prep)
    low = _Lowering(prep, keep_io_layout)
    return low.run(), low.io_layout

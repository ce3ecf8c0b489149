"""Lowering of the spatial ONNX ops (Conv, ConvTranspose, pooling) to channels-last TFLite.

Kept apart from the other ops because this is where padding modes, 1D-as-2D views, grouped and
depthwise convolutions and transpose-convolution cropping are decided.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx

from converters.tflite._attrs import Attrs
from converters.tflite._layout import LayoutTracker, channels_last
from edgeops.errors import UnsupportedModelError

__all__ = ["SpatialOps"]

_PAD_MIN = -3.4e38          # max-pool padding: below any activation
_LONG_SUM = 4096            # a MEAN over more values is split axis by axis (see _mean)



class SpatialOps(LayoutTracker):
    """Conv (1D/2D, depthwise, grouped), ConvTranspose, MaxPool/AveragePool, GlobalAveragePool."""

    def _to4d(self, name: str) -> tuple[str, bool]:
        """Channels-last 4D view of a 3D (N, C, T) or 4D tensor; True when it was 1D."""
        rank = len(self.shape(name))
        x = self.get(name, channels_last(rank))
        if rank == 4:
            return x, False
        n, c, t = self.shape(name)
        out = self.g.add_tensor(name + "__4d", (n, 1, t, c))
        self._reshape(x, out, (n, 1, t, c))
        return out, True

    def _from4d(self, onnx_out: str, t4: str, was1d: bool) -> None:
        if not was1d:
            self.val[onnx_out] = (t4, channels_last(4))
            return
        n, c, t = self.shape(onnx_out)
        out = self.new(onnx_out, channels_last(3))
        self._reshape(t4, out, (n, t, c))

    def _spatial_params(self, a: Attrs, k: Sequence[int], in_hw: Sequence[int],
                        out_hw: Sequence[int], was1d: bool) -> tuple[list[int], list[int],
                                                                     list[int], list[int]]:
        nd = len(k)
        strides = a.ints("strides", [1] * nd)
        dil = a.ints("dilations", [1] * nd)
        pads = a.ints("pads", [0] * 2 * nd)
        auto = a.s("auto_pad", "NOTSET")
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

    def _mean(self, x: str, axes: Sequence[int], keep: bool, y: str, source: str) -> None:
        """MEAN over ``axes`` of IR tensor ``x`` into ``y``. LiteRT sums float32 in one
        sequential pass, so over more than ``_LONG_SUM`` values (a global pool of a 160x160
        map) the error reaches 1e-5..1e-4 relative, which deep SE networks carry to their
        outputs; one axis at a time keeps each sum short (25x smaller error measured at
        160x160), for one more small op."""
        shp = list(self.g.tensors[x].shape)
        if len(axes) < 2 or math.prod(shp[a] for a in axes) <= _LONG_SUM:
            self.g.add_op("MEAN", [x, self.i32("axes", sorted(axes))], [y], source,
                          keepDims=keep)
            return
        cur = x
        for i, ax in enumerate(sorted(axes, reverse=True)):
            shp[ax] = 1
            last = i == len(axes) - 1
            out = y if last and keep else self.g.add_tensor(f"{y}__mean{i}", tuple(shp))
            self.g.add_op("MEAN", [cur, self.i32("axes", [ax])], [out], source, keepDims=True)
            cur = out
        if not keep:
            self._reshape(cur, y, self.g.tensors[y].shape)

    # -- ops -----------------------------------------------------------------------------------

    def op_Conv(self, n: onnx.NodeProto, a: Attrs) -> None:
        x, was1d = self._to4d(n.input[0])
        w = np.asarray(self.p.consts[n.input[1]], np.float32)
        if was1d:
            w = w[:, :, None, :]
        o, ipg, kh, kw = w.shape
        bias = np.asarray(self.const(n.input[2]) if len(n.input) > 2 and n.input[2]
                          else np.zeros(o), np.float32)
        _, h, wd, cin = self.g.tensors[x].shape
        groups = a.i("group", 1)
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

    def op_ConvTranspose(self, n: onnx.NodeProto, a: Attrs) -> None:
        x, was1d = self._to4d(n.input[0])
        w = np.asarray(self.p.consts[n.input[1]], np.float32)   # [C_in, C_out, kh, kw]
        if was1d:
            w = w[:, :, None, :]
        _, o, kh, kw = w.shape
        bias = np.asarray(self.const(n.input[2]) if len(n.input) > 2 and n.input[2]
                          else np.zeros(o), np.float32)
        nb, h, wd, _ = self.g.tensors[x].shape
        nd = 1 if was1d else 2
        strides = a.ints("strides", [1] * nd)
        dil = a.ints("dilations", [1] * nd)
        pads = a.ints("pads", [0] * 2 * nd)
        if any(v != 1 for v in dil):
            raise UnsupportedModelError(f"ConvTranspose {n.name} has dilations {dil}",
                                        hint="TFLite TRANSPOSE_CONV takes no dilation")
        s = [1, strides[0]] if was1d else strides
        begin = [0, pads[0]] if was1d else pads[:2]
        full = ((h - 1) * s[0] + kh, (wd - 1) * s[1] + kw)
        out_shape = self.shape(n.output[0])
        ohw = (1, out_shape[2]) if was1d else tuple(out_shape[2:])
        auto = a.s("auto_pad", "NOTSET")
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

    def _pool(self, n: onnx.NodeProto, a: Attrs, kind: str) -> None:
        x, was1d = self._to4d(n.input[0])
        _, h, wd, c = self.g.tensors[x].shape
        k = a.ints("kernel_shape")
        k2 = [1, k[0]] if was1d else k
        s, d, pb, pe = self._spatial_params(a, k, (wd,) if was1d else (h, wd), (), was1d)
        if any(v != 1 for v in d):
            raise UnsupportedModelError(f"{n.op_type} {n.name} has dilations",
                                        hint="TFLite pooling takes no dilation")
        out_shape = self.shape(n.output[0])
        ohw = (1, out_shape[2]) if was1d else tuple(out_shape[2:])
        mode = self._padding_mode(k2, (h, wd), s, d, pb, pe)
        if mode == "SAME" and kind == "AVERAGE_POOL_2D" and a.i("count_include_pad", 0):
            mode = "EXPLICIT"
        if mode == "EXPLICIT":
            x = self._pad4d(x, pb, pe, _PAD_MIN if kind == "MAX_POOL_2D" else 0.0)
            mode = "VALID"
            if kind == "AVERAGE_POOL_2D" and not a.i("count_include_pad", 0):
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

    def op_MaxPool(self, n: onnx.NodeProto, a: Attrs) -> None:
        if len(n.output) > 1 and n.output[1]:
            raise UnsupportedModelError(f"MaxPool {n.name} with indices output")
        self._pool(n, a, "MAX_POOL_2D")

    def op_AveragePool(self, n: onnx.NodeProto, a: Attrs) -> None:
        self._pool(n, a, "AVERAGE_POOL_2D")

    def op_GlobalAveragePool(self, n: onnx.NodeProto, a: Attrs) -> None:
        rank = len(self.shape(n.input[0]))
        x = self.get(n.input[0], channels_last(rank))
        y = self.new(n.output[0], channels_last(rank))
        self._mean(x, list(range(1, rank - 1)), True, y, n.name)

"""Graph passes that keep U-Net/FPN-style decoders in the INT8 domain on ONNX Runtime's CPU EP.

ORT's QDQ fusions leave parts of such decoders in float or requantising on the CPU EP (1.32):

* **ConvTranspose**: there is no CPU kernel for a quantised ConvTranspose (QLinearConvTranspose
  is registered for XNNPACK/NNAPI only), so it runs in float between a DequantizeLinear and a
  QuantizeLinear, its weights dequantised on every run, with layout transposes around it.
  :func:`convtranspose_as_conv` rewrites the common upsampling form (kernel == stride, no
  padding, no groups) *before* quantisation into what it exactly is: a 1x1 Conv with
  ``kh * kw`` times the output channels, followed by a pixel shuffle written as
  Transpose/Reshape/Transpose/Reshape/Transpose in NHWC order. The Conv becomes a QLinearConv;
  the shuffle's data-movement ops run on uint8 (ORT drops their Q/DQ) and their leading
  transpose cancels the one ORT's NHWC layout pass puts after the QLinearConv. Where the
  input's height and width are unknown (dynamic inputs) and the kernel is square, the shuffle
  is one DepthToSpace in DCR order instead, which needs no static shape.
* **Concat requantisation**: QLinearConcat copies an input whose scale and zero point equal the
  output's, and requantises (a table lookup per element) any other. :func:`shared_concat_ranges`
  gives every tensor of a Concat (inputs and output, and the tensors ORT ties to them) the union
  of their calibrated ranges, as TensorQuantOverrides for ORT's quantiser, so they share one
  scale. Not where that would move a range across zero: the quantiser folds a Relu into a range
  starting at 0, and a widened negative range would undo the Relu.

Both are pure functions on ``onnx.ModelProto`` / ranges; the caller decides when to apply.

Not done, measured: a linear Resize moved onto uint8 (its Q/DQ dropped, which ORT does only in
nearest mode) ran 5x slower in ORT's integer Resize kernel than in float (segnet, 1 thread:
92 us vs 19 us) and lost accuracy, so linear Resize stays float between its DQ and Q.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from converters.onnx_utils import replace_nodes

__all__ = ["TIED_OPS", "convtranspose_as_conv", "shared_concat_ranges"]

# Ops whose quantised output ORT's QDQ quantiser ties to their input's scale and zero point.
TIED_OPS = ("Resize", "MaxPool", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
            "Slice", "Gather", "Split", "Expand", "Tile", "DepthToSpace", "SpaceToDepth")


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Union:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, items: Iterable[str]) -> None:
        items = list(items)
        for other in items[1:]:
            self.parent[self.find(other)] = self.find(items[0])


def shared_concat_ranges(model: Any, ranges: Mapping[str, tuple[float, float]],
                         exclude: set[str] | frozenset[str] = frozenset()
                         ) -> dict[str, list[dict[str, Any]]]:
    """TensorQuantOverrides giving each quantised Concat's tensors one range (their union).

    ``ranges`` maps activation tensors to their calibrated (min, max). A group is left alone
    when a tensor in it lacks a range or when the union would take a range starting at or above
    0 below 0 (see the module docstring); nodes in ``exclude`` stay float and join nothing.
    """
    inits = {i.name for i in model.graph.initializer}
    uf = _Union()
    concat_members: set[str] = set()
    for n in model.graph.node:
        if n.name in exclude:
            continue
        acts = [t for t in n.input if t and t not in inits]
        if n.op_type == "Concat" and len(acts) > 1:
            uf.join([*acts, n.output[0]])
            concat_members.update([*acts, n.output[0]])
        elif n.op_type in TIED_OPS and acts:
            uf.join([acts[0], *[o for o in n.output if o]])
    groups: dict[str, list[str]] = {}
    for t in uf.parent:
        groups.setdefault(uf.find(t), []).append(t)
    out: dict[str, list[dict[str, Any]]] = {}
    for members in groups.values():
        if not concat_members & set(members):
            continue
        if any(t not in ranges for t in members):
            continue
        lo = min(float(ranges[t][0]) for t in members)
        hi = max(float(ranges[t][1]) for t in members)
        if lo < 0 and any(float(ranges[t][0]) >= 0 for t in members):
            continue
        if all(float(ranges[t][0]) == lo and float(ranges[t][1]) == hi for t in members):
            continue
        for t in sorted(members):
            out[t] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
    return out


def _static_hw(model: Any, tensor: str) -> tuple[int, int] | None:
    for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        if vi.name == tensor:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
                return int(dims[2].dim_value), int(dims[3].dim_value)
    return None


def convtranspose_as_conv(model: Any) -> tuple[Any, list[str]]:
    """Exact rewrite of upsampling ConvTranspose (kernel == stride) into 1x1 Conv + shuffle.

    Applies to 2-D ConvTranspose with constant weights (and bias), group 1, no padding, output
    padding, output shape or dilation, whose input height/width are known, or whose kernel is
    square (then the shuffle is one DepthToSpace, which needs no static shape). Returns a new
    model and the names of the rewritten nodes (each name stays on its Conv).
    """
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    new_nodes: list[Any] = []
    done: list[str] = []
    for n in m.graph.node:
        a = _attrs(n)
        w = inits.get(n.input[1]) if n.op_type == "ConvTranspose" and len(n.input) > 1 else None
        b = inits.get(n.input[2]) if w is not None and len(n.input) > 2 and n.input[2] else None
        k = list(a.get("kernel_shape", []))
        ok = (w is not None and len(w.dims) == 4 and a.get("group", 1) == 1
              and (len(n.input) < 3 or not n.input[2] or b is not None)
              and k == list(w.dims[2:]) and list(a.get("strides", [1, 1])) == k
              and not any(a.get("pads", [0] * 4)) and not any(a.get("output_padding", [0, 0]))
              and "output_shape" not in a and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
              and all(d == 1 for d in a.get("dilations", [1, 1])))
        hw = _static_hw(m, n.input[0]) if ok else None
        square = ok and len(k) == 2 and k[0] == k[1]
        if not ok or (hw is None and not square) or w is None:
            new_nodes.append(n)
            continue
        kh, kw = k
        cin, cout = int(w.dims[0]), int(w.dims[1])
        wt = numpy_helper.to_array(w)                          # [Cin, Cout, kh, kw]
        # Output channel (i, j, co) of the 1x1 Conv holds output pixel (i, j) of channel co.
        w2 = np.ascontiguousarray(wt.transpose(2, 3, 1, 0).reshape(kh * kw * cout, cin, 1, 1))
        base = n.output[0]
        names = {s: f"{base}_as_conv_{s}" for s in
                 ("w", "b", "conv", "nhwc", "shape1", "split", "swap", "shape2", "merged")}
        m.graph.initializer.append(numpy_helper.from_array(w2, names["w"]))
        conv_in = [n.input[0], names["w"]]
        if b is not None:
            m.graph.initializer.append(numpy_helper.from_array(
                np.tile(numpy_helper.to_array(b), kh * kw), names["b"]))
            conv_in.append(names["b"])
        if hw is None:
            # Height and width unknown (dynamic input): the shuffle cannot be written with
            # static Reshapes, but for a square kernel it is exactly DepthToSpace in DCR order
            # (channel (i * k + j) * cout + co -> pixel (i, j) of channel co), which ORT also
            # runs on uint8 between its dropped Q/DQ.
            new_nodes += [
                helper.make_node("Conv", conv_in, [names["conv"]], name=n.name,
                                 kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0]),
                helper.make_node("DepthToSpace", [names["conv"]], [base],
                                 name=f"{n.name}_shuffle", blocksize=kh, mode="DCR")]
            done.append(n.name)
            continue
        h, wd = hw
        m.graph.initializer.append(numpy_helper.from_array(
            np.array([0, 0, 0, kh, kw * cout], np.int64), names["shape1"]))
        m.graph.initializer.append(numpy_helper.from_array(
            np.array([0, h * kh, wd * kw, cout], np.int64), names["shape2"]))
        new_nodes += [
            helper.make_node("Conv", conv_in, [names["conv"]], name=n.name,
                             kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0]),
            helper.make_node("Transpose", [names["conv"]], [names["nhwc"]],
                             name=f"{n.name}_to_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [names["nhwc"], names["shape1"]], [names["split"]],
                             name=f"{n.name}_split"),
            helper.make_node("Transpose", [names["split"]], [names["swap"]],
                             name=f"{n.name}_shuffle", perm=[0, 1, 3, 2, 4]),
            helper.make_node("Reshape", [names["swap"], names["shape2"]], [names["merged"]],
                             name=f"{n.name}_merge"),
            helper.make_node("Transpose", [names["merged"]], [base],
                             name=f"{n.name}_to_nchw", perm=[0, 3, 1, 2]),
        ]
        done.append(n.name)
    if done:
        replace_nodes(m, new_nodes)
    return m, done

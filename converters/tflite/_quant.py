"""Rewrite a float TFLite graph for a precision: FP16 weights, dynamic-range INT8, full INT8.

* ``fp16``: float constants stored as float16 and expanded by DEQUANTIZE at load time.
* ``int8-dynamic``: conv/FC weights int8 (symmetric, per-channel for conv), activations stay
  float; LiteRT's hybrid kernels quantise activations on the fly. Other large weights are int8
  behind DEQUANTIZE. Small tensors stay float (not worth the error).
* ``int8`` full integer: activation ranges come from running the float graph in LiteRT over the
  calibration samples (or from QDQ scales the source model carried); weights are symmetric int8,
  biases int32 at ``input_scale * weight_scale``; ops whose int8 kernels need equal in/out
  parameters get them; CONCATENATION inputs are requantised; ops without an int8 kernel run in
  float between DEQUANTIZE/QUANTIZE (reported as float islands).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from converters.tflite._ir import Graph, Op, Quant, Tensor

__all__ = ["FullIntSettings", "Ranges", "calibrate_ranges", "to_dynamic_int8", "to_fp16",
           "to_full_int8"]

Ranges = dict[str, tuple[float, float]]

_MIN_DYNAMIC_ELEMENTS = 1024          # TF's threshold: smaller weights stay float
_PERCENTILE_MIN_ELEMENTS = 4096       # per sample; below this a tensor keeps min/max
_PERCENTILES = (0.1, 99.9)
_WEIGHT_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1,
                 "TRANSPOSE_CONV": 1}
_CONV_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"}
# int8 kernels that require output parameters equal to the (first) input's
_SAME_AS_INPUT = {"RESHAPE", "TRANSPOSE", "MAX_POOL_2D", "AVERAGE_POOL_2D", "PAD", "PADV2",
                  "MIRROR_PAD", "STRIDED_SLICE", "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR",
                  "SPLIT", "MAXIMUM", "MINIMUM", "SQUEEZE", "SPLIT_V", "RELU_0_TO_1",
                  "REDUCE_MAX", "GATHER", "BROADCAST_TO"}
_FIXED_OUTPUT = {"LOGISTIC": (1 / 256, -128), "SOFTMAX": (1 / 256, -128), "TANH": (1 / 128, 0)}
_INT8_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "ADD", "SUB",
             "MUL", "RELU", "RELU6", "RELU_N1_TO_1", "LEAKY_RELU", "PRELU", "LOGISTIC", "TANH",
             "HARD_SWISH", "SOFTMAX", "MEAN", "CONCATENATION", "BATCH_MATMUL",
             "QUANTIZE"} | _SAME_AS_INPUT
# inputs that are parameters (shapes, axes, sizes), never quantised
_PARAM_INPUTS = {"RESHAPE": {1}, "TRANSPOSE": {1}, "PAD": {1}, "PADV2": {1}, "MIRROR_PAD": {1},
                 "STRIDED_SLICE": {1, 2, 3}, "RESIZE_NEAREST_NEIGHBOR": {1},
                 "RESIZE_BILINEAR": {1}, "MEAN": {1}, "SPLIT": {0}, "TRANSPOSE_CONV": {0},
                 "SPLIT_V": {1, 2}, "REDUCE_MAX": {1}, "GATHER": {1}, "BROADCAST_TO": {1}}


def _float_consts(g: Graph) -> Iterable[str]:
    return [n for n, t in g.tensors.items() if t.data is not None and t.dtype == "float32"]


def _dequantize_const(g: Graph, name: str, stored: np.ndarray, quant: Quant | None) -> None:
    """Replace float constant ``name`` by a stored tensor plus a DEQUANTIZE into ``name``."""
    t = g.tensors[name]
    src = g.add_const(name + "__stored", stored)
    g.tensors[src].quant = quant
    t.data = None
    g.ops.insert(0, Op("DEQUANTIZE", [src], [name]))


def to_fp16(g: Graph) -> None:
    for name in _float_consts(g):
        data = g.tensors[name].data
        assert data is not None
        if data.size > 1:
            _dequantize_const(g, name, data.astype(np.float16), None)


def _sym_quant(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, Quant]:
    if axis is None:
        amax = np.array([np.abs(w).max()])
        scale = np.where(amax > 0, amax / 127.0, 1.0)
        q = np.clip(np.round(w / scale[0]), -127, 127).astype(np.int8)
        return q, Quant(scale.astype(np.float32), np.zeros(1, np.int64), 0)
    other = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=other)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, Quant(scale.astype(np.float32), np.zeros(scale.size, np.int64), axis)


def _weight_axis(kind: str) -> int:
    return 3 if kind == "DEPTHWISE_CONV_2D" else 0


def to_dynamic_int8(g: Graph) -> dict[str, int]:
    """Hybrid INT8 weights; returns how many weights went hybrid vs behind DEQUANTIZE."""
    counts = {"hybrid": 0, "dequantize": 0}
    done: set[str] = set()
    for op in list(g.ops):
        idx = _WEIGHT_INPUT.get(op.kind)
        if idx is None or op.kind == "TRANSPOSE_CONV":
            continue
        w = g.tensors[op.inputs[idx]]
        if w.data is None or w.dtype != "float32" or w.data.size < _MIN_DYNAMIC_ELEMENTS \
                or sum(1 for _ in g.consumers(w.name)) != 1:
            continue
        axis = None if op.kind == "FULLY_CONNECTED" else _weight_axis(op.kind)
        q, quant = _sym_quant(w.data, axis)
        w.data, w.dtype, w.quant = q, "int8", quant
        if op.kind == "FULLY_CONNECTED":
            op.options["asymmetricQuantizeInputs"] = True
        done.add(w.name)
        counts["hybrid"] += 1
    for name in _float_consts(g):
        data = g.tensors[name].data
        assert data is not None
        if name in done or data.size < _MIN_DYNAMIC_ELEMENTS:
            continue
        q, quant = _sym_quant(data, None)
        _dequantize_const(g, name, q, quant)
        counts["dequantize"] += 1
    return counts


def calibrate_ranges(g: Graph, samples: Iterable[Sequence[np.ndarray]],
                     method: str = "minmax") -> Ranges:
    """Per-tensor (min, max) over calibration samples fed to the float graph in LiteRT.

    ``samples`` are already in the graph's input layout. ``percentile`` (and ``entropy``, which
    this backend approximates by it) takes each sample's 0.1/99.9 percentiles instead of its
    extremes, for tensors of at least ``_PERCENTILE_MIN_ELEMENTS`` values (smaller ones, such
    as logits, keep min/max: clipping them moves the decision), then the widest over samples;
    a few outlier values inside a sample no longer stretch the range.
    """
    from converters.tflite._runtime import LiteRT
    from converters.tflite._writer import write_flatbuffer

    rt = LiteRT(write_flatbuffer(g), preserve=True)
    wanted = {n for n, t in g.tensors.items() if t.data is None}
    lo: dict[str, list[float]] = {}
    hi: dict[str, list[float]] = {}
    for feed in samples:
        rt.run(feed)
        for name, v in rt.tensor_values().items():
            if name not in wanted or v.size == 0 or v.dtype != np.float32:
                continue
            if method == "minmax" or v.size < _PERCENTILE_MIN_ELEMENTS:
                a, b = float(v.min()), float(v.max())
            else:
                a, b = (float(x) for x in np.percentile(v, _PERCENTILES))
            lo.setdefault(name, []).append(a)
            hi.setdefault(name, []).append(b)
    return {n: (min(lo[n]), max(hi[n])) for n in lo}


def _act_quant(lo: float, hi: float) -> Quant:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1e-6
    zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return Quant(np.array([scale], np.float32), np.array([zp], np.int64), 0)


@dataclass
class FullIntSettings:
    per_channel: bool | str = True          # True | False | "conv-only"
    io_int8: bool = True
    hints: Mapping[str, tuple[float, int]] = field(default_factory=dict)  # from QDQ


def _quantise_array(x: np.ndarray, q: Quant) -> np.ndarray:
    with np.errstate(over="ignore"):       # a -3.4e38 pad value saturates to -128 on purpose
        out: np.ndarray = np.clip(np.round(x / q.scale[0]) + q.zero_point[0], -128, 127)
    return out.astype(np.int8)


def to_full_int8(g: Graph, ranges: Ranges, st: FullIntSettings) -> dict[str, object]:
    """Full-integer rewrite in place; returns what the manifest should record."""
    qp: dict[str, Quant] = {}
    for name, t in g.tensors.items():
        if t.data is not None or t.dtype != "float32":
            continue
        if name in st.hints:
            s, z = st.hints[name]
            qp[name] = Quant(np.array([s], np.float32), np.array([z], np.int64), 0)
        elif name in ranges:
            qp[name] = _act_quant(*ranges[name])
        else:
            qp[name] = _act_quant(-1.0, 1.0)
    float_ops: list[str] = []
    new_ops: list[Op] = []
    for op in g.ops:
        if op.kind not in _INT8_OPS:
            float_ops.append(op.kind)
            new_ops.extend(_float_island(g, op, qp))
            continue
        data_in = op.inputs[1] if op.kind == "SPLIT" else op.inputs[0]
        if op.kind in _SAME_AS_INPUT and data_in in qp:
            for o in op.outputs:
                qp[o] = qp[data_in]
        if op.kind in _FIXED_OUTPUT:
            s, z = _FIXED_OUTPUT[op.kind]
            qp[op.outputs[0]] = Quant(np.array([s], np.float32), np.array([z], np.int64), 0)
        if op.kind == "CONCATENATION":
            out_q = qp[op.outputs[0]]
            for i, name in enumerate(op.inputs):
                if name in qp and not _same(qp[name], out_q):
                    rq = g.add_tensor(name + "__rq", g.tensors[name].shape)
                    qp[rq] = out_q
                    new_ops.append(Op("QUANTIZE", [name], [rq], source=op.source))
                    op.inputs[i] = rq
        _quantise_consts(g, op, qp, st)
        new_ops.append(op)
    g.ops = new_ops
    for name, q in qp.items():
        t = g.tensors[name]
        t.dtype, t.quant = "int8", q
    if not st.io_int8:
        _float_io(g)
    g.prune()
    io_quant = {n: iq for n in g.inputs + g.outputs if (iq := g.tensors[n].quant) is not None}
    return {"float_ops": sorted(set(float_ops)),
            "io_quantization": {n: {"scale": float(iq.scale[0]), "zero_point": int(iq.zero_point[0])}
                                for n, iq in io_quant.items()}}


def _same(a: Quant, b: Quant) -> bool:
    return bool(np.allclose(a.scale, b.scale) and np.array_equal(a.zero_point, b.zero_point))


def _float_island(g: Graph, op: Op, qp: dict[str, Quant]) -> list[Op]:
    """An op without an int8 kernel: dequantise its inputs, run float, quantise its outputs."""
    pre, post = [], []
    for i, name in enumerate(op.inputs):
        if name in qp:
            f = g.add_tensor(name + "__f", g.tensors[name].shape)
            pre.append(Op("DEQUANTIZE", [name], [f], source=op.source))
            op.inputs[i] = f
    for i, name in enumerate(op.outputs):
        if name in qp:
            f = g.add_tensor(name + "__f", g.tensors[name].shape)
            post.append(Op("QUANTIZE", [f], [name], source=op.source))
            op.outputs[i] = f
    return [*pre, op, *post]


def _quantise_consts(g: Graph, op: Op, qp: dict[str, Quant], st: FullIntSettings) -> None:
    params = _PARAM_INPUTS.get(op.kind, set())
    widx = _WEIGHT_INPUT.get(op.kind)
    for i, name in enumerate(op.inputs):
        if not name or i in params:
            continue
        t = g.tensors[name]
        if t.data is None or t.dtype != "float32":
            continue
        if i == widx:
            per = st.per_channel is True or (st.per_channel == "conv-only"
                                              and op.kind in _CONV_OPS)
            if op.kind == "FULLY_CONNECTED":
                per = False
            q, quant = _sym_quant(t.data, _weight_axis(op.kind) if per else None)
            new = g.add_const(name + "__q", q)
            g.tensors[new].quant = quant
            op.inputs[i] = new
        elif widx is not None and i == (3 if op.kind == "TRANSPOSE_CONV" else 2):
            # bias: int32 at s_in * s_w
            x = op.inputs[2] if op.kind == "TRANSPOSE_CONV" else op.inputs[0]
            wq = g.tensors[op.inputs[widx]].quant
            xq = qp[x] if x in qp else g.tensors[x].quant     # a constant input: quantised
            assert wq is not None and xq is not None
            s = (xq.scale[0] * wq.scale).astype(np.float64)
            s = np.broadcast_to(s, t.data.shape)
            b = np.clip(np.round(t.data / s), -2**31, 2**31 - 1).astype(np.int32)
            new = g.add_const(name + "__q", b)
            g.tensors[new].quant = Quant(s.astype(np.float32).ravel()
                                         if wq.per_channel else np.array([s.ravel()[0]],
                                                                         np.float32),
                                         np.zeros(s.size if wq.per_channel else 1, np.int64), 0)
            op.inputs[i] = new
        else:
            if op.kind in ("MAXIMUM", "MINIMUM", "PADV2"):
                # compared / padded in the scale of the data input (either side for MAXIMUM)
                quant = next(qp[x] for x in op.inputs if x in qp)
            else:
                quant = _act_quant(float(t.data.min()), float(t.data.max()))
                if op.kind == "PRELU":
                    amax = float(np.abs(t.data).max()) or 1.0
                    quant = Quant(np.array([amax / 127], np.float32), np.zeros(1, np.int64), 0)
            new = g.add_const(name + "__q", _quantise_array(t.data, quant))
            g.tensors[new].quant = quant
            op.inputs[i] = new


def _float_io(g: Graph) -> None:
    """Keep float I/O: QUANTIZE after each input, DEQUANTIZE before each output.

    The float tensors keep the ONNX names (devices match golden data by name); the int8
    tensors inside are renamed ``<name>__int8``.
    """
    for k, name in enumerate(list(g.inputs)):
        inner = g.unique(name + "__int8")
        g.rename(name, inner)
        g.tensors[name] = Tensor(name, g.tensors[inner].shape, "float32")
        g.ops.insert(0, Op("QUANTIZE", [name], [inner]))
        g.inputs[k] = name
    for k, name in enumerate(list(g.outputs)):
        inner = g.unique(name + "__int8")
        g.rename(name, inner)
        g.tensors[name] = Tensor(name, g.tensors[inner].shape, "float32")
        g.ops.append(Op("DEQUANTIZE", [inner], [name]))
        g.outputs[k] = name

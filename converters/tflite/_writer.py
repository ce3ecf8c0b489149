"""Serialise a :class:`Graph` to TFLite flatbuffer bytes, without TensorFlow.

Uses the object API of the schema module that the LiteRT wheel ships
(``ai_edge_litert/schema_py_generated.py``, or ``tflite_runtime``'s copy), so field order and
union tags come from the schema itself rather than being hand-maintained here.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import flatbuffers
import numpy as np

from converters.tflite._ir import Graph, Quant

__all__ = ["schema", "write_flatbuffer"]

# Options table (schema union member) for each op kind that takes one.
_OPTIONS: dict[str, str] = {
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "TRANSPOSE_CONV": "TransposeConvOptions", "FULLY_CONNECTED": "FullyConnectedOptions",
    "BATCH_MATMUL": "BatchMatMulOptions", "ADD": "AddOptions", "SUB": "SubOptions",
    "MUL": "MulOptions", "DIV": "DivOptions", "LEAKY_RELU": "LeakyReluOptions",
    "SOFTMAX": "SoftmaxOptions", "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions", "MEAN": "ReducerOptions",
    "CONCATENATION": "ConcatenationOptions", "RESHAPE": "ReshapeOptions",
    "TRANSPOSE": "TransposeOptions", "PAD": "PadOptions", "PADV2": "PadV2Options",
    "MIRROR_PAD": "MirrorPadOptions", "RESIZE_BILINEAR": "ResizeBilinearOptions",
    "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighborOptions",
    "STRIDED_SLICE": "StridedSliceOptions", "SPLIT": "SplitOptions",
    "QUANTIZE": "QuantizeOptions", "DEQUANTIZE": "DequantizeOptions",
    "MAXIMUM": "MaximumMinimumOptions", "MINIMUM": "MaximumMinimumOptions",
    "HARD_SWISH": "HardSwishOptions", "SPLIT_V": "SplitVOptions", "SUM": "ReducerOptions",
    "REDUCE_MAX": "ReducerOptions", "REDUCE_MIN": "ReducerOptions",
    "REDUCE_PROD": "ReducerOptions", "GATHER": "GatherOptions", "GELU": "GeluOptions",
    "PACK": "PackOptions", "DEPTH_TO_SPACE": "DepthToSpaceOptions",
}

_TYPES = {"float32": "FLOAT32", "float16": "FLOAT16", "int32": "INT32", "int8": "INT8",
          "uint8": "UINT8", "int64": "INT64", "int16": "INT16", "bool": "BOOL"}

# Ops whose int8 kernels were added in a later op version; LiteRT checks the version.
_INT8_VERSION = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "ADD": 2,
                 "SUB": 2, "MUL": 2, "CONCATENATION": 2, "AVERAGE_POOL_2D": 2,
                 "MAX_POOL_2D": 2, "SOFTMAX": 2, "LOGISTIC": 2, "TANH": 2, "MEAN": 2,
                 "RESHAPE": 1, "TRANSPOSE": 2, "PAD": 2, "PADV2": 2, "RESIZE_BILINEAR": 2,
                 "RESIZE_NEAREST_NEIGHBOR": 2, "STRIDED_SLICE": 2, "MAXIMUM": 2, "MINIMUM": 2,
                 "QUANTIZE": 2, "DEQUANTIZE": 2, "LEAKY_RELU": 2, "PRELU": 1, "RELU": 2,
                 "RELU6": 2, "HARD_SWISH": 1, "TRANSPOSE_CONV": 3, "BATCH_MATMUL": 1,
                 "SPLIT": 2, "MIRROR_PAD": 2, "SPLIT_V": 2, "REDUCE_MAX": 2, "GATHER": 2,
                 "BROADCAST_TO": 2, "RELU_0_TO_1": 1}


# Ops LiteRT registers from a version above 1 only, whatever the data type.
_MIN_VERSION = {"BROADCAST_TO": 2}

_BUFFER_ALIGNMENT = 16     # bytes; as TensorFlow's converter, so kernels may read weights aligned


class _AlignedBuilder(flatbuffers.Builder):  # type: ignore[misc]
    """A builder that places byte vectors (weight buffers) on 16-byte boundaries."""

    def CreateNumpyVector(self, x: np.ndarray) -> int:
        if x.dtype == np.uint8 and x.ndim == 1 and x.size >= _BUFFER_ALIGNMENT:
            self.StartVector(1, x.size, _BUFFER_ALIGNMENT)
            payload = x.tobytes()
            head: int = self.head  # type: ignore[has-type]
            self.head = head - len(payload)
            self.Bytes[head - len(payload):head] = payload
            self.vectorNumElems = x.size
            return int(self.EndVector())
        return int(super().CreateNumpyVector(x))


def schema() -> ModuleType:
    """The generated TFLite schema module of whichever LiteRT runtime is installed."""
    for mod in ("ai_edge_litert.schema_py_generated", "tflite_runtime.schema_py_generated"):
        try:
            return importlib.import_module(mod)
        except ImportError:
            continue
    raise ImportError("no TFLite schema module (ai-edge-litert): pip install 'edgeops[tflite]'")


def _quant(s: ModuleType, q: Quant) -> Any:
    qp = s.QuantizationParametersT()
    qp.scale = [float(x) for x in np.asarray(q.scale, np.float32).ravel()]
    qp.zeroPoint = [int(x) for x in np.asarray(q.zero_point).ravel()]
    qp.quantizedDimension = int(q.axis)
    return qp


def _options(s: ModuleType, kind: str, opts: dict[str, Any]) -> tuple[int, Any]:
    table = _OPTIONS.get(kind)
    if table is None:
        return 0, None
    obj = getattr(s, table + "T")()
    for k, v in opts.items():
        if not hasattr(obj, k):
            raise AttributeError(f"{table} has no field {k}")
        setattr(obj, k, v)
    return int(getattr(s.BuiltinOptions, table)), obj


def write_flatbuffer(g: Graph, description: str = "edgeops") -> bytes:
    """The model as TFLite flatbuffer bytes (schema version 3)."""
    s = schema()
    model = s.ModelT()
    model.version = 3
    model.description = description
    empty = s.BufferT()
    model.buffers = [empty]                     # buffer 0 is the conventional empty buffer
    index: dict[str, int] = {}
    tensors: list[Any] = []
    for name, t in g.tensors.items():
        tt = s.TensorT()
        tt.name = name
        tt.shape = list(t.shape)
        tt.type = getattr(s.TensorType, _TYPES[t.dtype])
        tt.buffer = 0
        if t.data is not None:
            buf = s.BufferT()
            raw = np.ascontiguousarray(t.data.astype(t.dtype, copy=False)).tobytes()
            buf.data = np.frombuffer(raw, np.uint8) if raw else None
            model.buffers.append(buf)
            tt.buffer = len(model.buffers) - 1
        if t.quant is not None:
            tt.quantization = _quant(s, t.quant)
        index[name] = len(tensors)
        tensors.append(tt)
    codes: dict[tuple[str, int], int] = {}
    model.operatorCodes = []
    ops = []
    for op in g.ops:
        quantised = any(g.tensors[n].dtype == "int8" for n in op.inputs + op.outputs if n)
        version = max(_INT8_VERSION.get(op.kind, 1) if quantised else 1,
                      _MIN_VERSION.get(op.kind, 1))
        if op.kind == "TRANSPOSE_CONV" and len(op.inputs) > 3:
            version = max(version, 3)
        if op.kind == "FULLY_CONNECTED" and quantised and g.tensors[op.inputs[0]].dtype != "int8":
            version = 3                          # hybrid (float activations, int8 weights)
        key = (op.kind, version)
        if key not in codes:
            oc = s.OperatorCodeT()
            code = int(getattr(s.BuiltinOperator, op.kind))
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = version
            codes[key] = len(model.operatorCodes)
            model.operatorCodes.append(oc)
        ot = s.OperatorT()
        ot.opcodeIndex = codes[key]
        ot.inputs = [index[n] if n else -1 for n in op.inputs]
        ot.outputs = [index[n] for n in op.outputs]
        ot.builtinOptionsType, ot.builtinOptions = _options(s, op.kind, op.options)
        ops.append(ot)
    sg = s.SubGraphT()
    sg.tensors = tensors
    sg.inputs = [index[n] for n in g.inputs]
    sg.outputs = [index[n] for n in g.outputs]
    sg.operators = ops
    sg.name = "main"
    model.subgraphs = [sg]
    builder = _AlignedBuilder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
